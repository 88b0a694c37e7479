"""The C fast paths (``shark_tui/engine/_native.c``) against the Python code they stand in for.

Every other test runs with the C module in place (it is built by ``pip install``); here each
input goes through the reader and the decoder twice — with the C module and with it switched
off — and everything must be equal: packets, interfaces, warnings, comments, segments and every
counter. Inputs: the sample files of ``test_capfile``, random and mutated files and frames, a
real tcpdump capture.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shark_tui.engine import capfile, packet
from shark_tui.engine.capfile import CaptureFormatError, CaptureReader, RawPacket
from shark_tui.engine.packet import SUPPORTED_LINKTYPES, PacketDecoder
from tests.engine import fixtures_pcap as fx
from tests.engine.test_capfile import SAMPLES
from tests.engine.test_packet import BIG, IP4, IP6, frags4

LINKTYPES = [*sorted(SUPPORTED_LINKTYPES), 999]


def test_the_c_module_is_built() -> None:
    """CI installs a compiler: the fast paths must be there (else every figure is Python's)."""
    from shark_tui.engine import _native

    assert capfile._native is _native
    assert packet._native_segment is _native.tcp_segment


@contextlib.contextmanager
def python_only() -> Iterator[None]:
    saved = capfile._native, packet._native_segment
    capfile._native, packet._native_segment = None, None
    try:
        yield
    finally:
        capfile._native, packet._native_segment = saved


def read(blob: bytes, chunk: int) -> dict[str, Any]:
    """Everything the reader says about ``blob`` fed in ``chunk``-byte pieces."""
    r = CaptureReader()
    got: list[RawPacket] = []
    error = None
    try:
        for i in range(0, len(blob), chunk):
            got += r.feed(blob[i : i + chunk])
        r.close()
    except CaptureFormatError as exc:
        error = str(exc)
    return {"packets": got, "error": error, "warning": r.warning, "interfaces": r.interfaces,
            "comments": r.comments, "count": r.packets, "buffered": r.buffered}  # fmt: skip


def both_read(blob: bytes, chunk: int) -> dict[str, Any]:
    fast = read(blob, chunk)
    with python_only():
        slow = read(blob, chunk)
    assert fast == slow
    return fast


def decode_all(frames: list[tuple[int, bytes]]) -> tuple[list[Any], dict[str, int]]:
    d = PacketDecoder(max_frag_datagrams=3, max_frag_bytes=70_000)
    return [d.decode(lt, f, i) for i, (lt, f) in enumerate(frames)], d.stats


def both_decode(frames: list[tuple[int, bytes]]) -> list[Any]:
    fast = decode_all(frames)
    with python_only():
        slow = decode_all(frames)
    assert fast == slow
    return fast[0]


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 100_000])
def test_sample_files(name: str, chunk: int) -> None:
    assert len(both_read(SAMPLES[name], chunk)["packets"]) >= 7


def test_timestamps_past_64_bits_are_left_to_python() -> None:
    """EPB timestamps whose count, or whose count scaled to ns, does not fit 64 bits: Python's
    integers compute them; the C loop hands those blocks over and takes the next ones."""
    units = [2**63 + 5, 2**62, 7]
    pk = [(u * 10**6, 0, IP4) for u in units]
    blob = fx.pcapng_bytes([fx.Idb(101, "a", tsresol=3)], pk)
    got = both_read(blob, 100_000)["packets"]
    assert [p[0] for p in got] == [u * 10**6 for u in units]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
    chunk=st.integers(1, 4096),
)
def test_property_mutated_and_cut_files(
    name: str, edits: list[tuple[int, int]], cut: int, chunk: int
) -> None:
    blob = bytearray(SAMPLES[name])
    for pos, value in edits:
        blob[pos % len(blob)] = value
    both_read(bytes(blob[: cut % (len(blob) + 1)]), chunk)


