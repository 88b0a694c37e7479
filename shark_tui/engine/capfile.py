"""Sans-IO reader for classic pcap and pcapng capture files.

Why our own: libpcap 1.9 (pcapy-ng) refuses pcapng files whose interfaces have different link
types and cuts nanoseconds to microseconds; dpkt gives every pcapng packet the first interface's
link type and is too slow for the hot path (see RECIPES.md).

`CaptureReader` is a push machine: `feed(bytes) -> list[RawPacket]` in any chunking, `close()`
at the end of input. A packet is a plain tuple ``(ts_ns, iface, data, orig_len)``:

- ``ts_ns``: integer nanoseconds since the epoch (exact for nanosecond files);
- ``iface``: index into `CaptureReader.interfaces`. That list grows over the whole input: a
  second pcapng section (a new SHB) starts its own interface numbering, which is mapped to new
  entries here, so ``interfaces[iface].linktype`` is always the packet's link type;
- ``data``: the captured bytes (``len(data)`` is the caplen);
- ``orig_len``: the length of the packet on the wire.

Bad input never raises except at the very start: input that is not a capture at all raises
`CaptureFormatError` naming what it looks like. A garbage record later stops the reader there;
everything before it is kept and `warning` (also returned by `close()`) says what happened at
which byte offset. A record claiming more than `MAX_RECORD` bytes is garbage, so the internal
buffer never holds more than one record plus one fed chunk.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, BinaryIO, Final

_native: ModuleType | None
try:  # the record loops in C (shark_tui/engine/_native.c); this module is the reference
    from shark_tui.engine import _native
except ImportError:  # pragma: no cover - an install without a compiler
    _native = None

__all__ = [
    "MAX_RECORD",
    "CaptureFile",
    "CaptureFormatError",
    "CaptureReader",
    "Decoded",
    "Interface",
    "Item",
    "RawPacket",
    "iter_packets",
]

MAX_RECORD: Final = 256 * 1024 * 1024
"""Largest record (pcap caplen or pcapng block length) accepted; larger is a format error."""

RawPacket = tuple[int, int, bytes, int]
"""``(ts_ns, iface, data, orig_len)`` — a plain tuple: creating it is the cheapest thing."""

Decoded = tuple[int, int, bytes, int, bytes, int, int, int, int, bytes]
"""``(ts_ns, iface, src, sport, dst, dport, seq, ack, flags, payload)``: a packet the C fast path
decoded as it read it (`CaptureReader.feed_items`; the fields of `packet.TcpSegment`)."""

Item = RawPacket | Decoded


class CaptureFormatError(ValueError):
    """The input is not a pcap or pcapng file (raised only for the file's start)."""


@dataclass(slots=True)
class Interface:
    """One capture interface: classic pcap has one, pcapng one per IDB (over all sections)."""

    linktype: int
    name: str | None
    snaplen: int


_NS: Final = 1_000_000_000
_LINKTYPE_MASK: Final = 0x03FFFFFF  # upper bits of a pcap header's network field: FCS info

_SHB: Final = 0x0A0D0D0A
_IDB: Final = 1
_PB: Final = 2  # obsolete Packet Block
_SPB: Final = 3
_EPB: Final = 6
_SHB_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
_BOM_LE: Final = b"\x4d\x3c\x2b\x1a"
_BOM_BE: Final = b"\x1a\x2b\x3c\x4d"

# magic bytes as they appear in the file -> (byte order, nanoseconds, record header size)
_PCAP_MAGICS: Final = {
    b"\xd4\xc3\xb2\xa1": ("<", False, 16),
    b"\xa1\xb2\xc3\xd4": (">", False, 16),
    b"\x4d\x3c\xb2\xa1": ("<", True, 16),
    b"\xa1\xb2\x3c\x4d": (">", True, 16),
    # Alexey Kuznetsov's modified pcap: 8 more bytes per record (ifindex, protocol, type, pad)
    b"\x34\xcd\xb2\xa1": ("<", False, 24),
    b"\xa1\xb2\xcd\x34": (">", False, 24),
}


class _Structs:
    """Precompiled structs for one byte order."""

    __slots__ = ("epb", "hdr", "idb", "pb", "pcap_hdr", "shb", "u16", "u32", "u64s")

    def __init__(self, order: str) -> None:
        self.hdr = struct.Struct(order + "II")  # block type, block total length
        self.u16 = struct.Struct(order + "H")
        self.u32 = struct.Struct(order + "I")
        self.u64s = struct.Struct(order + "q")
        self.shb = struct.Struct(order + "HH")  # major, minor (after the BOM)
        self.idb = struct.Struct(order + "HxxI")  # linktype, snaplen
        # block type, length, iface, ts high, ts low, caplen, orig len
        self.epb = struct.Struct(order + "IIIIIII")
        self.pb = struct.Struct(order + "HxxIIII")  # iface, (drops), ts high, ts low, caplen, orig
        self.pcap_hdr = struct.Struct(order + "HHiIII")  # major minor zone sigfigs snaplen network


_LE: Final = _Structs("<")
_BE: Final = _Structs(">")

_MODE_START: Final = 0
_MODE_PCAP: Final = 1
_MODE_PCAPNG: Final = 2


def _describe_not_capture(head: bytes) -> str:
    """A one-line reason for input that does not start with a capture magic."""
    shown = " ".join(f"{b:02x}" for b in head[:4])
    guess = ""
    if head.startswith(b"\x1f\x8b"):
        guess = "gzip-compressed data; decompress it first"
    elif head.startswith((b"\x28\xb5\x2f\xfd",)):
        guess = "zstd-compressed data; decompress it first"
    elif head.startswith(b"BZh"):
        guess = "bzip2-compressed data; decompress it first"
    elif head.startswith(b"\xfd7zX"):
        guess = "xz-compressed data; decompress it first"
    elif head.startswith(b"PK\x03\x04"):
        guess = "a zip archive"
    elif head.startswith(b"\x7fELF"):
        guess = "an ELF executable"
    elif head.startswith(b"snoo"):
        guess = "a snoop capture; convert it with editcap -F pcapng"
    else:
        stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
        if stripped[:1] in (b"{", b"["):
            guess = "JSON"
        elif stripped[:1] == b"<":
            guess = "XML or HTML"
        elif all(32 <= b < 127 or b in (9, 10, 13) for b in head):
            guess = "text"
    reason = f"not a pcap or pcapng file: starts with {shown}"
    return f"{reason} (looks like {guess})" if guess else reason


def _tsresol(value: int) -> tuple[int, int, int]:
    """if_tsresol -> (multiplier, divisor, shift) so that ns = ts * mult // div >> shift."""
    if value & 0x80:
        return _NS, 1, value & 0x7F
    if value <= 9:
        return 10 ** (9 - value), 1, 0
    return 1, 10 ** (value - 9), 0


class CaptureReader:
    """Sans-IO pcap/pcapng reader: bytes in, `RawPacket` tuples out.

    Attributes: ``interfaces`` (see the module docstring), ``warning`` (None, or one line about a
    garbage record or a truncated end), ``packets`` (count returned so far), ``format``
    (``"pcap"``, ``"pcapng"`` or None before the header was seen).
    """

    __slots__ = (
        "_decode",
        "_ignore",
        "_ignore_base",
        "_last_ts",
        "_need",
        "_offset",
        "_order",
        "_pcap_mult",
        "_pcap_rec",
        "_pending",
        "_pending_len",
        "_sec_ifs",
        "_sec_slow",
        "_state",
        "_stopped",
        "comments",
        "format",
        "interfaces",
        "packets",
        "warning",
    )

    def __init__(self) -> None:
        self._decode = False  # this feed's records may come out decoded (`feed_items`)
        self._ignore: Any = None  # and the records this `_native.IgnoreSet` takes out are not
        self._ignore_base = 0  # its count of those when the feed began
        self.interfaces: list[Interface] = []
        #: the section headers' comments (a shark-tui export's pod history is one)
        self.comments: list[str] = []
        self.warning: str | None = None
        self.packets = 0
        self.format: str | None = None
        self._state = _MODE_START
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._need = 4  # bytes needed at the start of the buffer before parsing can progress
        self._offset = 0  # absolute file offset of the start of the buffer
        self._stopped = False
        self._order = _LE
        self._pcap_rec = struct.Struct("<IIII")
        self._pcap_mult = 1000
        # per pcapng section: local interface id -> (global id, ts multiplier or 0, offset ns)
        self._sec_ifs: list[tuple[int, int, int]] = []
        self._sec_slow: list[tuple[int, int, int]] = []  # (mult, div, shift) per local id
        self._last_ts = 0

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a record (bounded by one record + a chunk)."""
        return self._pending_len

    def feed(self, data: bytes | bytearray | memoryview) -> list[RawPacket]:
        """Take the next bytes of the file; return the packets completed by them."""
        self._decode = False
        packets: list[RawPacket] = self._feed(data)
        return packets

    def feed_items(self, data: bytes | bytearray | memoryview, ignore: Any = None) -> list[Item]:
        """`feed`, except that the packets the C fast paths find to be plain TCP segments come
        out decoded (`Decoded`: no frame bytes are copied), and those an armed
        `_native.IgnoreSet` (``ignore``) takes out do not come out at all (counted in ``packets``
        all the same). Without the C module, all `RawPacket`. Either way the same packets, in
        the same order."""
        self._decode = _native is not None
        self._ignore = ignore if self._decode else None
        self._ignore_base = self._ignore_count()
        try:
            items: list[Item] = self._feed(data)
        finally:
            self._decode = False
            self._ignore = None
        return items

    def _ignore_count(self) -> int:
        """Records the ignore set took out or handled itself (fast connections), so far."""
        return 0 if self._ignore is None else self._ignore.dropped + self._ignore.taken

    def _taken(self) -> int:
        """Records the ignore set took out or handled in this feed (read, not returned)."""
        return self._ignore_count() - self._ignore_base

    def _feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        if self._stopped or not data:
            return []
        n = len(data)
        if self._pending_len + n < self._need:
            self._pending.append(bytes(data))
            self._pending_len += n
            return []
        if self._pending:
            self._pending.append(bytes(data))
            buf = b"".join(self._pending)
        else:
            buf = data if type(data) is bytes else bytes(data)
        out: list[Any] = []
        pos = self._parse(buf, out)
        self.packets += len(out) + self._taken()
        if out:
            self._last_ts = out[-1][0]
        self._offset += pos
        if self._stopped or pos >= len(buf):
            self._pending = []
            self._pending_len = 0
        else:
            rest = buf[pos:] if pos else buf
            self._pending = [rest]
            self._pending_len = len(rest)
        return out

    def close(self) -> str | None:
        """End of input: return the warning (garbage or truncation), or None if the file was whole.

        Raises `CaptureFormatError` when the input was empty or too short to hold a magic number.
        """
        if self._stopped:
            return self.warning
        n = self._pending_len
        if self._state == _MODE_START:
            if n < 4:
                self._stopped = True
                if n == 0 and self._offset == 0:
                    raise CaptureFormatError("not a pcap or pcapng file: the input is empty")
                raise CaptureFormatError(f"not a pcap or pcapng file: only {n} bytes long")
            self.warning = f"capture truncated: the file header was cut after {n} bytes"
        elif n:
            self.warning = (
                f"capture truncated: last record cut after {n} bytes at byte offset "
                f"{self._offset} ({self.packets} packets read before it)"
            )
        self._stopped = True
        self._pending = []
        self._pending_len = 0
        return self.warning

    # -- parsing --------------------------------------------------------------------------------

    def _fail(self, pos: int, reason: str, read: int) -> None:
        self._stopped = True
        self.warning = (
            f"garbage at byte offset {self._offset + pos}: {reason}; stopped reading there "
            f"({self.packets + read + self._taken()} packets read before it)"
        )

    def _parse(self, buf: bytes, out: list[RawPacket]) -> int:
        if self._state == _MODE_PCAP:
            return self._parse_pcap(buf, 0, out)
        if self._state == _MODE_PCAPNG:
            return self._parse_pcapng(buf, 0, out)
        head = buf[:4]
        if head == _SHB_MAGIC:
            if len(buf) < 12:
                self._need = 12
                return 0
            if buf[8:12] not in (_BOM_LE, _BOM_BE):
                self._stopped = True
                raise CaptureFormatError(
                    "not a pcapng file: section header without a valid byte-order magic "
                    f"({buf[8:12].hex(' ')})"
                )
            self._state = _MODE_PCAPNG
            self.format = "pcapng"
            return self._parse_pcapng(buf, 0, out)
        magic = _PCAP_MAGICS.get(head)
        if magic is None:
            self._stopped = True
            raise CaptureFormatError(_describe_not_capture(head))
        if len(buf) < 24:
            self._need = 24
            return 0
        order, nano, rec_size = magic
        structs = _LE if order == "<" else _BE
        _major, _minor, _zone, _sigfigs, snaplen, network = structs.pcap_hdr.unpack_from(buf, 4)
        self.interfaces.append(Interface(network & _LINKTYPE_MASK, None, snaplen))
        self._pcap_rec = struct.Struct(order + ("IIII" if rec_size == 16 else "IIII8x"))
        self._pcap_mult = 1 if nano else 1000
        self._state = _MODE_PCAP
        self.format = "pcap"
        return self._parse_pcap(buf, 24, out)

    def _parse_pcap(self, buf: bytes, pos: int, out: list[RawPacket]) -> int:
        rec = self._pcap_rec
        unpack = rec.unpack_from
        hlen = rec.size
        mult = self._pcap_mult
        end = len(buf)
        append = out.append
        if _native is not None:  # the complete records in C; what stops it is decided below
            lt = self.interfaces[0].linktype if self._decode else -1
            big = rec.format[0] == ">"
            pos = _native.pcap_records(buf, pos, big, hlen, mult, out, lt, self._ignore)
        while True:
            start = pos + hlen
            if start > end:
                self._need = hlen
                return pos
            sec, frac, caplen, orig_len = unpack(buf, pos)
            nxt = start + caplen
            if nxt > end or caplen > MAX_RECORD:
                if caplen > MAX_RECORD:
                    self._fail(pos, f"record claims {caplen} captured bytes", len(out))
                    return pos
                self._need = hlen + caplen
                return pos
            append((sec * _NS + frac * mult, 0, buf[start:nxt], orig_len))
            pos = nxt

    def _parse_pcapng(self, buf: bytes, pos: int, out: list[RawPacket]) -> int:
        end = len(buf)
        append = out.append
        st = self._order
        hdr_unpack = st.hdr.unpack_from
        epb_unpack = st.epb.unpack_from
        u32_unpack = st.u32.unpack_from
        ifs = self._sec_ifs
        nifs = len(ifs)
        native = _native.pcapng_epbs if _native is not None else None
        decode = self._decode
        while True:
            if native is not None:  # the plain EPBs in C; any other block is handled below
                if decode:
                    lts = [self.interfaces[i[0]].linktype for i in ifs]
                    pos = native(buf, pos, st is _BE, ifs, out, lts, self._ignore)
                else:
                    pos = native(buf, pos, st is _BE, ifs, out)
            if pos + 28 <= end:
                btype, blen, iface, hi, lo, caplen, orig_len = epb_unpack(buf, pos)
                if btype == _EPB:
                    # hot path: a whole, well-formed EPB on an interface with a decimal resolution
                    nxt = pos + blen
                    if (
                        nxt <= end
                        and caplen <= blen - 32
                        and not blen & 3
                        and blen <= MAX_RECORD
                        and iface < nifs
                        and u32_unpack(buf, nxt - 4)[0] == blen
                    ):
                        gid, mult, toff = ifs[iface]
                        if mult:
                            start = pos + 28
                            append(
                                (
                                    ((hi << 32) | lo) * mult + toff,
                                    gid,
                                    buf[start : start + caplen],
                                    orig_len,
                                )
                            )
                            pos = nxt
                            continue
            elif pos + 12 > end:
                self._need = 12
                return pos
            else:
                btype, blen = hdr_unpack(buf, pos)
            if btype == _SHB:
                bom = buf[pos + 8 : pos + 12]
                if bom == _BOM_LE:
                    st = _LE
                elif bom == _BOM_BE:
                    st = _BE
                else:
                    self._fail(
                        pos, f"section header with a bad byte-order magic {bom.hex(' ')}", len(out)
                    )
                    return pos
                self._order = st
                hdr_unpack = st.hdr.unpack_from
                epb_unpack = st.epb.unpack_from
                u32_unpack = st.u32.unpack_from
                blen = hdr_unpack(buf, pos)[1]
            # general path: validate the block, then handle it
            if blen < 12 or blen & 3:
                self._fail(
                    pos, f"pcapng block length {blen} is not a multiple of 4 (or < 12)", len(out)
                )
                return pos
            if blen > MAX_RECORD:
                self._fail(pos, f"pcapng block claims {blen} bytes", len(out))
                return pos
            nxt = pos + blen
            if nxt > end:
                self._need = blen
                return pos
            trailer = u32_unpack(buf, nxt - 4)[0]
            if trailer != blen:
                self._fail(
                    pos,
                    f"pcapng block length {blen} does not match its trailing length {trailer}",
                    len(out),
                )
                return pos
            err = self._block(btype, buf, pos, blen, out)
            if err is not None:
                self._fail(pos, err, len(out))
                return pos
            ifs = self._sec_ifs
            nifs = len(ifs)
            pos = nxt

    def _block(
        self, btype: int, buf: bytes, pos: int, blen: int, out: list[RawPacket]
    ) -> str | None:
        """Handle one complete, length-checked pcapng block; return an error or None."""
        st = self._order
        if btype == _SHB:
            if blen < 28:
                return f"section header block too short ({blen} bytes)"
            major, _minor = st.shb.unpack_from(buf, pos + 12)
            if major != 1:
                return f"unsupported pcapng major version {major}"
            p = pos + 24
            oend = pos + blen - 4
            u16 = st.u16.unpack_from
            while p + 4 <= oend:
                code, olen = u16(buf, p)[0], u16(buf, p + 2)[0]
                vend = p + 4 + olen
                if code == 0 or vend > oend:
                    break
                if code == 1 and len(self.comments) < 256:
                    self.comments.append(bytes(buf[p + 4 : vend]).decode("utf-8", "replace"))
                p += 4 + ((olen + 3) & ~3)
            self._sec_ifs = []
            self._sec_slow = []
            return None
        if btype == _IDB:
            if blen < 20:
                return f"interface description block too short ({blen} bytes)"
            linktype, snaplen = st.idb.unpack_from(buf, pos + 8)
            name: str | None = None
            resol = 6
            toff = 0
            p = pos + 16
            oend = pos + blen - 4
            u16 = st.u16.unpack_from
            while p + 4 <= oend:
                code, olen = u16(buf, p)[0], u16(buf, p + 2)[0]
                vstart = p + 4
                vend = vstart + olen
                if code == 0 or vend > oend:
                    break
                if code == 2:
                    name = buf[vstart:vend].rstrip(b"\0").decode("utf-8", "replace")
                elif code == 9 and olen >= 1:
                    resol = buf[vstart]
                elif code == 14 and olen >= 8:
                    toff = st.u64s.unpack_from(buf, vstart)[0] * _NS
                p = vstart + ((olen + 3) & ~3)
            mult, div, shift = _tsresol(resol)
            self.interfaces.append(Interface(linktype, name, snaplen))
            fast_mult = mult if div == 1 and shift == 0 else 0
            self._sec_ifs.append((len(self.interfaces) - 1, fast_mult, toff))
            self._sec_slow.append((mult, div, shift))
            return None
        if btype in (_EPB, _PB):
            if btype == _EPB:
                if blen < 32:
                    return f"enhanced packet block too short ({blen} bytes)"
                _t, _l, iface, hi, lo, caplen, orig_len = st.epb.unpack_from(buf, pos)
            else:
                if blen < 32:
                    return f"packet block too short ({blen} bytes)"
                iface, hi, lo, caplen, orig_len = st.pb.unpack_from(buf, pos + 8)
            if caplen > blen - 32:
                return f"packet claims {caplen} captured bytes in a {blen}-byte block"
            if iface >= len(self._sec_ifs):
                return f"packet on interface {iface}, which was not described"
            gid, _fast, toff = self._sec_ifs[iface]
            mult, div, shift = self._sec_slow[iface]
            ts = (((hi << 32) | lo) * mult // div >> shift) + toff
            out.append((ts, gid, buf[pos + 28 : pos + 28 + caplen], orig_len))
            return None
        if btype == _SPB:
            if blen < 16:
                return f"simple packet block too short ({blen} bytes)"
            if not self._sec_ifs:
                return "simple packet block before any interface description"
            orig_len = st.u32.unpack_from(buf, pos + 8)[0]
            gid = self._sec_ifs[0][0]
            caplen = min(orig_len, blen - 16)
            snaplen = self.interfaces[gid].snaplen
            if snaplen:
                caplen = min(caplen, snaplen)
            # an SPB has no timestamp: give it the previous packet's, keeping time order
            ts = out[-1][0] if out else self._last_ts
            out.append((ts, gid, buf[pos + 12 : pos + 12 + caplen], orig_len))
            return None
        return None  # NRB, ISB, DSB, custom and unknown blocks are skipped


class CaptureFile:
    """Iterate the packets of a binary file object (works on pipes and stdin).

    After (or during) iteration: ``interfaces`` (the reader's list, growing as IDBs are read) and
    ``warning`` (set once iteration has finished). `CaptureFormatError` propagates from the
    first read when the input is not a capture.
    """

    __slots__ = ("_f", "chunk_size", "reader")

    def __init__(self, f: BinaryIO, chunk_size: int = 1 << 20) -> None:
        self._f = f
        self.chunk_size = chunk_size
        self.reader = CaptureReader()

    @property
    def interfaces(self) -> list[Interface]:
        return self.reader.interfaces

    @property
    def warning(self) -> str | None:
        return self.reader.warning

    def _chunks(self) -> Iterator[bytes]:
        """The file in chunks; the reader is closed (truncation warning) after the last."""
        read = getattr(self._f, "read1", None) or self._f.read
        size = self.chunk_size
        while chunk := read(size):
            yield chunk
        self.reader.close()

    def item_batches(self, ignore: Any = None) -> Iterator[list[Item]]:
        """The packets, a list per chunk read, plain TCP segments decoded where the C fast
        paths could, without those ``ignore`` takes out (see `CaptureReader.feed_items`; the
        consumer arms it before asking for the next batch)."""
        feed = self.reader.feed_items
        for chunk in self._chunks():
            if items := feed(chunk, ignore):
                yield items

    def __iter__(self) -> Iterator[RawPacket]:
        feed = self.reader.feed
        for chunk in self._chunks():
            yield from feed(chunk)


def iter_packets(f: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[RawPacket]:
    """The packets of a capture file object; see `CaptureFile` to get interfaces and warning."""
    return iter(CaptureFile(f, chunk_size))
