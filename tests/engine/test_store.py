"""The segment store: rotation, retention, flushing, crash recovery, cross-source dedup, bad input.

Time is a fake clock; packets are built byte-exact with `fixtures_pcap`.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.engine import pcapng
from shark_tui.engine.capfile import CaptureReader
from shark_tui.engine.store import (
    DEDUP_WINDOW_NS,
    FLUSH_BYTES,
    FLUSH_INTERVAL_NS,
    Recorder,
    segment_path,
)
from tests.engine import fixtures_pcap as fx

ACK, FIN, PSH, RST, SYN = fx.ACK, fx.FIN, fx.PSH, fx.RST, fx.SYN
NS = fx.NS
T0 = 1_700_000_000 * NS
MIB = 1 << 20
META = struct.Struct("=IIII")


class Clock:
    """A fake wall clock; packets are stamped with it too (µs, as pcapy-ng gives them)."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def step(self, ns: int = 1_000_000) -> int:
        self.now += ns
        return self.now


def make(
    directory: str | Path,
    clock: Clock,
    *,
    max_bytes: int = 64 * MIB,
    max_age_ns: int = 3600 * NS,
    segment_bytes: int | None = None,
    segment_ns: int | None = None,
    sources: tuple[str, ...] = ("eth0",),
    **kw: int,
) -> Recorder:
    rec = Recorder(
        str(directory), max_bytes, max_age_ns, segment_bytes=segment_bytes,
        segment_ns=segment_ns, clock=clock, **kw,
    )  # fmt: skip
    for name in sources:
        rec.source(name, fx.LINKTYPE_ETHERNET)
    return rec


