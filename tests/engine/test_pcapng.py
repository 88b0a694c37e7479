"""pcapng block writers and the segment scanner: read back by our reader, by tshark, and cut."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.engine import pcapng
from shark_tui.engine.capfile import CaptureReader, Interface
from tests.engine import fixtures_pcap as fx

T0 = 1_700_000_000 * fx.NS + 123_456_789  # all nine digits used

FRAME_A = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 0, fx.SYN)  # 60 bytes
FRAME_B = fx.eth_ipv6_tcp("fd00::1", "fd00::2", 40001, 443, 7, 9, fx.ACK | fx.PSH, b"hello")
FRAME_C = fx.sll(fx.ipv4_tcp("192.0.2.1", "192.0.2.2", 5, 6, 7, 8, fx.ACK, b"x" * 101))
FRAME_D = fx.ipv4_tcp("192.0.2.9", "192.0.2.8", 1, 2, 3, 4, fx.RST)  # raw IPv4, 40 bytes

# (iface, ts_ns, data, orig_len, comment): every caplen residue mod 4, orig_len > caplen,
# a timestamp below 2**32 ns, comments of every length residue mod 4
PACKETS: list[tuple[int, int, bytes, int, bytes]] = [
    (0, T0, FRAME_A, len(FRAME_A), b"shark-tui flow=1"),
    (1, T0 + 1, FRAME_C, 1500, b""),
    (0, T0 + fx.NS, FRAME_B, len(FRAME_B), b"shark-tui flow=23"),
    (2, T0 + 2 * fx.NS + 999_999_999, FRAME_D, len(FRAME_D), b"shark-tui flow=456"),
    (0, 5, FRAME_A[:57], 60, b"x"),
    (1, (1 << 63) - 1, FRAME_C[:58], 9000, b"shark-tui flow=7890"),
    (2, T0 + 3, b"", 0, b""),
]
IFACES = [(1, 262144, "eth0", ""), (113, 65535, "ns1/any", "namespace ns1"), (101, 1500, "tls", "")]


def build() -> tuple[bytes, list[int]]:
    """The test file and the offset of every block (and the end)."""
    blocks = [pcapng.section_header("shark-tui segment 1", "shark-tui test")]
    blocks += [pcapng.interface_description(lt, snap, n, d) for lt, snap, n, d in IFACES]
    blocks += [pcapng.enhanced_packet(i, ts, data, orig, c) for i, ts, data, orig, c in PACKETS]
    offsets = [0]
    for b in blocks:
        assert len(b) % 4 == 0
        offsets.append(offsets[-1] + len(b))
    return b"".join(blocks), offsets


FILE, OFFSETS = build()
FIRST_EPB = 1 + len(IFACES)  # index of the first packet block in OFFSETS


def scan_all(buf: bytes) -> tuple[list[pcapng.ScannedPacket], pcapng.SegmentScan]:
    result = pcapng.SegmentScan([])
    return list(pcapng.scan(buf, result)), result


def expected_scanned(upto: int) -> list[pcapng.ScannedPacket]:
    """The first ``upto`` packets as `scan` must return them."""
    return [
        pcapng.ScannedPacket(OFFSETS[FIRST_EPB + k], i, ts, data, orig, c)
        for k, (i, ts, data, orig, c) in enumerate(PACKETS[:upto])
    ]


# -- writers, read back -------------------------------------------------------------------------


def test_blocks_read_back_by_capture_reader() -> None:
    r = CaptureReader()
    got = r.feed(FILE)
    assert r.close() is None
    assert r.format == "pcapng"
    assert r.interfaces == [Interface(lt, n, snap) for lt, snap, n, _d in IFACES]
    assert got == [(ts, i, data, orig) for i, ts, data, orig, _c in PACKETS]


def test_blocks_read_back_by_capture_reader_in_small_chunks() -> None:
    r = CaptureReader()
    got = []
    for i in range(0, len(FILE), 5):
        got += r.feed(FILE[i : i + 5])
    assert r.close() is None
    assert got == [(ts, i, data, orig) for i, ts, data, orig, _c in PACKETS]


def _tshark_fields(path: Path, *fields: str) -> tuple[list[list[str]], str]:
    args = ["tshark", "-r", str(path), "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line.split("\t") for line in proc.stdout.splitlines()], proc.stderr


def _tshark_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line and "Running as user" not in line]


def test_blocks_read_back_by_tshark(tmp_path: Path) -> None:
    # tshark prints nanosecond epochs with nine digits; keep its timestamps in a range a double
    # does not round (tshark formats from its own integer seconds/nanoseconds, so it is exact)
    path = tmp_path / "t.pcapng"
    path.write_bytes(FILE)
    rows, stderr = _tshark_fields(
        path, "frame.time_epoch", "frame.interface_name", "frame.comment", "frame.len",
        "frame.cap_len", "frame.interface_description",
    )  # fmt: skip
    assert _tshark_errors(stderr) == []
    expect = []
    for i, ts, data, orig, c in PACKETS:
        sec, ns = divmod(ts, fx.NS)
        expect.append(
            [f"{sec}.{ns:09d}", IFACES[i][2], c.decode(), str(orig), str(len(data)), IFACES[i][3]]
        )
    assert rows == expect


def test_section_header_without_options_and_interface_without_description() -> None:
    shb = pcapng.section_header()
    assert len(shb) == 28  # the minimum: no options, no end-of-options
    idb = pcapng.interface_description(1, 100, "e")
    # 8 header + 8 fixed + name (4 + 1 + 3 pad) + tsresol (4 + 1 + 3) + end (4) + 4 trailer
    assert len(idb) == 40
    packets, result = scan_all(shb + idb + pcapng.enhanced_packet(0, 1, b"ab", 2))
    assert result.interfaces == [("e", 1, "")]
    assert result.problem is None
    assert packets == [pcapng.ScannedPacket(68, 0, 1, b"ab", 2, b"")]


# -- scan ---------------------------------------------------------------------------------------


def test_scan_whole_file() -> None:
    packets, result = scan_all(FILE)
    assert result.problem is None
    assert result.end == len(FILE) == OFFSETS[-1]
    assert result.interfaces == [(n, lt, d) for lt, _snap, n, d in IFACES]
    assert packets == expected_scanned(len(PACKETS))


def test_scan_comment_numbers() -> None:
    packets, _ = scan_all(FILE)
    assert [pcapng.parse_flow_comment(p.comment) for p in packets] == [
        1, None, 23, 456, None, 7890, None,
    ]  # fmt: skip


def test_scan_cut_at_every_offset() -> None:
    """A file cut anywhere: every complete block before the cut is kept, unchanged."""
    for cut in range(len(FILE) + 1):
        packets, result = scan_all(FILE[:cut])
        boundary = max(o for o in OFFSETS if o <= cut)
        whole_packets = sum(1 for o in OFFSETS[FIRST_EPB + 1 :] if o <= cut)
        assert result.end == boundary, cut
        assert (result.problem is None) == (cut == boundary), (cut, result.problem)
        # interfaces are reported once their block is complete
        assert len(result.interfaces) == sum(1 for o in OFFSETS[2 : FIRST_EPB + 1] if o <= cut)
        assert packets == expected_scanned(whole_packets), cut


def test_scan_cut_within_last_block_names_the_offset() -> None:
    last = OFFSETS[-2]
    for cut in range(last + 1, len(FILE)):
        packets, result = scan_all(FILE[:cut])
        assert result.end == last
        assert result.problem is not None and f"offset {last}" in result.problem
        assert packets == expected_scanned(len(PACKETS) - 1)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\0" * 4,
        b"\0" * 64,  # a zero block length
        b"\xff" * 16,  # a huge block length
        b"\x06\0\0\0\x0e\0\0\0" + b"\0" * 8,  # length not a multiple of 4
        pcapng.enhanced_packet(0, 1, b"abcd", 4)[:-4] + b"\x99\0\0\0",  # wrong trailing length
        pcapng.enhanced_packet(9, 1, b"abcd", 4),  # unknown interface
        pcapng.section_header(),  # a second section
        b"\x06\0\0\0\x18\0\0\0" + b"\0" * 12 + b"\x18\0\0\0",  # packet block too short
        # a packet block whose caplen runs past the block
        b"\x06\0\0\0\x24\0\0\0" + b"\0" * 12 + b"\xff\0\0\0" + b"\0" * 12 + b"\x24\0\0\0",
        bytes(range(256)) * 4,
    ],
)
def test_scan_stops_at_garbage_after_valid_blocks(garbage: bytes) -> None:
    packets, result = scan_all(FILE + garbage + pcapng.enhanced_packet(0, 1, b"late", 4))
    assert result.end == len(FILE)
    assert result.problem is not None
    assert packets == expected_scanned(len(PACKETS))


def test_scan_not_ours() -> None:
    # a big-endian section (or anything whose first block is not our SHB) yields nothing
    big = fx.pcapng_bytes([(1, "eth0")], [(T0, 0, FRAME_A)], big_endian=True)
    packets, result = scan_all(big)
    assert packets == [] and result.end == 0 and result.problem is not None
    packets, result = scan_all(b"")
    assert packets == [] and result.end == 0 and result.problem is None


def test_scan_other_timestamp_resolutions() -> None:
    # an interface without if_tsresol is in microseconds; if_tsresol=3 is milliseconds
    buf = (
        fx.shb()
        + fx.idb(fx.Idb(1, "us", tsresol=None))
        + fx.idb(fx.Idb(1, "ms", tsresol=3))
        + fx.epb(0, 1_700_000_000_123_456, FRAME_A)
        + fx.epb(1, 1_700_000_000_123, FRAME_A, opts=[(1, b"shark-tui flow=5")])
    )
    packets, result = scan_all(buf)
    assert result.problem is None and result.end == len(buf)
    assert [(p.iface, p.ts_ns, p.comment) for p in packets] == [
        (0, 1_700_000_000_123_456_000, b""),
        (1, 1_700_000_000_123_000_000, b"shark-tui flow=5"),
    ]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=len(FILE)))
def test_scan_never_raises(tail: bytes, cut: int) -> None:
    """Any bytes after any prefix: no exception, and the complete blocks before are kept."""
    packets, result = scan_all(FILE[:cut] + tail)
    boundary = max(o for o in OFFSETS if o <= cut)
    assert result.end >= boundary
    whole = sum(1 for o in OFFSETS[FIRST_EPB + 1 :] if o <= cut)
    assert packets[:whole] == expected_scanned(whole)


# -- flow comments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comment", "number"),
    [
        (b"shark-tui flow=1", 1),
        (b"shark-tui flow=0", 0),
        (b"shark-tui flow=007", 7),
        (b"shark-tui flow=" + b"9" * 18, 10**18 - 1),
        (b"shark-tui flow=" + b"9" * 19, None),  # too long
        (b"shark-tui flow=", None),
        (b"shark-tui flow=-1", None),
        (b"shark-tui flow=+1", None),
        (b"shark-tui flow= 1", None),
        (b"shark-tui flow=1 ", None),
        (b"shark-tui flow=1\n", None),
        (b"shark-tui flow=1\0", None),
        (b"shark-tui flow=12a", None),
        (b"shark-tui flow=1.5", None),
        (b"shark-tui flow=\xd9\xa1", None),  # an Arabic-Indic digit in UTF-8
        (b"Shark-tui flow=1", None),
        (b"shark-tui flow 1", None),
        (b" shark-tui flow=1", None),
        (b"flow=1", None),
        (b"", None),
    ],
)
def test_parse_flow_comment(comment: bytes, number: int | None) -> None:
    assert pcapng.parse_flow_comment(comment) == number