@settings(max_examples=300)
@given(head=st.sampled_from([b"", *(SAMPLES[n][:24] for n in sorted(SAMPLES))]),
       blob=st.binary(max_size=400), chunk=st.integers(1, 64))  # fmt: skip
def test_property_random_records(head: bytes, blob: bytes, chunk: int) -> None:
    both_read(head + blob, chunk)


_EXT6 = fx.ipv6_tcp("fd00::1", "fd00::2", 1, 2, 3, 4, fx.ACK, b"x", ext=[(0, b""), (60, b"")])
FRAMES = {
    "eth4": (1, fx.ethernet(IP4)),
    "eth4-vlan2": (1, fx.ethernet(IP4, vlans=[(0x88A8, 1), (0x8100, 3)])),
    "eth6": (1, fx.ethernet(IP6, fx.ETH_IPV6)),
    "eth6-ext": (1, fx.ethernet(_EXT6, fx.ETH_IPV6)),
    "sll": (113, fx.sll(IP4)),
    "sll2": (276, fx.sll2(IP6, fx.ETH_IPV6)),
    "raw4": (101, IP4),
    "raw6": (101, IP6),
    "ipv4": (228, IP4),
    "ipv6": (229, IP6),
    "null": (0, b"\x02\0\0\0" + IP4),
    "loop": (108, b"\0\0\0\x18" + IP6),
}


def test_every_link_type_decodes_alike() -> None:
    got = both_decode(list(FRAMES.values()))
    assert all(s is not None and s[8] for s in got), got


@settings(max_examples=500)
@given(linktype=st.sampled_from(LINKTYPES), data=st.binary(max_size=200))
def test_property_random_frames(linktype: int, data: bytes) -> None:
    both_decode([(linktype, data)])


@settings(max_examples=500)
@given(
    which=st.sampled_from(sorted(FRAMES)),
    edits=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 5000),
    linktype=st.sampled_from([None, *LINKTYPES]),
)
def test_property_mutated_frames(
    which: str, edits: list[tuple[int, int]], cut: int, linktype: int | None
) -> None:
    lt, frame = FRAMES[which]
    mutated = bytearray(frame)
    for pos, value in edits:
        mutated[pos % len(mutated)] = value
    both_decode([(lt if linktype is None else linktype, bytes(mutated[:cut]))])


def test_fragments_and_snapped_packets_are_python_s() -> None:
    frames = [(1, fx.ethernet(p)) for p in frags4(BIG[:3000], size=512)]
    frames.append((1, fx.ethernet(IP4)[:-5]))  # cut by a snaplen
    got = both_decode(frames)
    assert got[-2] is not None and len(got[-2][8]) == 3000
    assert got[-1] is not None and got[-1][8] == IP4[40:-5]


def test_addresses_are_shared_between_packets() -> None:
    """The same address comes back as the same object (the flow table hashes it once)."""
    d = PacketDecoder()
    a = d.decode(1, fx.ethernet(IP4), 0)
    b = d.decode(1, fx.ethernet(IP4), 1)
    assert a is not None and b is not None and a == b
    assert a[0] is b[0] and a[2] is b[2]


# -- records decoded as they are read (CaptureReader.feed_items, CaptureFile.items) -----------


def items_and_packets(blob: bytes, chunk: int) -> tuple[list[Any], list[RawPacket], Any, Any]:
    ri, rp = CaptureReader(), CaptureReader()
    items: list[Any] = []
    raws: list[RawPacket] = []
    for i in range(0, len(blob), chunk):
        items += ri.feed_items(blob[i : i + chunk])
        raws += rp.feed(blob[i : i + chunk])
    ri.close()
    rp.close()
    assert (ri.warning, ri.interfaces, ri.packets) == (rp.warning, rp.interfaces, rp.packets)
    return items, raws, ri, rp


