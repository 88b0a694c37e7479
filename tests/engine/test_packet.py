"""Link-layer/IP/TCP decoding on built frames and on real tcpdump captures checked by tshark."""

from __future__ import annotations

import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.engine.capfile import CaptureFile, CaptureReader
from shark_tui.engine.packet import (
    ACK,
    FIN,
    PSH,
    RST,
    SUPPORTED_LINKTYPES,
    SYN,
    PacketDecoder,
    TcpSegment,
    format_ip,
)
from tests.engine import fixtures_pcap as fx

A4, B4 = "10.0.0.1", "10.0.0.2"
A6, B6 = "fd00::1", "fd00::2"
PAYLOAD = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"


def seg(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes,
    window: int = 65535,
) -> TcpSegment:
    return (fx.inet_pton(src), sport, fx.inet_pton(dst), dport, seq, ack, flags, window, payload)


EXPECT4 = seg(A4, 40000, B4, 80, 1000, 2000, ACK | PSH, PAYLOAD)
EXPECT6 = seg(A6, 40000, B6, 80, 1000, 2000, ACK | PSH, PAYLOAD)
IP4 = fx.ipv4_tcp(A4, B4, 40000, 80, 1000, 2000, ACK | PSH, PAYLOAD)
IP6 = fx.ipv6_tcp(A6, B6, 40000, 80, 1000, 2000, ACK | PSH, PAYLOAD)


def test_flag_constants() -> None:
    assert (FIN, SYN, RST, PSH, ACK) == (1, 2, 4, 8, 16)


@pytest.mark.parametrize(
    ("linktype", "frame", "expect"),
    [
        (1, fx.ethernet(IP4), EXPECT4),
        (1, fx.ethernet(IP6, fx.ETH_IPV6), EXPECT6),
        (1, fx.ethernet(IP4, vlans=[(0x8100, 10)]), EXPECT4),
        (1, fx.ethernet(IP6, fx.ETH_IPV6, vlans=[(0x88A8, 100), (0x8100, 200)]), EXPECT6),
        (1, fx.ethernet(IP4, vlans=[(0x8100, 1), (0x8100, 2), (0x8100, 3)]), EXPECT4),
        (113, fx.sll(IP4), EXPECT4),
        (113, fx.sll(IP6, fx.ETH_IPV6), EXPECT6),
        (276, fx.sll2(IP4), EXPECT4),
        (276, fx.sll2(IP6, fx.ETH_IPV6), EXPECT6),
        (101, IP4, EXPECT4),
        (101, IP6, EXPECT6),
        (12, IP4, EXPECT4),
        (14, IP6, EXPECT6),
        (228, IP4, EXPECT4),
        (229, IP6, EXPECT6),
        (0, fx.null_loopback(IP4, 2), EXPECT4),
        (0, fx.null_loopback(IP4, 2, big_endian=True), EXPECT4),
        (0, fx.null_loopback(IP6, 24), EXPECT6),
        (0, fx.null_loopback(IP6, 28, big_endian=True), EXPECT6),
        (0, fx.null_loopback(IP6, 30), EXPECT6),
        (108, fx.null_loopback(IP4, 2, big_endian=True), EXPECT4),
        (108, fx.null_loopback(IP6, 24, big_endian=True), EXPECT6),
    ],
)
def test_link_types(linktype: int, frame: bytes, expect: TcpSegment) -> None:
    assert linktype in SUPPORTED_LINKTYPES
    d = PacketDecoder()
    assert d.decode(linktype, frame, 0) == expect
    assert not any(d.stats.values())


def test_ethernet_padding_trimmed_and_small_packets() -> None:
    d = PacketDecoder()
    frame = fx.eth_ipv4_tcp(A4, B4, 1, 2, 3, 4, ACK)  # 54 bytes padded to 60
    assert len(frame) == 60
    assert d.decode(1, frame, 0) == seg(A4, 1, B4, 2, 3, 4, ACK, b"")
    frame = fx.ethernet(fx.ipv4_tcp(A4, B4, 1, 2, 3, 4, ACK, b"ab"), pad_to=60)
    assert d.decode(1, frame, 0) == seg(A4, 1, B4, 2, 3, 4, ACK, b"ab")
    # an FCS-like trailer after the IP datagram is not payload either
    assert d.decode(1, fx.ethernet(IP4) + b"\xde\xad\xbe\xef", 0) == EXPECT4
    assert not any(d.stats.values())


