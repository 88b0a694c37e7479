"""Sorting the list (o, v), pausing capture (P) and clearing the list (C), with Pilot over a
real daemon socket: which rows are shown in which order, and what was asked of the daemon."""

from __future__ import annotations

import asyncio

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.help import HelpScreen
from shark_tui.widgets.sort_menu import SortMenu
from tests.widgets.appfixture import fixture_daemon, notes, wait_for
from tests.widgets.storedaemon import StoreDaemon


def latencies(app: SharkApp) -> list[float | None]:
    return [r.latency_ms for r in app.store.shown]


def by(app: SharkApp, column: str) -> list[tuple[object, float]]:
    """(value, ts) of every row shown, as the list shows them."""
    return [(getattr(r, column), r.ts) for r in app.store.shown]


def test_sort_by_column_reverse_follow_and_live_rows() -> None:
    async def main() -> None:
        with StoreDaemon(4) as d:
            app = SharkApp([(d.address, d.token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                el = app.entry_list
                assert el.follow and "sort time ▲" in app.header.text
                time_order = list(app.store.shown)

                # o opens the menu; l sorts by latency, slowest first
                await pilot.press("o")
                await wait_for(lambda: isinstance(app.screen, SortMenu))
                await pilot.press("l")
                await wait_for(lambda: not isinstance(app.screen, SortMenu))
                want = sorted(time_order, key=lambda r: (r.latency_ms, r.ts), reverse=True)
                assert list(app.store.shown) == want
                assert "sort latency ▼" in app.header.text
                assert "LATENCY▼" in str(app.query_one("#columns").render())
                assert not el.follow and "follow off" in app.header.text  # time order only
                assert [type(m) for m in link.sent] == [wire.Subscribe]  # sorted here, not asked

                # the cursor stays on its row; the same column again reverses; v too
                await pilot.press("g", "j", "j")
                row = el.selected
                await pilot.press("o", "l")
                await wait_for(lambda: app.store.descending is False)
                assert list(app.store.shown) == want[::-1]
                assert el.selected == row and "sort latency ▲" in app.header.text
                await pilot.press("v")
                assert list(app.store.shown) == want and el.selected == row

                # the menu by enter, on the highlighted column: summary, then method (a..z)
                await pilot.press("o")
                await wait_for(lambda: isinstance(app.screen, SortMenu))
                await pilot.press("u")
                await wait_for(lambda: app.store.sort_by == "summary")
                assert by(app, "summary") == sorted(by(app, "summary"))

                # live rows go where they belong, the cursor stays on its row
                row = el.selected
                d.add(4, 2)  # two connections captured now: 8 entries
                await wait_for(lambda: len(app.store) == 24)
                assert by(app, "summary") == sorted(by(app, "summary"))
                assert el.selected == row and not el.follow

                # F: back to time order, following the newest
                await pilot.press("F")
                assert app.store.sort_by == "time" and el.follow
                assert list(app.store.shown) == app.store.rows
                assert el.cursor == 23 and "sort time ▲" in app.header.text
                # time, newest first: following keeps the cursor at the top
                await pilot.press("v")
                assert el.follow and el.cursor == 0
                assert app.store.shown[0].ts == max(r.ts for r in app.store.rows)
                d.add(6, 1)
                await wait_for(lambda: len(app.store) == 28)
                await pilot.pause()
                assert el.cursor == 0 and el.selected == max(app.store.rows, key=lambda r: r.ts)
                assert "TIME▼" in str(app.query_one("#columns").render())

    asyncio.run(main())


def test_sort_keys_are_in_help_and_rebindable() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 50)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("question_mark")
                await wait_for(lambda: isinstance(app.screen, HelpScreen))
                rows = {bid: (keys, text) for _, keys, text, bid in app.screen.rows()}  # type: ignore[attr-defined]
                assert rows["entry_list.sort"][0] == "o"
                assert rows["entry_list.reverse"][0] == "v"
                assert rows["app.pause"][0] == "P" and rows["app.clear"][0] == "C"
                assert rows["sort.latency"][0] == "l"
                assert "again: reverse" in rows["sort.status"][1]
                ids = {b.id for _, bs in app.binding_groups() for b in bs}
                assert {"entry_list.sort", "sort.time", "sort.summary", "app.pause"} <= ids

    asyncio.run(main())


def test_pause_and_resume_capture() -> None:
    """P asks every daemon to pause (wire.Pause); the header says paused from the daemon's
    own status; P again resumes."""

    async def main() -> None:
        with StoreDaemon(4, capturing=True) as d:
            app = SharkApp([(d.address, d.token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16 and "fixture" in app.header.stats)
                await pilot.pause()
                assert "● capturing lo" in app.header.text
                await pilot.press("P")
                await wait_for(lambda: isinstance(link.sent[-1], wire.Pause))
                assert link.sent[-1] == wire.Pause(paused=True)
                await wait_for(lambda: "● paused" in app.header.text)
                assert d.pauses == [True] and app.header.stats["fixture"]["paused"] is True
                assert app.query_one("#header-state").has_class("-warn")
                await pilot.press("P")
                await wait_for(lambda: "● capturing lo" in app.header.text)
                assert link.sent[-1] == wire.Pause(paused=False)
                assert d.pauses == [True, False]
                assert len(app.store) == 16  # the list is not touched

    asyncio.run(main())


def test_pause_on_a_daemon_that_does_not_capture() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("P")
                await wait_for(lambda: any("nothing to pause" in n for n in notes(app)))
                assert app.links[0].sent[-1] == wire.Pause(paused=True)
                assert "● stored" in app.header.text

    asyncio.run(main())


def test_clear_empties_the_list_not_the_store() -> None:
    """C asks nothing of the daemon; what was cleared does not come back with another filter,
    and entries stored after it do."""

    async def main() -> None:
        with StoreDaemon(4) as d:
            app = SharkApp([(d.address, d.token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                newest = max(r.ts for r in app.store.rows)
                await pilot.press("C")
                assert len(app.store) == 0 and app.entry_list.selected is None
                assert [type(m) for m in link.sent] == [wire.Subscribe]
                assert "entries 0" in app.header.text
                d.add(4, 1)  # stored after the clear: shown
                await wait_for(lambda: len(app.store) == 4)
                assert {r.src for r in app.store.rows} == {"10.0.0.5:40004"}
                # another filter: the daemon is asked for entries after the clear only
                await pilot.press("1")
                await wait_for(lambda: len(link.sent) == 2)
                sub = link.sent[-1]
                assert isinstance(sub, wire.Subscribe) and sub.filter == "(http)"
                assert sub.since > newest
                await wait_for(lambda: len(app.store) == 4)
                await pilot.pause(0.3)
                assert {r.src for r in app.store.rows} == {"10.0.0.5:40004"}
                assert d.server is not None
                assert d.rec.status()["flows"] == 5  # the store kept everything

    asyncio.run(main())


def test_pause_with_two_nodes_asks_only_the_capturing_one() -> None:
    async def main() -> None:
        with (
            StoreDaemon(2, node="cap", capturing=True) as a,
            StoreDaemon(1, node="file", first=4) as b,
        ):
            app = SharkApp([(a.address, a.token), (b.address, b.token)])
            async with app.run_test(size=(180, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 12 and len(app.header.stats) == 2)
                la, lb = app.links
                await pilot.press("P")
                await wait_for(lambda: "● paused on 1/2 nodes" in app.header.text)
                assert la.sent[-1] == wire.Pause(paused=True) and a.pauses == [True]
                assert not any(isinstance(m, wire.Pause) for m in lb.sent)
                await pilot.press("P")
                await wait_for(lambda: "● capturing on 1/2 nodes" in app.header.text)
                assert la.sent[-1] == wire.Pause(paused=False) and a.pauses == [True, False]
                # sorted by node: the node column's rows together, the header names it
                await pilot.press("o", "n")
                await wait_for(lambda: app.store.sort_by == "node")
                assert [r.node for r in app.store.shown] == ["cap"] * 8 + ["file"] * 4
                assert "NODE▲" in str(app.query_one("#columns").render())

    asyncio.run(main())
