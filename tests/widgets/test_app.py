"""The app over a real daemon socket (Pilot): what the user presses reaches the daemon as the
right requests, and the rows shown are the daemon's answers."""

from __future__ import annotations

import asyncio

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.detail import DetailScreen
from tests.widgets.appfixture import fixture_daemon


async def _wait(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def test_rows_filter_toggle_and_detail() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await _wait(lambda: len(app.store) == 16)
                assert [type(m) for m in link.sent] == [wire.Subscribe]
                assert {r.method for r in app.store.rows} == {"GET", "POST", "HEAD"}
                assert app.entry_list.cursor == 15  # following: on the newest row

                # / types a filter; enter sends it to the daemon, the list is its answer
                await pilot.press("slash")
                await pilot.press(*"status >= 500")
                await pilot.press("enter")
                await _wait(lambda: len(link.sent) == 2 and len(app.store) == 4)
                assert link.sent[-1].filter == "status >= 500"  # type: ignore[attr-defined]
                assert {r.status for r in app.store.rows} == {"500"}

                # an invalid filter is not sent; the bar says where it is wrong
                await pilot.press("slash")
                for _ in range(20):
                    await pilot.press("backspace")
                await pilot.press(*"status >=")
                await pilot.press("enter")
                await pilot.pause()
                assert len(link.sent) == 2
                assert "column" in str(app.query_one("#filter-error").render()).lower()
                await pilot.press("escape")

                # esc on the bare list clears the filter; 7 toggles redis (nothing here)
                await pilot.press("escape")
                await _wait(lambda: len(link.sent) == 3 and len(app.store) == 16)
                assert link.sent[-1].filter == ""  # type: ignore[attr-defined]
                await pilot.press("1")
                await _wait(lambda: len(link.sent) == 4)
                assert link.sent[-1].filter == "(http)"  # type: ignore[attr-defined]
                await pilot.press("7")
                await _wait(lambda: len(link.sent) == 5)
                assert link.sent[-1].filter == "(http or redis)"  # type: ignore[attr-defined]

                # enter opens the selected row's full entry (GetEntry)
                await _wait(lambda: len(app.store) == 16)
                await pilot.press("k", "enter")
                await _wait(lambda: isinstance(app.screen, DetailScreen))
                got = link.sent[-1]
                assert isinstance(got, wire.GetEntry)
                assert got.id == app.store.rows[14].id
                assert app.screen.entry["id"] == got.id  # type: ignore[attr-defined]
                await pilot.press("escape")
                assert not isinstance(app.screen, DetailScreen)

    asyncio.run(main())


def test_endpoints_view() -> None:
    """e: per destination, method and path template — counts and error % of the rows shown."""
    from shark_tui.widgets.endpoints import EndpointsScreen, endpoint_stats

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await _wait(lambda: len(app.store) == 16)
                await pilot.press("e")
                await _wait(lambda: isinstance(app.screen, EndpointsScreen))
                stats = endpoint_stats(app.store.rows)
                # 4 connections x (GET /users, POST /orders, HEAD /health, GET /missing 500)
                by_path = {(m, t): (n, err) for _d, m, t, n, _r, err, _p50, _p99 in stats}
                assert by_path == {
                    ("GET", "/users"): (4, 0.0),
                    ("POST", "/orders"): (4, 0.0),
                    ("HEAD", "/health"): (4, 0.0),
                    ("GET", "/missing"): (4, 100.0),
                }
                table = app.screen.query_one("#ep-table")
                assert table.row_count == 4  # type: ignore[attr-defined]
                await pilot.press("escape")
                assert not isinstance(app.screen, EndpointsScreen)

    asyncio.run(main())


def test_raw_tab_shows_the_reassembled_stream() -> None:
    """The Raw tab asks the daemon for the connection's bytes (GetStream) only when opened;
    client and server bytes in order; h shows them as hex."""
    from textual.widgets import Static, TabbedContent

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 40)) as pilot:
                link = app.links[0]
                await _wait(lambda: len(app.store) == 16)
                await pilot.press("g", "enter")  # the oldest row: GET /users?id=7
                await _wait(lambda: isinstance(app.screen, DetailScreen))
                assert not any(isinstance(m, wire.GetStream) for m in link.sent)
                app.screen.query_one(TabbedContent).active = "tab-raw"
                await _wait(lambda: isinstance(link.sent[-1], wire.GetStream))
                body = app.screen.query_one("#raw-body", Static)
                await _wait(lambda: "HTTP/1.1 200 OK" in str(body.render()))
                text = str(body.render())
                # the whole keep-alive connection, requests and responses in order
                assert text.index("GET /users?id=7") < text.index("HTTP/1.1 200 OK")
                assert text.index("HTTP/1.1 200 OK") < text.index("POST /orders")
                assert text.index("POST /orders") < text.index("GET /missing")
                await pilot.press("h")
                await _wait(lambda: "47 45 54 20" in str(body.render()))  # "GET " in hex

    asyncio.run(main())


def test_search_in_the_detail_pane() -> None:
    """/ in the detail pane finds the term in the tab shown; n and N go through the matches."""
    from textual.widgets import Static

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 40)) as pilot:
                await _wait(lambda: len(app.store) == 16)
                await pilot.press("g", "enter")  # GET /users?id=7: Host and 4 header lines
                await _wait(lambda: isinstance(app.screen, DetailScreen))
                screen = app.screen
                await pilot.press("slash", *"host", "enter")
                status = screen.query_one("#detail-search-status", Static)
                await _wait(lambda: "match 1 of" in str(status.render()))
                assert screen.matches and screen.current == 0  # type: ignore[attr-defined]
                await pilot.press("n")
                n = len(screen.matches)  # type: ignore[attr-defined]
                assert screen.current == (1 % n)  # type: ignore[attr-defined]
                await pilot.press("N", "N")
                assert screen.current == (n - 1) % n  # type: ignore[attr-defined]
                await pilot.press("slash", *"nowhere-to-be-found", "enter")
                await _wait(lambda: "no 'nowhere-to-be-found'" in str(status.render()))

    asyncio.run(main())
