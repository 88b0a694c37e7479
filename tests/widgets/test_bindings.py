"""Bindings the other Pilot tests leave out, each over a real daemon socket and each asserting
what reached the daemon or what the list shows: the protocol toggles, `t`, `q`, paging,
follow-live paused by moving up and resumed by `F`/`end`, the filter bar's history and
completion, the command line's completion, the pod picker's `up`, the copy menu's `c` and
every key of the sort menu."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shark_tui.app import TOGGLES, SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.command_bar import COMMANDS
from shark_tui.widgets.copy_menu import CopyMenu
from shark_tui.widgets.pod_picker import PodPicker
from shark_tui.widgets.rows import COLUMNS, Row
from shark_tui.widgets.sort_menu import DESCENDING_FIRST, SORT_KEYS, SortMenu
from tests.widgets.appfixture import fixture_daemon, notes, wait_for
from tests.widgets.storedaemon import StoreDaemon


def _filters(app: SharkApp) -> list[str]:
    return [m.filter for m in app.links[0].sent if isinstance(m, wire.Subscribe)]


def _caught_up(app: SharkApp) -> list[str]:
    """The nodes of every `CaughtUp` the app handles from now on (the backlog of a
    subscription is done: an empty list is the daemon's answer, not a list still loading)."""
    seen: list[str] = []
    resumed = app.store.resumed

    def spy(node: str) -> None:
        seen.append(node)
        resumed(node)

    app.store.resumed = spy  # type: ignore[method-assign]
    return seen


def _lines(app: SharkApp) -> list[str]:
    """The entry list's lines as drawn."""
    el = app.entry_list
    return [el.render_line(y).text.rstrip() for y in range(el.size.height)]


def _drawn(app: SharkApp, row: Row, i: int) -> str:
    """What the list draws for ``row`` at index ``i``, cut to the list's width."""
    el = app.entry_list
    return "".join(text for text, _ in el.line_text(i, row))[: el.size.width].rstrip()


def _screenful(app: SharkApp, top: int) -> list[str]:
    """The lines a list scrolled to ``top`` shows: the rows from ``top`` on."""
    el = app.entry_list
    rows = app.store.shown
    h = el.size.height
    return [_drawn(app, rows[i], i) if i < len(rows) else "" for i in range(top, top + h)]


# -- protocol toggles -------------------------------------------------------------------------


@pytest.mark.parametrize("key, proto", [(str(i + 1), p) for i, p in enumerate(TOGGLES)])
def test_protocol_toggle_on_and_off(key: str, proto: str) -> None:
    """Each of 1–8 asks the daemon for its protocol (DESIGN.md's order) and the list shows the
    answer (the fixture is HTTP/1.1: `http` keeps every row, the others none); the same key
    again asks for everything again."""

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                done = _caught_up(app)
                await wait_for(lambda: len(app.store) == 16 and len(done) == 1)
                await pilot.press(key)
                await wait_for(lambda: len(_filters(app)) == 2 and len(done) == 2)
                assert _filters(app)[-1] == f"({proto})"
                assert app.toggled == {proto}
                await pilot.pause()
                want = 16 if proto == "http" else 0
                assert len(app.store) == want
                assert all(r.proto == "http" for r in app.store.shown)
                assert f"filter: ({proto})" in app.header.text

                await pilot.press(key)  # off again
                await wait_for(lambda: len(_filters(app)) == 3 and len(done) == 3)
                assert _filters(app)[-1] == ""
                assert app.toggled == set()
                await wait_for(lambda: len(app.store) == 16)
                assert "filter: (none)" in app.header.text

    asyncio.run(main())


def test_toggles_combine_with_each_other_and_the_typed_filter() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("slash", *"status >= 500", "enter")
                await wait_for(lambda: len(app.store) == 4)
                await pilot.press("8", "1", "2")
                await wait_for(lambda: len(_filters(app)) == 5)
                assert _filters(app)[2:] == [
                    "(tcp) and (status >= 500)",
                    "(http or tcp) and (status >= 500)",
                    "(http or http2 or tcp) and (status >= 500)",
                ]
                await wait_for(lambda: len(app.store) == 4)
                await pilot.press("8")
                await wait_for(lambda: len(_filters(app)) == 6)
                assert _filters(app)[-1] == "(http or http2) and (status >= 500)"
                assert {r.status for r in app.store.shown} <= {"500"}

    asyncio.run(main())


# -- the list: time format, paging, follow, quit -------------------------------------------


def test_t_cycles_the_time_column() -> None:
    """t: absolute (UTC, ms) → relative to the first row → delta to the row above → absolute,
    as drawn."""

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.pause()
                rows = list(app.store.shown)
                first = rows[0].ts

                def times() -> list[str]:
                    return [line[2:14] for line in _lines(app)[:16]]

                def absolute(ts: float) -> str:
                    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}"

                start = times()
                assert start == [absolute(r.ts) for r in rows]
                assert start[0] == "22:13:20.000"

                await pilot.press("t")
                await pilot.pause()
                assert app.entry_list.time_format == "relative"
                assert times() == [f"{r.ts - first:12.6f}" for r in rows]
                assert times()[0] == "    0.000000" and times()[4].strip().startswith("1.")

                await pilot.press("t")
                await pilot.pause()
                assert app.entry_list.time_format == "delta"
                prev = [rows[0].ts] + [r.ts for r in rows[:-1]]
                assert times() == [f"{r.ts - p:12.6f}" for r, p in zip(rows, prev)]

                await pilot.press("t")
                await pilot.pause()
                assert times() == start

    asyncio.run(main())