def batch(packets: list[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    """``(ts_ns, frame)`` packets as pcapy-ng's next_batch returns them: (data, meta)."""
    data = bytearray()
    meta = bytearray()
    for ts, frame in packets:
        meta += META.pack(ts // NS, ts % NS // 1000, len(data), len(frame))
        data += frame
    return bytes(data), bytes(meta)


@dataclass
class Stored:
    seq: int
    offset: int
    source: str
    ts_ns: int
    data: bytes
    comment: bytes


def stored(directory: str | Path) -> list[Stored]:
    """Every packet in the segment files of ``directory``, in order (files must be whole)."""
    out = []
    for name in sorted(os.listdir(directory)):
        buf = Path(directory, name).read_bytes()
        result = pcapng.SegmentScan([])
        for p in pcapng.scan(buf, result):
            iface = result.interfaces[p.iface]
            assert p.orig_len == len(p.data)
            out.append(Stored(int(name[4:12]), p.offset, iface[0], p.ts_ns, p.data, p.comment))
        assert result.problem is None, (name, result.problem)
        assert result.end == len(buf)
    return out


def disk_bytes(directory: str | Path) -> int:
    return sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))


def flows(rec: Recorder) -> dict[int, dict[str, object]]:
    """Every flow's `as_dict`, with its source as a name (ids depend on registration order)."""
    out = {}
    for num, f in rec.index.by_num.items():
        d = f.as_dict()
        d["source"] = rec.sources[f.source].name
        out[num] = d
    return out


def tshark_ok(path: str | Path) -> list[str]:
    """tshark reads the whole file without complaint; returns its interface names, per packet."""
    proc = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.interface_name"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    errors = [ln for ln in proc.stderr.splitlines() if ln and "Running as user" not in ln]
    assert proc.returncode == 0 and not errors, proc.stderr
    return proc.stdout.splitlines()


# -- traffic ------------------------------------------------------------------------------------


class Conn:
    """One TCP connection's frames with consistent sequence numbers."""

    def __init__(
        self, c: str, cport: int, s: str, sport: int, *, isn: int = 1000, link: str = "eth"
    ) -> None:
        self.c, self.cport, self.s, self.sport = c, cport, s, sport
        self.seq = [isn, 700_000]  # next sequence number: client, server
        self.link = link

    def frame(self, from_client: bool, flags: int, payload: bytes = b"") -> bytes:
        i = 0 if from_client else 1
        src, dst = (self.c, self.s) if from_client else (self.s, self.c)
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        seq, ack = self.seq[i], self.seq[1 - i]
        self.seq[i] = (seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        if self.link == "sll":
            return fx.sll(fx.ipv4_tcp(src, dst, sp, dp, seq, ack, flags, payload))
        if ":" in src:
            return fx.eth_ipv6_tcp(src, dst, sp, dp, seq, ack, flags, payload)
        if self.link == "vlan":
            return fx.ethernet(
                fx.ipv4_tcp(src, dst, sp, dp, seq, ack, flags, payload), vlans=[(0x8100, 7)]
            )
        return fx.eth_ipv4_tcp(src, dst, sp, dp, seq, ack, flags, payload)

    def client(self, payload: bytes = b"", flags: int = ACK | PSH) -> bytes:
        return self.frame(True, flags, payload)

    def server(self, payload: bytes = b"", flags: int = ACK | PSH) -> bytes:
        return self.frame(False, flags, payload)

    def handshake(self) -> list[bytes]:
        return [self.client(flags=SYN), self.server(flags=SYN | ACK), self.client(flags=ACK)]

    def exchange(self, request: bytes, response: bytes) -> list[bytes]:
        return [self.client(request), self.server(response), self.client(flags=ACK)]

    def close(self) -> list[bytes]:
        return [
            self.client(flags=FIN | ACK), self.server(flags=FIN | ACK), self.client(flags=ACK)
        ]  # fmt: skip


def http(n: int, size: int = 0) -> tuple[bytes, bytes]:
    body = b"b" * size
    req = b"POST /item/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (n, size) + body
    return req, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def workload() -> list[tuple[str, bytes]]:
    """A deterministic mix, interleaved: handshakes, HTTP and redis exchanges of various sizes,
    a server answering first from a high port (no handshake), port reuse, IPv6, Linux cooked
    and VLAN frames, a loopback connection in a namespace, UDP, and copies of packets on a
    second interface (dropped as duplicates)."""
    per_conn: list[list[tuple[str, bytes]]] = []
    for i in range(8):
        c = Conn("10.1.0.1", 41000 + i, "10.1.0.2", 8080, isn=1000 + i)
        src = "eth0" if i % 2 else "veth1"
        pk = [(src, f) for f in c.handshake()]
        for k in range(3 + i % 3):
            pk += [(src, f) for f in c.exchange(*http(k, 300 * (k + i)))]
        pk += [(src, f) for f in c.close()]
        if i % 3 == 0:  # the same packets crossing the other interface too
            other = "eth0" if src == "veth1" else "veth1"
            pk = [x for p in pk for x in (p, (other, p[1]))]
        per_conn.append(pk)
    # redis, never closed
    r = Conn("10.1.0.3", 50000, "10.1.0.4", 6379)
    pk = [("eth0", f) for f in r.handshake()]
    for k in range(4):
        pk += [
            ("eth0", f) for f in r.exchange(b"*2\r\n$3\r\nGET\r\n$2\r\nk%d\r\n" % k, b"$1\r\nv\r\n")
        ]
    per_conn.append(pk)
    # joined midway: the server on a high port answers first
    m = Conn("10.1.0.5", 8081, "10.1.0.6", 60000)
    pk = [("eth0", m.server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))]
    pk += [("eth0", m.client(flags=ACK))]
    pk += [("eth0", f) for f in m.exchange(*http(9))]
    per_conn.append(pk)
    # port reuse: the same 4-tuple twice, new ISN
    pk = []
    for isn in (5, 9_000_000):
        pr = Conn("10.1.0.7", 42000, "10.1.0.8", 80, isn=isn)
        pk += [("eth0", f) for f in pr.handshake() + pr.exchange(*http(1)) + pr.close()]
    per_conn.append(pk)
    # IPv6, Linux cooked, VLAN
    v6 = Conn("fd00::1", 43000, "fd00::2", 80)
    per_conn.append([("veth1", f) for f in v6.handshake() + v6.exchange(*http(2, 900))])
    sl = Conn("10.1.0.9", 44000, "10.1.0.10", 80, link="sll")
    per_conn.append([("any", f) for f in sl.handshake() + sl.exchange(*http(3))])
    vl = Conn("10.1.0.11", 45000, "10.1.0.12", 80, link="vlan")
    per_conn.append([("eth0", f) for f in vl.handshake() + vl.exchange(*http(4))])
    # loopback in a namespace: same addresses as an eth0 connection, its own zone
    lo = Conn("10.1.0.1", 41000, "10.1.0.2", 8080, isn=1)
    per_conn.append([("ns1/lo", f) for f in lo.handshake() + lo.exchange(*http(5))])
    # not TCP
    udp = fx.ethernet(fx.ipv4("10.1.0.1", "10.1.0.53", 17, b"\x30\x39\x00\x35\x00\x0c\x00\x00abcd"))
    arp = fx.ethernet(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, 0x0806)
    per_conn.append([("eth0", udp), ("veth1", arp), ("eth0", udp)])
    # round-robin interleave
    out: list[tuple[str, bytes]] = []
    while any(per_conn):
        for pk in per_conn:
            if pk:
                out.append(pk.pop(0))
    # at the end, a long-lived connection goes on while new ones start (the last segment holds
    # both kinds)
    long = Conn("10.1.0.20", 46000, "10.1.0.21", 80)
    tail = [("eth0", f) for f in long.handshake()]
    out = tail + out
    for i in range(6):
        new = Conn("10.1.0.22", 47000 + i, "10.1.0.23", 80)
        out += [("eth0", f) for f in long.exchange(*http(i, 200))]
        out += [("veth1", f) for f in new.handshake() + new.exchange(*http(i, 50 * i))]
    return out


SOURCES = ("eth0", "veth1", "any", "ns1/lo")
LINKTYPES = {"any": fx.LINKTYPE_LINUX_SLL}


def register(rec: Recorder) -> None:
    for name in SOURCES:
        rec.source(name, LINKTYPES.get(name, fx.LINKTYPE_ETHERNET))


def feed(rec: Recorder, clock: Clock, packets: list[tuple[str, bytes]], per_batch: int = 3) -> None:
    """Packets in batches of ``per_batch`` per source run, 1 ms apart on the clock."""
    i = 0
    while i < len(packets):
        name = packets[i][0]
        run: list[tuple[int, bytes]] = []
        while i < len(packets) and packets[i][0] == name and len(run) < per_batch:
            run.append((clock.step(), packets[i][1]))
            i += 1
        rec.add_batch(rec.source(name, 0), *batch(run))


# -- writing and reading back -------------------------------------------------------------------


def test_packets_read_back(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, sources=())
    register(rec)
    pk = workload()
    feed(rec, clock, pk)
    rec.close()
    got = stored(tmp_path)
    # nothing lost except the copies on the second interface: connections 0, 3 and 6, of
    # 3 + 3 * 3 + 3 packets each
    assert rec.stats["duplicates"] == 45
    assert len(got) == len(pk) - 45 == rec.stats["packets"]
    assert sum(s.packets for s in rec.sources) == len(got)
    assert rec.stats["not_tcp"] == 3
    # timestamps in order, µs resolution
    assert [s.ts_ns for s in got] == sorted(s.ts_ns for s in got)
    assert all(s.ts_ns % 1000 == 0 for s in got)
    # one comment per flow per segment, on its first packet there, naming its number
    seen: set[tuple[int, int]] = set()
    for s in got:
        number = pcapng.parse_flow_comment(s.comment)
        if s.comment:
            assert number is not None
            assert (s.seq, number) not in seen
            seen.add((s.seq, number))
    per_flow_segments = {
        (f.runs[i], num) for num, f in rec.index.by_num.items() for i in range(0, len(f.runs), 3)
    }
    assert seen == per_flow_segments
    # every segment is a pcapng tshark reads, with our interface names
    names = []
    for info in rec.segments:
        names += tshark_ok(info.path)
    assert names == [s.source for s in got]


def test_packets_and_interfaces_in_one_segment(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, sources=())
    eth = rec.source("eth0", 1, description="the uplink")
    anyi = rec.source("ns1/any", fx.LINKTYPE_LINUX_SLL, snaplen=65535)
    c = Conn("10.0.0.1", 40000, "10.0.0.2", 80)
    f1 = c.client(flags=SYN)
    f2 = fx.sll(fx.ipv4_tcp("10.0.0.2", "10.0.0.1", 80, 40000, 5, 1001, SYN | ACK))
    rec.add(anyi, T0 + 1_000, f2, len(f2))  # the SLL source first: it is interface 0
    rec.add(eth, T0 + 2_000, f1, len(f1))
    rec.add(eth, T0 + 3_999, f1, len(f1))  # add() keeps nanoseconds (imported files)
    rec.close()
    buf = Path(segment_path(str(tmp_path), 1)).read_bytes()
    reader = CaptureReader()
    pkts = reader.feed(buf)
    assert reader.close() is None
    assert [(i.name, i.linktype, i.snaplen) for i in reader.interfaces] == [
        ("ns1/any", 113, 65535),
        ("eth0", 1, 262144),
    ]
    assert pkts == [
        (T0 + 1_000, 0, f2, len(f2)),
        (T0 + 2_000, 1, f1, len(f1)),
        (T0 + 3_999, 1, f1, len(f1)),
    ]
    result = pcapng.SegmentScan([])
    scanned = list(pcapng.scan(buf, result))
    assert result.interfaces == [("ns1/any", 113, ""), ("eth0", 1, "the uplink")]
    assert [p.comment for p in scanned] == [b"shark-tui flow=1", b"", b""]  # one connection
    f = rec.index.by_num[1]
    assert f.as_dict()["runs"] == [(1, scanned[0].offset, scanned[2].offset)]
    assert f.as_dict()["packets"] == [2, 1]
    assert f.source == anyi


def test_cut_packets_keep_their_original_length(tmp_path: Path) -> None:
    """Imported files may hold packets cut by a snaplen: the segment says how long they were."""
    rec = make(tmp_path, Clock())
    c = Conn("10.0.0.1", 40000, "10.0.0.2", 80)
    frame = c.client(b"GET / HTTP/1.1\r\n\r\n", flags=PSH | ACK)
    rec.add(0, T0, frame[:60], len(frame))
    rec.close()
    reader = CaptureReader()
    pkts = reader.feed(Path(segment_path(str(tmp_path), 1)).read_bytes())
    assert pkts == [(T0, 0, frame[:60], len(frame))]
    assert rec.sources[0].bytes == len(frame)


def test_not_tcp_stored_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock)
    udp = fx.ethernet(fx.ipv4("10.0.0.1", "10.0.0.2", 17, b"\0\1\0\2\0\x0c\0\0data"))
    arp = fx.ethernet(b"\0\1\x08\0\6\4\0\1" + bytes(20), 0x0806)
    icmp6 = fx.ethernet(fx.ipv6("fd00::1", "fd00::2", 58, b"\x80\0\0\0\0\1\0\1"), fx.ETH_IPV6)
    for f in (udp, arp, icmp6, b""):
        rec.add(0, clock.step(), f, len(f))
    rec.flush()
    assert rec.stats["not_tcp"] == 4 and rec.stats["packets"] == 4
    assert len(rec.index) == 0
    assert [s.data for s in stored(tmp_path)] == [udp, arp, icmp6, b""]
    assert [s.comment for s in stored(tmp_path)] == [b""] * 4


