"""The endpoints view's refresh (`e`, once a second while open) at 200,000 rows held.

    python -m bench.bench_endpoints [--rows N] [--live N] [--rounds N]

Synthetic rows (`synthetic_rows`: HTTP with ids in the paths, Redis, Kafka and some raw TCP,
20 destinations, errors, latencies) fill a `RowStore`; the real `EndpointsScreen` is opened
over it in a Textual app under Pilot. Measured on the UI thread, per refresh:

- **before**: what the view did until now: `endpoint_stats` over every row held, then the
  table filled again;
- **after, idle**: `refresh_stats` with no row gained;
- **after, live**: `refresh_stats` after ``--live`` rows came in (a second of traffic) — at the
  cap, as many old rows leave;
- and the first count over the full list (a thread worker, once, when the view opens).

The counts shown are checked against `endpoint_stats` at the end (exit 1 if they differ)."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time

from shark_tui.widgets.rows import Row, RowStore

SERVICES = [f"shop/svc-{i}" for i in range(20)]
PATHS = [
    "/api/v1/users/{n}",
    "/api/v1/users/{n}/orders",
    "/api/v1/orders/{h}",
    "/api/v1/items?page={n}",
    "/health",
    "/metrics",
    "/login",
    "/static/app.js",
]


def synthetic_rows(n: int, seed: int = 1, t0: float = 1_700_000_000.0, rate: float = 1000.0,
                   first_id: int = 0) -> list[Row]:  # fmt: skip
    """``n`` rows in time order, ``rate`` a second from ``t0``: 80 % HTTP, 8 % Redis, 7 %
    Kafka, 5 % raw TCP (whose summaries are all different)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = t0 + (first_id + i) / rate
        u = rng.random()
        dst = rng.choice(SERVICES)
        lat: float | None = round(rng.lognormvariate(1.0, 1.0), 3)
        error = ""
        if u < 0.80:
            proto = "http"
            method = rng.choice(("GET", "GET", "GET", "POST", "PUT", "DELETE"))
            summary = rng.choice(PATHS).format(
                n=rng.randrange(100_000), h=f"{rng.getrandbits(64):016x}"
            )
            status = rng.choice(("200", "200", "200", "201", "204", "404", "500"))
            if rng.random() < 0.01:
                status, lat, error = "", None, "no_response"
        elif u < 0.88:
            proto, dst = "redis", "cache/redis-0"
            method = rng.choice(("GET", "SET", "HGETALL", "EXPIRE"))
            summary = f"session:{rng.randrange(50_000)}"
            status = rng.choice(("OK", "bulk", "nil"))
        elif u < 0.95:
            proto, dst = "kafka", "kafka/broker-0"
            method = rng.choice(("Produce", "Fetch", "Metadata"))
            summary = rng.choice(("orders", "payments", "audit"))
            status = "0"
        else:
            proto, method, status, lat = "tcp", "", "", None
            summary = f"{rng.randrange(1, 1 << 16)} bytes ⇄ {rng.randrange(1, 1 << 20)} bytes"
        out.append(Row(
            ts=ts, node="bench", id=f"{first_id + i}:1", proto=proto, method=method,
            summary=summary, status=status, latency_ms=lat, request_size=100,
            response_size=1000, tls=False, error=error, src=f"10.0.{i % 250}.{i % 200}:40000",
            dst=dst,
        ))  # fmt: skip
    return out


def _ms(t: float) -> float:
    return round((time.perf_counter() - t) * 1000, 2)


async def _run(rows: int, live: int, rounds: int) -> int:
    from textual.app import App
    from textual.widgets import DataTable

    from shark_tui.widgets.endpoints import SHOWN, EndpointsScreen, endpoint_stats

    store = RowStore(cap=rows)
    store.add(synthetic_rows(rows))
    store.settle()
    app: App[None] = App()
    async with app.run_test(size=(160, 40)) as pilot:
        t = time.perf_counter()
        screen = EndpointsScreen(store)
        screen.refresh_stats = lambda: None  # type: ignore[method-assign]  # timed by hand below
        await app.push_screen(screen)
        await pilot.pause()
        del screen.refresh_stats
        table = screen.query_one(DataTable)

        async def drawn() -> float:
            """Until the screen is drawn again (Pilot's pause: its own wait included)."""
            t = time.perf_counter()
            await pilot.pause()
            return _ms(t)

        baseline = [await drawn() for _ in range(rounds)]
        before, before_drawn = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            stats = endpoint_stats(store.rows)[:SHOWN]
            table.clear()
            for s in stats:
                table.add_row(*map(str, s))
            before.append(_ms(t))
            before_drawn.append(await drawn())
        table.clear()

        t = time.perf_counter()
        screen.refresh_stats()  # starts the first count in a thread
        while screen._building:
            await asyncio.sleep(0.001)
        first = _ms(t)
        idle = []
        for _ in range(rounds):
            t = time.perf_counter()
            screen.refresh_stats()
            idle.append(_ms(t))
        after, counting, drawing, after_drawn = [], [], [], []
        for r in range(rounds):
            store.add(synthetic_rows(live, seed=100 + r, first_id=rows + r * live))
            store.settle()  # the app's tick, not the view's refresh
            t = time.perf_counter()
            screen.counter.sync(store.rows)  # what refresh_stats does, in two parts
            screen.counter.top()
            counting.append(_ms(t))
            t2 = time.perf_counter()
            screen._show()
            drawing.append(_ms(t2))
            after.append(_ms(t))
            after_drawn.append(await drawn())
        await pilot.pause()
        want = endpoint_stats(store.rows)[:SHOWN]
        got = screen.counter.top()
        agree = got == want and table.row_count == len(want)

    def med(xs: list[float]) -> float:
        return round(statistics.median(xs), 2)

    print(f"rows held: {len(store):,} ({len(want)} endpoints shown); {live} rows a refresh")
    print(f"Pilot's pause with nothing to draw: median {med(baseline)} ms")
    print(f"before (every row, table refilled): median {med(before)} ms, best {min(before)} ms; "
          f"then until drawn: median {med(before_drawn)} ms")  # fmt: skip
    print(f"first count when the view opens (thread worker): {first} ms")
    print(f"refresh, no row gained: median {med(idle)} ms")
    print(f"refresh, {live} rows gained and {live} lost: median {med(after)} ms, "
          f"best {min(after)} ms, worst {max(after)} ms: counting {med(counting)} ms, "
          f"the table's cells {med(drawing)} ms; "
          f"then until drawn: median {med(after_drawn)} ms")  # fmt: skip
    print("counts agree with endpoint_stats:", agree)
    return 0 if agree else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--live", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    return asyncio.run(_run(a.rows, a.live, a.rounds))


if __name__ == "__main__":
    sys.exit(main())
