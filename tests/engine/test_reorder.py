"""Reorderer: batches from several sources come out in time order, nothing lost or doubled."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.engine.reorder import Reorderer

META = struct.Struct("=IIII")
MS = 1_000_000


def batch(sid: int, ts_us: list[int]) -> tuple[int, bytes, bytes]:
    """Packets whose bytes name their source and timestamp (µs)."""
    data = b"".join(b"%d:%012d" % (sid, t) for t in ts_us)
    size = len(data) // len(ts_us) if ts_us else 0
    meta = b"".join(
        META.pack(t // 1_000_000, t % 1_000_000, i * size, size) for i, t in enumerate(ts_us)
    )
    return sid, data, meta


def unpack(out: list[tuple[int, bytes, bytes]]) -> list[tuple[int, int]]:
    got = []
    for sid, data, meta in out:
        for sec, usec, off, caplen in META.iter_unpack(meta):
            s, t = data[off : off + caplen].split(b":")
            assert int(s) == sid and int(t) == sec * 1_000_000 + usec
            got.append((sec * 1_000_000 + usec, sid))
    return got


def test_one_source_passes_through_at_once() -> None:
    r = Reorderer()
    b1, b2 = batch(0, [5, 6]), batch(0, [7])
    r.push(b1)
    r.push(b2)
    assert r.pop(0, multi=False) == [b1, b2]
    assert r.held == 0


def test_non_overlapping_batches_go_whole_and_in_order() -> None:
    r = Reorderer(hold_ns=100 * MS)
    late, early = batch(1, [300_000, 310_000]), batch(0, [100_000, 200_000])
    r.push(late)
    r.push(early)
    assert r.pop(150 * MS, multi=True) == []  # both too young: within the hold
    assert r.pop(350 * MS, multi=True) == [early]  # arrived second, older: goes first
    assert r.pop(450 * MS, multi=True) == [late]
    assert r.stats == {"whole_batches": 2, "merged_packets": 0}


def test_overlapping_batches_are_merged_and_the_young_part_held() -> None:
    r = Reorderer(hold_ns=100 * MS)
    r.push(batch(0, [100_000, 300_000, 500_000]))
    r.push(batch(1, [200_000, 400_000]))
    first = unpack(r.pop(410 * MS, multi=True))  # cutoff 310 ms
    assert first == [(100_000, 0), (200_000, 1), (300_000, 0)]
    assert r.held == 2
    rest = unpack(r.pop(0, multi=True, final=True))
    assert rest == [(400_000, 1), (500_000, 0)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.lists(st.integers(0, 2_000_000), min_size=1, max_size=20)),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.integers(0, 3_000), min_size=1, max_size=6),
)
def test_any_interleaving_comes_out_sorted_and_complete(
    batches: list[tuple[int, list[int]]], pops_ms: list[int]
) -> None:
    """Each source's batches are internally sorted (as a kernel ring gives them); whatever the
    arrival order and pop times, the output is every packet once, and sorted wherever the
    packets were older than the hold when popped."""
    r = Reorderer(hold_ns=100 * MS)
    sent = []
    out: list[tuple[int, int]] = []
    pops = iter(sorted(pops_ms))
    for i, (sid, ts) in enumerate(batches):
        ts = sorted(ts)
        sent += [(t, sid) for t in ts]
        r.push(batch(sid, ts))
        if i % 2:
            now = next(pops, 3_000) * MS
            got = unpack(r.pop(now, multi=True))
            assert [t for t, _ in got] == sorted(t for t, _ in got)  # each release in order...
            assert all(t * 1000 <= now - 100 * MS for t, _ in got)  # ...and older than the hold
            out += got
    got = unpack(r.pop(0, multi=True, final=True))
    assert [t for t, _ in got] == sorted(t for t, _ in got)
    out += got
    assert sorted(out) == sorted(sent)  # every packet once
    assert r.held == 0