# -- rotation -----------------------------------------------------------------------------------


def test_rotation_by_size(tmp_path: Path) -> None:
    clock = Clock()
    seg = 4096
    rec = make(tmp_path, clock, segment_bytes=seg, sources=("eth0", "veth1"))
    pk: list[tuple[str, bytes]] = []
    conns = [Conn("10.0.0.1", 30000 + i, "10.0.0.2", 80) for i in range(40)]
    for i, c in enumerate(conns):  # many new flows: many comments and interface blocks
        src = "eth0" if i % 3 else "veth1"
        pk += [(src, f) for f in c.handshake()]
        pk += [(src, c.client(b"x" * (i * 37 % 1400)))]
        if i == 17:
            pk += [(src, c.client(b"y" * 5000))]  # larger than a segment: alone in its own
    feed(rec, clock, pk, per_batch=5)
    rec.close()
    got = stored(tmp_path)
    assert len(got) == len(pk)
    assert [s.data for s in got] == [f for _, f in pk]
    seqs = sorted({s.seq for s in got})
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 10
    oversized = 0
    for info in rec.segments:
        size = os.path.getsize(info.path)
        assert size == info.size
        n = sum(1 for s in got if s.seq == info.seq)
        assert n == info.packets
        if size > seg:
            assert n == 1, (info.seq, size)
            oversized += 1
    assert oversized == 1
    assert rec.stats["segments_deleted"] == 0


@pytest.mark.parametrize("seg", range(1000, 1200, 13))
def test_rotation_by_size_exact_bound(tmp_path: Path, seg: int) -> None:
    """Comments and interface blocks count too: no segment ends above the limit."""
    clock = Clock()
    rec = make(tmp_path, clock, segment_bytes=seg, sources=("a", "b", "c"))
    for i in range(60):
        f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000 + i, 80, 1, 0, SYN)
        rec.add(i % 3, clock.step(), f, len(f))
    rec.close()
    assert rec.segments
    for info in rec.segments:
        assert os.path.getsize(info.path) <= seg


def test_rotation_by_time(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, segment_ns=10 * NS)
    c = Conn("10.0.0.1", 40000, "10.0.0.2", 80)
    for f in c.handshake():
        rec.add(0, clock.step(), f, len(f))
    assert rec.current is not None and rec.current.seq == 1
    start = rec.current.opened_wall_ns
    assert start == T0 + 1_000_000  # the clock when its first packet came
    clock.now = start + 10 * NS - 1
    rec.tick()
    assert rec.current is not None and rec.segments == []
    clock.now = start + 10 * NS
    rec.tick()
    assert rec.current is None
    assert [s.seq for s in rec.segments] == [1]
    assert rec.segments[0].packets == 3
    rec.tick()  # nothing open: nothing to rotate
    for f in c.exchange(*http(1)):
        rec.add(0, clock.step(), f, len(f))
    assert rec.current is not None and rec.current.seq == 2
    clock.step(5 * NS)
    rec.tick()
    assert rec.current is not None and rec.current.seq == 2
    rec.close()
    assert [s.seq for s in stored(tmp_path)] == [1, 1, 1, 2, 2, 2]
    assert rec.index.by_num[1].runs[::3] == [1, 2]