def check_items(blob: bytes, chunk: int) -> int:
    """Each item is its raw packet, or that packet as `PacketDecoder.decode` decodes it without
    counting anything; returns how many came decoded."""
    try:
        items, raws, ri, _ = items_and_packets(blob, chunk)
    except CaptureFormatError:
        return 0
    assert len(items) == len(raws)
    decoded = 0
    for item, raw in zip(items, raws, strict=True):
        if len(item) == 4:
            assert item == raw
            continue
        decoded += 1
        d = PacketDecoder()
        with python_only():
            seg = d.decode(ri.interfaces[raw[1]].linktype, raw[2], raw[0])
        assert seg is not None and not any(d.stats.values())
        src, sport, dst, dport, seq, ack, flags, _win, payload = seg
        assert item == (raw[0], raw[1], src, sport, dst, dport, seq, ack, flags, payload)
    return decoded


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("chunk", [1, 5, 100_000])
def test_items_are_the_packets_decoded(name: str, chunk: int) -> None:
    assert check_items(SAMPLES[name], chunk) >= 5  # FRAME_C is raw IP in a pcap of Ethernet


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    chunk=st.integers(1, 4096),
)
def test_property_items_of_mutated_files(
    name: str, edits: list[tuple[int, int]], chunk: int
) -> None:
    blob = bytearray(SAMPLES[name])
    for pos, value in edits:
        blob[pos % len(blob)] = value
    check_items(bytes(blob), chunk)


def test_dissect_over_items_is_dissect_over_packets(tmp_path: Any) -> None:
    """The whole pipeline (`Dissection.run`) gives the same entries and counters either way, on
    traffic with keep-alive, pipelining, a lost segment and IPv6."""
    from shark_tui.engine.capfile import CaptureFile
    from shark_tui.engine.dissect import Dissection
    from tests.engine import http_traffic

    req, resp = http_traffic.REQ, http_traffic.RESP
    flows = http_traffic.synthetic_flow(40000, [(req, resp)] * 3)
    flows += http_traffic.synthetic_flow(40001, [(req, resp)] * 2, client="fd00::1",
                                         server="fd00::2")  # fmt: skip
    lossy = http_traffic.synthetic_flow(40002, [(req, resp)] * 3)
    del lossy[5]
    path = fx.write_pcap(tmp_path / "t.pcap", fx.LINKTYPE_ETHERNET, sorted(flows + lossy),
                         nanosecond=True)  # fmt: skip

    def run(items: bool) -> tuple[list[Any], dict[str, Any]]:
        got: list[Any] = []
        d = Dissection(got.append)
        with open(path, "rb") as f:
            c = CaptureFile(f)
            if items:
                d.run_file(c)
            else:
                d.run(c, c.interfaces)
        return got, {"dissect": d.stats, "tcp": d.table.stats, "packet": d.decoder.stats}

    fast, slow = run(True), run(False)
    assert fast == slow
    assert len(fast[0]) == 8 and fast[1]["tcp"]["gaps"] > 0


# -- connections taken out before the loop (IgnoreSet) -----------------------------------------


def _as_ipv6(frame: bytes) -> bytes:
    """The same TCP segment between fd00::1 and fd00::2 (for 10.0.0.1 and 10.0.0.2)."""
    seg = PacketDecoder().decode(1, frame, 0)
    assert seg is not None
    src, sport, dst, dport, seq, ack, flags, _win, payload = seg
    six = {b"\n\x00\x00\x01": "fd00::1", b"\n\x00\x00\x02": "fd00::2"}
    return fx.eth_ipv6_tcp(six[src], six[dst], sport, dport, seq, ack, flags, payload)


