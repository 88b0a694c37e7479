"""Link layer, IPv4/IPv6 and TCP decoding: one captured packet in, one TCP segment tuple out.

This runs once per packet, so it is written for speed: precompiled structs at fixed offsets, no
objects besides the result tuple, the Ethernet/IPv4/TCP path inlined in `PacketDecoder.decode`.

A `TcpSegment` is a plain tuple
``(src, sport, dst, dport, seq, ack, flags, window, payload)`` with ``src``/``dst`` the packed
4- or 16-byte addresses (`format_ip` turns them into text). ``payload`` is trimmed to the IP
length (no Ethernet padding); when the capture cut the packet short (snaplen), it is what was
captured and the decoder's ``stats["snapped"]`` counts it: the sequence numbers then show the
missing bytes as a gap to the reassembler.

IP fragments (IPv4 and IPv6) are reassembled, keyed by addresses, protocol and id, in any
order, overlaps tolerated, with caps on pending datagrams and bytes and a timeout measured in
packet time. Everything dropped is counted in ``stats``.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Callable
from typing import Final

_native_segment: Callable[[int, bytes], TcpSegment | None] | None
try:  # the plain cases in C (shark_tui/engine/_native.c); this module is the reference
    from shark_tui.engine._native import tcp_segment as _native_segment
except ImportError:  # pragma: no cover - an install without a compiler
    _native_segment = None

__all__ = [
    "ACK",
    "CWR",
    "ECE",
    "FIN",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "PSH",
    "RST",
    "SUPPORTED_LINKTYPES",
    "SYN",
    "URG",
    "PacketDecoder",
    "TcpSegment",
    "format_ip",
]

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
_RAW_ALIASES: Final = frozenset({12, 14})  # DLT_RAW as written by some systems
SUPPORTED_LINKTYPES: Final = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
        *_RAW_ALIASES,
    }
)

TcpSegment = tuple[bytes, int, bytes, int, int, int, int, int, bytes]
"""``(src, sport, dst, dport, seq, ack, flags, window, payload)``."""

_ETH_IPV4: Final = 0x0800
_ETH_IPV6: Final = 0x86DD
_ETH_VLANS: Final = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})

# vihl, total length, id, flags+fragment offset, protocol, src, dst
_IP4: Final = struct.Struct("!BxHHHxB2x4s4s")
# version/class byte, payload length, next header, src, dst
_IP6: Final = struct.Struct("!BxxxHBx16s16s")
# sport, dport, seq, ack, data offset + flags, window
_TCP: Final = struct.Struct("!HHIIHH")
_U32BE: Final = struct.Struct("!I")
_U32LE: Final = struct.Struct("<I")

_IP6_EXT_8: Final = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_IP6_AH: Final = 51
_IP6_FRAG: Final = 44
_AF_INET6_VALUES: Final = frozenset({10, 24, 28, 30})  # Linux, BSDs, FreeBSD/Darwin...

MAX_FRAG_DATAGRAMS: Final = 1024
MAX_FRAG_BYTES: Final = 16 * 1024 * 1024
MAX_FRAG_PIECES: Final = 1024  # per datagram; more (tiny-fragment floods) drops it
FRAG_TIMEOUT_NS: Final = 30 * 1_000_000_000
_MAX_DATAGRAM: Final = 65535


@functools.lru_cache(maxsize=65536)
def format_ip(b: bytes) -> str:
    """Packed 4- or 16-byte address -> text (``10.0.0.1``, ``::1``); cached."""
    return socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)


class _Pending:
    """One datagram being reassembled."""

    __slots__ = ("first_ts", "nh", "pieces", "size", "total")

    def __init__(self, ts: int) -> None:
        self.first_ts = ts
        self.pieces: list[tuple[int, bytes]] = []
        self.size = 0
        self.total = -1  # known once the last fragment (MF clear) arrived
        self.nh = -1  # upper protocol (IPv6: from the offset-0 fragment's header)


class _Reassembler:
    """IP fragment reassembly with caps; counts into the decoder's stats dict."""

    __slots__ = ("bytes", "max_bytes", "max_datagrams", "pending", "stats", "timeout_ns")

    def __init__(
        self, stats: dict[str, int], max_datagrams: int, max_bytes: int, timeout_ns: int
    ) -> None:
        self.pending: dict[tuple[bytes, bytes, int, int], _Pending] = {}
        self.bytes = 0
        self.stats = stats
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout_ns = timeout_ns

    def _drop(self, key: tuple[bytes, bytes, int, int], counter: str) -> None:
        entry = self.pending.pop(key)
        self.bytes -= entry.size
        self.stats[counter] += 1

    def add(
        self,
        key: tuple[bytes, bytes, int, int],
        ts: int,
        offset: int,
        data: bytes,
        more: bool,
        nh: int,
    ) -> tuple[int, bytes] | None:
        """Add a fragment; return ``(upper protocol, payload)`` once the datagram is whole."""
        stats = self.stats
        stats["ip_fragments"] += 1
        pending = self.pending
        # expire by packet time (insertion order is roughly time order)
        limit = ts - self.timeout_ns
        while pending:
            oldest = next(iter(pending))
            if pending[oldest].first_ts >= limit:
                break
            self._drop(oldest, "fragments_expired")
        end = offset + len(data)
        if end > _MAX_DATAGRAM:
            stats["malformed"] += 1
            return None
        entry = pending.get(key)
        if entry is None:
            while pending and (
                len(pending) >= self.max_datagrams or self.bytes + len(data) > self.max_bytes
            ):
                self._drop(next(iter(pending)), "fragment_buffer_dropped")
            entry = pending[key] = _Pending(ts)
        else:
            while self.bytes + len(data) > self.max_bytes and len(pending) > 1:
                victim = next(k for k in pending if k != key)
                self._drop(victim, "fragment_buffer_dropped")
            if len(entry.pieces) >= MAX_FRAG_PIECES or self.bytes + len(data) > self.max_bytes:
                self._drop(key, "fragment_buffer_dropped")
                return None
        entry.pieces.append((offset, data))
        entry.size += len(data)
        self.bytes += len(data)
        if offset == 0:
            entry.nh = nh  # IPv6: the upper protocol is known from the first fragment only
        if not more and entry.total < 0:
            entry.total = end
        total = entry.total
        if total < 0 or entry.size < total or entry.nh < 0:
            return None
        pieces = sorted(entry.pieces, key=lambda piece: piece[0])
        covered = 0
        for off, chunk in pieces:
            if off > covered:
                return None
            covered = max(covered, off + len(chunk))
            if covered >= total:
                break
        if covered < total:
            return None
        buf = bytearray(total)
        for off, chunk in pieces:
            if off < total:
                buf[off : off + len(chunk)] = chunk[: total - off]
        del pending[key]
        self.bytes -= entry.size
        stats["fragments_reassembled"] += 1
        return entry.nh, bytes(buf[:total])


