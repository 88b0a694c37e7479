"""RowStore: whatever order batches come in (live ones oldest first, a backlog newest first,
or interleaved), the rows are in (ts, node, id) order, capped, each once."""

from __future__ import annotations

import random

from shark_tui.widgets.rows import Row, RowStore


def row(ts: float, i: int) -> Row:
    return Row(ts, "n", f"1:{i}", "http", "GET", "/", "200", 1.0, 1, 1, False, "", "a", "b")


def keys(store: RowStore) -> list[tuple[float, str]]:
    return [(r.ts, r.id) for r in store.rows]


def test_backlog_newest_first_then_live() -> None:
    store = RowStore()
    rows = [row(float(t), t) for t in range(1000)]
    for hi in range(1000, 0, -100):  # the backlog: newest batch first
        store.add(list(reversed(rows[hi - 100 : hi])))
        store.settle()
    store.add([row(1000.0 + t, 1000 + t) for t in range(5)])  # live
    store.settle()
    assert keys(store) == sorted(keys(store)) and len(store) == 1005


def test_interleaved_batches_and_the_cap() -> None:
    rng = random.Random(5)
    store = RowStore(cap=300)
    everything = [row(rng.uniform(0, 100), i) for i in range(1000)]
    for i in range(0, 1000, 37):
        store.add(everything[i : i + 37])
        store.settle()
    assert keys(store) == sorted(keys(store))
    assert len(store) == 300 and store.dropped == 700
