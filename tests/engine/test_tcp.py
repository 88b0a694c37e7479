"""TCP reassembly: what each direction delivers to its dissector, in order, with gaps named."""

from __future__ import annotations

import random
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.engine import tcp
from shark_tui.engine.tcp import ACK, FIN, RST, SYN, FlowTable
from shark_tui.proto.base import CLIENT, SERVER, Event

C_IP, S_IP = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
C_PORT, S_PORT = 40000, 8080


class Recorder:
    """A dissector that writes down what it was given (the interface, not a stand-in server)."""

    instances: ClassVar[list[Recorder]] = []

    def __init__(self, proto: str, midstream: bool, start_ts: float) -> None:
        self.proto = proto
        self.midstream = midstream
        self.data: dict[int, bytearray] = {CLIENT: bytearray(), SERVER: bytearray()}
        self.ops: list[tuple[str, int, int]] = []
        self.closed: list[int] = []
        self.finished = False
        Recorder.instances.append(self)

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        self.data[direction] += data
        self.ops.append(("feed", direction, len(data)))
        return []

    def gap(self, direction: int, size: int, ts: float) -> list[Event]:
        self.ops.append(("gap", direction, size))
        self.data[direction] += b"?" * size
        return []

    def close(self, direction: int, ts: float) -> list[Event]:
        self.closed.append(direction)
        return []

    def finish(self, ts: float) -> list[Event]:
        self.finished = True
        return []

    def expire(self, now: float) -> list[Event]:
        return []

    def oldest_pending(self) -> float | None:
        return None


def table(**kw: object) -> FlowTable:
    Recorder.instances = []
    return FlowTable(Recorder, lambda flow, events: None, **kw)  # type: ignore[arg-type]


class Conn:
    """Builds the segments of one connection with correct sequence numbers."""

    def __init__(self, c_isn: int = 1000, s_isn: int = 5000, sport: int = C_PORT) -> None:
        self.seq = {CLIENT: c_isn, SERVER: s_isn}
        self.sport = sport
        self.ts = 1.0

    def seg(self, d: int, payload: bytes = b"", flags: int = ACK) -> tuple:
        self.ts += 0.001
        other = SERVER if d == CLIENT else CLIENT
        if d == CLIENT:
            addr = (C_IP, self.sport, S_IP, S_PORT)
        else:
            addr = (S_IP, S_PORT, C_IP, self.sport)
        s = (self.ts, addr[0], addr[1], addr[2], addr[3], self.seq[d] & 0xFFFFFFFF,
             self.seq[other] & 0xFFFFFFFF, flags, payload)  # fmt: skip
        self.seq[d] += len(payload) + (1 if flags & (SYN | FIN) else 0)
        return s

    def handshake(self) -> list[tuple]:
        return [self.seg(CLIENT, flags=SYN), self.seg(SERVER, flags=SYN | ACK), self.seg(CLIENT)]


REQ = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def run(t: FlowTable, segs: list[tuple]) -> None:
    for s in segs:
        t.segment(*s)


def test_in_order_with_handshake_knows_the_client() -> None:
    t, c = table(), Conn()
    run(t, [*c.handshake(), c.seg(CLIENT, REQ), c.seg(SERVER, RESP), c.seg(CLIENT, flags=FIN | ACK),
            c.seg(SERVER, flags=FIN | ACK), c.seg(CLIENT)])  # fmt: skip
    (r,) = Recorder.instances
    assert r.proto == "http" and not r.midstream
    assert bytes(r.data[CLIENT]) == REQ and bytes(r.data[SERVER]) == RESP
    assert sorted(r.closed) == [CLIENT, SERVER] and r.finished
    assert t.stats["after_close"] == 1  # the last ACK
    assert not t.active


