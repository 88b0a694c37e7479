"""The detail pane over a real daemon (Pilot): what each key does to what the pane shows."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import Input, Static, TabbedContent

from shark_tui.app import SharkApp
from shark_tui.widgets.detail import DetailScreen
from tests.widgets import webfixture
from tests.widgets.appfixture import fixture_daemon, wait_for


def drawn(screen: DetailScreen, selector: str, width: int = 140) -> str:
    """The text of a tab's body as drawn (no styles)."""
    c = Console(width=width, record=True, color_system=None, file=io.StringIO())
    c.print(screen.query_one(selector, Static).content)
    return "\n".join(line.rstrip() for line in c.export_text().splitlines())


def run(daemon: tuple[str, str], body: Callable[[SharkApp, Any], Awaitable[None]],
        size: tuple[int, int] = (150, 40)) -> None:  # fmt: skip
    async def main() -> None:
        app = SharkApp([daemon])
        async with app.run_test(size=size) as pilot:
            await wait_for(lambda: app.links[0].up and len(app.store) > 0)
            await body(app, pilot)

    asyncio.run(main())


async def open_entry(app: SharkApp, pilot: Any, flt: str) -> DetailScreen:
    """Filter the list down to one row with ``/``, open it with enter."""
    if isinstance(app.screen, DetailScreen):
        await pilot.press("escape")
    await pilot.press("slash")
    app.query_one("#filter-input", Input).value = flt  # typing is the filter bar's test
    await pilot.press("enter")
    await wait_for(lambda: app.links[0].sent[-1].filter == flt)  # type: ignore[attr-defined]
    await wait_for(lambda: len(app.store) == 1 and app.store.rows[-1] is not None)
    await pilot.pause()
    await pilot.press("enter")
    await wait_for(lambda: isinstance(app.screen, DetailScreen))
    await pilot.pause()
    await pilot.pause()
    assert isinstance(app.screen, DetailScreen)
    return app.screen


# -- esc: the search box first, then the pane ----------------------------------------------------


def test_esc_closes_the_search_box_then_the_pane() -> None:
    async def body(app: SharkApp, pilot: Any) -> None:
        screen = await open_entry(app, pilot, "status == 500 and src.port == 40000")
        box = screen.query_one("#detail-search", Input)
        tabs = screen.query_one(TabbedContent)
        before = screen.focused
        await pilot.press("slash", *"missing")
        assert box.display and screen.focused is box and box.value == "missing"
        await pilot.press("escape")  # the box goes, the pane stays, nothing was searched
        assert app.screen is screen and not box.display
        assert screen.focused is before and screen.term == ""
        assert str(screen.query_one("#detail-search-status", Static).render()) == ""
        await pilot.press("right")  # the focus is back on the tabs: they move
        assert tabs.active == "tab-response"
        # after a search the box is closed: esc closes the pane
        await pilot.press("slash", *"oops", "enter")  # in the Response tab now
        await wait_for(lambda: "match 1 of" in str(
            screen.query_one("#detail-search-status", Static).render()))  # fmt: skip
        assert not box.display
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)
        assert len(app.store) == 1  # the list's filter was not cleared by that esc

    with fixture_daemon() as daemon:
        run(daemon, body)


# -- body views by priority: gRPC messages, GraphQL, JSON, form, text, hex -----------------------


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[str, str]]:
    with webfixture.web_daemon() as found:
        yield found


def test_body_views_by_priority(web: tuple[str, str]) -> None:
    async def body(app: SharkApp, pilot: Any) -> None:
        # GraphQL: the query pretty-printed (graphql-core), then its variables
        d = await open_entry(app, pilot, "proto == graphql and status == 200")
        req = drawn(d, "#request-body").splitlines()
        at = req.index("GraphQL query Hero")
        assert req[at + 1 : at + 13] == [
            "query Hero($episode: Episode, $withFriends: Boolean!) {",
            "  hero(episode: $episode) {",
            "    name",
            "    ... on Droid {",
            "      primaryFunction",
            "    }",
            "    friends @include(if: $withFriends) {",
            "      name",
            "    }",
            "  }",
            "}",
            "variables",
        ]
        assert req[at + 13 : at + 17] == [
            "{",
            '  "episode": "EMPIRE",',
            '  "withFriends": true',
            "}",
        ]
        assert webfixture.HERO not in "\n".join(req)  # not as sent
        # the response is JSON, pretty-printed
        resp = drawn(d, "#response-body")
        assert '      "name": "R2-D2",' in resp.splitlines()
        # a query that does not parse: as sent, and why
        d = await open_entry(app, pilot, "proto == graphql and status == 400")
        req = drawn(d, "#request-body")
        why = "Syntax Error: Expected Name, found <EOF>. (1:29)"
        assert f"failed to parse as GraphQL: {why}" in req
        assert webfixture.BROKEN in req
        # a form: one decoded field a line
        d = await open_entry(app, pilot, "method == POST and summary == /login")
        req = drawn(d, "#request-body").splitlines()
        at = req.index("form: 4 fields")
        fields = ["user = Jörg", "remember = on", "next = /cart?item=7", "note = tea and cake"]
        assert req[at + 1 : at + 5] == fields
        # gRPC: each message decoded without a schema, as protoc --decode_raw prints it
        d = await open_entry(app, pilot, "proto == grpc and status == 0")
        resp = drawn(d, "#response-body").splitlines()
        at = resp.index("gRPC messages: 1")
        assert resp[at + 1 : at + 11] == [
            "#0 51 bytes", '  1: "tea-01"', '  2: "Green tea"', "  3: 42", '  4: "organic"',
            '  4: "loose-leaf"', "  5 {", '    1: "EUR"', "    2: 7", "  }"]  # fmt: skip
        assert not any(line.startswith("00000000") for line in resp)

    run(web, body)