@st.composite
def _traffic(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """Random HTTP connections on few 4-tuples (ports used again after a close), spread over
    seconds (sweeps fall in between), some cut: a lost segment, a RST for the FINs, no
    handshake seen, two ends in IPv6."""
    from tests.engine import http_traffic

    packets: list[tuple[int, bytes]] = []
    for _ in range(draw(st.integers(2, 10))):
        cport = draw(st.sampled_from([40000, 40001, 40002, 40003]))
        start = http_traffic.T0 + draw(st.integers(0, 20_000)) * 1_000_000
        n = draw(st.integers(0, 3))
        six = draw(st.booleans())
        step = draw(st.sampled_from([10**6, 10**9]))
        flow = http_traffic.synthetic_flow(cport, [(http_traffic.REQ, http_traffic.RESP)] * n,
                                           start, step_ns=step)  # fmt: skip
        if six:
            flow = [(ts, _as_ipv6(frame)) for ts, frame in flow]
        cut = draw(st.sampled_from(["none", "lose", "rst", "midstream"]))
        if cut == "lose" and len(flow) > 4:
            del flow[draw(st.integers(3, len(flow) - 1))]
        elif cut == "rst":
            ts, frame = flow[-3]  # the client's FIN+ACK becomes a RST+ACK; the rest goes
            fl = 14 + (40 if six else 20) + 13
            assert frame[fl] == 0x11
            flow = [*flow[:-3], (ts, frame[:fl] + b"\x14" + frame[fl + 1 :])]
        elif cut == "midstream":
            flow = flow[3:]
        packets += flow
    return sorted(packets, key=lambda p: p[0])


DROPPED: list[int] = []  # what each run with the set took out


def _dissect(path: Any, ignore: bool, **kw: Any) -> tuple[list[Any], dict[str, Any]]:
    from shark_tui.engine.capfile import CaptureFile
    from shark_tui.engine.dissect import Dissection

    partition = kw.pop("partition", None)
    chunk = kw.pop("chunk", 1 << 20)
    note = kw.pop("note", False)
    got: list[Any] = []
    d = Dissection(got.append, **kw)
    d.partition = partition
    with open(path, "rb") as f:
        c = CaptureFile(f, chunk)
        if ignore:
            d.run_file(c)
            assert d.table.ignored is not None
        else:
            d.run(c, c.interfaces)
    stats = {"dissect": d.stats, "tcp": d.table.stats, "packet": d.decoder.stats}
    if ignore:
        assert d.table.ignored is not None
        DROPPED.append(d.table.ignored.dropped)
        if note:
            event("segments taken out" if d.table.ignored.dropped else "none taken out")
    return got, stats


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {f"{g}.{k}": (v, b[g][k]) for g in a for k, v in a[g].items() if b[g][k] != v}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=_traffic(), jobs=st.integers(2, 3), index=st.integers(0, 2),
       chunk=st.integers(200, 3000))  # fmt: skip
def test_property_taking_out_undissected_connections_changes_nothing(
    packets: list[tuple[int, bytes]], jobs: int, index: int, chunk: int
) -> None:
    """A worker's share (and a filter's) dissected with the ignore set equals the same share
    dissected from every packet: entries, and every counter. Sweeps every 0.5 s of capture."""
    import tempfile
    from pathlib import Path
    from unittest import mock

    from shark_tui.engine import dissect as dissect_mod

    def no_40001(a: str, p: int, b: str, q: int) -> bool:
        return 40001 not in (p, q)

    sweeps = mock.patch.object(dissect_mod, "SWEEP_INTERVAL", 0.5)
    with tempfile.TemporaryDirectory() as tmp, sweeps:
        path = fx.write_pcap(Path(tmp) / "t.pcap", fx.LINKTYPE_ETHERNET, packets, nanosecond=True)
        share = (index % jobs, jobs)
        for kw in ({"partition": share}, {"flow_filter": no_40001}):
            fast = _dissect(path, True, chunk=chunk, note=True, **kw)
            slow = _dissect(path, False, **kw)
            assert fast[0] == slow[0]
            assert _diff(fast[1], slow[1]) == {}