def test_ip_and_tcp_options() -> None:
    d = PacketDecoder()
    tcp = fx.tcp(
        A4,
        B4,
        5,
        6,
        7,
        8,
        SYN,
        b"",
        options=b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + b"\0" * 8 + b"\x01\x03\x03\x07",
    )
    ip = fx.ipv4(A4, B4, 6, tcp + b"data", options=b"\x94\x04\0\0")  # router alert
    assert d.decode(101, ip, 0) == seg(A4, 5, B4, 6, 7, 8, SYN, b"data")
    d.decode(1, fx.eth_ipv4_tcp(A4, B4, 1, 2, 3, 4, FIN | ACK, b"", window=1234), 0)
    assert d.decode(1, fx.eth_ipv4_tcp(A4, B4, 1, 2, 3, 4, FIN | ACK, window=7), 0) == seg(
        A4, 1, B4, 2, 3, 4, FIN | ACK, b"", window=7
    )


def test_not_tcp() -> None:
    d = PacketDecoder()
    udp = fx.ipv4(A4, B4, 17, struct.pack("!HHHH", 53, 53, 12, 0) + b"abcd")
    icmp6 = fx.ipv6(A6, B6, 58, b"\x80\0\0\0\0\0\0\0")
    no_next = fx.ipv6(A6, B6, 59, b"", ext=[(0, b"")])
    arp = fx.ethernet(b"\0" * 28, 0x0806)
    for lt, frame in [
        (101, udp),
        (1, fx.ethernet(icmp6, fx.ETH_IPV6)),
        (229, no_next),
        (1, arp),
        (113, fx.sll(b"\0" * 40, 0x0004)),
        (0, fx.null_loopback(IP4, 7)),
    ]:
        assert d.decode(lt, frame, 0) is None
    assert d.stats["non_tcp"] == 6
    assert d.decode(147, IP4, 0) is None
    assert d.stats["unknown_linktype"] == 1


def test_malformed() -> None:
    d = PacketDecoder()
    bad_ver = bytes([0x55]) + IP4[1:]
    bad_ihl = bytes([0x43]) + IP4[1:]
    total_lt_ihl = IP4[:2] + struct.pack("!H", 10) + IP4[4:]
    short_tcp = fx.ipv4(A4, B4, 6, b"\0" * 10)
    bad_doff = bytearray(IP4)
    bad_doff[20 + 12] = 0x40  # data offset 4 (< 5)
    huge_doff = bytearray(IP4)
    huge_doff[20 + 12] = 0xF0  # 60 bytes of TCP header but the datagram ends sooner
    huge_doff = huge_doff[: 20 + 40]
    struct.pack_into("!H", huge_doff, 2, len(huge_doff))
    cases: list[tuple[int, bytes]] = [
        (1, b"\0" * 10),
        (1, fx.ethernet(b"\x45")),
        (101, b""),
        (101, bad_ver),
        (101, bad_ihl),
        (101, total_lt_ihl),
        (101, short_tcp),
        (101, bytes(bad_doff)),
        (101, bytes(huge_doff)),
        (229, IP6[:30]),
        (229, bytes([0x45]) + IP6[1:]),
        (113, b"\0" * 5),
        (276, b"\0" * 5),
        (0, b"\2"),
        (1, fx.ethernet(b"", vlans=[(0x8100, 1)])[:15]),
        (1, fx.ethernet(bytes(bad_doff))),
    ]
    for lt, frame in cases:
        assert d.decode(lt, frame, 0) is None, (lt, frame)
    assert d.stats["malformed"] == len(cases)


def test_snapped_packets_return_what_they_have() -> None:
    d = PacketDecoder()
    full = fx.ethernet(IP4)
    assert d.decode(1, full[:-10], 0) == (*EXPECT4[:-1], PAYLOAD[:-10])
    assert d.stats["snapped"] == 1
    assert d.decode(229, IP6[:-5], 0) == (*EXPECT6[:-1], PAYLOAD[:-5])
    assert d.stats["snapped"] == 2
    # headers cut: nothing to return, still counted as snapped (not malformed)
    assert d.decode(1, full[: 14 + 20 + 10], 0) is None
    assert d.decode(101, IP6[:50], 0) is None
    assert d.stats["snapped"] == 4 and d.stats["malformed"] == 0


# -- fragments -----------------------------------------------------------------------------------