# -- the Connection tab ------------------------------------------------------------------------


def test_connection_tab_shows_what_the_daemon_knows_of_the_connection(
    web: tuple[str, str],
) -> None:
    """Ends, interface, state; packets and bytes per direction as in the capture; first and
    last packet, the handshake, this request's time and latency."""
    import dpkt

    # the truth, from the capture itself: the gRPC connection's packets by direction
    sent: dict[bool, list[int]] = {True: [], False: []}
    times: list[float] = []
    for ts, frame in dpkt.pcap.Reader(io.BytesIO(webfixture.web_capture())):
        tcp = dpkt.ethernet.Ethernet(frame).data.data
        if webfixture.GRPC[1] in (tcp.sport, tcp.dport):
            sent[tcp.dport == webfixture.GRPC[1]].append(len(frame))
            times.append(float(ts))

    async def body(app: SharkApp, pilot: Any) -> None:
        d = await open_entry(app, pilot, "proto == grpc and status == 0")
        d.query_one(TabbedContent).active = "tab-connection"
        await pilot.pause()
        shown = drawn(d, "#connection-body").splitlines()
        assert shown[:8] == [
            "connection",
            "  client     10.0.0.4:40003",
            "  server     10.2.0.5:50051",
            "  interface  if0",
            "  flow       4",
            "  state      closed",
            "  TLS        no",
            "",
        ]
        c, s = sent[True], sent[False]
        assert shown[8:11] == [
            "packets and bytes (on the wire)",
            f"  client → server  {len(c)} packets, {sum(c)} bytes",
            f"  server → client  {len(s)} packets, {sum(s)} bytes",
        ]
        span = (max(times) - min(times)) * 1000
        assert shown[12:18] == [
            "timings",
            "  first packet        2023-11-14 22:13:50.000000 UTC",
            f"  last packet         2023-11-14 22:13:50.008002 UTC  (+{span:.3f} ms)",
            "  handshake           SYN → SYN-ACK 0.001 ms, SYN-ACK → ACK 0.001 ms",
            "  this request        2023-11-14 22:13:50.003000 UTC  (+3.000 ms)",
            "  request → response  1.000 ms",
        ]
        assert "  id             4:1" in shown
        # every entry has it: a WebSocket message on its upgraded connection, the tcp row
        d = await open_entry(app, pilot, "proto == websocket and method == binary")
        d.query_one(TabbedContent).active = "tab-connection"
        await pilot.pause()
        shown = drawn(d, "#connection-body").splitlines()
        assert "  server     10.2.0.6:8765" in shown and "  flow       5" in shown
        assert "  request → response  no response" in shown
        d = await open_entry(app, pilot, "proto == tcp")
        d.query_one(TabbedContent).active = "tab-connection"
        await pilot.pause()
        assert "  server     10.2.0.7:9000" in drawn(d, "#connection-body").splitlines()

    run(web, body)


# -- f: show full --------------------------------------------------------------------------------


def test_show_full_asks_the_daemon_again_with_a_large_cap(web: tuple[str, str]) -> None:
    """A body longer than the daemon keeps (GET /export: 100,000 bytes, cut at 64 KiB) says
    so; f asks for the entry again (GetEntry with max_body) and shows it whole."""
    from shark_tui.engine import wire
    from shark_tui.widgets.detail import FULL_BODY

    last = "line 03999 of the export"

    async def body(app: SharkApp, pilot: Any) -> None:
        link = app.links[0]
        d = await open_entry(app, pilot, "method == GET and summary == /export")
        status = d.query_one("#detail-search-status", Static)
        assert "f shows them whole" in str(status.render())
        resp = drawn(d, "#response-body", width=200)
        assert "(body cut at 65,536 of 100,000 bytes; f: show full)" in resp
        assert last not in resp
        assert link.sent[-1] == wire.GetEntry(id=d.entry["id"])  # the daemon's own cap
        await pilot.press("f")
        await wait_for(lambda: "showing the whole entry" in str(status.render()))
        assert link.sent[-1] == wire.GetEntry(id=d.entry["id"], max_body=FULL_BODY)
        resp = drawn(d, "#response-body", width=200)
        assert resp.rstrip().endswith(last) and "body cut" not in resp
        assert d.entry["response"]["body"] == webfixture.BIG_BODY.decode()
        assert d.entry["connection"]["flow"] == 1  # what came with it is kept
        # the search sees the new text
        await pilot.press("right", "slash", *"03999", "enter")
        await wait_for(lambda: "match 1 of 1" in str(status.render()))
        # an entry with nothing cut: nothing asked
        d = await open_entry(app, pilot, "method == POST and summary == /login")
        sent = len(link.sent)
        await pilot.press("f")
        status = d.query_one("#detail-search-status", Static)
        assert str(status.render()) == "nothing in this entry was cut"
        assert len(link.sent) == sent

    run(web, body)