def test_the_ignore_set_takes_out_the_other_workers_segments(tmp_path: Any) -> None:
    from tests.engine import http_traffic

    packets: list[tuple[int, bytes]] = []
    for i in range(20):
        ex = [(http_traffic.REQ, http_traffic.RESP)] * 4
        packets += http_traffic.synthetic_flow(41000 + i, ex, http_traffic.T0 + i * 10**6)
    path = fx.write_pcap(tmp_path / "t.pcap", fx.LINKTYPE_ETHERNET, sorted(packets),
                         nanosecond=True)  # fmt: skip
    from shark_tui.engine.capfile import CaptureFile
    from shark_tui.engine.dissect import Dissection

    d = Dissection(lambda e: None)
    d.partition = (0, 2)
    with open(path, "rb") as f:
        d.run_file(CaptureFile(f, 2000))  # many batches: the set fills after the first
    assert d.table.ignored is not None
    # 10 connections are the other worker's: once decided (their first request), their 8 data
    # segments go, but for the ones read in the first batch (the set acts from the next)
    assert 50 <= d.table.ignored.dropped <= 10 * 8
    assert d.stats["packets"] == len(packets) and d.table.stats["segments"] == len(packets)


def test_tls_zone_and_fragments_with_the_ignore_set(tmp_path: Any) -> None:
    """A pcapng whose second interface is the daemon's ``tls`` one carries the same 4-tuples as
    the first (another zone: another connection each), and some requests come again as IPv4
    fragments (raw records the C filter cannot see into): each worker's share is the same with
    and without the set, counters included."""
    from tests.engine import http_traffic

    eth: list[tuple[int, int, bytes]] = []
    for i in range(12):
        ex = [(http_traffic.REQ, http_traffic.RESP)] * 3
        flow = http_traffic.synthetic_flow(42000 + i, ex, http_traffic.T0 + i * 3 * 10**6)
        for k, (ts, frame) in enumerate(flow):
            eth.append((ts, 0, frame))
            eth.append((ts + 500, 1, frame))  # the same bytes on the "tls" interface
            if i % 4 == 0 and k == 4:  # a request again, as two fragments
                ip = frame[14:]
                eth += [(ts + 700, 0, fx.ethernet(p)) for p in fx.ipv4_fragments(ip, 24)]
    path = fx.write_pcapng(tmp_path / "z.pcapng", [(1, "eth0"), (1, "tls")], sorted(eth))
    seen: list[Any] = []
    DROPPED.clear()
    for share in [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]:
        fast = _dissect(path, True, partition=share, chunk=700)
        slow = _dissect(path, False, partition=share)
        assert fast[0] == slow[0] and _diff(fast[1], slow[1]) == {}
        seen += fast[0]
    assert {e["tls"] for e in seen} == {True, False}
    assert len(seen) == 2 * 72  # each entry in two shares (jobs 2 and 3)
    assert all(n > 20 for n in DROPPED), DROPPED  # the set did take segments out


def _conn(cport: int, isn: int, t: int, close: bool = True) -> list[tuple[int, bytes]]:
    """One HTTP exchange on 10.0.0.1:cport -> 10.0.0.2:80, client ISN ``isn``, 1 ms apart."""
    from tests.engine import http_traffic

    req, resp = http_traffic.REQ, http_traffic.RESP
    c, s = "10.0.0.1", "10.0.0.2"
    f = fx.eth_ipv4_tcp
    out = [f(c, s, cport, 80, isn, 0, fx.SYN), f(s, c, 80, cport, 7000, isn + 1, fx.SYN | fx.ACK),
           f(c, s, cport, 80, isn + 1, 7001, fx.ACK),
           f(c, s, cport, 80, isn + 1, 7001, fx.ACK | fx.PSH, req),
           f(s, c, 80, cport, 7001, isn + 1 + len(req), fx.ACK | fx.PSH, resp)]  # fmt: skip
    if close:
        a, b = isn + 1 + len(req), 7001 + len(resp)
        out += [f(c, s, cport, 80, a, b, fx.FIN | fx.ACK), f(s, c, 80, cport, b, a + 1,
                fx.FIN | fx.ACK), f(c, s, cport, 80, a + 1, b + 1, fx.ACK)]  # fmt: skip
    return [(t + i * 10**6, frame) for i, frame in enumerate(out)]