# -- retention ----------------------------------------------------------------------------------


def test_retention_by_bytes(tmp_path: Path) -> None:
    clock = Clock()
    max_bytes, seg = 64 * 1024, 8 * 1024
    rec = make(tmp_path, clock, max_bytes=max_bytes, segment_bytes=seg, sources=("eth0", "lo"))
    sizes = [0, 10, 100, 700, 1400, 3000, 9000]  # 9000: a jumbo frame, larger than a segment
    k = 0
    for b in range(400):
        pk = []
        for j in range(1 + b % 17):
            c = Conn("10.0.0.1", 1024 + (k % 60000), "10.0.0.2", 80)
            k += 1
            pk.append((clock.step(), c.client(b"z" * sizes[(b + j) % len(sizes)])))
        rec.add_batch(b % 2, *batch(pk))
        assert rec.store_bytes() <= max_bytes + 9000 + 200  # a jumbo alone in its segment
        assert disk_bytes(tmp_path) + len(rec._buf) == rec.store_bytes()
        if b % 50 == 0:
            rec.tick()
    rec.close()
    assert disk_bytes(tmp_path) <= max_bytes + 9200
    assert rec.stats["segments_deleted"] > 20
    # the oldest went first: what is left is the newest run of segments
    seqs = sorted(s.seq for s in rec.segments)
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(s.path) for s in rec.segments]
    # the index points only into segments that exist
    live = set(seqs)
    for f in rec.index.by_num.values():
        assert {f.runs[i] for i in range(0, len(f.runs), 3)} <= live
    assert set(rec.index.segment_flows) <= live
    # and to every flow with a packet left
    numbers = {pcapng.parse_flow_comment(s.comment) for s in stored(tmp_path) if s.comment}
    assert set(rec.index.by_num) == numbers


def test_retention_by_bytes_without_oversized_packets(tmp_path: Path) -> None:
    """The budget holds to the byte: closed segments within max_bytes, plus the open one."""
    clock = Clock()
    max_bytes, seg = 50_000, 5_000
    rec = make(tmp_path, clock, max_bytes=max_bytes, segment_bytes=seg, sources=("a", "b"))
    for b in range(300):
        pk = []
        for j in range(b % 7 + 1):
            payload = b"q" * (b * j % 900)
            f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 1024 + b, 80, j, 0, ACK | PSH, payload)
            pk.append((clock.step(), f))
        rec.add_batch(b % 2, *batch(pk))
        rec.flush()
        assert disk_bytes(tmp_path) <= max_bytes + seg
        assert rec.closed_bytes <= max_bytes
    assert rec.stats["segments_deleted"] > 5


def test_retention_by_age(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, max_age_ns=60 * NS, segment_ns=10 * NS)
    deleted_at = []
    for sec in range(1, 200):
        clock.now = T0 + sec * NS
        f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000 + sec, 80, 1, 0, SYN)
        rec.add(0, clock.now, f, len(f))
        before = rec.stats["segments_deleted"]
        rec.tick()
        if rec.stats["segments_deleted"] > before:
            deleted_at.append(sec)
        for s in rec.segments:
            assert s.last_ns >= clock.now - 60 * NS
        assert sorted(os.listdir(tmp_path)) == [
            os.path.basename(s.path) for s in rec.segment_list()
        ]
    # a segment opens with the packet of second 1 and is closed by the tick 10 s later, after
    # that second's packet went in: seconds 1-11, 12-22, ...; each goes once its newest packet
    # is more than 60 s old: at 72, 83, ...
    assert deleted_at == list(range(72, 200, 11))
    assert [(s.first_ns - T0) // NS for s in rec.segment_list()] == list(range(133, 200, 11))
    assert set(rec.index.segment_flows) == {s.seq for s in rec.segment_list()}
    assert min(rec.index.by_num) == 133


def test_segment_numbers_never_reused_after_the_store_emptied(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, max_age_ns=60 * NS, segment_ns=10 * NS)
    f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 0, SYN)
    rec.add(0, clock.now, f, len(f))
    clock.step(10 * NS)
    rec.tick()  # rotated
    clock.step(100 * NS)
    rec.tick()  # aged out: the store is empty
    assert rec.segment_list() == [] and os.listdir(tmp_path) == []
    rec.add(0, clock.now, f, len(f))
    assert rec.current is not None and rec.current.seq == 2


def test_too_many_flows_drop_the_oldest_segment(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, max_flows=10)
    for i in range(12):
        f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000 + i, 80, 1, 0, SYN)
        rec.add(0, clock.step(), f, len(f))
    rec.tick()
    assert rec.stats["segments_deleted_for_flows"] == 1
    assert len(rec.index) == 0 and rec.segment_list() == []
    for i in range(3):
        f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 50000 + i, 80, 1, 0, SYN)
        rec.add(0, clock.step(), f, len(f))
    rec.tick()
    assert len(rec.index) == 3 and rec.stats["segments_deleted_for_flows"] == 1


# -- flushing -----------------------------------------------------------------------------------


def _on_disk(path: str) -> list[bytes]:
    """The packets another reader sees in the file right now."""
    with open(path, "rb") as f:
        buf = f.read()
    result = pcapng.SegmentScan([])
    packets = [p.data for p in pcapng.scan(buf, result)]
    assert result.problem is None
    return packets


def test_flush_makes_packets_visible(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock)
    c = Conn("10.0.0.1", 40000, "10.0.0.2", 80)
    frames = c.handshake()
    for f in frames[:2]:
        rec.add(0, clock.step(), f, len(f))
    path = segment_path(str(tmp_path), 1)
    assert os.path.getsize(path) == 0  # buffered
    rec.flush()
    assert _on_disk(path) == frames[:2]
    assert rec.store_bytes() == os.path.getsize(path) == rec.segment_list()[0].size
    rec.add(0, clock.step(), frames[2], len(frames[2]))
    assert _on_disk(path) == frames[:2]
    rec.flush()
    assert _on_disk(path) == frames
    rec.flush()  # nothing buffered: no write
    assert rec.stats["flushes"] == 2