def test_pageup_pagedown_move_the_rows_shown() -> None:
    async def main() -> None:
        with fixture_daemon(conns=20) as (address, token):  # 80 rows
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                el = app.entry_list
                await wait_for(lambda: len(app.store) == 80)
                await pilot.pause()
                h = el.size.height
                assert h < 40
                bottom = 80 - h
                assert el.cursor == 79 and el.scroll_offset.y == bottom
                assert _lines(app) == _screenful(app, bottom)

                await pilot.press("pageup")
                await pilot.pause()
                assert el.cursor == 59 and not el.follow
                assert el.scroll_offset.y == min(bottom, 59)
                assert _lines(app) == _screenful(app, el.scroll_offset.y)
                await pilot.press("pageup", "pageup")
                await pilot.pause()
                assert el.cursor == 19 and el.scroll_offset.y == 19
                assert _lines(app)[0] == _drawn(app, app.store.shown[19], 19)
                assert _lines(app) == _screenful(app, 19)
                await pilot.press("pageup")  # stops at the first row
                await pilot.pause()
                assert el.cursor == 0 and el.scroll_offset.y == 0
                assert _lines(app) == _screenful(app, 0)

                await pilot.press("pagedown")  # row 20 is on screen: nothing scrolls
                await pilot.pause()
                assert el.cursor == 20 and el.scroll_offset.y == 0
                await pilot.press("pagedown")  # row 40 is not: it becomes the last line
                await pilot.pause()
                assert el.cursor == 40 and el.scroll_offset.y == 40 - h + 1
                assert _lines(app) == _screenful(app, 40 - h + 1)
                assert _lines(app)[-1] == _drawn(app, app.store.shown[40], 40)
                await pilot.press("pagedown", "pagedown")
                await pilot.pause()
                assert el.cursor == 79 and el.scroll_offset.y == bottom
                assert not el.follow  # paging down to the newest row: F or end follow
                assert _lines(app) == _screenful(app, bottom)

    asyncio.run(main())


