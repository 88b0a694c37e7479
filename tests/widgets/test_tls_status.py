"""The TLS status view (`L`, `:tls`): what the app asks each daemon (`wire.TlsStatus`) and what
it shows — "TLS capture is off" from a daemon without it, and from a real
``shark-tui daemon --tls --iface lo`` the ``openssl s_server -www`` process as not visible
because of BIO-based I/O while its curl client is visible.

The real-daemon test runs as root with eBPF (CI does): a machine without them fails here,
never skips."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.command_bar import parse
from shark_tui.widgets.help import HelpScreen
from shark_tui.widgets.tls_status import TlsStatusScreen, process_rows, status_lines
from tests.ebpf import tlspeers
from tests.widgets.appfixture import fixture_daemon, tls_report_daemon, wait_for

REPORT: dict[str, Any] = {
    "enabled": True,
    "kernel_path": "kprobes",
    "libraries": [
        {"path": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
         "attached": ["SSL_read", "SSL_write"], "error": None},
        {"path": "/opt/old/libssl.so.1.1", "attached": [],
         "error": "probing SSL_read in /opt/old/libssl.so.1.1 failed: no such symbol"},
    ],
    "processes": [
        {"pid": 10, "comm": "curl", "visible": True, "exited": True,
         "reason": "visible: SSL_read/SSL_write uprobes", "tls_connections": ["a ⇄ b"]},
        {"pid": 20, "comm": "openssl", "visible": False, "exited": False,
         "reason": "BIO-based I/O: its TLS connections never went through SSL_read/SSL_write",
         "tls_connections": ["c ⇄ d", "e ⇄ f"]},
        {"pid": 30, "comm": "nginx", "visible": None, "exited": False,
         "reason": "probes attached; no TLS traffic seen yet", "tls_connections": []},
    ],
    "lost": {"ring_full_chunks": 3, "unreadable_bytes": 0},
}  # fmt: skip


def _sent(link: Any) -> list[wire.Message]:
    return [m for m in link.sent if isinstance(m, wire.TlsStatus)]


def test_lines_and_rows_of_a_report() -> None:
    lines = status_lines(REPORT)
    assert lines[0][0].startswith("kernel path: kprobes (kprobes on tcp_sendmsg")
    assert lines[1] == ("library /usr/lib/x86_64-linux-gnu/libssl.so.3: probed SSL_read, "
                        "SSL_write", "")  # fmt: skip
    assert lines[2][1] == "error" and "no such symbol" in lines[2][0]
    assert lines[3] == ("lost: ring full chunks 3", "warning")
    assert [(r.pid, r.comm, r.visible, r.connections, r.exited) for r in process_rows(REPORT)] == [
        (10, "curl", "yes", 1, True), (20, "openssl", "no", 2, False),
        (30, "nginx", "-", 0, False),
    ]  # fmt: skip
    off = {"enabled": False, "reason": "the daemon runs without --tls"}
    assert status_lines(off) == [("TLS capture is off: the daemon runs without --tls", "off")]
    assert process_rows(off) == []
    broken = {"enabled": True, "error": "RuntimeError('gone')"}
    assert status_lines(broken) == [("TLS status unavailable: RuntimeError('gone')", "error")]
    empty = {"enabled": True, "kernel_path": "tracepoints", "libraries": [], "processes": []}
    assert [t for t, _ in status_lines(empty)][1:] == [
        "no libssl probed yet: no process maps one", "no process using TLS seen yet"]  # fmt: skip
    assert parse(":tls") == ("tls", "")


def test_view_says_tls_capture_is_off_and_refreshes() -> None:
    """The fixture daemon runs without TLS capture: asked (TlsStatus), it says so, and the
    view says it, asks again every 2 s while open and never once closed; `:tls` opens it too."""

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                assert _sent(link) == []
                await pilot.press("L")
                await wait_for(lambda: isinstance(app.screen, TlsStatusScreen))
                screen = app.screen
                assert isinstance(screen, TlsStatusScreen)
                await wait_for(lambda: screen.reports[0] is not None)
                assert _sent(link) == [wire.TlsStatus()]
                assert screen.reports[0] == {"enabled": False, "processes": [],
                                             "reason": "the daemon runs without --tls"}  # fmt: skip
                await pilot.pause()
                assert screen.info_text(0) == "TLS capture is off: the daemon runs without --tls"
                assert str(screen.query_one("#tls-node-0").render()) == "fixture"
                assert screen.table_rows(0) == []
                assert not screen.query_one("#tls-procs-0").display

                await wait_for(lambda: len(_sent(link)) == 2, timeout=5)  # 2 s later: again
                await pilot.press("escape")
                assert not isinstance(app.screen, TlsStatusScreen)
                asked = len(_sent(link))
                await asyncio.sleep(2.5)
                assert len(_sent(link)) == asked  # closed: nothing more asked

                await pilot.press("colon", *"tls", "enter")
                await wait_for(lambda: isinstance(app.screen, TlsStatusScreen))
                await wait_for(lambda: len(_sent(link)) == asked + 1)
                await pilot.press("escape")
                assert not isinstance(app.screen, TlsStatusScreen)

    asyncio.run(main())


def test_rows_of_a_report_per_daemon_and_the_key_in_help_and_palette() -> None:
    """Two daemons: one with TLS capture (a fixed report), one without; each its own part.
    The key is in `?` help and the command palette with its id."""

    async def main() -> None:
        with tls_report_daemon(REPORT, node="node-a") as a, tls_report_daemon(None, "node-b") as b:
            app = SharkApp([a, b])
            async with app.run_test(size=(160, 40)) as pilot:
                await wait_for(lambda: all(link.up for link in app.links))
                await pilot.press("L")
                await wait_for(lambda: isinstance(app.screen, TlsStatusScreen))
                screen = app.screen
                assert isinstance(screen, TlsStatusScreen)
                await wait_for(lambda: None not in screen.reports)
                await pilot.pause()
                assert [_sent(link) for link in app.links] == [[wire.TlsStatus()]] * 2
                assert screen.table_rows(0) == [
                    ["10", "curl", "yes", "1", "visible: SSL_read/SSL_write uprobes"],
                    ["20", "openssl", "no", "2", "BIO-based I/O: its TLS connections never "
                                                 "went through SSL_read/SSL_write"],
                    ["30", "nginx", "-", "0", "probes attached; no TLS traffic seen yet"],
                ]  # fmt: skip
                info = screen.info_text(0).splitlines()
                assert info[0].startswith("kernel path: kprobes")
                assert "/opt/old/libssl.so.1.1" in info[2] and "no such symbol" in info[2]
                assert screen.info_text(1) == "TLS capture is off: the daemon runs without --tls"
                assert screen.table_rows(1) == []
                nodes = [str(w.render()) for w in screen.query(".tls-node")]
                assert nodes == ["node-a", "node-b"]
                await pilot.press("escape")

                await pilot.press("question_mark")
                assert isinstance(app.screen, HelpScreen)
                by_id = {r[3]: r for r in app.screen.rows()}
                assert by_id["app.tls_status"][:2] == ("main", "L")
                await pilot.press("escape")
                actions = {a[2]: a for a in app.palette_actions()}
                assert actions["tls_status"][1] == "L · app.tls_status"
                assert actions["tls_status"][0].startswith("TLS status")

    asyncio.run(main())


def test_key_is_rebindable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "shark-tui" / "keys.toml"
    keys.parent.mkdir()
    keys.write_text('"app.tls_status" = "ctrl+t"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("L")
                await pilot.pause()
                assert not isinstance(app.screen, TlsStatusScreen)
                await pilot.press("ctrl+t")
                await wait_for(lambda: isinstance(app.screen, TlsStatusScreen))

    asyncio.run(main())


# -- a real daemon with eBPF TLS capture --------------------------------------------------------


@pytest.fixture
def tls_daemon() -> Iterator[tuple[str, str]]:
    """(address, token) of ``shark-tui daemon --tls --iface lo``."""
    with tlspeers.tls_daemon("shark-tls-ui-") as (_d, sock, token_file), open(token_file) as f:
        yield sock, f.read().strip()


def test_real_daemon_shows_s_server_not_visible_and_curl_visible(
    tls_daemon: tuple[str, str],
) -> None:
    sock, token = tls_daemon

    async def main(port: int, server_pid: int, curl_pid: int) -> list[list[str]]:
        app = SharkApp([(sock, token)])
        async with app.run_test(size=(200, 40)) as pilot:
            link = app.links[0]
            await wait_for(lambda: link.up, timeout=20)
            await pilot.press("L")
            await wait_for(lambda: isinstance(app.screen, TlsStatusScreen))
            screen = app.screen
            assert isinstance(screen, TlsStatusScreen)

            def shown() -> bool:
                pids = {row[0]: row for row in screen.table_rows(0)}
                srv = pids.get(str(server_pid))
                # (until the tracer's next /proc scan finds s_server's libssl, the daemon
                # may call it statically linked: the view shows what the daemon says)
                return (srv is not None and srv[4].startswith("BIO-based I/O")
                        and str(curl_pid) in pids)  # fmt: skip

            await wait_for(shown, timeout=25)
            assert _sent(link) and all(m == wire.TlsStatus() for m in _sent(link))
            info = screen.info_text(0)
            assert info.startswith("kernel path: tracepoints"), info
            assert "libssl" in info and ": probed " in info and "SSL_read" in info, info
            rows = screen.table_rows(0)
            await pilot.press("escape")
            assert not isinstance(app.screen, TlsStatusScreen)
            return rows

    with tempfile.TemporaryDirectory() as tmp:
        cert, _key = tlspeers.make_cert(Path(tmp))
        with tlspeers.openssl_s_server(cert) as (port, server_pid):
            curl_pid = tlspeers.curl_once(port)
            rows = asyncio.run(main(port, server_pid, curl_pid))
    by_pid = {row[0]: row for row in rows}
    srv = by_pid[str(server_pid)]
    assert srv[1] == "openssl" and srv[2] == "no", srv
    assert srv[4].startswith("BIO-based I/O"), srv
    assert int(srv[3]) >= 1, srv
    client = by_pid[str(curl_pid)]
    assert client[1] == "curl" and client[2] == "yes", client
    assert client[4].startswith("visible"), client