BIG = bytes(random.Random(1).getrandbits(8) for _ in range(3000))


def frags4(payload: bytes = BIG, size: int = 512, ident: int = 77) -> list[bytes]:
    dgram = fx.ipv4(A4, B4, 6, fx.tcp(A4, B4, 1, 2, 3, 4, ACK, payload), ident=ident, flags_frag=0)
    return fx.ipv4_fragments(dgram, size)


@pytest.mark.parametrize("order", ["in", "reversed", "shuffled"])
def test_ipv4_fragments_reassembled(order: str) -> None:
    pieces = frags4()
    assert len(pieces) == 6
    if order == "reversed":
        pieces.reverse()
    elif order == "shuffled":
        random.Random(4).shuffle(pieces)
    d = PacketDecoder()
    results = [d.decode(1, fx.ethernet(p, pad_to=60), i) for i, p in enumerate(pieces)]
    assert results[:-1] == [None] * 5
    assert results[-1] == seg(A4, 1, B4, 2, 3, 4, ACK, BIG)
    assert d.stats["ip_fragments"] == 6 and d.stats["fragments_reassembled"] == 1
    assert d.fragments_pending == 0 and d.fragment_bytes_pending == 0


def test_ipv4_overlapping_and_duplicate_fragments() -> None:
    a = frags4(size=1024)
    b = frags4(size=512)
    d = PacketDecoder()
    # all of the 512-byte set except its last, then the overlapping 1024-byte set's middle and
    # a duplicate, then the last piece completes it
    for p in [*b[:-1], a[1], b[2]]:
        assert d.decode(101, p, 0) is None
    assert d.decode(101, b[-1], 0) == seg(A4, 1, B4, 2, 3, 4, ACK, BIG)
    assert d.fragments_pending == 0


def test_interleaved_datagrams_and_non_tcp_fragments() -> None:
    one, two = frags4(BIG[:1500], ident=1), frags4(BIG[1500:], ident=2)
    udp = fx.ipv4_fragments(fx.ipv4(A4, B4, 17, b"\0" * 8 + BIG[:1000], ident=1, flags_frag=0), 400)
    d = PacketDecoder()
    got = [d.decode(101, p, 0) for p in [x for pair in zip(one, two, udp) for x in pair]]
    got = [g for g in got if g is not None]
    assert sorted(g[-1] for g in got) == sorted([BIG[:1500], BIG[1500:]])
    assert d.stats["non_tcp"] == 1 and d.stats["fragments_reassembled"] == 3


def test_fragment_timeout_and_caps() -> None:
    d = PacketDecoder()
    pieces = frags4()
    d.decode(101, pieces[0], 0)
    assert d.fragments_pending == 1
    d.decode(101, frags4(ident=9)[0], 31 * fx.NS)  # 31 s later: the first datagram expired
    assert d.stats["fragments_expired"] == 1 and d.fragments_pending == 1
    # the rest of the expired datagram never completes
    for p in pieces[1:]:
        assert d.decode(101, p, 31 * fx.NS) is None

    small = PacketDecoder(max_frag_datagrams=4)
    for ident in range(10):
        small.decode(101, frags4(ident=ident)[0], 0)
    assert small.fragments_pending == 4
    assert small.stats["fragment_buffer_dropped"] == 6
    # the newest survive and complete
    for p in frags4(ident=9)[1:]:
        res = small.decode(101, p, 0)
    assert res == seg(A4, 1, B4, 2, 3, 4, ACK, BIG)

    tight = PacketDecoder(max_frag_bytes=70_000)
    for ident in range(100):
        tight.decode(101, frags4(size=1400, ident=ident)[0], 0)
        assert tight.fragment_bytes_pending <= 70_000
    assert tight.stats["fragment_buffer_dropped"] == 50


def test_cut_fragment_is_counted_not_reassembled() -> None:
    d = PacketDecoder()
    p = frags4()
    assert d.decode(101, p[0][:-8], 0) is None
    assert d.stats["snapped"] == 1 and d.fragments_pending == 0


