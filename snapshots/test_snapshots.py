"""Snapshot tests of the UI (pytest-textual-snapshot): fixed terminal size, fixture data from
a real daemon socket (`tests.widgets.appfixture`), times printed from the entries (UTC), no
wall clock on screen. Update with ``pytest snapshots --snapshot-update`` and look at the SVGs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from shark_tui.app import SharkApp
from tests.widgets.appfixture import fixture_daemon

SIZE = (150, 24)
NOW = 1_700_000_000.0  # the app's clock (the save dialog's default name)


@pytest.fixture
def app() -> Iterator[SharkApp]:
    with fixture_daemon() as (address, token):
        yield SharkApp([(address, token)], clock=lambda: NOW)


async def _rows(pilot: Any, n: int = 16) -> None:
    app = pilot.app
    for _ in range(200):
        if len(app.store) >= n and app.links[0].up and app.header.stats:
            break
        await asyncio.sleep(0.05)
    await pilot.pause()


def test_main_screen(snap_compare: Any, app: SharkApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=_rows)


def test_filter_bar_invalid(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("slash", *"status >=")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_filter_bar_empty(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("slash")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_filter_bar_valid(snap_compare: Any, app: SharkApp) -> None:
    """A filter that parses: the bar's border in the success colour, no error line."""

    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("slash", *"status >= 500")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_filter_bar_completions(snap_compare: Any, app: SharkApp) -> None:
    """tab on a word with several completions lists them under the bar."""

    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("slash", *"status >= 500 and d", "tab")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_filter_bar_history_recalled(snap_compare: Any, app: SharkApp) -> None:
    """Two filters sent, the second in force; the bar opened and up twice: the first."""

    async def before(pilot: Any) -> None:
        await _rows(pilot)
        for text in ("status >= 500", 'method == "POST"'):
            await pilot.press("slash", "ctrl+u", *text, "enter")
            for _ in range(200):
                if pilot.app.links[0].sent[-1].filter == text and len(pilot.app.store) == 4:
                    break
                await asyncio.sleep(0.05)
        await pilot.press("slash", "up", "up")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_detail_request_tab(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("k", "enter")
        for _ in range(100):
            if type(pilot.app.screen).__name__ == "DetailScreen":
                break
            await asyncio.sleep(0.05)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


async def _screen(pilot: Any, name: str) -> None:
    for _ in range(100):
        if type(pilot.app.screen).__name__ == name:
            break
        await asyncio.sleep(0.05)
    await pilot.pause()


def test_marked_rows(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("space", "k", "k", "space", "k")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_save_dialog(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("space", "g", "space", "w")
        await _screen(pilot, "SaveScreen")

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_copy_menu(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("x")
        await _screen(pilot, "CopyMenu")

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_help(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("question_mark")
        await _screen(pilot, "HelpScreen")

    assert snap_compare(app, terminal_size=(150, 60), run_before=before)


def test_command_line_error(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("colon", *"frob", "enter")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_pod_picker(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        pilot.app.store.seen.update({"default/api-7d9", "shop/api-7d9", "default/web"})
        await pilot.press("p", *"10.0")
        await _screen(pilot, "PodPicker")

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_endpoints_view(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("e")
        await _screen(pilot, "EndpointsScreen")

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_sorted_by_latency(snap_compare: Any, app: SharkApp) -> None:
    """o l: slowest first; the header and the column title say so; follow is off."""

    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("o")
        await _screen(pilot, "SortMenu")
        await pilot.press("l")
        await _screen(pilot, "Screen")

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_sort_menu(snap_compare: Any, app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("o", "l", "o")
        await _screen(pilot, "SortMenu")

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


@pytest.fixture
def light_app(tmp_path: Any) -> Iterator[SharkApp]:
    """The app with ``theme = "shark-light"`` in its keys.toml (XDG_CONFIG_HOME: conftest)."""
    from shark_tui.widgets.keymap import config_path

    path = config_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write('theme = "shark-light"\n')
    with fixture_daemon() as (address, token):
        yield SharkApp([(address, token)], clock=lambda: NOW)


def test_main_screen_light_theme(snap_compare: Any, light_app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("k", "space", "k")  # a marked row and the cursor too

    assert snap_compare(light_app, terminal_size=SIZE, run_before=before)


# -- the detail pane's native views: Redis, Kafka, AMQP (real traffic, tests.widgets.protofixture)

PROTO_SIZE = (150, 40)


@pytest.fixture
def proto_app() -> Iterator[SharkApp]:
    from tests.widgets.protofixture import proto_daemon

    with proto_daemon() as (address, token):
        yield SharkApp([(address, token)], clock=lambda: NOW)


def _open_detail(flt: str, response: bool = False, tab: str = "", *keys: str) -> Any:
    """Filter the list down to one entry, open it, and show its Response tab if asked, or the
    tab ``tab`` (``raw``, ``connection``...); then press ``keys``."""
    from textual.widgets import Input, TabbedContent

    async def before(pilot: Any) -> None:
        app = pilot.app
        for _ in range(200):
            if app.links[0].up and len(app.store):
                break
            await asyncio.sleep(0.05)
        await pilot.press("slash")
        app.query_one("#filter-input", Input).value = flt
        await pilot.press("enter")
        for _ in range(200):
            if app.links[0].sent[-1].filter == flt and len(app.store) == 1:
                break
            await asyncio.sleep(0.05)
        await pilot.press("enter")
        await _screen(pilot, "DetailScreen")
        if response:
            await pilot.press("right")
        if tab:
            pilot.app.screen.query_one(TabbedContent).active = f"tab-{tab}"
        await pilot.pause()
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
            await pilot.pause()

    return before


def test_detail_redis_reply(snap_compare: Any, proto_app: SharkApp) -> None:
    before = _open_detail("method == XRANGE", response=True)
    assert snap_compare(proto_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_redis_resp3_map(snap_compare: Any, proto_app: SharkApp) -> None:
    before = _open_detail("method == HGETALL", response=True)
    assert snap_compare(proto_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_kafka_produce_records(snap_compare: Any, proto_app: SharkApp) -> None:
    before = _open_detail("method == Produce and summary == orders")
    assert snap_compare(proto_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_kafka_fetch_response(snap_compare: Any, proto_app: SharkApp) -> None:
    before = _open_detail("method == Fetch and summary == orders", response=True)
    assert snap_compare(proto_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_amqp_publish(snap_compare: Any, proto_app: SharkApp) -> None:
    before = _open_detail("method == basic.publish and request.properties.priority == 5")
    assert snap_compare(proto_app, terminal_size=PROTO_SIZE, run_before=before)


# -- the TLS status view (L): a fixed report from one daemon, another without TLS capture

TLS_REPORT: dict[str, Any] = {
    "enabled": True,
    "kernel_path": "tracepoints",
    "libraries": [
        {"path": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
         "attached": ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"], "error": None},
        {"path": "/opt/legacy/lib/libssl.so.1.0.0", "attached": [],
         "error": "no SSL_read/SSL_write symbols in /opt/legacy/lib/libssl.so.1.0.0"},
    ],
    "processes": [
        {"pid": 4120, "comm": "nginx", "visible": True, "exited": False,
         "reason": "visible: SSL_read/SSL_write uprobes",
         "tls_connections": ["127.0.0.1:8443 ⇄ 127.0.0.1:51200"] * 3},
        {"pid": 4177, "comm": "openssl", "visible": False, "exited": False,
         "reason": "BIO-based I/O: its TLS connections never went through SSL_read/SSL_write",
         "tls_connections": ["127.0.0.1:4433 ⇄ 127.0.0.1:51310"]},
        {"pid": 4180, "comm": "curl", "visible": True, "exited": True,
         "reason": "visible: SSL_read/SSL_write uprobes",
         "tls_connections": ["127.0.0.1:51310 ⇄ 127.0.0.1:4433"]},
        {"pid": 5012, "comm": "api-gateway", "visible": False, "exited": False,
         "reason": "Go crypto/tls: not probed by the OpenSSL tracer",
         "tls_connections": ["10.0.0.5:443 ⇄ 10.0.0.9:40112"] * 2},
        {"pid": 5230, "comm": "postgres", "visible": None, "exited": False,
         "reason": "probes attached; no TLS traffic seen yet", "tls_connections": []},
    ],
    "lost": {"ring_full_chunks": 2, "bytes_past_max_call": 0, "unreadable_bytes": 0},
}  # fmt: skip


@pytest.fixture
def tls_app() -> Iterator[SharkApp]:
    from tests.widgets.appfixture import tls_report_daemon

    with tls_report_daemon(TLS_REPORT, node="node-a") as a, tls_report_daemon(None, "node-b") as b:
        yield SharkApp([a, b], clock=lambda: NOW)


def test_tls_status_view(snap_compare: Any, tls_app: SharkApp) -> None:
    async def before(pilot: Any) -> None:
        app = pilot.app
        for _ in range(200):
            if all(link.up for link in app.links) and len(app.header.stats) == 2:
                break
            await asyncio.sleep(0.05)
        await pilot.press("L")
        await _screen(pilot, "TlsStatusScreen")
        for _ in range(200):
            if None not in app.screen.reports:
                break
            await asyncio.sleep(0.05)
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(tls_app, terminal_size=(150, 40), run_before=before)


# -- the detail pane: search, esc ----------------------------------------------------------------


def _detail_of_row(*keys: str) -> Any:
    """Open the oldest row (GET /users?id=7) of the fixture daemon, then press ``keys``."""

    async def before(pilot: Any) -> None:
        await _rows(pilot)
        await pilot.press("g", "enter")
        await _screen(pilot, "DetailScreen")
        await pilot.press(*keys)
        await pilot.pause()
        await pilot.pause()

    return before


def test_detail_search_box(snap_compare: Any, app: SharkApp) -> None:
    before = _detail_of_row("slash", *"host")
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_detail_search_box_closed_by_esc(snap_compare: Any, app: SharkApp) -> None:
    """esc closes the search box only: the pane stays, the term was not searched."""
    before = _detail_of_row("slash", *"host", "escape")
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


# -- the detail pane over web traffic (tests.widgets.webfixture): HTTP/1, HTTP/2, gRPC, GraphQL,
# WebSocket, tcp


@pytest.fixture
def web_app() -> Iterator[SharkApp]:
    from tests.widgets.webfixture import web_daemon

    with web_daemon() as (address, token):
        yield SharkApp([(address, token)], clock=lambda: NOW)


def test_detail_graphql_request(snap_compare: Any, web_app: SharkApp) -> None:
    """The query pretty-printed by graphql-core, then its variables."""
    before = _open_detail("proto == graphql and status == 200")
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_graphql_parse_failure(snap_compare: Any, web_app: SharkApp) -> None:
    before = _open_detail("proto == graphql and status == 400")
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_form_request(snap_compare: Any, web_app: SharkApp) -> None:
    before = _open_detail("method == POST and summary == /login")
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_connection_tab(snap_compare: Any, web_app: SharkApp) -> None:
    """Ends, interface, state; packets and bytes per direction; first and last packet, the
    handshake, this request's time and latency."""
    before = _open_detail("proto == grpc and status == 0", False, "connection")
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_body_cut(snap_compare: Any, web_app: SharkApp) -> None:
    """A body longer than the daemon keeps: the note says where it was cut and that f shows
    it whole, the status line too."""
    before = _open_detail("method == GET and summary == /export", True)
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_show_full(snap_compare: Any, web_app: SharkApp) -> None:
    """f: the entry asked for again with a large body cap, scrolled to the body's end."""
    from textual.containers import VerticalScroll
    from textual.widgets import Static

    opened = _open_detail("method == GET and summary == /export", True)

    async def before(pilot: Any) -> None:
        await opened(pilot)
        await pilot.press("f")
        status = pilot.app.screen.query_one("#detail-search-status", Static)
        for _ in range(200):
            if "showing the whole entry" in str(status.render()):
                break
            await asyncio.sleep(0.05)
        await pilot.pause()
        pane = pilot.app.screen.query_one("#tab-response").query_one(VerticalScroll)
        pane.scroll_end(animate=False)
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


# -- the detail tabs per protocol -----------------------------------------------------------------


def test_detail_http1_response(snap_compare: Any, app: SharkApp) -> None:
    """A chunked HTTP/1.1 reply: status line, headers, body, its trailers."""
    before = _open_detail("method == POST and src.port == 40000", True)
    assert snap_compare(app, terminal_size=PROTO_SIZE, run_before=before)


def _raw_loaded(hex_mode: bool) -> Any:
    """The Raw tab of the first connection's GET /users?id=7, as text or hex."""
    from textual.widgets import Static

    opened = _open_detail('path == "/users" and src.port == 40000', False, "raw")

    async def before(pilot: Any) -> None:
        await opened(pilot)
        body = pilot.app.screen.query_one("#raw-body", Static)
        for _ in range(200):
            if "HTTP/1.1" in str(body.render()):
                break
            await asyncio.sleep(0.05)
        if hex_mode:
            await pilot.press("h")
        await pilot.pause()
        await pilot.pause()

    return before


def test_detail_raw_text(snap_compare: Any, app: SharkApp) -> None:
    """The reassembled connection, client and server in their colours."""
    assert snap_compare(app, terminal_size=PROTO_SIZE, run_before=_raw_loaded(False))


def test_detail_raw_hex(snap_compare: Any, app: SharkApp) -> None:
    assert snap_compare(app, terminal_size=PROTO_SIZE, run_before=_raw_loaded(True))


def test_detail_http2_request(snap_compare: Any, web_app: SharkApp) -> None:
    """HTTP/2: the pseudo-headers kept, the JSON body pretty-printed."""
    before = _open_detail("proto == http2 and method == POST")
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_http2_response(snap_compare: Any, web_app: SharkApp) -> None:
    before = _open_detail("proto == http2 and method == GET", True)
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_grpc_response(snap_compare: Any, web_app: SharkApp) -> None:
    """gRPC: the message decoded without a schema (protoc --decode_raw), grpc-status."""
    before = _open_detail("proto == grpc and status == 0", True)
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_grpc_error(snap_compare: Any, web_app: SharkApp) -> None:
    before = _open_detail("proto == grpc and status == 5", True)
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_graphql_response(snap_compare: Any, web_app: SharkApp) -> None:
    before = _open_detail("proto == graphql and status == 200", True)
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_websocket_message(snap_compare: Any, web_app: SharkApp) -> None:
    """A client's text frame on an upgraded connection (unmasked, JSON)."""
    before = _open_detail("proto == websocket and method == text and request != null")
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_websocket_upgrade(snap_compare: Any, web_app: SharkApp) -> None:
    before = _open_detail("status == 101", True)
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)


def test_detail_tcp(snap_compare: Any, web_app: SharkApp) -> None:
    """A protocol nobody knows: byte counts and the first bytes."""
    before = _open_detail("proto == tcp")
    assert snap_compare(web_app, terminal_size=PROTO_SIZE, run_before=before)
