"""The endpoints view counts incrementally (`EndpointCounter`): after any change to the rows
held — a newest-first backlog, live rows, two nodes interleaved, rows dropped at the cap, a
cleared list — it shows exactly what `endpoint_stats` computes over every row."""

from __future__ import annotations

import asyncio
import random

import pytest
from textual.widgets import DataTable

from shark_tui.app import SharkApp
from shark_tui.widgets import endpoints
from shark_tui.widgets.endpoints import EndpointCounter, EndpointsScreen, endpoint_stats
from shark_tui.widgets.rows import Row, RowStore
from tests.widgets.appfixture import wait_for
from tests.widgets.storedaemon import StoreDaemon

PATHS = ("/users/{n}", "/users/{n}/orders?x=1", "/health", "/orders/{h}", "/a b")


def rows(n: int, seed: int, t0: float, node: str = "a", step: float = 0.25) -> list[Row]:
    """``n`` rows from ``t0``, ``step`` apart, in time order: HTTP (ids in paths, errors,
    no-response), Redis, TCP; equal times now and then; latencies repeat."""
    rng = random.Random(seed)
    out = []
    ts = t0
    for i in range(n):
        ts += step if rng.random() < 0.8 else 0.0
        u = rng.random()
        lat = rng.choice((None, 0.5, 1.0, 1.5, 2.0, rng.random() * 50))
        if u < 0.7:
            proto, method = "http", rng.choice(("GET", "POST", ""))
            summary = rng.choice(PATHS).format(n=rng.randrange(40), h=f"{rng.getrandbits(40):010x}")
            status = rng.choice(("200", "404", "500", ""))
        elif u < 0.85:
            proto, method, summary, status = "redis", "GET", f"k{rng.randrange(9)}", "bulk"
        else:
            proto, method, summary, status = "tcp", "", f"{rng.randrange(3)} bytes ⇄ 0 bytes", ""
        out.append(Row(
            ts=ts, node=node, id=f"{seed}:{i}", proto=proto, method=method, summary=summary,
            status=status, latency_ms=lat, request_size=1, response_size=1, tls=False,
            error=rng.choice(("", "", "", "no_response")), src="10.0.0.1:1",
            dst=rng.choice(("api", "db", "10.0.0.9:80")),
        ))  # fmt: skip
    return out


def test_counter_follows_every_change_of_the_store() -> None:
    store = RowStore(cap=400)
    big, small = EndpointCounter(), EndpointCounter()  # the whole list; a top 7 (cut)

    def check() -> None:
        store.settle()
        big.sync(store.rows)
        small.sync(store.rows)
        want = endpoint_stats(store.rows)
        assert big.top() == want
        assert small.top(7) == want[:7]
        assert len(big) == len(store)

    check()
    # a newest-first backlog: batches older than everything held; the oldest of all is an
    # endpoint of one row, gone from the view when its row leaves at the cap
    backlog = rows(240, 1, 1000.0)
    for i in range(len(backlog), 0, -60):
        store.add(backlog[max(0, i - 60) : i])
        check()
    store.add([rows(1, 0, 990.0)[0]._replace(dst="solo")])
    check()
    assert "solo" in {s[0] for s in big.top()}
    # live rows, a batch at a time; past the cap the oldest leave
    for seed in range(2, 8):
        store.add(rows(50, seed, store.rows[-1].ts))
        check()
    assert store.dropped > 0
    assert "solo" not in {s[0] for s in big.top()}
    # another node's rows, between those held, and older and newer ones at once
    store.add(rows(30, 20, store.rows[100].ts, node="b", step=0.5))
    check()
    store.add(rows(5, 21, store.rows[0].ts - 10, node="b") + rows(5, 22, store.rows[-1].ts))
    check()
    assert big.sync(store.rows) is False and big.top() is big.top()  # nothing changed
    # cleared (a new filter): a new list, counted from nothing
    store.clear()
    check()
    assert big.top() == []
    store.add(rows(20, 30, 5000.0))
    check()


@pytest.mark.parametrize("thread_rows", [10_000, 0])
def test_view_over_fixture_rows_live(thread_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table shows `endpoint_stats` of the rows held, updated as live rows come in (the
    first count in a thread worker when over `THREAD_ROWS`)."""
    monkeypatch.setattr(endpoints, "THREAD_ROWS", thread_rows)

    def table_rows(table: DataTable) -> list[list[str]]:  # type: ignore[type-arg]
        return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]

    def want(app: SharkApp) -> list[list[str]]:
        return [list(endpoints._cells(s)) for s in endpoint_stats(app.store.rows)]

    async def main() -> None:
        with StoreDaemon(4) as d:
            app = SharkApp([(d.address, d.token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("e")
                await wait_for(lambda: isinstance(app.screen, EndpointsScreen))
                screen = app.screen
                assert isinstance(screen, EndpointsScreen)
                table = screen.query_one("#ep-table", DataTable)
                await wait_for(lambda: table.row_count == 4)
                assert table_rows(table) == want(app)
                assert table_rows(table)[0][:6] == [
                    "10.1.0.1:80",
                    "GET",
                    "/missing",
                    "4",
                    "1.3",
                    "100",
                ]
                d.add(4, 3)  # 12 more entries, live
                await wait_for(lambda: len(app.store) == 28)
                await wait_for(lambda: table_rows(table) == want(app), timeout=5)
                assert table_rows(table)[0][3] == "7"  # counts went up in place
                assert len(screen.counter) == 28

    asyncio.run(main())
