"""The sans-IO pcap/pcapng reader on byte-exact fixture files (real captures: test_packet.py)."""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shark_tui.engine.capfile import (
    MAX_RECORD,
    CaptureFile,
    CaptureFormatError,
    CaptureReader,
    Interface,
    RawPacket,
    iter_packets,
)
from tests.engine import fixtures_pcap as fx

T0 = 1_700_000_000 * fx.NS + 123_456_789  # a timestamp with all nine digits used

FRAME_A = fx.eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 80, 1, 2, fx.ACK | fx.PSH, b"GET / ")
FRAME_B = fx.eth_ipv6_tcp("fd00::1", "fd00::2", 40001, 443, 3, 4, fx.SYN)
FRAME_C = fx.ipv4_tcp("192.0.2.1", "192.0.2.2", 5, 6, 7, 8, fx.ACK, b"x" * 101)  # odd length


def read_all(data: bytes, chunk: int | None = None) -> tuple[list[RawPacket], CaptureReader]:
    r = CaptureReader()
    out: list[RawPacket] = []
    if chunk is None:
        out += r.feed(data)
    else:
        for i in range(0, len(data), chunk):
            out += r.feed(data[i : i + chunk])
    r.close()
    return out, r


# -- classic pcap -------------------------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_byte_orders_and_resolutions(nanosecond: bool, big_endian: bool) -> None:
    pkts = [(T0, FRAME_A), (T0 + 1_000, FRAME_B, 1500), (T0 + 2 * fx.NS, FRAME_C)]
    data = fx.pcap_bytes(1, pkts, nanosecond=nanosecond, big_endian=big_endian, snaplen=65535)
    got, r = read_all(data)
    expect_ts = [t if nanosecond else t // 1000 * 1000 for t, *_ in pkts]
    assert [p[0] for p in got] == expect_ts
    assert [p[2] for p in got] == [FRAME_A, FRAME_B, FRAME_C]
    assert [p[3] for p in got] == [len(FRAME_A), 1500, len(FRAME_C)]
    assert {p[1] for p in got} == {0}
    assert r.interfaces == [Interface(1, None, 65535)]
    assert r.format == "pcap" and r.warning is None and r.packets == 3
    assert all(type(p) is tuple and type(p[2]) is bytes for p in got)


def test_pcap_linktype_fcs_bits_masked_and_modified_magic() -> None:
    data = bytearray(fx.pcap_bytes(101, [(T0, FRAME_C)]))
    struct.pack_into("<I", data, 20, 101 | 0x10000000 | 0x04000000)  # FCS length 1, F bit
    got, r = read_all(bytes(data))
    assert r.interfaces[0].linktype == 101 and got[0][2] == FRAME_C
    # Kuznetsov's modified pcap (magic a1b2cd34): 8 extra bytes per record header
    hdr = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    rec = struct.pack("<IIII", 10, 5, len(FRAME_A), len(FRAME_A)) + b"\x01\0\0\0\x08\0\0\0"
    got, r = read_all(hdr + rec + FRAME_A + rec + FRAME_A)
    assert [p[0] for p in got] == [10 * fx.NS + 5000] * 2
    assert [p[2] for p in got] == [FRAME_A] * 2


def test_pcap_empty_capture_is_fine() -> None:
    got, r = read_all(fx.pcap_bytes(1, []))
    assert got == [] and r.warning is None and r.interfaces == [Interface(1, None, 262144)]


# -- pcapng -------------------------------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_interfaces_keep_their_link_types(big_endian: bool) -> None:
    ifs = [
        (fx.LINKTYPE_ETHERNET, "eth0"),
        (fx.LINKTYPE_RAW, "tun0"),
        (fx.LINKTYPE_LINUX_SLL2, None),
    ]
    sll2 = fx.sll2(fx.ipv4_tcp("10.1.1.1", "10.1.1.2", 1, 2, 3, 4, fx.ACK))
    pkts = [(T0, 0, FRAME_A), (T0 + 1, 1, FRAME_C), (T0 + 2, 2, sll2), (T0 + 3, 0, FRAME_B, 9000)]
    got, r = read_all(fx.pcapng_bytes(ifs, pkts, big_endian=big_endian))
    assert [(p[0], p[1], p[2]) for p in got] == [(t, i, f) for t, i, f, *_ in pkts]
    assert got[3][3] == 9000
    assert [(i.linktype, i.name) for i in r.interfaces] == ifs
    assert r.format == "pcapng" and r.warning is None


@pytest.mark.parametrize(
    ("tsresol", "units", "expect_ns"),
    [
        (6, 1_700_000_000_123_456, 1_700_000_000_123_456_000),
        (9, 1_700_000_000_123_456_789, 1_700_000_000_123_456_789),
        (3, 1_700_000_000_123, 1_700_000_000_123_000_000),
        (0, 1_700_000_000, 1_700_000_000_000_000_000),
        (12, 1_700_000_123_456_789_321, 1_700_000_123_456_789),  # ps: floored to ns
        (0x80 | 10, 1_700_000_000 * 1024 + 512, 1_700_000_000_500_000_000),  # 2^-10 s
        (0x80 | 30, (1 << 30) + (1 << 29), 1_500_000_000),
        (None, 42, 42_000),  # no if_tsresol: microseconds
    ],
)
def test_pcapng_tsresol(tsresol: int | None, units: int, expect_ns: int) -> None:
    data = fx.shb() + fx.idb(fx.Idb(1, "x", tsresol=tsresol)) + fx.epb(0, units, FRAME_A)
    got, _ = read_all(data)
    assert got[0][0] == expect_ns


def test_pcapng_tsoffset_and_name_and_snaplen() -> None:
    i = fx.Idb(1, "enp0s31f6", snaplen=96, tsresol=9, tsoffset=1_000_000_000)
    data = fx.shb() + fx.idb(i) + fx.epb(0, 5, FRAME_A)
    got, r = read_all(data)
    assert got[0][0] == 1_000_000_000 * fx.NS + 5
    assert r.interfaces == [Interface(1, "enp0s31f6", 96)]
    # the round trip through the generic writer
    got, _ = read_all(fx.pcapng_bytes([i], [(T0, 0, FRAME_A)]))
    assert got[0][0] == T0


def test_pcapng_spb_pb_and_skipped_blocks() -> None:
    data = b"".join(
        [
            fx.shb(opts=[(4, b"shark-tui tests")]),
            fx.block(4, b"\x01\x00\x04\x00\x7f\x00\x00\x01localhost\x00" + b"\0" * 4),  # NRB
            fx.idb(fx.Idb(1, "eth0", snaplen=40)),
            fx.idb((fx.LINKTYPE_RAW, "raw")),
            fx.epb(0, T0, FRAME_A, opts=[(1, b"a comment")]),
            fx.spb(FRAME_A[:40], len(FRAME_A)),  # cut at the snaplen, no timestamp
            fx.block(5, struct.pack("<IIIQ", 0, 0, 0, 0)),  # ISB
            fx.block(0x0000000A, b"\0" * 16),  # DSB
            fx.block(0x00000BAD, b"custom"),  # custom block (copyable)
            fx.block(0x40000BAD, b"custom2"),  # custom block (not copyable)
            fx.block(0x12345678, b"unknown block type"),
            fx.pb(1, T0 + 7, FRAME_C, 200),
            fx.epb(1, T0 + 9, FRAME_C),
        ]
    )
    got, r = read_all(data)
    assert got == [
        (T0, 0, FRAME_A, len(FRAME_A)),
        (T0, 0, FRAME_A[:40], len(FRAME_A)),
        (T0 + 7, 1, FRAME_C, 200),
        (T0 + 9, 1, FRAME_C, len(FRAME_C)),
    ]
    assert r.warning is None


def test_pcapng_sections_reset_interfaces_and_may_change_byte_order() -> None:
    s1 = fx.pcapng_bytes([(1, "eth0"), (101, "tun0")], [(T0, 0, FRAME_A), (T0 + 1, 1, FRAME_C)])
    s2 = fx.pcapng_bytes([(276, "any")], [(T0 + 2, 0, FRAME_C)], big_endian=True)
    s3 = fx.pcapng_bytes([(101, "tun1"), (1, "eth1")], [(T0 + 3, 1, FRAME_B)])
    got, r = read_all(s1 + s2 + s3)
    assert [(p[0], p[1]) for p in got] == [(T0, 0), (T0 + 1, 1), (T0 + 2, 2), (T0 + 3, 4)]
    assert [i.linktype for i in r.interfaces] == [1, 101, 276, 101, 1]
    assert [r.interfaces[p[1]].linktype for p in got] == [1, 101, 276, 1]
    assert r.warning is None


# -- chunking, truncation, garbage ---------------------------------------------------------------


def _sample_files() -> dict[str, bytes]:
    pk = [(T0 + i * 1000, [FRAME_A, FRAME_B, FRAME_C][i % 3]) for i in range(7)]
    return {
        "pcap": fx.pcap_bytes(1, pk),
        "pcap-ns-be": fx.pcap_bytes(1, pk, nanosecond=True, big_endian=True),
        "pcapng": fx.pcapng_bytes(
            [(1, "a"), (101, "b")], [(t, i % 2, f) for i, (t, f) in enumerate(pk)]
        )
        + fx.pcapng_bytes([(1, "c")], [(T0, 0, FRAME_A)], big_endian=True),
    }


SAMPLES = _sample_files()


@pytest.mark.parametrize("name", SAMPLES)
def test_any_chunking_gives_the_same_packets(name: str) -> None:
    data = SAMPLES[name]
    whole, _ = read_all(data)
    assert len(whole) >= 7
    for chunk in (1, 2, 3, 5, 7, 13, 64, 1000):
        got, r = read_all(data, chunk)
        assert got == whole and r.warning is None


@pytest.mark.parametrize("name", SAMPLES)
def test_cut_at_every_offset(name: str) -> None:
    data = SAMPLES[name]
    whole, _ = read_all(data)
    header = 24 if name.startswith("pcap-") or name == "pcap" else 0
    # offsets of record ends: reading a cut at exactly such an offset is silent
    ends = set()
    for n in range(len(data) + 1):
        r = CaptureReader()
        if n < 4:
            r.feed(data[:n])
            with pytest.raises(CaptureFormatError):
                r.close()
            continue
        got = r.feed(data[:n])
        warning = r.close()
        assert got == whole[: len(got)]
        if warning is None:
            ends.add(n)
        else:
            assert warning.startswith("capture truncated:"), warning
            if n >= max(header, 1) and "file header" not in warning:
                assert f"({len(got)} packets read before it)" in warning
    assert len(data) in ends
    assert len(ends) >= len(whole) + 1


def test_truncation_warning_text() -> None:
    data = fx.pcap_bytes(1, [(T0, FRAME_A)] * 3)
    r = CaptureReader()
    got = r.feed(data[:-10])
    assert len(got) == 2
    cut_at = 24 + 2 * (16 + len(FRAME_A))
    assert r.close() == (
        f"capture truncated: last record cut after {16 + len(FRAME_A) - 10} bytes at byte "
        f"offset {cut_at} (2 packets read before it)"
    )
    assert r.warning == r.close()


def test_pcapng_block_length_not_multiple_of_4_stops_there() -> None:
    good = fx.pcapng_bytes([(1, "eth0")], [(T0, 0, FRAME_A), (T0 + 1, 0, FRAME_A)])
    bad = struct.pack("<II", 6, 61) + b"\0" * 60
    tail = fx.epb(0, T0 + 2, FRAME_A)
    for chunk in (None, 1, 7):
        got, r = read_all(good + bad + tail, chunk)
        assert len(got) == 2
        assert r.warning is not None
        assert r.warning.startswith(f"garbage at byte offset {len(good)}: pcapng block length 61")
        assert "(2 packets read before it)" in r.warning


def test_pcapng_inconsistent_trailing_length() -> None:
    good = fx.pcapng_bytes([(1, "eth0")], [(T0, 0, FRAME_A)])
    bad = bytearray(fx.epb(0, T0, FRAME_A))
    bad[-4:] = struct.pack("<I", 12345)
    got, r = read_all(good + bytes(bad) + good)
    assert len(got) == 1
    assert r.warning is not None and "trailing length 12345" in r.warning
    assert f"offset {len(good)}" in r.warning


def test_pcapng_packet_on_undescribed_interface() -> None:
    data = fx.pcapng_bytes([(1, "eth0")], [(T0, 0, FRAME_A)]) + fx.epb(3, T0, FRAME_A)
    got, r = read_all(data)
    assert len(got) == 1
    assert r.warning is not None and "interface 3, which was not described" in r.warning


def test_pcapng_caplen_beyond_block() -> None:
    bad = bytearray(fx.epb(0, T0, FRAME_A))
    struct.pack_into("<I", bad, 20, 4000)
    got, r = read_all(fx.pcapng_bytes([(1, None)], []) + bytes(bad))
    assert got == [] and r.warning is not None and "4000 captured bytes" in r.warning


def test_huge_record_is_garbage_and_not_buffered() -> None:
    head = fx.pcap_bytes(1, [(T0, FRAME_A)])
    r = CaptureReader()
    got = r.feed(head + struct.pack("<IIII", 1, 0, MAX_RECORD + 1, MAX_RECORD + 1) + b"x" * 100)
    assert len(got) == 1 and r.buffered == 0
    assert r.warning is not None and f"claims {MAX_RECORD + 1} captured bytes" in r.warning
    assert r.feed(b"more") == []
    ng = fx.pcapng_bytes([(1, None)], []) + struct.pack("<III", 6, MAX_RECORD + 4, 0)
    got, r = read_all(ng)
    assert r.warning is not None and "claims" in r.warning and r.buffered == 0


def test_big_record_buffers_linearly() -> None:
    """A 3 MiB packet fed in 1 KiB chunks: pieces are kept, not re-joined per chunk."""
    frame = bytes(range(256)) * (3 * 4096)
    data = fx.pcap_bytes(1, [(T0, frame), (T0, FRAME_A)])
    got, r = read_all(data, 1024)
    assert [p[2] for p in got] == [frame, FRAME_A]
    assert r.buffered == 0


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b'{"id": 1}\n', "starts with 7b 22 69 64 (looks like JSON)"),
        (b"[1, 2]", "(looks like JSON)"),
        (b"hello world\n", "starts with 68 65 6c 6c (looks like text)"),
        (gzip.compress(b"x" * 100), "starts with 1f 8b 08 00 (looks like gzip-compressed data"),
        (b"\x7fELF\x02\x01", "(looks like an ELF executable)"),
        (b"<html>", "(looks like XML or HTML)"),
        (b"\x00\x01\x02\x03\x04", "starts with 00 01 02 03"),
        (b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x01\x02\x03\x04", "byte-order magic (01 02 03 04)"),
    ],
)
def test_not_a_capture(head: bytes, reason: str) -> None:
    for chunk in (None, 1):
        with pytest.raises(CaptureFormatError) as exc:
            read_all(head + b"\0" * 40, chunk)
        assert reason in str(exc.value)
        assert "\n" not in str(exc.value)
        assert isinstance(exc.value, ValueError)