def test_tick_flushes_after_the_interval(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock)
    path = segment_path(str(tmp_path), 1)
    c = Conn("10.0.0.1", 40000, "10.0.0.2", 80)
    frames = c.handshake() + c.exchange(*http(1))
    rec.add(0, clock.now, frames[0], len(frames[0]))
    rec.flush()
    step = FLUSH_INTERVAL_NS // 4
    for f in frames[1:3]:
        rec.add(0, clock.step(step), f, len(f))
        rec.tick()
        assert _on_disk(path) == frames[:1]  # not yet due
    for f in frames[3:]:
        rec.add(0, clock.step(step), f, len(f))
    clock.step(FLUSH_INTERVAL_NS)
    rec.tick()
    assert _on_disk(path) == frames


def test_tick_without_new_packets_does_not_write(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock)
    f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 0, SYN)
    rec.add(0, clock.now, f, len(f))
    rec.tick()
    n = rec.stats["flushes"]
    for _ in range(5):
        clock.step(FLUSH_INTERVAL_NS)
        rec.tick()
    assert rec.stats["flushes"] == n


def test_big_batch_flushes_by_itself(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, segment_bytes=8 * MIB)
    c = Conn("10.0.0.1", 40000, "10.0.0.2", 80)
    pk = [(clock.step(), c.client(b"p" * 1400)) for _ in range(FLUSH_BYTES // 1400 + 10)]
    rec.add_batch(0, *batch(pk))
    assert len(_on_disk(segment_path(str(tmp_path), 1))) == len(pk)
    assert rec._buf == bytearray()


# -- recovery -----------------------------------------------------------------------------------


def _run_workload(directory: Path, segment_bytes: int = 3000) -> tuple[Recorder, Clock]:
    clock = Clock()
    rec = make(directory, clock, segment_bytes=segment_bytes, sources=())
    register(rec)
    feed(rec, clock, workload())
    rec.flush()  # and no close: the process dies here
    return rec, clock


def _replay(directory: Path, packets: list[Stored], segment_bytes: int, clock: Clock) -> Recorder:
    """A fresh recorder fed exactly the packets that survived, as they were stored."""
    rec = make(directory, Clock(clock.now), segment_bytes=segment_bytes, sources=())
    register(rec)
    for s in packets:
        rec.add(rec.source(s.source, 0), s.ts_ns, s.data, len(s.data))
    rec.flush()
    return rec


def _cuts(buf: bytes) -> Iterator[int]:
    """Interesting places to cut the last segment: in the section header, in each interface
    block, on and around every block boundary, in the middle of each packet block."""
    result = pcapng.SegmentScan([])
    packets = list(pcapng.scan(buf, result))
    assert result.problem is None
    yield 0
    yield 10
    first = packets[0].offset
    yield from (first - 5, first)
    ends = [p.offset for p in packets[1:]] + [len(buf)]
    for p, end in zip(packets, ends, strict=True):
        yield from (p.offset + 1, p.offset + 7, p.offset + 12, (p.offset + end) // 2, end - 1)
    yield len(buf)


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Recorder, Clock]]:
    """A store left behind by a killed writer (flushed, never closed; tests work on copies)."""
    d = tmp_path_factory.mktemp("killed")
    rec, clock = _run_workload(d)
    yield d, rec, clock
    rec.close()


def test_workload_spans_segments(killed: tuple[Path, Recorder, Clock]) -> None:
    _, rec, _ = killed
    assert rec.current is not None and len(rec.segments) >= 8
    last = rec.current.seq
    in_last = [f for f in rec.index.by_num.values() if f.runs[-3] == last]
    # the last segment holds flows that started before it and some that started in it
    assert any(f.runs[0] < last for f in in_last) and any(f.runs[0] == last for f in in_last)
    # checkpoints were taken
    assert sum(1 for f in rec.index.by_num.values() if f.checkpoints) >= 4
    assert rec.index.stats["port_reuse"] == 1 and rec.index.stats["swapped"] == 1


def test_recover_clean_store(tmp_path: Path, killed: tuple[Path, Recorder, Clock]) -> None:
    d, live, clock = killed
    shutil.copytree(d, tmp_path / "s")
    rec = make(tmp_path / "s", Clock(clock.now), sources=())
    rec.recover()
    assert rec.warnings == []
    assert flows(rec) == flows(live)
    assert rec.index.next_num == live.index.next_num
    assert rec.stats["recovered_segments"] == len(live.segment_list())
    assert rec.stats["recovered_packets"] == live.stats["packets"]
    assert [(s.seq, s.size, s.packets, s.first_ns, s.last_ns) for s in rec.segments] == [
        (s.seq, s.size, s.packets, s.first_ns, s.last_ns) for s in live.segment_list()
    ]
    assert sorted((s.name, s.packets, s.bytes) for s in rec.sources) == sorted(
        (s.name, s.packets, s.bytes) for s in live.sources
    )


def test_recover_after_kill(tmp_path: Path, killed: tuple[Path, Recorder, Clock]) -> None:
    d, live, clock = killed
    assert live.current is not None
    last_seq = live.current.seq
    last_path = Path(live.current.path).name
    orig = (d / last_path).read_bytes()
    before = [s for s in stored(d) if s.seq < last_seq]
    in_last = [s for s in stored(d) if s.seq == last_seq]
    untouched = {
        num: f for num, f in flows(live).items() if live.index.by_num[num].runs[-3] < last_seq
    }
    assert len(untouched) >= 5
    checked_tshark = 0
    for n, (cut, garbage) in enumerate(
        [(c, b"") for c in _cuts(orig)]
        + [(len(orig), b"\0" * 3), (len(orig), bytes(range(7, 107))), (len(orig) - 9, b"\xff" * 64)]
        + [(0, b"\x0a\x0d\x0d")]
    ):
        work = tmp_path / f"cut{n}"
        shutil.copytree(d, work)
        with open(work / last_path, "r+b") as f:
            f.truncate(cut)
            f.seek(cut)
            f.write(garbage)
        rec = make(work, Clock(clock.now), segment_bytes=3000, sources=())
        rec.recover()
        assert rec.current is None
        whole = [s for s in in_last if s.offset < cut and _block_end(orig, s.offset) <= cut]
        msg = f"cut at {cut} of {len(orig)}, +{len(garbage)} bytes"
        # the last segment is trimmed to its last complete block; removed when even its section
        # header is cut; an empty file (killed before the first flush) goes without a word
        if cut == 0 and not garbage:
            assert not (work / last_path).exists() and rec.warnings == [], msg
            assert rec.segments[-1].seq < last_seq, msg
        elif cut < 28:
            assert not (work / last_path).exists(), msg
            assert any("not a segment, removed" in w for w in rec.warnings), msg
        else:
            size = (work / last_path).stat().st_size
            assert size <= cut, msg
            assert (size < cut or bool(garbage)) == bool(rec.warnings), (msg, rec.warnings)
            assert rec.stats["trimmed_bytes"] == cut + len(garbage) - size, msg
            if whole and (garbage or (size < cut and checked_tshark < 2)):
                assert len(tshark_ok(work / last_path)) == len(whole), msg
                checked_tshark += 1
        assert stored(work) == before + whole, msg
        # flows wholly before the last segment: exactly as they were
        got = flows(rec)
        for num, want in untouched.items():
            assert got[num] == want, (msg, num)
        # every other flow: as if the writer had only ever seen what survived
        ref = _replay(tmp_path / f"ref{n}", before + whole, 3000, clock)
        assert got == flows(ref), msg
        # new connections: numbers above all old ones, in a new segment with a higher number
        # (numbers of connections wholly in the lost tail are given again: nothing kept them)
        old_max = max(got)
        if len(whole) == len(in_last):
            assert rec.index.next_num == live.index.next_num, msg
        c = Conn("10.9.0.1", 33333, "10.9.0.2", 80)
        frames = c.handshake()
        for fr in frames:
            rec.add(rec.source("eth0", 1), clock.now + 1000, fr, len(fr))
        new = rec.index.by_key[(0, fx.inet_pton("10.9.0.1"), 33333, fx.inet_pton("10.9.0.2"), 80)]
        assert new.num > old_max, msg
        assert rec.current is not None and rec.current.seq > last_seq, msg
        new_seq = rec.current.seq
        rec.close()
        tail = stored(work)[-3:]
        assert [(s.seq, s.source, s.data) for s in tail] == [(new_seq, "eth0", f) for f in frames]
        assert tail[0].comment == b"shark-tui flow=%d" % new.num
        # a second restart gives the same numbers again
        again = make(work, Clock(clock.now), sources=())
        again.recover()
        assert flows(again) == flows(rec), msg


def test_recover_port_reuse_after_wrong_roles(tmp_path: Path) -> None:
    """Joined midway with the roles wrong (server port above the client's), ended, then the same
    ports again from the real client: two flows, the same after a restart, whatever the cut."""
    clock = Clock()
    rec = make(tmp_path, clock, segment_bytes=400)
    old = Conn("10.0.0.2", 50051, "10.0.0.1", 40000)  # as the ports make it look
    frames = [old.client(flags=ACK), old.server(flags=ACK)]
    frames += [old.server(flags=FIN | ACK), old.client(flags=FIN | ACK)]
    new = Conn("10.0.0.1", 40000, "10.0.0.2", 50051, isn=123)
    frames += new.handshake() + new.exchange(*http(1))
    for f in frames:
        rec.add(0, clock.step(), f, len(f))
    assert len(rec.segment_list()) > 2
    assert sorted(rec.index.by_num) == [1, 2] and rec.index.stats["port_reuse"] == 1
    assert flows(rec)[2]["client"] == ["10.0.0.1", 40000]
    assert flows(rec)[2]["packets"] == [4, 2] and flows(rec)[1]["packets"] == [2, 2]
    rec.flush()
    again = make(tmp_path, Clock(clock.now), sources=())
    again.recover()
    assert flows(again) == flows(rec)


def _block_end(buf: bytes, offset: int) -> int:
    length: int = struct.unpack_from("<I", buf, offset + 4)[0]
    return offset + length


def test_retention_after_recovery(tmp_path: Path, killed: tuple[Path, Recorder, Clock]) -> None:
    d, live, clock = killed
    shutil.copytree(d, tmp_path / "s")
    total = disk_bytes(d)
    rec = make(tmp_path / "s", Clock(clock.now), max_bytes=total // 2, segment_bytes=3000)
    rec.recover()
    assert rec.stats["segments_deleted"] > 0
    assert disk_bytes(tmp_path / "s") == rec.store_bytes() <= total // 2
    kept = {s.seq for s in rec.segments}
    assert min(kept) > 1 and max(kept) == live.segment_list()[-1].seq
    got = flows(rec)
    want = flows(live)
    for num, f in rec.index.by_num.items():
        assert {f.runs[i] for i in range(0, len(f.runs), 3)} <= kept
        # a flow that lies wholly in what was kept is exactly what it was
        if live.index.by_num[num].runs[0] >= min(kept):
            assert got[num] == want[num]
    # flows with nothing kept are gone
    assert set(got) == {num for num, f in live.index.by_num.items() if f.runs[-3] >= min(kept)}
    # by age: everything is old an hour later, and the numbers go on
    later = make(tmp_path / "s", Clock(clock.now + 2 * 3600 * NS), max_age_ns=3600 * NS)
    later.recover()
    assert later.segments == [] and os.listdir(tmp_path / "s") == []
    assert later.index.next_num == live.index.next_num
    syn = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 0, SYN)
    later.add(0, clock.now, syn, len(syn))
    assert later.current is not None and later.current.seq > live.segment_list()[-1].seq


def test_recover_ignores_other_files_and_removes_garbage(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "seg-00000003.pcapng").write_bytes(os.urandom(50))
    (tmp_path / "seg-1.pcapng").write_bytes(b"x")
    rec = make(tmp_path, Clock(), sources=())
    rec.recover()
    assert len(rec.warnings) == 1 and "seg-00000003.pcapng" in rec.warnings[0]
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "seg-1.pcapng"]
    f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 0, SYN)
    rec.add(rec.source("eth0", 1), T0, f, len(f))
    assert rec.current is not None and rec.current.seq == 4