def test_ipv6_extension_headers() -> None:
    d = PacketDecoder()
    ext = [
        (0, b"\x05\x02\0\0"),
        (60, b"\x01\x04\0\0\0\0"),
        (43, b"\0\x00" + b"\0" * 4 + b"\0" * 16),
    ]
    frame = fx.eth_ipv6_tcp(A6, B6, 40000, 80, 1000, 2000, ACK | PSH, PAYLOAD, ext=ext)
    assert d.decode(1, frame, 0) == EXPECT6
    # an atomic fragment (offset 0, M clear): no reassembly needed
    atomic = fx.ipv6(
        A6,
        B6,
        44,
        struct.pack("!BBHI", 6, 0, 0, 99)
        + fx.tcp(A6, B6, 40000, 80, 1000, 2000, ACK | PSH, PAYLOAD),
    )
    assert d.decode(229, atomic, 0) == EXPECT6
    assert d.fragments_pending == 0 and not any(d.stats.values())


@pytest.mark.parametrize("shuffle", [False, True])
def test_ipv6_fragments(shuffle: bool) -> None:
    tcp = fx.tcp(A6, B6, 1, 2, 3, 4, ACK, BIG)
    # the fragmentable part starts with a destination options header, then TCP
    upper = fx.ext_header(6, b"\x01\x02\0\0") + tcp
    pieces = fx.ipv6_fragments(A6, B6, 60, upper, 1000, ext_before=[(0, b"")])
    assert len(pieces) == 4
    if shuffle:
        random.Random(2).shuffle(pieces)
    d = PacketDecoder()
    got = [d.decode(113, fx.sll(p, fx.ETH_IPV6), 5) for p in pieces]
    assert got[:-1] == [None] * 3
    assert got[-1] == seg(A6, 1, B6, 2, 3, 4, ACK, BIG)
    assert d.stats["ip_fragments"] == 4 and d.stats["fragments_reassembled"] == 1


def test_ipv6_and_ipv4_fragment_ids_do_not_mix() -> None:
    d = PacketDecoder()
    tcp = fx.tcp(A6, B6, 1, 2, 3, 4, ACK, BIG[:2000])
    v6 = fx.ipv6_fragments(A6, B6, 6, tcp, 1000, ident=77)
    v4 = frags4(BIG[:2000], size=1000, ident=77)
    out = [d.decode(101, p, 0) for p in [v6[0], v4[0], v6[1], v4[1], v6[2], v4[2]]]
    assert [o[-1] if o else None for o in out] == [None] * 4 + [BIG[:2000]] * 2


def test_format_ip() -> None:
    assert format_ip(fx.inet_pton("10.1.2.3")) == "10.1.2.3"
    assert format_ip(fx.inet_pton("fd00::1")) == "fd00::1"
    assert format_ip(fx.inet_pton("::ffff:1.2.3.4")) == "::ffff:1.2.3.4"
    assert format_ip.cache_info().currsize >= 3


# -- properties ----------------------------------------------------------------------------------

LINKTYPES = [*sorted(SUPPORTED_LINKTYPES), 999]


@settings(max_examples=500)
@given(linktype=st.sampled_from(LINKTYPES), data=st.binary(max_size=200))
def test_property_random_bytes_never_raise(linktype: int, data: bytes) -> None:
    d = PacketDecoder()
    result = d.decode(linktype, data, 0)
    assert result is None or (len(result) == 9 and type(result[-1]) is bytes)


@settings(max_examples=300)
@given(
    which=st.sampled_from(["eth4", "eth6", "sll2", "frag4", "frag6"]),
    edits=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 5000),
)
def test_property_mutated_packets_never_raise(
    which: str, edits: list[tuple[int, int]], cut: int
) -> None:
    base = {
        "eth4": [fx.ethernet(IP4, vlans=[(0x8100, 3)])],
        "eth6": [
            fx.ethernet(
                fx.ipv6_tcp(A6, B6, 1, 2, 3, 4, ACK, b"x", ext=[(0, b""), (60, b"")]), fx.ETH_IPV6
            )
        ],
        "sll2": [fx.sll2(IP4)],
        "frag4": [fx.ethernet(p) for p in frags4(BIG[:1200], size=256)],
        "frag6": [
            fx.ethernet(p, fx.ETH_IPV6)
            for p in fx.ipv6_fragments(A6, B6, 6, fx.tcp(A6, B6, 1, 2, 3, 4, ACK, BIG[:900]), 256)
        ],
    }[which]
    d = PacketDecoder(max_frag_datagrams=3, max_frag_bytes=70_000)
    for i, frame in enumerate(base):
        mutated = bytearray(frame)
        for pos, value in edits:
            mutated[pos % len(mutated)] = value
        lt = 276 if which == "sll2" else 1
        d.decode(lt, bytes(mutated[: max(cut, 10)] if i == 0 else mutated), i)
        assert d.fragments_pending <= 3 and d.fragment_bytes_pending <= 70_000