def test_empty_and_tiny_inputs() -> None:
    with pytest.raises(CaptureFormatError, match="empty"):
        CaptureReader().close()
    r = CaptureReader()
    r.feed(b"\xd4\xc3")
    with pytest.raises(CaptureFormatError, match="only 2 bytes"):
        r.close()
    r = CaptureReader()
    r.feed(fx.pcap_bytes(1, [])[:10])
    assert r.close() == "capture truncated: the file header was cut after 10 bytes"


# -- file objects and pipes ----------------------------------------------------------------------


def test_capture_file_and_iter_packets(tmp_path: Path) -> None:
    data = SAMPLES["pcapng"]
    path = tmp_path / "x.pcapng"
    path.write_bytes(data)
    whole, ref = read_all(data)
    with path.open("rb") as f:
        cf = CaptureFile(f, chunk_size=7)
        assert list(cf) == whole
        assert cf.interfaces == ref.interfaces and cf.warning is None
    assert list(iter_packets(io.BytesIO(data))) == whole
    cut = CaptureFile(io.BytesIO(data[:-3]))
    assert list(cut) == whole[:-1]
    assert cut.warning is not None and cut.warning.startswith("capture truncated")
    with pytest.raises(CaptureFormatError):
        list(iter_packets(io.BytesIO(b"not a capture")))