# -- dedup --------------------------------------------------------------------------------------


def _conn_frames() -> list[bytes]:
    c = Conn("10.0.0.1", 40000, "10.0.0.2", 80)
    return c.handshake() + c.exchange(*http(1, 500)) + c.close()


ORDERS = {
    # (source, packet index) in arrival order; A = 0, B = 1
    "A then B each": [(s, i) for i in range(9) for s in (0, 1)],
    "B then A each": [(s, i) for i in range(9) for s in (1, 0)],
    "all A then all B": [(0, i) for i in range(9)] + [(1, i) for i in range(9)],
    "mixed": [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (1, 4), (0, 4)]
    + [(0, i) for i in range(5, 9)]
    + [(1, i) for i in range(8, 4, -1)],
}


@pytest.mark.parametrize("order", ORDERS)
def test_dedup_across_sources(tmp_path: Path, order: str) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, sources=("veth-a", "veth-b"))
    frames = _conn_frames()
    first_from: dict[int, int] = {}
    for sid, i in ORDERS[order]:
        rec.add(sid, clock.step(), frames[i], len(frames[i]))
        first_from.setdefault(i, sid)
    rec.close()
    got = stored(tmp_path)
    names = ("veth-a", "veth-b")
    want = [(names[sid], frames[i]) for sid, i in ORDERS[order] if first_from[i] == sid]
    assert [(s.source, s.data) for s in got] == want
    assert len(got) == 9
    assert rec.stats["duplicates"] == 9
    dup_b = sum(1 for sid, i in ORDERS[order] if sid == 1 and first_from[i] == 0)
    assert [s.duplicates for s in rec.sources] == [9 - dup_b, dup_b]
    assert [s.packets for s in rec.sources] == [dup_b, 9 - dup_b]
    assert len(rec.index) == 1
    assert rec.index.by_num[1].as_dict()["packets"] == [6, 3]


