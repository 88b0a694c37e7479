"""Writing pcapng blocks, and scanning our own segments back with the offset of every block.

The writer side is a handful of functions that return the bytes of one block (little-endian, the
byte order of every machine we run on); the segment writer concatenates them. The scanner reads
a whole segment file back for crash recovery and index rebuilds: unlike `capfile.CaptureReader`
it keeps each packet's block offset and its comment (the segment writer marks the first packet
of each connection in a segment with ``shark-tui flow=N``), and it stops at the first block that
is cut short or garbage, reporting where, so the caller can truncate the file there.

Timestamps are nanoseconds: every interface we write says ``if_tsresol=9``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "FLOW_COMMENT",
    "ScannedPacket",
    "SegmentScan",
    "enhanced_packet",
    "interface_description",
    "parse_flow_comment",
    "scan",
    "section_header",
    "to_classic_pcap",
]

BT_SHB: Final = 0x0A0D0D0A
BT_IDB: Final = 1
BT_EPB: Final = 6
_BOM: Final = 0x1A2B3C4D

OPT_END: Final = 0
OPT_COMMENT: Final = 1
IF_NAME: Final = 2
IF_DESCRIPTION: Final = 3
IF_TSRESOL: Final = 9
SHB_USERAPPL: Final = 4

FLOW_COMMENT: Final = b"shark-tui flow="
"""Prefix of the comment on the first packet of each connection in each segment."""

_HDR: Final = struct.Struct("<II")  # block type, total length
_EPB_HEAD: Final = struct.Struct("<IIIIIII")  # type, len, iface, ts hi, ts lo, caplen, orig
_EPB_FIELDS: Final = struct.Struct("<IIIII")  # iface, ts hi, ts lo, caplen, orig (after _HDR)
_U32: Final = struct.Struct("<I")
_OPT: Final = struct.Struct("<HH")
_PAD: Final = (b"", b"\0\0\0", b"\0\0", b"\0")
_MAX_BLOCK: Final = 16 * 1024 * 1024


def _option(code: int, value: bytes) -> bytes:
    return _OPT.pack(code, len(value)) + value + _PAD[len(value) & 3]


def _block(block_type: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return _HDR.pack(block_type, n) + body + _U32.pack(n)


def section_header(comment: str = "", application: str = "", more: Sequence[str] = ()) -> bytes:
    """A Section Header Block (version 1.0, section length unknown); ``more``: further
    comments (each under 64 KiB encoded)."""
    opts = b""
    for text in (comment, *more):
        if text:
            opts += _option(OPT_COMMENT, text.encode())
    if application:
        opts += _option(SHB_USERAPPL, application.encode())
    if opts:
        opts += _OPT.pack(OPT_END, 0)
    return _block(BT_SHB, struct.pack("<IHHq", _BOM, 1, 0, -1) + opts)


def interface_description(
    linktype: int, snaplen: int, name: str, description: str = ""
) -> bytes:
    """An Interface Description Block with nanosecond timestamps."""
    opts = _option(IF_NAME, name.encode())
    if description:
        opts += _option(IF_DESCRIPTION, description.encode())
    opts += _option(IF_TSRESOL, b"\x09") + _OPT.pack(OPT_END, 0)
    return _block(BT_IDB, struct.pack("<HHI", linktype, 0, snaplen) + opts)


def enhanced_packet(
    iface: int, ts_ns: int, data: bytes, orig_len: int, comment: bytes = b""
) -> bytes:
    """An Enhanced Packet Block, optionally with a comment."""
    caplen = len(data)
    pad = _PAD[caplen & 3]
    opts = b""
    if comment:
        opts = _option(OPT_COMMENT, comment) + b"\0\0\0\0"
    n = 32 + caplen + len(pad) + len(opts)
    return b"".join(
        (
            _EPB_HEAD.pack(BT_EPB, n, iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, caplen, orig_len),
            data,
            pad,
            opts,
            _U32.pack(n),
        )
    )


def parse_flow_comment(comment: bytes) -> int | None:
    """The flow number of a ``shark-tui flow=N`` comment, else None."""
    if not comment.startswith(FLOW_COMMENT):
        return None
    digits = comment[len(FLOW_COMMENT) :]
    return int(digits) if digits.isdigit() and len(digits) < 19 else None


@dataclass(slots=True)
class ScannedPacket:
    offset: int  # of the Enhanced Packet Block in the file
    iface: int  # index into SegmentScan.interfaces
    ts_ns: int
    data: bytes
    orig_len: int
    comment: bytes  # b"" when none


@dataclass(slots=True)
class SegmentScan:
    """What `scan` found: interfaces (name, linktype, description) and where it stopped."""

    interfaces: list[tuple[str, int, str]]
    end: int = 0  # offset just past the last complete block
    problem: str | None = None  # why the scan stopped before the end of the data, if it did


def _options(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
    while pos + 4 <= end:
        code, length = _OPT.unpack_from(buf, pos)
        if code == OPT_END:
            return
        value_end = pos + 4 + length
        if value_end > end:
            return
        yield code, buf[pos + 4 : value_end]
        pos = value_end + (-length & 3)


def scan(buf: bytes, result: SegmentScan) -> Iterator[ScannedPacket]:
    """The packets of a segment file written by us, in file order.

    Stops at the first block that is cut short or malformed; ``result.end`` is then the offset
    just past the last complete block and ``result.problem`` says what was wrong. Only one
    section is expected (a segment is one section); a second SHB is reported and stops the scan.
    """
    pos = 0
    size = len(buf)
    ifaces = result.interfaces
    tsmult: list[int] = []  # nanoseconds per timestamp unit, per interface
    while pos < size:
        if pos + 12 > size:
            result.problem = f"last block cut after {size - pos} bytes at offset {pos}"
            break
        btype, blen = _HDR.unpack_from(buf, pos)
        if blen < 12 or blen & 3 or blen > _MAX_BLOCK:
            result.problem = f"garbage block length {blen} at offset {pos}"
            break
        end = pos + blen
        if end > size:
            result.problem = f"last block cut after {size - pos} of {blen} bytes at offset {pos}"
            break
        if _U32.unpack_from(buf, end - 4)[0] != blen:
            result.problem = f"block at offset {pos} does not end with its length"
            break
        if btype == BT_EPB:
            if blen < 32:
                result.problem = f"short packet block at offset {pos}"
                break
            iface, hi, lo, caplen, orig = _EPB_FIELDS.unpack_from(buf, pos + 8)
            data_end = pos + 28 + caplen
            if iface >= len(ifaces) or data_end > end - 4:
                result.problem = f"bad packet block at offset {pos}"
                break
            comment = b""
            opt_pos = data_end + (-caplen & 3)
            if opt_pos < end - 4:
                for code, value in _options(buf, opt_pos, end - 4):
                    if code == OPT_COMMENT:
                        comment = value
            yield ScannedPacket(
                pos, iface, ((hi << 32) | lo) * tsmult[iface], buf[pos + 28 : data_end], orig,
                comment,
            )  # fmt: skip
        elif btype == BT_IDB:
            if blen < 20:
                result.problem = f"short interface block at offset {pos}"
                break
            linktype = struct.unpack_from("<H", buf, pos + 8)[0]
            name, desc, mult = "", "", 1000
            for code, value in _options(buf, pos + 16, end - 4):
                if code == IF_NAME:
                    name = value.decode(errors="replace")
                elif code == IF_DESCRIPTION:
                    desc = value.decode(errors="replace")
                elif code == IF_TSRESOL and value:
                    r = value[0]
                    mult = 10 ** max(0, 9 - r) if not r & 0x80 else 1
            ifaces.append((name, linktype, desc))
            tsmult.append(mult)
        elif btype == BT_SHB:
            if pos:
                result.problem = f"second section header at offset {pos}"
                break
            if blen < 28 or _U32.unpack_from(buf, 8)[0] != _BOM:
                result.problem = "not a little-endian pcapng section we wrote"
                break
        pos = end
        result.end = pos
    else:
        result.end = pos


def to_classic_pcap(src: bytes) -> bytes | None:
    """A pcapng export as a classic pcap (nanosecond magic when a timestamp needs it, else
    microseconds), or None when its packets have more than one link type."""
    from shark_tui.engine.capfile import CaptureReader

    reader = CaptureReader()
    packets = reader.feed(src)
    reader.close()
    linktypes = {reader.interfaces[p[1]].linktype for p in packets}
    if not packets:
        linktypes = {reader.interfaces[0].linktype} if reader.interfaces else {1}
    if len(linktypes) != 1:
        return None
    nano = any(p[0] % 1000 for p in packets)
    magic, div = (0xA1B23C4D, 1) if nano else (0xA1B2C3D4, 1000)
    snaplen = max((len(p[2]) for p in packets), default=262144)
    out = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, max(snaplen, 65535), linktypes.pop())]
    rec = struct.Struct("<IIII")
    for ts, _iface, data, orig in packets:
        sec, frac = divmod(ts, 1_000_000_000)
        out.append(rec.pack(sec, frac // div, len(data), orig))
        out.append(data)
    return b"".join(out)