def test_capture_file_on_a_pipe(tmp_path: Path) -> None:
    data = SAMPLES["pcap-ns-be"]
    path = tmp_path / "x.pcap"
    path.write_bytes(data)
    whole, _ = read_all(data)
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert not proc.stdout.seekable()
        cf = CaptureFile(proc.stdout, chunk_size=5)
        assert list(cf) == whole
        assert cf.warning is None


# -- properties ----------------------------------------------------------------------------------


@st.composite
def chunkings(draw: st.DrawFn, n: int) -> list[int]:
    cuts = draw(st.lists(st.integers(0, n), max_size=30))
    return sorted(set(cuts))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SAMPLES)), data=st.data())
def test_property_random_chunking(name: str, data: st.DataObject) -> None:
    blob = SAMPLES[name]
    whole, _ = read_all(blob)
    cuts = data.draw(chunkings(len(blob)))
    r = CaptureReader()
    got: list[RawPacket] = []
    prev = 0
    for c in [*cuts, len(blob)]:
        got += r.feed(blob[prev:c])
        prev = c
    assert r.close() is None
    assert got == whole


def _feed_bounded(blob: bytes, chunk: int) -> CaptureReader:
    r = CaptureReader()
    try:
        for i in range(0, len(blob), chunk):
            r.feed(blob[i : i + chunk])
            assert r.buffered <= MAX_RECORD + 64 + chunk
        r.close()
    except CaptureFormatError:
        pass
    return r