def _both(packets: list[tuple[int, bytes]], tmp_path: Any, share: tuple[int, int]) -> list[Any]:
    """Entries of ``share``, the same with the set as without, whatever the batches (chunk
    sizes from a few records to many)."""
    path = fx.write_pcap(tmp_path / "t.pcap", fx.LINKTYPE_ETHERNET, sorted(packets),
                         nanosecond=True)  # fmt: skip
    slow = _dissect(path, False, partition=share)
    DROPPED.clear()
    for chunk in range(150, 1500, 50):
        fast = _dissect(path, True, partition=share, chunk=chunk)
        assert fast[0] == slow[0] and _diff(fast[1], slow[1]) == {}, chunk
    assert max(DROPPED) > 0
    return slow[0]


def test_a_new_connection_on_an_ignored_4_tuple_is_seen(tmp_path: Any) -> None:
    """Connection 1 (worker 1's) is left open; connection 2 reuses its 4-tuple with a new ISN
    (a new SYN) and is worker 0's: the set must let it through from its SYN."""
    t0 = fx.NS * 1_700_000_000
    first = _conn(43000, 1000, t0, close=False)  # 1
    filler = [(t0 + 10**7 + i * 10**6, f) for i, (_t, f) in enumerate(_conn(43001, 5, 0) * 2)]
    second = _conn(43000, 90_000, t0 + fx.NS)  # 4 (2 and 3 are the filler's, the same ISN)
    got = _both(first + filler + second, tmp_path, (0, 2))
    assert [e["id"] for e in got if e["src"]["port"] == 43000] == ["4:1"]


def test_sweeps_fall_on_the_same_records(tmp_path: Any) -> None:
    """Worker 0 closes connection 2; worker 1's long connection 1 carries a segment every
    second for 130 s. Those segments are where the sweeps fall (every 5 s): the one at 125 s
    forgets connection 2 (closed 120 s before), so a segment on its 4-tuple at 125.5 s starts a
    new connection (4). The set must keep the records the sweeps fall on, or connection 2 would
    still be remembered there and the segment counted as after its close."""
    t0 = fx.NS * 1_700_000_000
    c, s = "10.0.0.1", "10.0.0.2"
    long = _conn(44000, 100, t0, close=False)
    seq = 101 + len(long[3][1]) - 54
    long += [(t0 + k * fx.NS, fx.eth_ipv4_tcp(c, s, 44000, 80, seq, 7001 + 40, fx.ACK))
             for k in range(1, 131)]  # fmt: skip
    short = _conn(44001, 200, t0 + 2 * 10**7)  # 2, worker 0's
    other = _conn(44002, 300, t0 + 4 * 10**7)  # 3, worker 1's
    late = (t0 + 125 * fx.NS + fx.NS // 2, fx.eth_ipv4_tcp(
        c, s, 44001, 80, 5000, 9000, fx.ACK | fx.PSH, b"GET /late HTTP/1.1\r\n\r\n"))  # fmt: skip
    got = _both(long + short + other + [late], tmp_path, (0, 2))
    assert [(e["id"], e["summary"]) for e in got] == [("2:1", "/abc"), ("4:1", "/late")]


