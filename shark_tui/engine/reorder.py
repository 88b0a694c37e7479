"""Batches from several capture sources, handed to the store in time order.

Each source's kernel ring delivers its packets in time order, but the sources' threads hand
their batches over independently: a pod-to-pod call crossing two veths arrives as one batch
per veth, whose time ranges overlap. Stored in arrival order, a response could land in the
file before its request (the store keeps the first copy of a packet seen on two sources), and
a reader that takes the file in order — tshark, `shark-tui dissect` — would mis-pair them.

`Reorderer` holds batches back for `HOLD_NS` (longer than libpcap's read timeout plus thread
scheduling) and releases what is older than that in timestamp order: whole batches when their
time ranges do not overlap (the cheap, common case), packet by packet where they do. With a
single source nothing is held: its ring is already in order.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["HOLD_NS", "Batch", "Reorderer"]

HOLD_NS: Final = 250_000_000
_NS: Final = 1_000_000_000
_META: Final = struct.Struct("=IIII")  # sec, usec, offset, caplen (pcapy-ng next_batch)

Batch = tuple[int, bytes, bytes]  # source id, packet bytes, metadata


def _first_last(meta: bytes) -> tuple[int, int]:
    s0, u0, _, _ = _META.unpack_from(meta, 0)
    s1, u1, _, _ = _META.unpack_from(meta, len(meta) - 16)
    return s0 * _NS + u0 * 1000, s1 * _NS + u1 * 1000


class Reorderer:
    """See the module docstring. ``stats``: batches passed whole, packets merged one by one."""

    def __init__(self, hold_ns: int = HOLD_NS) -> None:
        self.hold_ns = hold_ns
        # (first ts, last ts, arrival number, batch)
        self._held: list[tuple[int, int, int, Batch]] = []
        self._arrivals = 0
        self.stats = {"whole_batches": 0, "merged_packets": 0}

    @property
    def held(self) -> int:
        return len(self._held)

    def push(self, batch: Batch) -> None:
        if not batch[2]:
            return
        first, last = _first_last(batch[2])
        self._arrivals += 1
        self._held.append((first, last, self._arrivals, batch))

    def pop(self, now_ns: int, multi: bool, final: bool = False) -> list[Batch]:
        """The batches (or re-cut pieces of them) ready to store, in time order.

        ``multi``: more than one source is capturing (else everything is released at once);
        ``final``: release everything (shutdown).
        """
        held = self._held
        if not held:
            return []
        if not multi:
            held.sort(key=lambda h: h[2])  # one source: arrival order is time order
            self._held = []
            self.stats["whole_batches"] += len(held)
            return [h[3] for h in held]
        if final:
            held.sort()
            self._held = []
            return self._merge(held, None)
        cutoff = now_ns - self.hold_ns
        held.sort()
        ready: list[tuple[int, int, int, Batch]] = []
        rest: list[tuple[int, int, int, Batch]] = []
        for h in held:
            (ready if h[0] <= cutoff else rest).append(h)
        if not ready:
            return []
        self._held = rest
        return self._merge(ready, cutoff)

    def _merge(
        self, batches: list[tuple[int, int, int, Batch]], cutoff: int | None
    ) -> list[Batch]:
        """``batches`` sorted by first ts: emit whole ones while they do not overlap; merge the
        overlapping ones packet by packet. Packets newer than ``cutoff`` go back to held."""
        out: list[Batch] = []
        i = 0
        n = len(batches)
        while i < n:
            _first, last, _, b = batches[i]
            j = i + 1
            end = last
            while j < n and batches[j][0] < end:  # overlapping cluster
                end = max(end, batches[j][1])
                j += 1
            if j == i + 1 and (cutoff is None or last <= cutoff):
                out.append(b)
                self.stats["whole_batches"] += 1
            else:
                out += self._merge_packets([batches[k] for k in range(i, j)], cutoff)
            i = j
        return out

    def _merge_packets(
        self, cluster: list[tuple[int, int, int, Batch]], cutoff: int | None
    ) -> list[Batch]:
        rows: list[tuple[int, int, int, int, int, int, int]] = []
        for _first, _last, arrival, (sid, _data, meta) in cluster:
            for k, (sec, usec, off, caplen) in enumerate(_META.iter_unpack(meta)):
                rows.append((sec * _NS + usec * 1000, arrival, k, sid, off, caplen, usec))
        rows.sort()
        datas = {h[2]: h[3][1] for h in cluster}
        out: list[Batch] = []
        keep: list[tuple[int, int, int, int, int, int, int]] = []
        run_key: tuple[int, int] | None = None
        run = bytearray()
        pack = _META.pack
        merged = 0
        for row in rows:
            ts, arrival, _k, sid, off, caplen, usec = row
            if cutoff is not None and ts > cutoff:
                keep.append(row)
                continue
            key = (sid, arrival)
            if key != run_key:
                if run_key is not None:
                    out.append((run_key[0], datas[run_key[1]], bytes(run)))
                run_key = key
                run = bytearray()
            run += pack(ts // _NS, usec, off, caplen)
            merged += 1
        if run_key is not None:
            out.append((run_key[0], datas[run_key[1]], bytes(run)))
        self.stats["merged_packets"] += merged
        if keep:
            # what is not released yet goes back as new batches per (source, original batch)
            by_batch: dict[int, bytearray] = {}
            sids: dict[int, int] = {}
            for ts, arrival, _k, sid, off, caplen, usec in keep:
                by_batch.setdefault(arrival, bytearray()).extend(
                    pack(ts // _NS, usec, off, caplen)
                )
                sids[arrival] = sid
            for arrival, rows_meta in by_batch.items():
                b = (sids[arrival], datas[arrival], bytes(rows_meta))
                first, last = _first_last(b[2])
                self._held.append((first, last, arrival, b))
        return out