def test_out_of_order_retransmit_and_overlap_deliver_the_same_bytes() -> None:
    t, c = table(), Conn()
    segs = c.handshake()
    a, b, d = c.seg(CLIENT, REQ[:10]), c.seg(CLIENT, REQ[10:20]), c.seg(CLIENT, REQ[20:])
    overlap = (*b[:5], (b[5] - 4) & 0xFFFFFFFF, *b[6:8], REQ[6:20])  # re-sends 4 bytes of `a`
    run(t, [*segs, b, a, a, overlap, d])
    (r,) = Recorder.instances
    assert bytes(r.data[CLIENT]) == REQ
    assert t.stats["out_of_order"] == 1 and t.stats["retransmitted"] >= 1
    assert not [op for op in r.ops if op[0] == "gap"]


def test_lost_segment_is_a_gap_once_the_peer_acknowledges_past_it() -> None:
    t, c = table(), Conn()
    segs = [*c.handshake(), c.seg(CLIENT, REQ)]
    seg1, lost = c.seg(SERVER, RESP[:10]), c.seg(SERVER, RESP[10:20])
    seg3 = c.seg(SERVER, RESP[20:])
    run(t, [*segs, seg1, seg3])
    (r,) = Recorder.instances
    assert bytes(r.data[SERVER]) == RESP[:10]  # held: the hole may still be filled
    run(t, [c.seg(CLIENT)])  # the client acknowledges everything: the hole is lost
    assert ("gap", SERVER, 10) in r.ops
    assert bytes(r.data[SERVER]) == RESP[:10] + b"?" * 10 + RESP[20:]
    assert t.stats["gaps"] == 1 and t.stats["gap_bytes"] == 10
    del lost


def test_hole_left_at_the_end_is_flushed_as_a_gap() -> None:
    t, c = table(), Conn()
    segs = c.handshake()
    a, _lost, b = c.seg(CLIENT, b"GET /x HTTP"), c.seg(CLIENT, b"/1.1\r\n"), c.seg(CLIENT, b"\r\n")
    run(t, [*segs, a, b])
    t.finish()
    (r,) = Recorder.instances
    assert ("gap", CLIENT, 6) in r.ops and r.finished


def test_midstream_connection_finds_the_client_from_the_bytes() -> None:
    t, c = table(), Conn()
    c.handshake()  # not captured
    run(t, [c.seg(SERVER, b"ata of an earlier body"), c.seg(CLIENT, REQ), c.seg(SERVER, RESP)])
    t.finish()
    (r,) = Recorder.instances
    assert r.midstream and r.proto == "http"
    flow = next(iter(t._closed))
    assert flow.endpoint(CLIENT) == (C_IP, C_PORT)
    assert bytes(r.data[CLIENT]) == REQ
    assert bytes(r.data[SERVER]) == b"ata of an earlier body" + RESP


def test_rst_ends_the_flow_and_port_reuse_starts_a_new_one() -> None:
    t = table()
    c1 = Conn(c_isn=100)
    run(t, [*c1.handshake(), c1.seg(CLIENT, REQ), c1.seg(CLIENT, flags=RST)])
    c2 = Conn(c_isn=900_000)
    run(t, [*c2.handshake(), c2.seg(CLIENT, REQ)])
    t.finish()
    assert [r.finished for r in Recorder.instances] == [True, True]
    assert t.stats["flows"] == 2
    # A new SYN while the old connection is still open (its FIN was never seen) also splits it.
    t = table()
    c1, c2 = Conn(c_isn=100), Conn(c_isn=7_000_000)
    run(t, [*c1.handshake(), c1.seg(CLIENT, REQ), *c2.handshake(), c2.seg(CLIENT, REQ)])
    assert t.stats["port_reuse"] == 1 and t.stats["flows"] == 2


def test_sequence_wraparound() -> None:
    t, c = table(), Conn(c_isn=0xFFFFFFF0)
    run(t, [*c.handshake(), c.seg(CLIENT, REQ), c.seg(SERVER, RESP)])
    (r,) = Recorder.instances
    assert bytes(r.data[CLIENT]) == REQ