# -- real captures: tcpdump on loopback, tshark as the oracle ------------------------------------

REQUEST = b"PING " + bytes(range(256)) * 20
RESPONSE = b"".join(struct.pack("!I", i) for i in range(50_000))  # 200 kB


def _serve_once(sock: socket.socket) -> None:
    conn, _ = sock.accept()
    with conn:
        got = b""
        while len(got) < len(REQUEST):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        conn.sendall(RESPONSE)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass


@dataclass
class Capture:
    path: Path
    linktype: int
    ports: dict[int, str]  # server port -> family ("v4"/"v6")
    nano: bool


def _start_tcpdump(path: Path, iface: str, extra: list[str], bpf: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "tcpdump",
            "-i",
            iface,
            "-U",
            "--immediate-mode",
            "-B",
            "32768",
            "-w",
            str(path),
            *extra,
            bpf,
        ],
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines = []
    while b"listening on" not in (line := proc.stderr.readline()):  # "tcpdump: listening on lo"
        lines.append(line)
        if not line or len(lines) > 5:
            proc.kill()
            proc.wait()
            pytest.fail(f"tcpdump did not start: {b''.join(lines)!r}")
    return proc


SPECS = {  # name -> (interface, tcpdump options, link type, nanosecond timestamps)
    "lo-nano": ("lo", ["--time-stamp-precision=nano"], 1, True),
    "any-sll": ("any", ["-y", "LINUX_SLL"], 113, False),
    "any-sll2": ("any", ["-y", "LINUX_SLL2", "--time-stamp-precision=nano"], 276, True),
    "lo-micro": ("lo", [], 1, False),
}


def _capture_once(tmp: Path) -> tuple[dict[str, Capture], int]:
    """Run the four tcpdumps over one IPv4 and one IPv6 exchange; return them and the drops."""
    servers = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.bind((host, 0))
        srv.listen(1)
        servers.append((family, host, srv))
    ports = {s.getsockname()[1]: ("v4" if f == socket.AF_INET else "v6") for f, _, s in servers}
    bpf = " or ".join(f"tcp port {p}" for p in ports)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    drops = 0
    try:
        for name, (iface, extra, _, _) in SPECS.items():
            procs[name] = _start_tcpdump(tmp / f"{name}.pcap", iface, extra, bpf)
        for _family, host, srv in servers:
            t = threading.Thread(target=_serve_once, args=(srv,), daemon=True)
            t.start()
            with socket.create_connection((host, srv.getsockname()[1]), timeout=10) as c:
                c.sendall(REQUEST)
                got = b""
                while chunk := c.recv(65536):
                    got += chunk
                assert got == RESPONSE
            t.join(10)
        time.sleep(0.3)
    finally:
        for _f, _h, srv in servers:
            srv.close()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            _out, err = proc.communicate(timeout=10)
            for line in err.splitlines():  # "N packets dropped by kernel"
                if line.endswith(b"packets dropped by kernel"):
                    drops += int(line.split()[0])
    caps = {
        name: Capture(tmp / f"{name}.pcap", lt, ports, nano)
        for name, (_, _, lt, nano) in SPECS.items()
    }
    return caps, drops


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Capture]:
    """Real loopback captures; retried when the kernel dropped packets on a busy machine."""
    if shutil.which("tcpdump") is None or shutil.which("tshark") is None:
        pytest.fail("tcpdump and tshark are needed for the real-capture tests")
    for _attempt in range(4):
        caps, drops = _capture_once(tmp_path_factory.mktemp("cap"))
        if not drops:
            return caps
    pytest.fail(f"tcpdump kept dropping packets ({drops} in the last attempt)")