def test_an_armed_set_takes_records_out_as_they_are_read() -> None:
    """The reader returns no record of a connection in an armed set but for its SYN, FIN and
    RST (the FIN lets it go: later records come out); nothing more goes after a raw record in
    the same read, nor before the set is armed, nor where a sweep falls; what went counts as
    read. In pcapng a record followed by a simple packet block (which takes its time from the
    record before it) is never taken out."""
    from shark_tui.engine import _native
    from shark_tui.engine._native import IgnoreSet

    a, b = "10.0.0.1", "10.0.0.2"

    def seg(port: int, flags: int, data: bytes = b"") -> bytes:
        return fx.eth_ipv4_tcp(a, b, port, 80, 1, 1, flags, data)

    plain, fin, syn_ack = seg(1, fx.ACK, b"x"), seg(1, fx.FIN | fx.ACK), seg(1, fx.SYN | fx.ACK)
    mine = seg(2, fx.ACK, b"y")
    frag = fx.ethernet(fx.ipv4_fragments(seg(1, fx.ACK, b"z" * 64)[14:], 24)[0])
    t0 = 1_700_000_000 * fx.NS

    def read(frames: list[bytes], arm: bool = True, sweep: float | None = 2e9) -> list[Any]:
        s = IgnoreSet()
        s.add(fx.inet_pton(a), 1, fx.inet_pton(b), 80, 0)
        if arm:
            s.arm([0], sweep, 5.0)
        data = fx.pcap_bytes(fx.LINKTYPE_ETHERNET, [(t0 + i, f) for i, f in enumerate(frames)],
                             nanosecond=True)  # fmt: skip
        r = CaptureReader()
        items = r.feed_items(data, s)
        assert r.packets == len(frames) and s.dropped == len(frames) - len(items)
        return [(it[3], it[8]) if len(it) == 10 else "raw" for it in items]

    assert read([plain, mine, syn_ack, plain, fin, plain]) == [(2, 0x10), (1, 0x12), (1, 0x11),
                                                                (1, 0x10)]  # fmt: skip
    assert read([plain, frag, plain, mine]) == ["raw", (1, 0x10), (2, 0x10)]
    assert read([plain, plain], arm=False) == [(1, 0x10), (1, 0x10)]
    assert read([plain, plain], sweep=None) == [(1, 0x10)]  # the clock starts on the first

    s = IgnoreSet()
    s.add(fx.inet_pton(a), 1, fx.inet_pton(b), 80, 0)
    s.arm([0], 2e9, 5.0)
    blocks = [fx.epb(0, t0 // 1000 + i, plain) for i in range(3)]
    data = fx.shb() + fx.idb((fx.LINKTYPE_ETHERNET, "eth0"))
    data += blocks[0] + blocks[1] + fx.spb(mine) + blocks[2]
    r = CaptureReader()
    items = r.feed_items(data, s)
    assert r.packets == 4 and s.dropped == 1
    assert [len(it) for it in items] == [10, 4, 10]  # the second EPB stayed: an SPB follows
    assert items[1][0] == items[0][0]  # the SPB has the time of the record before it
    with pytest.raises(TypeError):
        _native.pcapng_epbs(data, 0, False, [(0, 1000, 0)], [], [1], "not a set")
    with pytest.raises(ValueError):
        s.add(fx.inet_pton(a), 1, bytes(16), 2, 0)


# -- the merge of dissect's workers ---------------------------------------------------------------


@st.composite
def _worker_streams(draw: st.DrawFn) -> list[bytes]:
    """2-4 workers' record streams: (ts, flow, n) increasing, equal timestamps across streams,
    empty payloads, each ended by an end record (some by a failed one, or cut short)."""
    from shark_tui.engine.parallel import _END, _FAILED, _RECORD

    streams = []
    for index in range(draw(st.integers(2, 4))):
        ts_list = sorted(draw(st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0]), max_size=12)))
        out = bytearray()
        for n, ts in enumerate(ts_list):
            payload = draw(st.binary(max_size=40))
            out += _RECORD.pack(ts, index + 4 * n, n, len(payload)) + payload
        end = draw(st.sampled_from(["end", "end", "failed", "cut"]))
        tail = b'{"warning": null}' if end == "end" else b"boom"
        if end != "cut":
            flow = _END if end == "end" else _FAILED
            out += _RECORD.pack(float("inf"), flow, 0, len(tail)) + tail
        streams.append(bytes(out))
    return streams


