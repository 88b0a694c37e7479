"""Fast connections (`_native.IgnoreSet.add_fast`): the C record loop hands the plain in-order
segments of established connections straight to their dissectors, updating the flow table's
connection state itself. The reference is the table handling every record (`Dissection.run`,
no set): the same entries, in the same order, and the same counters, whatever the damage,
the batch size, the sweeps and the worker split.
"""

from __future__ import annotations

import io
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shark_tui.engine.capfile import CaptureFile
from shark_tui.engine.dissect import Dissection
from shark_tui.engine.tcp import Flow
from tests.engine.fixtures_pcap import ACK, LINKTYPE_ETHERNET, PSH, SYN, eth_ipv4_tcp, pcap_bytes
from tests.engine.test_dissect import connection

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Packets = list[tuple[int, bytes]]


def redis_connection(index: int, t0: int) -> Packets:
    """A Redis client (another dissector than HTTP's) with a few commands."""
    cip, sip, cport, sport = f"10.2.0.{index + 1}", "10.3.0.1", 50000 + index, 6379
    seq = {0: 100, 1: 900_000}
    out: Packets = []
    ts = t0

    def send(direction: int, payload: bytes = b"", flags: int = ACK) -> None:
        nonlocal ts
        ts += 50_000
        if direction == 0:
            frame = eth_ipv4_tcp(cip, sip, cport, sport, seq[0], seq[1], flags, payload)
        else:
            frame = eth_ipv4_tcp(sip, cip, sport, cport, seq[1], seq[0], flags, payload)
        out.append((ts, frame))
        seq[direction] = (seq[direction] + len(payload) + (1 if flags & SYN else 0)) % 2**32

    send(0, flags=SYN)
    send(1, flags=SYN | ACK)
    send(0)
    for i in range(4):
        send(0, b"*2\r\n$3\r\nGET\r\n$2\r\nk%d\r\n" % i, ACK | PSH)
        send(1, b"$5\r\nhello\r\n" if i % 2 else b"$-1\r\n", ACK | PSH)
    return out  # no FIN: ended by the end of the capture


def build(seed: int, conns: int, damage: list[tuple[str, int]], pipelined: bool) -> bytes:
    rng = random.Random(seed)
    packets: Packets = []
    t0 = 1_700_000_000_000_000_000
    for i in range(conns):
        packets += connection(i, rng, t0 + i * 3_000_000, pipelined=pipelined and i % 2 == 0)
    packets += redis_connection(0, t0 + 1_000_000)
    packets.sort(key=lambda p: p[0])  # connections interleave in time
    for kind, where in damage:
        i = where % len(packets)
        if kind == "swap" and i + 1 < len(packets):
            packets[i], packets[i + 1] = packets[i + 1], packets[i]
        elif kind == "dup":
            packets.insert(i, packets[i])
        elif kind == "drop":
            del packets[i]
        elif kind == "pause":  # capture time jumps: sweeps, and requests expire
            packets[i:] = [(ts + 70 * 10**9, frame) for ts, frame in packets[i:]]
    return pcap_bytes(LINKTYPE_ETHERNET, packets)


def _ends(d: Dissection) -> list[Any]:
    """What the table knew of each connection dissected here when it ended it (the state the
    set updates; the ignore set never lets the table count another worker's packets)."""
    ends: list[Any] = []
    end = d.table._end

    def record(flow: Flow, ts: float) -> None:
        if flow.closed_at is None and flow.selected:
            halves = [
                (h.next, h.acked, h.packets, h.bytes, h.first_ts, h.fin) for h in flow.halves
            ]
            ends.append((flow.num, flow.last_ts, flow.client, halves, ts))
        end(flow, ts)

    d.table._end = record  # type: ignore[method-assign]
    return ends


def reference(
    data: bytes, partition: tuple[int, int] | None
) -> tuple[list[Any], Dissection, list[Any]]:
    entries: list[Any] = []
    d = Dissection(entries.append)
    d.partition = partition
    ends = _ends(d)
    cap = CaptureFile(io.BytesIO(data))
    d.run(cap, cap.interfaces)
    d.warnings.append(str(cap.warning))
    return entries, d, ends


def fast(
    data: bytes, chunk: int, partition: tuple[int, int] | None
) -> tuple[list[Any], Dissection, list[Any]]:
    entries: list[Any] = []
    d = Dissection(entries.append)
    d.partition = partition
    ends = _ends(d)
    cap = CaptureFile(io.BytesIO(data), chunk)
    d.run_file(cap)
    d.warnings.append(str(cap.warning))
    return entries, d, ends


def assert_same(data: bytes, chunk: int, partition: tuple[int, int] | None = None) -> Dissection:
    want, ref, want_ends = reference(data, partition)
    got, d, got_ends = fast(data, chunk, partition)
    assert got == want
    assert got_ends == want_ends
    assert d.stats == ref.stats
    assert d.table.stats == ref.table.stats
    assert d.decoder.stats == ref.decoder.stats
    assert d.warnings == ref.warnings  # a truncated file: the packets read before the cut
    return d


def test_plain_connections_go_through_the_set() -> None:
    data = build(1, conns=12, damage=[], pipelined=True)
    d = assert_same(data, chunk=4096)
    assert d.table.ignored is not None and d.table.ignored.taken > 100
    assert not d.table.ignored  # every connection ended: the set is empty


@SETTINGS
@given(
    seed=st.integers(0, 10**6),
    conns=st.integers(1, 8),
    pipelined=st.booleans(),
    damage=st.lists(
        st.tuples(st.sampled_from(["swap", "dup", "drop", "pause"]), st.integers(0, 10**4)),
        max_size=4,
    ),
    chunk=st.sampled_from([300, 2048, 65536]),
    partition=st.sampled_from([None, (0, 2), (1, 2)]),
    cut=st.one_of(st.none(), st.integers(100, 10**5)),
)
def test_same_entries_and_counters_as_the_table_alone(
    seed: int,
    conns: int,
    pipelined: bool,
    damage: list[tuple[str, int]],
    chunk: int,
    partition: tuple[int, int] | None,
    cut: int | None,
) -> None:
    data = build(seed, conns, damage, pipelined)
    assert_same(data[:cut] if cut is not None else data, chunk, partition)