def test_follow_pauses_when_moving_up_and_resumes_with_f_or_end() -> None:
    async def main() -> None:
        with StoreDaemon(4) as d:
            app = SharkApp([(d.address, d.token)])
            async with app.run_test(size=(160, 30)) as pilot:
                el = app.entry_list
                await wait_for(lambda: len(app.store) == 16)
                assert el.follow and el.cursor == 15

                # up: the list stops following; live rows do not move the cursor off its row
                await pilot.press("up")
                row = el.selected
                assert not el.follow and el.cursor == 14
                await wait_for(lambda: "follow off" in app.header.text)
                d.add(4, 1)
                await wait_for(lambda: len(app.store) == 20)
                await pilot.pause()
                assert el.selected == row and el.cursor == 14 and not el.follow

                # F: following again, on the newest row, and it stays there as rows come
                await pilot.press("F")
                assert el.follow and el.cursor == 19
                d.add(5, 1)
                await wait_for(lambda: len(app.store) == 24)
                await pilot.pause()
                assert el.cursor == 23 and el.selected == app.store.rows[-1]
                await wait_for(lambda: "FOLLOW" in app.header.text)

                # k pauses too; end resumes
                await pilot.press("k", "k")
                assert not el.follow and el.cursor == 21
                d.add(6, 1)
                await wait_for(lambda: len(app.store) == 28)
                await pilot.pause()
                assert el.cursor == 21
                await pilot.press("end")
                assert el.follow and el.cursor == 27
                d.add(7, 1)
                await wait_for(lambda: len(app.store) == 32)
                await pilot.pause()
                assert el.cursor == 31 and el.selected == app.store.rows[-1]

                # F while following: stops
                await pilot.press("F")
                assert not el.follow
                d.add(8, 1)
                await wait_for(lambda: len(app.store) == 36)
                await pilot.pause()
                assert el.cursor == 31

    asyncio.run(main())


def test_q_quits() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                assert app.return_code is None
                await pilot.press("q")
                await pilot.pause()
                assert app.return_code == 0
            assert not app.is_running

    asyncio.run(main())


# -- the filter bar: history and completion --------------------------------------------------


def test_filter_bar_history_up_down() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                for text in ('method == "POST"', "status >= 500"):
                    await pilot.press("slash", "ctrl+u", *text, "enter")
                    await wait_for(lambda: _filters(app)[-1] == text)  # noqa: B023
                assert app.filter_bar.history == ['method == "POST"', "status >= 500"]
                bar = app.filter_bar.input

                await pilot.press("slash")
                assert bar.value == "status >= 500"  # the bar opens on the filter in force
                await pilot.press("up")
                assert bar.value == "status >= 500"
                await pilot.press("up")
                assert bar.value == 'method == "POST"' and bar.cursor_position == len(bar.value)
                await pilot.press("up")  # the oldest: stays
                assert bar.value == 'method == "POST"'
                await pilot.press("down")
                assert bar.value == "status >= 500"
                await pilot.press("down")  # past the newest: empty
                assert bar.value == ""
                await pilot.press("up", "up", "enter")  # a recalled filter is sent
                await wait_for(lambda: _filters(app)[-1] == 'method == "POST"')
                await wait_for(lambda: len(app.store) == 4)
                assert {r.method for r in app.store.shown} == {"POST"}

    asyncio.run(main())


def test_filter_bar_tab_completes() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                bar = app.filter_bar.input
                error = app.query_one("#filter-error")
                await pilot.press("slash", *"stat", "tab")
                assert bar.value == "status" and bar.has_focus
                await pilot.press(*" >= 500 and d", "tab")  # several: listed under the bar
                assert bar.value == "status >= 500 and d"
                assert str(error.render()).split() == ["dst", "dst.ip", "dst.ns", "dst.pod",
                                                       "dst.port"]  # fmt: skip
                await pilot.press(*"st.por", "tab")
                assert bar.value == "status >= 500 and dst.port"
                await pilot.press(*" == 80", "enter")
                await wait_for(lambda: _filters(app)[-1] == "status >= 500 and dst.port == 80")
                await wait_for(lambda: len(app.store) == 4)

    asyncio.run(main())


