"""The list's status column (5 cells wide): a Redis reply type that does not fit is shown
abbreviated on purpose (``integer`` as ``int``, not cut to ``integ``); the row keeps the full
name for the filter, sorting and the detail pane.

First every type the Redis dissector can name, drawn by the list; then, over a real daemon
serving traffic recorded from redis-server (RESP2 and RESP3), the lines as drawn."""

from __future__ import annotations

import asyncio

from shark_tui.app import SharkApp
from shark_tui.proto import redis as redis_proto
from shark_tui.widgets.entry_list import REDIS_TYPES, EntryList
from shark_tui.widgets.rows import Row, RowStore
from tests.widgets import protofixture
from tests.widgets.appfixture import wait_for

#: every reply type the dissector names (the status of a reply that is not OK or an error)
TYPES = sorted({*redis_proto._SCALARS.values(), *redis_proto._BULKS.values(),
                *redis_proto._AGGREGATES.values()})  # fmt: skip
STATUS_CELL = 5  # mark, time, ends, proto, method, status (one daemon: no node column)


def row(proto: str, status: str) -> Row:
    return Row(1.0, "n", "1:0", proto, "GET", "k", status, 1.0, 1, 1, False, "", "a", "b")


def status_cell(lst: EntryList, r: Row) -> str:
    return lst.line_text(0, r)[STATUS_CELL][0]


def test_every_redis_reply_type_fits_the_status_column() -> None:
    lst = EntryList(RowStore())
    shown = {t: status_cell(lst, row("redis", t)) for t in TYPES}
    assert all(len(cell) == 6 and cell.endswith(" ") for cell in shown.values()), shown
    # what fits is shown whole; the rest by their abbreviation, never a cut word
    assert {t: c.strip() for t, c in shown.items()} == {
        "array": "array", "attribute": "attr", "big_number": "big", "blob_error": "err",
        "boolean": "bool", "bulk": "bulk", "double": "dbl", "error": "error",
        "integer": "int", "map": "map", "null": "null", "push": "push", "set": "set",
        "simple": "str", "verbatim": "verb",
    }  # fmt: skip
    assert set(REDIS_TYPES) <= set(TYPES)  # no abbreviation of a type that is never named
    # OK and error texts are not types: as they are (an error text cut to the column)
    assert status_cell(lst, row("redis", "OK")) == "   OK "
    assert status_cell(lst, row("redis", "WRONGTYPE Operation")) == "WRONG "
    # other protocols' statuses are left alone, even one spelled like a Redis type
    assert status_cell(lst, row("http", "200")) == "  200 "
    assert status_cell(lst, row("kafka", "integer")) == "integ "


def test_real_redis_rows_as_drawn() -> None:
    async def main() -> None:
        with protofixture.proto_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 60)) as pilot:
                await wait_for(lambda: len(app.store) > 0)
                await pilot.press("slash", *"redis", "enter")
                await wait_for(lambda: app.store.shown and all(
                    r.proto == "redis" for r in app.store.shown))  # fmt: skip
                await pilot.pause()
                lst = app.entry_list
                rows = list(app.store.shown)
                assert len(rows) <= lst.size.height  # every row on screen
                seen: dict[str, str] = {}
                for y, r in enumerate(rows):
                    line = lst.render_line(y - lst.scroll_offset.y).text
                    cell = status_cell(lst, r)
                    assert cell in line, (line, cell)
                    seen[r.status] = cell.strip()
                # the traffic's wide types (INCR, ZSCORE, DEBUG PROTOCOL true/bignum/verbatim)
                assert {k: seen.get(k) for k in ("integer", "double", "boolean", "big_number",
                                                  "verbatim")} == {
                    "integer": "int", "double": "dbl", "boolean": "bool",
                    "big_number": "big", "verbatim": "verb"}  # fmt: skip
                assert seen["OK"] == "OK" and seen["bulk"] == "bulk"
                # the row keeps the full name: the filter finds it by it
                await pilot.press("slash", "ctrl+u", *'redis and status == "integer"', "enter")
                await wait_for(lambda: app.store.shown and all(
                    r.status == "integer" for r in app.store.shown))  # fmt: skip

    asyncio.run(main())
