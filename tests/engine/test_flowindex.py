"""The flow index: roles, port reuse, counters, protocol guess, checkpoints, segments, zones."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.engine import flowindex
from shark_tui.engine.flowindex import CHECKPOINT_BYTES, MAX_CHECKPOINTS, Flow, FlowIndex
from tests.engine import fixtures_pcap as fx

ACK, FIN, PSH, RST, SYN = fx.ACK, fx.FIN, fx.PSH, fx.RST, fx.SYN
A = fx.inet_pton("10.0.0.1")
B = fx.inet_pton("10.0.0.2")
C = fx.inet_pton("10.0.0.3")
A6 = fx.inet_pton("fd00::1")
B6 = fx.inet_pton("fd00::2")
T0 = 1_700_000_000 * fx.NS

GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@dataclass
class Feed:
    """Drives `FlowIndex.add` like the segment writer: block offsets grow by 100 per packet,
    time by 1 ms; the payload sits after a 3-byte fake header (``pstart`` = 3)."""

    ix: FlowIndex = field(default_factory=FlowIndex)
    segment: int = 1
    offset: int = 100
    ts: int = T0
    log: list[tuple[int, int, int]] = field(default_factory=list)  # (flow, segment, offset)

    def __call__(
        self,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        flags: int,
        payload: bytes = b"",
        *,
        seq: int = 0,
        n: int | None = None,
        wire: int | None = None,
        zone: int = 0,
        source: int = 0,
        number: int | None = None,
    ) -> tuple[Flow, bool]:
        self.offset += 100
        self.ts += 1_000_000
        size = len(payload) if n is None else n
        f, first = self.ix.add(
            src, sport, dst, dport, seq, flags, b"HDR" + payload, 3, 3 + size,
            54 + size if wire is None else wire, self.ts, zone, source, self.segment,
            self.offset, number,
        )  # fmt: skip
        self.log.append((f.num, self.segment, self.offset))
        return f, first


def handshake(feed: Feed, c: bytes, cport: int, s: bytes, sport: int, isn: int = 1000) -> Flow:
    f, first = feed(c, cport, s, sport, SYN, seq=isn)
    assert first
    assert feed(s, sport, c, cport, SYN | ACK, seq=5000)[0] is f
    assert feed(c, cport, s, sport, ACK, seq=isn + 1)[0] is f
    return f


# -- roles --------------------------------------------------------------------------------------


def test_client_is_the_syn_sender() -> None:
    feed = Feed()
    # the client has the lower port: only the SYN can tell
    f = handshake(feed, A, 80, B, 40000)
    assert feed(A, 80, B, 40000, ACK | PSH, GET)[0] is f
    assert feed(B, 40000, A, 80, ACK | PSH, OK)[0] is f
    assert feed(A, 80, B, 40000, ACK | FIN)[0] is f
    assert feed(B, 40000, A, 80, ACK | FIN)[0] is f
    assert f.as_dict() == {
        "flow": 1,
        "client": ["10.0.0.1", 80],
        "server": ["10.0.0.2", 40000],
        "source": 0,
        "first_ns": T0 + 1_000_000,
        "last_ns": T0 + 7_000_000,
        "packets": [4, 3],
        "bytes": [4 * 54 + len(GET), 3 * 54 + len(OK)],
        "proto": "http",
        "ended": True,
        "runs": [(1, 200, 800)],
        "checkpoints": [],
    }
    assert f.key == (0, A, 80, B, 40000)
    assert f.isn == 1000
    assert len(feed.ix) == 1
    assert feed.ix.stats == {"flows_created": 1, "flows_evicted": 0, "port_reuse": 0, "swapped": 0}


def test_client_is_the_syn_ack_receiver() -> None:
    feed = Feed()
    # the capture missed the SYN; the server has the higher port
    f, first = feed(B, 50000, A, 3000, SYN | ACK, seq=77)
    assert first
    assert (f.client, f.cport, f.server, f.sport) == (A, 3000, B, 50000)
    assert (f.c_pkts, f.s_pkts) == (0, 1)
    assert f.isn == -1  # a SYN-ACK carries the server's ISN, not the client's
    assert feed(A, 3000, B, 50000, ACK)[0] is f
    assert (f.c_pkts, f.s_pkts) == (1, 1)


def test_no_handshake_higher_port_is_client() -> None:
    feed = Feed()
    f, _ = feed(B, 80, A, 40000, ACK)  # a pure ACK from the server side
    assert (f.client, f.cport, f.server, f.sport) == (A, 40000, B, 80)
    assert (f.c_pkts, f.s_pkts) == (0, 1)
    g, _ = feed(A, 7000, B, 7000, ACK)  # equal ports: the sender is taken as client
    assert (g.client, g.cport) == (A, 7000)


def test_no_handshake_first_payload_flips_roles() -> None:
    """A server on a high port answers first (the request was before the capture started)."""
    feed = Feed()
    f, _ = feed(B, 50000, A, 8080, ACK | PSH, OK, wire=100)
    assert (f.client, f.cport, f.server, f.sport) == (A, 8080, B, 50000)
    assert f.key == (0, A, 8080, B, 50000)
    assert feed.ix.by_key == {f.key: f}
    assert (f.c_pkts, f.s_pkts, f.c_bytes, f.s_bytes) == (0, 1, 0, 100)
    assert f.proto == "http"
    assert feed.ix.stats["swapped"] == 1
    assert feed(A, 8080, B, 50000, ACK | PSH, GET, wire=200)[0] is f
    assert feed(B, 50000, A, 8080, ACK | PSH, OK, wire=100)[0] is f
    assert (f.c_pkts, f.s_pkts, f.c_bytes, f.s_bytes) == (1, 2, 200, 200)
    assert feed.ix.stats["swapped"] == 1
    assert len(feed.ix) == 1


def test_no_handshake_request_from_the_low_port_flips_roles() -> None:
    feed = Feed()
    f, _ = feed(A, 80, B, 9000, ACK)  # no payload: higher port (B:9000) is the client for now
    assert (f.client, f.cport) == (B, 9000)
    assert feed(A, 80, B, 9000, ACK | PSH, GET)[0] is f  # ...until A sends a request
    assert (f.client, f.cport, f.server, f.sport) == (A, 80, B, 9000)
    assert (f.c_pkts, f.s_pkts) == (2, 0)
    assert f.proto == "http"


def test_handshake_roles_are_not_flipped_by_payload() -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80)
    feed(A, 40000, B, 80, ACK | PSH, OK)  # odd, but the SYN said who the client is
    assert (f.client, f.cport) == (A, 40000)
    assert f.proto == "http"
    assert feed.ix.stats["swapped"] == 0


def test_ipv6() -> None:
    feed = Feed()
    f = handshake(feed, A6, 40000, B6, 443)
    d = f.as_dict()
    assert d["client"] == ["fd00::1", 40000] and d["server"] == ["fd00::2", 443]
    assert d["packets"] == [2, 1]


# -- port reuse ---------------------------------------------------------------------------------


def test_port_reuse_after_fin() -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80, isn=1000)
    feed(A, 40000, B, 80, ACK | FIN)
    feed(B, 80, A, 40000, ACK | FIN)
    g, first = feed(A, 40000, B, 80, SYN, seq=9000)
    assert first and g is not f
    assert (f.num, g.num) == (1, 2)
    assert g.key == f.key
    assert feed.ix.by_key == {g.key: g}
    assert feed.ix.by_num == {1: f, 2: g}
    assert feed.ix.stats["port_reuse"] == 1
    assert (g.c_pkts, g.s_pkts, g.isn, g.state & flowindex.SYN_SEEN) == (1, 0, 9000, 1)
    assert feed(B, 80, A, 40000, SYN | ACK)[0] is g
    assert f.as_dict()["packets"] == [3, 2]
    assert f.as_dict()["ended"] and not g.as_dict()["ended"]


def test_syn_retransmission_is_not_port_reuse() -> None:
    feed = Feed()
    f, _ = feed(A, 40000, B, 80, SYN, seq=1000)
    assert feed(A, 40000, B, 80, SYN, seq=1000) == (f, False)
    assert f.c_pkts == 2 and len(feed.ix) == 1
    assert feed.ix.stats["port_reuse"] == 0


def test_new_isn_without_fin_is_port_reuse() -> None:
    feed = Feed()
    f, _ = feed(A, 40000, B, 80, SYN, seq=1000)
    g, first = feed(A, 40000, B, 80, SYN, seq=2000)
    assert first and g.num == 2 and f.num == 1
    assert feed.ix.stats["port_reuse"] == 1


def test_port_reuse_after_reset() -> None:
    feed = Feed()
    f, _ = feed(A, 40000, B, 80, SYN, seq=1000)
    feed(B, 80, A, 40000, RST | ACK)
    g, _ = feed(A, 40000, B, 80, SYN, seq=1000)  # the ended flow is not continued
    assert g.num == 2
    assert f.as_dict()["ended"] and f.as_dict()["packets"] == [1, 1]


def test_syn_ack_on_ended_flow_is_not_port_reuse() -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80)
    feed(A, 40000, B, 80, RST)
    assert feed(B, 80, A, 40000, SYN | ACK)[0] is f
    assert len(feed.ix) == 1


# -- counters and protocol guess ----------------------------------------------------------------


def test_counters_per_direction() -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80)
    for i in range(5):
        feed(A, 40000, B, 80, ACK | PSH, GET, wire=1000 + i)
    for i in range(3):
        feed(B, 80, A, 40000, ACK, OK, wire=10 + i)
    assert (f.c_pkts, f.s_pkts) == (2 + 5, 1 + 3)
    assert (f.c_bytes, f.s_bytes) == (2 * 54 + 5010, 54 + 33)
    assert f.last_ns == feed.ts and f.first_ns == T0 + 1_000_000


@pytest.mark.parametrize(
    ("client_first", "server_first", "proto"),
    [
        (GET, OK, "http"),
        (b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n", "redis"),
        (b"\x00\x01\x02\x03binary", b"\xfe\xfd\xfc\xfbmore", "tcp"),
        (b"ab", b"cd", "tcp"),  # too short to say
        (b"\x00\x01\x02\x03binary", OK, "http"),  # the reply tells
    ],
)
def test_protocol_guess(client_first: bytes, server_first: bytes, proto: str) -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 6379)
    feed(A, 40000, B, 6379, ACK | PSH, client_first)
    feed(B, 6379, A, 40000, ACK | PSH, server_first)
    assert f.proto == proto


def test_protocol_unknown_until_both_directions_spoke() -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80)
    feed(A, 40000, B, 80, ACK | PSH, b"\x00\x01\x02\x03")
    assert f.proto is None
    feed(A, 40000, B, 80, ACK | PSH, GET)  # same direction again: not looked at
    assert f.proto is None
    feed(B, 80, A, 40000, ACK)  # no payload
    assert f.proto is None
    feed(B, 80, A, 40000, ACK | PSH, b"\xff\xfe\xfd\xfc")
    assert f.proto == "tcp"
    feed(A, 40000, B, 80, ACK | PSH, GET)  # decided: never looked at again
    assert f.proto == "tcp"


def test_protocol_guess_looks_only_at_the_payload_slice() -> None:
    ix = FlowIndex()
    # the bytes before pstart and after pend are not payload
    data = b"GET / HTTP/1.1\r\n" + b"*1\r\n$4\r\nPING\r\n"
    f, _ = ix.add(A, 40000, B, 80, 1, SYN, b"", 0, 0, 54, T0, 0, 0, 1, 100)
    ix.add(A, 40000, B, 80, 2, ACK, data, 16, len(data), 80, T0, 0, 0, 1, 200)
    assert f.proto == "redis"


# -- checkpoints --------------------------------------------------------------------------------


def turns(feed: Feed, sizes: list[int], reply: int = 10) -> list[int]:
    """Request/response turns (a client packet of each size, then a server reply); returns the
    block offsets of the client packets."""
    out = []
    for n in sizes:
        feed(A, 40000, B, 80, ACK | PSH, GET, n=n)
        out.append(feed.offset)
        feed(B, 80, A, 40000, ACK | PSH, OK, n=reply)
    return out


def test_checkpoints_on_client_after_server_turns() -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80)
    assert CHECKPOINT_BYTES == 16384
    offsets = turns(feed, [7000] * 9)
    # turn 1 has none (the flow's start is one); then one as soon as 16 KiB of requests have
    # gone by since the last: turns 2, 5 (7000 * 3 >= 16384), 8
    assert f.as_dict()["checkpoints"] == [(1, offsets[1]), (1, offsets[4]), (1, offsets[7])]


def test_checkpoint_only_on_the_first_client_packet_of_a_turn() -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80)
    feed(A, 40000, B, 80, ACK | PSH, GET, n=70000)
    feed(B, 80, A, 40000, ACK | PSH, OK)
    feed(B, 80, A, 40000, ACK | PSH, OK)
    feed(A, 40000, B, 80, ACK)  # no payload: not a turn
    feed(A, 40000, B, 80, ACK | PSH, GET, n=100)
    first = feed.offset
    feed(A, 40000, B, 80, ACK | PSH, GET, n=100_000)
    feed(B, 80, A, 40000, ACK | PSH, OK)
    feed(A, 40000, B, 80, ACK | PSH, GET, n=100)
    assert f.checkpoints == [1, first, 1, feed.offset]


def test_checkpoints_follow_segments() -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80)
    offsets = turns(feed, [70000] * 2)
    feed.segment = 2
    offsets += turns(feed, [70000])
    assert f.as_dict()["checkpoints"] == [(1, offsets[1]), (2, offsets[2])]
    assert f.as_dict()["runs"] == [(1, 200, 800), (2, 900, 1000)]


def test_checkpoints_thinned_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flowindex, "MAX_CHECKPOINTS", 256)  # the numbers below are for 256
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80)
    offsets: list[int] = []
    for _ in range(300):
        offsets += turns(feed, [20000])
        assert len(f.checkpoints or ()) < 2 * MAX_CHECKPOINTS
    # turns 2..257 took one each (every request >= 16 KiB); the 256th filled the list, which
    # kept every other one (turns 2, 4, ..., 256); from then on one per 32 KiB: every other
    # turn (259, 261, ...)
    want = [offsets[t - 1] for t in range(2, 257, 2)] + [offsets[t - 1] for t in range(259, 301, 2)]
    assert f.checkpoints == [x for o in want for x in (1, o)]
    assert f._ck_shift == 1


def test_checkpoint_cap_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flowindex, "MAX_CHECKPOINTS", 256)
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80)
    shifts = set()
    for t in range(1, 3001):
        turns(feed, [1 << 20])
        held = len(f.checkpoints or ()) // 2
        assert held < 256
        if t > 256:  # once thinned, at least half the list stays
            assert held >= 256 // 2
        shifts.add(f._ck_shift)
    assert max(shifts) >= 5 and shifts == set(range(max(shifts) + 1))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(min_value=0, max_value=3 * CHECKPOINT_BYTES)),
        max_size=60,
    ),
    st.integers(min_value=2, max_value=6),
)
def test_checkpoint_invariants(packets: list[tuple[bool, int]], cap: int) -> None:
    """Any sequence of packets: checkpoints are client packets with payload right after server
    payload, at least CHECKPOINT_BYTES of client payload apart, never more than the cap."""
    mp = pytest.MonkeyPatch()
    mp.setattr(flowindex, "MAX_CHECKPOINTS", cap)
    try:
        feed = Feed()
        f = handshake(feed, A, 40000, B, 80)
        client_bytes_before: dict[int, int] = {}  # offset -> client payload before it
        eligible: set[int] = set()
        total = 0
        last_dir = -1
        for from_client, n in packets:
            if from_client:
                feed(A, 40000, B, 80, ACK | PSH, GET, n=n)
                client_bytes_before[feed.offset] = total
                if n and last_dir == 1:
                    eligible.add(feed.offset)
                total += n
            else:
                feed(B, 80, A, 40000, ACK | PSH, OK, n=n)
            if n:
                last_dir = 0 if from_client else 1
            assert len(f.checkpoints or ()) < 2 * cap
        cps = (f.checkpoints or [])[1::2]
        assert set(cps) <= eligible
        assert cps == sorted(cps)
        for a, b in itertools.pairwise(cps):
            assert client_bytes_before[b] - client_bytes_before[a] >= CHECKPOINT_BYTES
    finally:
        mp.undo()


# -- segments -----------------------------------------------------------------------------------


def test_runs_and_first_in_segment() -> None:
    feed = Feed()
    f, first = feed(A, 40000, B, 80, SYN, seq=1)
    assert first
    assert feed(B, 80, A, 40000, SYN | ACK) == (f, False)
    feed.segment = 2
    assert feed(A, 40000, B, 80, ACK) == (f, True)
    assert feed(A, 40000, B, 80, ACK) == (f, False)
    feed.segment = 5
    assert feed(B, 80, A, 40000, ACK) == (f, True)
    assert f.as_dict()["runs"] == [(1, 200, 300), (2, 400, 500), (5, 600, 600)]
    assert feed.ix.segment_flows == {1: [1], 2: [1], 5: [1]}


def test_drop_segment() -> None:
    feed = Feed()
    old = handshake(feed, A, 40000, B, 80)  # segment 1 only
    both = handshake(feed, A, 40001, B, 80)  # segments 1 and 2
    turns_both = []
    for _ in range(3):
        feed(A, 40001, B, 80, ACK | PSH, GET, n=70000)
        turns_both.append(feed.offset)
        feed(B, 80, A, 40001, ACK | PSH, OK)
    feed.segment = 2
    feed(A, 40001, B, 80, ACK | PSH, GET, n=70000)
    turns_both.append(feed.offset)
    feed(B, 80, A, 40001, ACK | PSH, OK)
    new = handshake(feed, C, 40002, B, 80)  # segment 2 only
    assert both.checkpoints == [1, turns_both[1], 1, turns_both[2], 2, turns_both[3]]
    ix = feed.ix
    assert ix.drop_segment(1) == 1
    assert ix.stats["flows_evicted"] == 1
    assert set(ix.by_num) == {both.num, new.num}
    assert set(ix.by_key) == {both.key, new.key}
    assert old.key not in ix.by_key
    assert both.runs == [2, turns_both[3], turns_both[3] + 100]
    assert both.checkpoints == [2, turns_both[3]]
    assert ix.segment_flows == {2: [both.num, new.num]}
    assert ix.drop_segment(1) == 0  # twice: nothing
    assert ix.drop_segment(2) == 2
    assert len(ix) == 0 and ix.by_key == {} and ix.segment_flows == {}
    assert ix.stats["flows_evicted"] == 3
    # numbers are not reused
    assert handshake(feed, A, 40000, B, 80).num == 4


def test_drop_segment_keeps_the_newer_flow_on_a_reused_key() -> None:
    feed = Feed()
    f = handshake(feed, A, 40000, B, 80, isn=1)
    feed(A, 40000, B, 80, FIN | ACK)
    feed.segment = 2
    g = handshake(feed, A, 40000, B, 80, isn=2)
    assert g.key == f.key and g is not f
    assert feed.ix.drop_segment(1) == 1
    assert feed.ix.by_key == {g.key: g}
    assert feed.ix.by_num == {g.num: g}


# -- zones --------------------------------------------------------------------------------------


def test_zones_separate_the_same_four_tuple() -> None:
    feed = Feed()
    lo1 = handshake(feed, A, 40000, B, 80)
    f2, first = feed(A, 40000, B, 80, SYN, seq=1000, zone=2, source=1)
    assert first and f2 is not lo1
    assert (lo1.key[0], f2.key[0]) == (0, 2)
    assert feed(B, 80, A, 40000, SYN | ACK, zone=2, source=1)[0] is f2
    assert feed(B, 80, A, 40000, ACK, zone=0)[0] is lo1
    assert (lo1.c_pkts, lo1.s_pkts, f2.c_pkts, f2.s_pkts) == (2, 2, 1, 1)
    assert (lo1.source, f2.source) == (0, 1)
    assert feed.ix.stats["port_reuse"] == 0


# -- numbers given back when rebuilding from the files ------------------------------------------


def test_numbers_from_the_files() -> None:
    feed = Feed()
    f, _ = feed(A, 40000, B, 80, SYN, seq=1, number=5)
    assert f.num == 5 and feed.ix.next_num == 6
    assert feed(B, 80, A, 40000, SYN | ACK)[0] is f  # packets without a comment: by key
    g, _ = feed(A, 40001, B, 80, SYN, seq=1, number=3)  # an older number: kept as is
    assert g.num == 3 and feed.ix.next_num == 6
    h, _ = feed(A, 40002, B, 80, SYN, seq=1)
    assert h.num == 6
    # the same key with another number: a connection the writer numbered anew (port reuse)
    feed.segment = 2
    k, first = feed(A, 40000, B, 80, SYN, seq=99, number=9)
    assert first and k.num == 9 and k.key == f.key and feed.ix.by_key[f.key] is k
    # the old number again: continues the old flow, the direction from its ends
    assert feed(B, 80, A, 40000, ACK, number=5)[0] is f
    assert (f.c_pkts, f.s_pkts) == (1, 2)
    assert feed(A, 40000, B, 80, ACK, number=5)[0] is f
    assert (f.c_pkts, f.s_pkts) == (2, 2)
    assert feed.ix.next_num == 10
    assert feed.ix.stats["port_reuse"] == 0


def test_port_reuse_after_a_flow_whose_roles_were_guessed_wrong() -> None:
    """Joined midway, nothing told the roles (a gRPC server on 50051, an ephemeral client port
    below it): the ports made the server the client. After that connection ended, a new SYN
    from the real client on the same ports starts a new flow with the right roles."""
    feed = Feed()
    f, _ = feed(B, 50051, A, 40000, ACK)
    feed(A, 40000, B, 50051, ACK)
    assert (f.client, f.cport) == (B, 50051)  # wrong, but nothing said otherwise
    feed(A, 40000, B, 50051, FIN | ACK)
    feed(B, 50051, A, 40000, FIN | ACK)
    g, first = feed(A, 40000, B, 50051, SYN, seq=77)
    assert first and g is not f and g.num == 2
    assert (g.client, g.cport, g.server, g.sport) == (A, 40000, B, 50051)
    assert (g.c_pkts, g.s_pkts, g.isn) == (1, 0, 77)
    assert feed(B, 50051, A, 40000, SYN | ACK)[0] is g
    assert f.as_dict()["packets"] == [2, 2]
    assert feed.ix.stats["port_reuse"] == 1