@settings(max_examples=300)
@given(blob=st.binary(max_size=300), chunk=st.integers(1, 64))
def test_property_random_bytes_only_format_error(blob: bytes, chunk: int) -> None:
    _feed_bounded(blob, chunk)
    # the same with a valid magic in front: never raises at all
    for magic in (fx.pcap_bytes(1, []), fx.shb(), fx.shb(big_endian=True)):
        r = CaptureReader()
        r.feed(magic)
        for i in range(0, len(blob), chunk):
            r.feed(blob[i : i + chunk])
        r.close()


@settings(max_examples=300)
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    chunk=st.integers(1, 4096),
)
def test_property_mutated_files(name: str, edits: list[tuple[int, int]], chunk: int) -> None:
    blob = bytearray(SAMPLES[name])
    for pos, value in edits:
        blob[pos % len(blob)] = value
    r = CaptureReader()
    try:
        first = r.feed(bytes(blob[:4]))
    except CaptureFormatError:
        assert bytes(blob[:4]) != SAMPLES[name][:4] or name == "pcapng"
        return
    assert first == []
    got: list[RawPacket] = []
    try:
        for i in range(4, len(blob), chunk):
            got += r.feed(bytes(blob[i : i + chunk]))
            assert r.buffered <= MAX_RECORD + 64 + chunk
        r.close()
    except CaptureFormatError:
        # only the pcapng byte-order magic (bytes 8..12) is checked after the first 4
        assert name == "pcapng" and bytes(blob[8:12]) != SAMPLES[name][8:12]
        return
    assert r.packets == len(got)
    for p in got:
        assert type(p[2]) is bytes and len(p[2]) <= len(blob)
