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


def test_a_cleared_list_is_freed_a_slice_at_a_time() -> None:
    import sys
    import weakref

    class Probe:  # a row field that says when the last row holding it is gone
        pass

    store = RowStore()
    probes = [Probe() for _ in range(5)]
    refs = [weakref.ref(p) for p in probes]
    store.add([row(float(t), t)._replace(summary=probes[t % 5]) for t in range(50)])  # type: ignore[arg-type]
    store.settle()
    store.sort("status")
    assert len(store.shown) == 50  # (a sorted copy of the rows is made and kept)
    del probes
    store.clear()
    assert len(store) == 0 and list(store.shown) == []
    assert all(r() is not None for r in refs)  # not freed on the keystroke
    assert store.reap(20) == 30
    assert store.reap(20) == 10
    assert all(r() is not None for r in refs)  # the oldest rows still hold every probe
    assert store.reap(20) == 0
    assert all(r() is None for r in refs), [sys.getrefcount(r()) for r in refs]
    assert store.reap() == 0