def test_dedup_keeps_retransmissions_on_the_same_source(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, sources=("veth-a", "veth-b"))
    f = _conn_frames()
    arrivals = [
        (0, f[0]), (1, f[0]), (0, f[1]), (1, f[1]), (0, f[2]), (1, f[2]),
        (0, f[3]), (1, f[3]),
        (0, f[3]), (1, f[3]),  # retransmitted on A: kept; its copy on B: dropped
        (0, f[3]),  # again, without a copy
        (1, f[4]), (0, f[4]),  # the reply crosses B first
        (1, f[4]),  # retransmitted reply on B: kept
    ]  # fmt: skip
    for sid, frame in arrivals:
        rec.add(sid, clock.step(), frame, len(frame))
    rec.close()
    got = [(s.source, s.data) for s in stored(tmp_path)]
    a, b = "veth-a", "veth-b"
    assert got == [(a, f[0]), (a, f[1]), (a, f[2]), (a, f[3]), (a, f[3]), (a, f[3]), (b, f[4]),
                   (b, f[4])]  # fmt: skip
    assert rec.stats["duplicates"] == 6
    assert [s.duplicates for s in rec.sources] == [1, 5]
    assert rec.index.by_num[1].as_dict()["packets"] == [5, 3]


def test_dedup_across_link_types(tmp_path: Path) -> None:
    """The same IPv4 or IPv6 packet on an Ethernet and a Linux cooked source is one packet."""
    clock = Clock()
    rec = make(tmp_path, clock, sources=("eth0",))
    sll = rec.source("any", fx.LINKTYPE_LINUX_SLL)
    v4 = fx.ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 0, SYN)
    v6 = fx.ipv6_tcp("fd00::1", "fd00::2", 40000, 80, 1, 0, SYN)
    e4, s4 = fx.ethernet(v4, pad_to=60), fx.sll(v4)
    e6, s6 = fx.ethernet(v6, fx.ETH_IPV6, pad_to=60), fx.sll(v6, fx.ETH_IPV6)
    for sid, f in ((0, e4), (sll, s4), (sll, s6), (0, e6), (0, e4), (sll, s4)):
        rec.add(sid, clock.step(), f, len(f))
    rec.close()
    assert rec.stats["duplicates"] == 3
    assert [(s.source, s.data) for s in stored(tmp_path)] == [
        ("eth0", e4),
        ("any", s6),
        ("eth0", e4),
    ]


def test_dedup_window(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, sources=("veth-a", "veth-b"))
    f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 2, ACK)
    rec.add(0, clock.now, f, len(f))
    rec.add(1, clock.now + DEDUP_WINDOW_NS - 1000, f, len(f))  # within the window: a copy
    assert rec.stats["duplicates"] == 1
    # the window moves with the traffic: two windows of other packets later, the same bytes on
    # B are a packet of their own (the identity was forgotten)
    for k in range(1, 4):
        g = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1000 + k, 2, ACK)
        rec.add(0, clock.now + k * (DEDUP_WINDOW_NS + 1000), g, len(g))
    rec.add(1, clock.now + 4 * DEDUP_WINDOW_NS, f, len(f))
    assert rec.stats["duplicates"] == 1 and rec.stats["packets"] == 5


def test_dedup_of_only_one_source_is_off(tmp_path: Path) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, sources=("eth0",))
    f = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 2, ACK)
    for _ in range(3):
        rec.add(0, clock.step(), f, len(f))
    assert rec.stats["packets"] == 3 and rec.stats["duplicates"] == 0