class PacketDecoder:
    """Decode captured packets to `TcpSegment` tuples; ``stats`` counts what was not TCP.

    Counters: ``non_tcp``, ``malformed``, ``snapped`` (segment returned with part of its payload
    cut by the snaplen, or dropped because even its headers were cut), ``ip_fragments``,
    ``fragments_reassembled``, ``fragment_buffer_dropped`` (evicted by the caps),
    ``fragments_expired`` (timed out), ``unknown_linktype``.
    """

    __slots__ = ("_frags", "stats")

    def __init__(
        self,
        *,
        max_frag_datagrams: int = MAX_FRAG_DATAGRAMS,
        max_frag_bytes: int = MAX_FRAG_BYTES,
        frag_timeout_ns: int = FRAG_TIMEOUT_NS,
    ) -> None:
        self.stats: dict[str, int] = {
            "non_tcp": 0,
            "malformed": 0,
            "snapped": 0,
            "ip_fragments": 0,
            "fragments_reassembled": 0,
            "fragment_buffer_dropped": 0,
            "fragments_expired": 0,
            "unknown_linktype": 0,
        }
        self._frags = _Reassembler(
            self.stats, max_frag_datagrams, max(max_frag_bytes, _MAX_DATAGRAM), frag_timeout_ns
        )

    @property
    def fragments_pending(self) -> int:
        """Datagrams waiting for more fragments."""
        return len(self._frags.pending)

    @property
    def fragment_bytes_pending(self) -> int:
        return self._frags.bytes

    def decode(self, linktype: int, data: bytes, ts_ns: int) -> TcpSegment | None:
        """One captured packet -> its TCP segment, or None (counted in ``stats``)."""
        if _native_segment is not None:
            seg = _native_segment(linktype, data)
            if seg is not None:
                return seg
        if linktype == 1:
            end = len(data)
            if end < 34:
                return self._ether(data, ts_ns)
            if data[12] != 8 or data[13] != 0:
                return self._ether(data, ts_ns)
            # Ethernet + IPv4, inlined
            vihl, total, _ident, fragw, proto, src, dst = _IP4.unpack_from(data, 14)
            ihl = (vihl & 15) << 2
            if vihl >> 4 != 4 or ihl < 20 or total < ihl:
                self.stats["malformed"] += 1
                return None
            if fragw & 0x3FFF or proto != 6:
                return self._ipv4(data, 14, ts_ns)
            ip_end = 14 + total
            t = 14 + ihl
            if ip_end > end or t + 20 > ip_end:
                return self._tcp(data, t, ip_end, src, dst)
            sport, dport, seq, ack, offfl, window = _TCP.unpack_from(data, t)
            p = t + ((offfl >> 10) & 0x3C)
            if p < t + 20 or p > ip_end:
                self.stats["malformed"] += 1
                return None
            return (src, sport, dst, dport, seq, ack, offfl & 0xFF, window, data[p:ip_end])
        if linktype == LINKTYPE_LINUX_SLL2:
            if len(data) < 20:
                self.stats["malformed"] += 1
                return None
            return self._ethertype((data[0] << 8) | data[1], data, 20, ts_ns)
        if linktype == LINKTYPE_LINUX_SLL:
            if len(data) < 16:
                self.stats["malformed"] += 1
                return None
            return self._ethertype((data[14] << 8) | data[15], data, 16, ts_ns)
        if linktype == LINKTYPE_RAW or linktype in _RAW_ALIASES:
            if not data:
                self.stats["malformed"] += 1
                return None
            version = data[0] >> 4
            if version == 4:
                return self._ipv4(data, 0, ts_ns)
            if version == 6:
                return self._ipv6(data, 0, ts_ns)
            self.stats["malformed"] += 1
            return None
        if linktype == LINKTYPE_IPV4:
            return self._ipv4(data, 0, ts_ns)
        if linktype == LINKTYPE_IPV6:
            return self._ipv6(data, 0, ts_ns)
        if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            if len(data) < 4:
                self.stats["malformed"] += 1
                return None
            if linktype == LINKTYPE_LOOP:
                af = _U32BE.unpack_from(data)[0]
            else:  # host byte order of the capturing machine: take whichever reads small
                af = _U32LE.unpack_from(data)[0]
                if af > 0xFFFF:
                    af = _U32BE.unpack_from(data)[0]
            if af == 2:
                return self._ipv4(data, 4, ts_ns)
            if af in _AF_INET6_VALUES:
                return self._ipv6(data, 4, ts_ns)
            self.stats["non_tcp"] += 1
            return None
        self.stats["unknown_linktype"] += 1
        return None

    # -- slow paths -----------------------------------------------------------------------------

    def _ether(self, data: bytes, ts: int) -> TcpSegment | None:
        if len(data) < 14:
            self.stats["malformed"] += 1
            return None
        return self._ethertype((data[12] << 8) | data[13], data, 14, ts)

    def _ethertype(self, ethertype: int, data: bytes, off: int, ts: int) -> TcpSegment | None:
        while ethertype in _ETH_VLANS:
            if off + 4 > len(data):
                self.stats["malformed"] += 1
                return None
            ethertype = (data[off + 2] << 8) | data[off + 3]
            off += 4
        if ethertype == _ETH_IPV4:
            return self._ipv4(data, off, ts)
        if ethertype == _ETH_IPV6:
            return self._ipv6(data, off, ts)
        self.stats["non_tcp"] += 1
        return None

    def _tcp(self, data: bytes, t: int, ip_end: int, src: bytes, dst: bytes) -> TcpSegment | None:
        """TCP header at ``t``, IP datagram ending at ``ip_end`` (maybe past the captured end)."""
        end = len(data)
        if ip_end > end:
            self.stats["snapped"] += 1
            if t + 20 > end:
                return None
        if t + 20 > ip_end:
            self.stats["malformed"] += 1
            return None
        sport, dport, seq, ack, offfl, window = _TCP.unpack_from(data, t)
        p = t + ((offfl >> 10) & 0x3C)
        if p < t + 20 or p > ip_end:
            self.stats["malformed"] += 1
            return None
        return (src, sport, dst, dport, seq, ack, offfl & 0xFF, window, data[p:ip_end])

    def _ipv4(self, data: bytes, off: int, ts: int) -> TcpSegment | None:
        end = len(data)
        if off + 20 > end:
            self.stats["malformed"] += 1
            return None
        vihl, total, ident, fragw, proto, src, dst = _IP4.unpack_from(data, off)
        ihl = (vihl & 15) << 2
        if vihl >> 4 != 4 or ihl < 20 or total < ihl or off + ihl > end:
            self.stats["malformed"] += 1
            return None
        ip_end = off + total
        if fragw & 0x3FFF:
            if ip_end > end:  # a cut fragment cannot be reassembled
                self.stats["snapped"] += 1
                return None
            more = bool(fragw & 0x2000)
            got = self._frags.add(
                (src, dst, (ident << 8) | proto, 4),
                ts,
                (fragw & 0x1FFF) << 3,
                data[off + ihl : ip_end],
                more,
                proto,
            )
            if got is None:
                return None
            payload = got[1]
            if proto != 6:
                self.stats["non_tcp"] += 1
                return None
            return self._tcp(payload, 0, len(payload), src, dst)
        if proto != 6:
            self.stats["non_tcp"] += 1
            return None
        return self._tcp(data, off + ihl, ip_end, src, dst)

    def _ipv6(self, data: bytes, off: int, ts: int) -> TcpSegment | None:
        end = len(data)
        if off + 40 > end:
            self.stats["malformed"] += 1
            return None
        vbyte, plen, nh, src, dst = _IP6.unpack_from(data, off)
        if vbyte >> 4 != 6:
            self.stats["malformed"] += 1
            return None
        p = off + 40
        ip_end = p + plen if plen else end  # 0: a jumbogram; take what was captured
        return self._ip6_chain(data, p, ip_end, nh, src, dst, ts)

    def _ip6_chain(
        self, data: bytes, p: int, ip_end: int, nh: int, src: bytes, dst: bytes, ts: int
    ) -> TcpSegment | None:
        """Walk IPv6 extension headers from ``p`` (next header ``nh``) to TCP."""
        stop = min(ip_end, len(data))
        while True:
            if nh == 6:
                return self._tcp(data, p, ip_end, src, dst)
            if nh in _IP6_EXT_8 or nh == _IP6_AH:
                if p + 2 > stop:
                    return self._cut(ip_end, len(data))
                hlen = (data[p + 1] + 1) << 3 if nh != _IP6_AH else (data[p + 1] + 2) << 2
                nh = data[p]
                p += hlen
                continue
            if nh == _IP6_FRAG:
                if p + 8 > stop:
                    return self._cut(ip_end, len(data))
                next_nh = data[p]
                offw = (data[p + 2] << 8) | data[p + 3]
                frag_off = offw & 0xFFF8
                more = bool(offw & 1)
                if not frag_off and not more:  # an atomic fragment: no reassembly needed
                    nh = next_nh
                    p += 8
                    continue
                if ip_end > len(data):
                    self.stats["snapped"] += 1
                    return None
                ident = _U32BE.unpack_from(data, p + 4)[0]
                got = self._frags.add(
                    (src, dst, ident, 6),
                    ts,
                    frag_off,
                    data[p + 8 : ip_end],
                    more,
                    next_nh if not frag_off else -1,
                )
                if got is None:
                    return None
                nh, data = got
                p = 0
                ip_end = stop = len(data)
                continue
            self.stats["non_tcp"] += 1
            return None

    def _cut(self, ip_end: int, end: int) -> TcpSegment | None:
        """Headers run past the data: count it (snapped if the capture cut it); None."""
        self.stats["snapped" if ip_end > end else "malformed"] += 1
        return None