def test_out_of_order_buffer_is_capped(monkeypatch: object) -> None:
    t, c = table(), Conn()
    run(t, [*c.handshake(), c.seg(CLIENT, REQ)])
    c.seg(CLIENT, b"x" * 100)  # lost; nothing acknowledges past it
    for _ in range(tcp.MAX_OOO_SEGMENTS + 10):
        t.segment(*c.seg(CLIENT, b"y" * 10))
        flow = next(iter(t.active.values()))
        assert len(flow.halves[0].ooo) <= tcp.MAX_OOO_SEGMENTS
    assert t.stats["ooo_dropped"] >= 1 and t.stats["gaps"] >= 1


def test_undecided_bytes_are_capped_then_become_tcp() -> None:
    t, c = table(), Conn()
    c.sport = 40001
    run(t, c.handshake())
    for _ in range(100):
        t.segment(*c.seg(CLIENT, bytes(range(256)) * 4))
    (r,) = Recorder.instances
    assert r.proto == "tcp" and len(r.data[CLIENT]) == 100 * 1024


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_reordering_and_duplication_never_change_the_bytes(seed: int, cuts: list[int]) -> None:
    """Segments shuffled within a window and duplicated give the same stream, with no gap."""
    rng = random.Random(seed)
    body = bytes(rng.randrange(256) for _ in range(sum(cuts)))
    c = Conn()
    segs = c.handshake()
    data_segs, pos = [], 0
    for n in cuts:
        piece = body[pos : pos + n]
        data_segs.append(c.seg(CLIENT, REQ + piece if pos == 0 else piece))
        pos += n
    shuffled = data_segs[:]
    for i in range(len(shuffled) - 1):  # local swaps: reordering within a small window
        if rng.random() < 0.4:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    extra = [rng.choice(data_segs) for _ in range(rng.randrange(4))]
    t = table()
    run(t, [*segs, *shuffled, *extra])
    run(t, [c.seg(SERVER, RESP)])  # acknowledges everything
    t.finish()
    (r,) = Recorder.instances
    assert bytes(r.data[CLIENT]) == REQ + body
    assert not [op for op in r.ops if op[0] == "gap"]


def test_lost_last_segment_before_fin_is_a_gap() -> None:
    """No segment follows the hole (only the FIN): the FIN's sequence number sizes it."""
    t, c = table(), Conn()
    segs = [*c.handshake(), c.seg(CLIENT, REQ), c.seg(SERVER, RESP[:20])]
    c.seg(SERVER, RESP[20:])  # lost
    run(t, [*segs, c.seg(SERVER, flags=FIN | ACK), c.seg(CLIENT, flags=FIN | ACK)])
    (r,) = Recorder.instances
    assert ("gap", SERVER, len(RESP) - 20) in r.ops
    assert sorted(r.closed) == [CLIENT, SERVER] and r.finished


def test_lost_tail_acknowledged_is_a_gap_at_the_end() -> None:
    t, c = table(), Conn()
    segs = [*c.handshake(), c.seg(CLIENT, REQ), c.seg(SERVER, RESP[:20])]
    c.seg(SERVER, RESP[20:])  # lost, then acknowledged
    run(t, [*segs, c.seg(CLIENT)])
    t.finish()
    (r,) = Recorder.instances
    assert r.ops[-1] == ("gap", SERVER, len(RESP) - 20) and r.finished


def test_inference_work_is_bounded_for_tiny_segments(monkeypatch: object) -> None:
    """Garbage in one-byte segments: inference looks at GUESS_BYTES of the start at most,
    never re-reads everything held for every new segment (that was quadratic)."""
    calls: list[int] = []
    real_guess = tcp.guess

    def counting(data: bytes) -> object:
        calls.append(len(data))
        return real_guess(data)

    monkeypatch.setattr(tcp, "guess", counting)  # type: ignore[attr-defined]
    t, c = table(), Conn()
    c.sport = 40002
    run(t, c.handshake())
    for _ in range(3 * tcp.GUESS_BYTES):
        t.segment(*c.seg(CLIENT, b"\x07"))
    assert len(calls) <= tcp.GUESS_BYTES
    assert max(calls) <= tcp.GUESS_BYTES
    t.finish()
    (r,) = Recorder.instances
    assert r.proto == "tcp" and len(r.data[CLIENT]) == 3 * tcp.GUESS_BYTES