@pytest.mark.parametrize(
    "names", [("lo", "ns/lo"), ("eth0", "lo"), ("lo", "eth0"), ("ns1/lo", "ns2/lo")]
)
def test_loopback_never_dedups(tmp_path: Path, names: tuple[str, str]) -> None:
    clock = Clock()
    rec = make(tmp_path, clock, sources=names)
    frames = _conn_frames()
    for f in frames:
        rec.add(0, clock.step(), f, len(f))
        rec.add(1, clock.step(), f, len(f))
    rec.close()
    assert rec.stats["duplicates"] == 0
    assert len(stored(tmp_path)) == 2 * len(frames)
    # each loopback source is its own zone: two connections
    assert len(rec.index) == 2
    zones = sorted(f.key[0] for f in rec.index.by_num.values())
    assert zones == sorted(s.zone for s in rec.sources)
    assert [s.zone != 0 for s in rec.sources] == [n.endswith("lo") for n in names]
    for flow in rec.index.by_num.values():
        assert flow.as_dict()["packets"] == [6, 3]


def test_loopback_like_names_are_not_loopback(tmp_path: Path) -> None:
    rec = make(tmp_path, Clock(), sources=("lo0", "nslo", "lo/x", "ns/lo"))
    assert [s.zone for s in rec.sources] == [0, 0, 0, 4]


# -- bad packets --------------------------------------------------------------------------------

_FRAGMENTED = fx.ipv4_tcp("192.0.2.5", "192.0.2.6", 7, 8, 9, 10, ACK, b"f" * 64)
GOOD = [
    fx.eth_ipv4_tcp("192.0.2.1", "192.0.2.2", 40000, 80, 1, 0, SYN),
    fx.eth_ipv4_tcp("192.0.2.1", "192.0.2.2", 40000, 80, 2, 9, ACK | PSH, b"GET / HTTP/1.0\n\n"),
    fx.eth_ipv6_tcp("fd00::9", "fd00::8", 40000, 80, 1, 0, SYN, ext=[(0, b""), (60, b"")]),
    fx.ethernet(
        fx.ipv4_tcp("192.0.2.1", "192.0.2.2", 1, 2, 3, 4, ACK, b"v"),
        vlans=[(0x88A8, 1), (0x8100, 2)],
    ),
    fx.ethernet(
        fx.ipv4(
            "192.0.2.3", "192.0.2.4", 6,
            fx.tcp("192.0.2.3", "192.0.2.4", 5, 6, 7, 8, ACK, b"o" * 40),
            options=b"\x01" * 8,
        )
    ),
    *(fx.ethernet(p) for p in fx.ipv4_fragments(_FRAGMENTED, 24)),
]  # fmt: skip
SOURCE_KINDS = [("eth0", 1), ("veth1", 1), ("any", fx.LINKTYPE_LINUX_SLL), ("raw", 101), ("lo", 1)]


def _mutate(frame: bytes, edits: list[tuple[int, int]]) -> bytes:
    b = bytearray(frame)
    for pos, value in edits:
        if b:
            b[pos % len(b)] = value
    return bytes(b)


bad_packets = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda f, n: f[:n], st.sampled_from(GOOD), st.integers(0, 120)),
    st.builds(
        _mutate,
        st.sampled_from(GOOD),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
    ),
    st.builds(
        lambda f, n: fx.ethernet(f[14:n], 0x8100), st.sampled_from(GOOD), st.integers(14, 80)
    ),
    # one header field of Ethernet/IPv4/TCP set to any value: ethertype, version/IHL, total
    # length, fragment bits, protocol, TCP data offset
    st.builds(
        lambda f, pos, v: _mutate(f, [(pos, v)]),
        st.sampled_from(GOOD[:2]),
        st.sampled_from([12, 13, 14, 16, 17, 20, 21, 23, 46]),
        st.integers(0, 255),
    ),
)


@pytest.fixture(scope="module")
def baseline_frames() -> list[bytes]:
    c = Conn("10.0.0.1", 40000, "10.0.0.2", 80)
    return c.handshake() + c.exchange(*http(1, 100))


@settings(max_examples=250, deadline=None)
@given(
    packets=st.lists(
        st.tuples(st.integers(0, len(SOURCE_KINDS) - 1), bad_packets), min_size=1, max_size=4
    )
)
def test_bad_packets_never_raise(
    baseline_frames: list[bytes], packets: list[tuple[int, bytes]]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        clock = Clock()
        rec = make(d, clock, sources=())
        for name, lt in SOURCE_KINDS:
            rec.source(name, lt)
        for f in baseline_frames:
            rec.add(0, clock.step(), f, len(f))
        before = flows(rec)
        assert list(before) == [1]
        kept: list[bytes] = []
        kept_from: set[int] = set()
        for sid, p in packets:
            n, dups = rec.stats["packets"], rec.stats["duplicates"]
            rec.add(sid, clock.step(), p, len(p))
            if rec.stats["duplicates"] == dups:
                assert rec.stats["packets"] == n + 1
                kept.append(p)
                kept_from.add(sid)
            else:  # the same TCP/IP identity already stored from another (not loopback) source
                assert rec.stats["duplicates"] == dups + 1 and rec.stats["packets"] == n
                assert sid in (0, 1, 2) and kept_from & ({0, 1, 2} - {sid})
        rec.flush()
        assert [s.data for s in stored(d)] == [*baseline_frames, *kept]
        assert flows(rec)[1] == before[1]
        # what the live writer indexed is what a restart reads back
        again = make(d, Clock(clock.now), sources=())
        again.recover()
        assert flows(again) == flows(rec)


def test_malformed_tcp_header_length_is_not_tcp(tmp_path: Path) -> None:
    """A TCP data offset below 5 words is malformed, on the fast path as on the slow one."""
    clock = Clock()
    rec = make(tmp_path, clock)
    for doff in range(5):
        seg = bytearray(fx.tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 0, ACK, b"hello world"))
        seg[12] = doff << 4
        f = fx.ethernet(fx.ipv4("10.0.0.1", "10.0.0.2", 6, bytes(seg)), pad_to=60)
        rec.add(0, clock.step(), f, len(f))
    assert rec.stats["not_tcp"] == 5 and len(rec.index) == 0
    rec.flush()
    again = make(tmp_path, Clock(clock.now), sources=())
    again.recover()
    assert len(again.index) == 0