def _tshark(path: Path, *fields: str) -> list[list[str]]:
    args = ["tshark", "-r", str(path), "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def _epoch_ns(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * fx.NS + int(frac.ljust(9, "0")[:9])


def _streams(segments: list[TcpSegment], port: int) -> tuple[bytes, bytes]:
    """(client -> server bytes, server -> client bytes) reassembled by sequence number."""
    out = []
    for to_server in (True, False):
        parts: dict[int, bytes] = {}
        isn = None
        for s in segments:
            if (s[3] == port) != to_server or (s[1] != port and s[3] != port):
                continue
            if s[6] & SYN:
                isn = s[4] + 1
            if s[8]:
                parts[s[4]] = s[8]
        assert isn is not None
        data = b""
        for seq in sorted(parts):
            rel = (seq - isn) % (1 << 32)
            if rel + len(parts[seq]) > len(data):
                data = data[:rel] + parts[seq]
        out.append(data)
    return out[0], out[1]


@pytest.mark.parametrize("name", ["lo-nano", "any-sll", "any-sll2", "lo-micro"])
def test_real_capture_payloads_and_tshark_agree(captures: dict[str, Capture], name: str) -> None:
    cap = captures[name]
    with cap.path.open("rb") as f:
        cf = CaptureFile(f)
        packets = list(cf)
    assert cf.warning is None
    assert [i.linktype for i in cf.interfaces] == [cap.linktype]
    d = PacketDecoder()
    segments = [d.decode(cf.interfaces[p[1]].linktype, p[2], p[0]) for p in packets]
    assert None not in segments
    segs = [s for s in segments if s is not None]
    for port, fam in cap.ports.items():
        mine = [s for s in segs if port in (s[1], s[3])]
        assert {len(s[0]) for s in mine} == {4 if fam == "v4" else 16}
        assert _streams(mine, port) == (REQUEST, RESPONSE)
    rows = _tshark(cap.path, "frame.time_epoch", "tcp.len", "frame.len", "frame.cap_len")
    assert len(rows) == len(packets)
    for (ts, _iface, data, orig), seg_, row in zip(packets, segs, rows):
        assert ts == _epoch_ns(row[0])
        assert len(seg_[-1]) == int(row[1])
        assert (orig, len(data)) == (int(row[2]), int(row[3]))
    if cap.nano:
        assert any(p[0] % 1000 for p in packets)  # real nanosecond digits survived
    else:
        assert all(p[0] % 1000 == 0 for p in packets)


def test_real_mixed_link_type_pcapng(captures: dict[str, Capture], tmp_path: Path) -> None:
    out = tmp_path / "mixed.pcapng"
    subprocess.run(
        [
            "mergecap",
            "-F",
            "pcapng",
            "-w",
            str(out),
            str(captures["lo-nano"].path),
            str(captures["any-sll2"].path),
            str(captures["any-sll"].path),
        ],
        check=True,
        capture_output=True,
    )
    reader = CaptureReader()
    packets = reader.feed(out.read_bytes())
    assert reader.close() is None
    assert sorted(i.linktype for i in reader.interfaces) == [1, 113, 276]
    rows = _tshark(out, "frame.interface_id", "frame.time_epoch", "tcp.len")
    assert len(rows) == len(packets)
    d = PacketDecoder()
    seen = set()
    for (ts, iface, data, _orig), row in zip(packets, rows):
        assert iface == int(row[0]) and ts == _epoch_ns(row[1])
        linktype = reader.interfaces[iface].linktype
        seen.add(linktype)
        s = d.decode(linktype, data, ts)
        assert s is not None and len(s[-1]) == int(row[2])
    assert seen == {1, 113, 276}
    # pcapng cut at many offsets: what comes back is a prefix, and close() says it was cut
    blob = out.read_bytes()
    for n in range(100, len(blob), max(1, len(blob) // 97)):
        r = CaptureReader()
        got = r.feed(blob[:n])
        assert got == packets[: len(got)]
        warning = r.close()
        assert warning is None or warning.startswith("capture truncated")


def test_real_pcap_cut_at_many_offsets(captures: dict[str, Capture]) -> None:
    blob = captures["any-sll2"].path.read_bytes()
    whole = CaptureReader().feed(blob)
    ends = {24}
    for p in whole:
        ends.add(max(ends) + 16 + len(p[2]))
    rng = random.Random(7)
    for n in sorted(rng.sample(range(25, len(blob)), 200)) + sorted(ends)[:20]:
        r = CaptureReader()
        got: list[tuple[int, int, bytes, int]] = []
        step = rng.choice([1 << 20, 4096, 333])
        for i in range(0, n, step):
            got += r.feed(blob[i : min(n, i + step)])
        assert got == whole[: len(got)]
        warning = r.close()
        assert (warning is None) == (n in ends)
        if warning is not None:
            assert f"({len(got)} packets read before it)" in warning