def test_show_full_through_the_loader_handed_over_and_its_failure() -> None:
    """A DetailScreen given its own loader uses it; a loader that fails is said in the pane."""
    from textual.app import App

    from shark_tui.widgets.detail import FULL_BODY

    reply = {"type": "bulk", "value": "01", "size": 9, "truncated": True}  # a cut Redis value
    cut = {"id": "1:1", "proto": "redis", "method": "GET", "summary": "big",
           "request": {"args": ["GET", "big"]}, "response": {"reply": reply}}  # fmt: skip
    asked: list[int] = []

    async def fails(max_body: int) -> dict[str, Any]:
        asked.append(max_body)
        raise ConnectionError("daemon gone")

    async def main() -> None:
        screen = DetailScreen(cut, full=fails)
        async with App().run_test(size=(120, 30)) as pilot:
            pilot.app.push_screen(screen)
            await pilot.pause()
            await pilot.press("f")
            status = screen.query_one("#detail-search-status", Static)
            await wait_for(lambda: "could not be read" in str(status.render()))
            assert str(status.render()) == "the whole entry could not be read: daemon gone"
            assert asked == [FULL_BODY] and screen.entry is cut

    asyncio.run(main())


# -- the tabs per protocol -----------------------------------------------------------------------


def test_tabs_per_protocol(web: tuple[str, str]) -> None:
    """HTTP/2 keeps its pseudo-headers; a gRPC error names its status in the trailers; a
    WebSocket message shows its framing and its payload by priority; a close frame its code;
    a tcp row its size and first bytes in hex."""

    async def body(app: SharkApp, pilot: Any) -> None:
        d = await open_entry(app, pilot, "proto == http2 and method == POST")
        req = drawn(d, "#request-body").splitlines()
        assert req[:6] == [
            "POST /api/items HTTP/2", ":authority: api.shop.local:8080", ":method: POST",
            ":scheme: http", ":path: /api/items", "content-type: application/json"]  # fmt: skip
        assert req[6:11] == ["", "{", '  "sku": "jam-03",', '  "qty": 2', "}"]
        d = await open_entry(app, pilot, "proto == grpc and status == 5")
        resp = drawn(d, "#response-body").splitlines()
        at = resp.index("trailers")
        assert resp[at + 1 : at + 3] == [
            "grpc-status: 5 (NOT_FOUND)", "grpc-message: no item nope-99"]  # fmt: skip
        assert resp[resp.index("gRPC messages: 0") - 2] == "content-type: application/grpc"
        assert not any("grpc_status" in line for line in resp)  # the trailers said it
        d = await open_entry(app, pilot, "proto == websocket and summary ~ joined")
        assert drawn(d, "#request-body") == "(not seen)"
        resp = drawn(d, "#response-body").splitlines()
        head = "text message · 47 bytes · not masked"
        assert resp == [head, "{", '  "type": "joined",', '  "room": "tea",', '  "members": 3', "}"]
        d = await open_entry(app, pilot, "proto == websocket and method == binary")
        req = drawn(d, "#request-body").splitlines()
        assert req == ["binary message · 16 bytes · masked",
                       "00000000  00 03 06 09 0c 0f 12 15 18 1b 1e 21 24 27 2a 2d"]  # fmt: skip
        d = await open_entry(
            app, pilot, "proto == websocket and method == close and request != null"
        )
        assert drawn(d, "#request-body").splitlines() == [
            "close message · 5 bytes · masked", "close code 1000 · bye"]  # fmt: skip
        d = await open_entry(app, pilot, "proto == tcp")
        assert drawn(d, "#request-body").splitlines() == [
            "33 bytes; the first 33:",
            "00000000  00 00 00 15 01 48 45 4c 4c 4f 20 76 32 20 63 6c",
            "00000010  69 65 6e 74 3d 37 00 00 00 00 00 05 03 50 49 4e",
            "00000020  47",
        ]

    run(web, body)