# -- the command line, the pod picker, the copy menu -----------------------------------------


def test_command_line_tab_completes() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                line = app.command_bar.input
                error = app.query_one("#command-error")
                await pilot.press("colon", "tab")  # nothing typed: every command listed
                listed = str(error.render())
                assert listed == "  ".join(f":{c} {a}".strip() for c, (a, _) in COMMANDS.items())
                assert ":ns NAME" in listed and ":save PATH" in listed
                await pilot.press("n", "tab")
                assert line.value == "ns " and line.cursor_position == 3
                await pilot.press(*"default", "tab")  # an argument: left alone
                assert line.value == "ns default"
                await pilot.press("enter")
                await wait_for(lambda: _filters(app)[-1] == 'ns == "default"')
                await pilot.press("colon", *"tl", "tab")
                assert line.value == "tls"  # no argument: no space

    asyncio.run(main())


def test_pod_picker_up() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("p")
                assert isinstance(app.screen, PodPicker)
                await pilot.press("down", "down", "down", "up")
                await pilot.press("enter")
                await wait_for(lambda: len(_filters(app)) == 2)
                assert _filters(app)[-1] == 'ip == "10.0.0.3"'
                await pilot.press("escape")
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("p", "up", "enter")  # the first stays the first
                await wait_for(lambda: len(_filters(app)) == 4)
                assert _filters(app)[-1] == 'ip == "10.0.0.1"'
                await wait_for(lambda: len(app.store) == 4)
                assert {r.src for r in app.store.shown} == {"10.0.0.1:40000"}

    asyncio.run(main())


def test_copy_menu_c_copies_curl() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("g")  # GET /users?id=7
                row = app.entry_list.selected
                assert row is not None and row.summary == "/users?id=7"
                await pilot.press("x")
                await wait_for(lambda: isinstance(app.screen, CopyMenu))
                assert link.sent[-1] == wire.GetEntry(id=row.id)
                await pilot.press("c")
                await wait_for(lambda: not isinstance(app.screen, CopyMenu))
                assert app.clipboard.startswith("curl ")
                assert "http://api/users?id=7" in app.clipboard
                assert any(f"curl command of {row.id} copied" in n for n in notes(app))

    asyncio.run(main())


# -- the sort menu's keys ----------------------------------------------------------------------


def _order(column: str) -> Any:
    col = COLUMNS[column]
    return lambda r: (col(r), r.ts, r.node, r.id)


@pytest.mark.parametrize("column", [c for c in SORT_KEYS if c != "node"])
def test_sort_menu_key(column: str) -> None:
    """o, then the column's letter: the rows shown in that column's order (largest first for
    latency, size and status; time, already sorted ascending, reverses)."""
    key = SORT_KEYS[column][0]

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                rows = list(app.store.rows)
                await pilot.press("o")
                await wait_for(lambda: isinstance(app.screen, SortMenu))
                await pilot.press(key)
                await wait_for(lambda: not isinstance(app.screen, SortMenu))
                descending = column in DESCENDING_FIRST or column == "time"
                want = sorted(rows, key=_order(column))
                if descending:
                    want.reverse()
                assert app.store.sort_by == column and app.store.descending == descending
                assert list(app.store.shown) == want
                await pilot.pause()
                assert _lines(app)[:16] == _screenful(app, 0)[:16]
                assert [type(m) for m in app.links[0].sent] == [wire.Subscribe]

    asyncio.run(main())


def test_sort_menu_node_needs_nodes_and_esc_closes() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("o")
                await wait_for(lambda: isinstance(app.screen, SortMenu))
                await pilot.press("n")  # one daemon: no node column to sort by
                await pilot.pause()
                assert isinstance(app.screen, SortMenu) and app.store.sort_by == "time"
                await pilot.press("escape")
                await wait_for(lambda: not isinstance(app.screen, SortMenu))
                assert app.store.sort_by == "time" and not app.store.descending

    asyncio.run(main())