def _merged(streams: list[bytes], cuts: list[int], native: bool) -> tuple[bytes, list[Any]]:
    """What the parent's loop makes of ``streams`` read in pieces of ``cuts`` bytes: written to
    a file by the C merge (``native``), or by the Python reference to an object without a file
    descriptor."""
    import io
    import tempfile

    from shark_tui.engine import parallel

    class Pump:
        """Chunks in buffers it scribbles over when the merge gives them back (as the real pump
        reads into them again): a chunk still used after its release would show."""

        def __init__(self, data: bytes, size: int) -> None:
            self.pieces = [data[i : i + size] for i in range(0, len(data), size)]

        def chunk(self) -> memoryview:
            return memoryview(bytearray(self.pieces.pop(0) if self.pieces else b""))

        def release(self, chunk: bytes | memoryview) -> None:
            if isinstance(chunk, memoryview) and isinstance(chunk.obj, bytearray):
                chunk.obj[:] = b"\xee" * len(chunk.obj)

    summaries: list[Any] = []
    failures: list[str] = []
    pumps: Any = [Pump(s, c) for s, c in zip(streams, cuts, strict=True)]
    if native:
        with tempfile.TemporaryFile() as f:
            f.write(b"<")  # buffered: flushed before the C merge writes to the descriptor
            parallel._merge(pumps, f, summaries, failures)
            f.seek(0)
            out = f.read()[1:]
    else:
        b = io.BytesIO()
        parallel._merge(pumps, b, summaries, failures)
        out = b.getvalue()
    return out, [summaries, sorted(failures)]


@settings(max_examples=200, deadline=None)
@given(streams=_worker_streams(), data=st.data())
def test_property_the_c_merge_is_the_reference_merge(streams: list[bytes], data: Any) -> None:
    """Whatever the pieces the pipes deliver, the C merge writes what the Python reference
    writes, and that is every payload once, in (ts, flow, n) order, ties to the lower stream."""
    from shark_tui.engine import parallel

    cuts = [data.draw(st.integers(1, 64)) for _ in streams]
    c_out, c_rest = _merged(streams, cuts, True)
    py_out, py_rest = _merged(streams, cuts, False)
    assert c_out == py_out and c_rest == py_rest
    # the reference against heapq.merge of the records, as the parent merged before
    import heapq

    def records(s: bytes) -> list[tuple[tuple[float, int, int], bytes]]:
        got, pos = [], 0
        while pos + 20 <= len(s):
            ts, flow, n, length = parallel._RECORD.unpack_from(s, pos)
            if flow >= parallel._FAILED:
                break
            got.append(((ts, flow, n), s[pos + 20 : pos + 20 + length]))
            pos += 20 + length
        return got

    expected = b"".join(p for _k, p in heapq.merge(*map(records, streams), key=lambda r: r[0]))
    assert py_out == expected
    ended = [s for s in streams if b'{"warning": null}' in s[-37:]]
    assert len(py_rest[0]) == len(ended)
    assert len(py_rest[1]) == len(streams) - len(ended)


def _native_mod() -> Any:
    from shark_tui.engine import _native

    return _native


def test_the_c_merge_refuses_what_is_not_its_input() -> None:
    from shark_tui.engine.parallel import _RECORD

    m = _native_mod().merge_records
    with pytest.raises(TypeError):
        m([7, b""], [0], [True], 1)
    with pytest.raises(ValueError):
        m([b"", b""], [5], [True], 1)
    with pytest.raises(ValueError):
        m([b""] * 130, [0] * 65, [True] * 65, 1)
    assert m([b"", b""], [0], [False], 1) == (0, -1)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    rec = _RECORD.pack(1.0, 1, 1, 3) + b"abc" + _RECORD.pack(float("inf"), 0xFFFFFFFF, 0, 0)
    with pytest.raises(OSError):  # a closed descriptor: the error, not a crash
        m([rec, b""], [0], [True], w)
