"""Build capture files and packets for tests, with `struct` only (byte-exact, no magic).

Frame builders return ``bytes`` (a frame as captured on a given link type):

- `tcp(src, dst, sport, dport, seq, ack, flags, payload, ...)`: a TCP header + payload, with
  its checksum over the pseudo-header of ``src``/``dst`` (text addresses, v4 or v6);
- `ipv4(src, dst, proto, payload, ...)`, `ipv6(src, dst, next_header, payload, ext=...)`;
- `ipv4_tcp(...)`, `ipv6_tcp(...)`: IP + TCP in one call (same argument order as `tcp`);
- `ipv4_fragments(packet, size)`, `ipv6_fragments(...)`: split a datagram into fragments;
- link layers: `ethernet(payload, ethertype, vlans=...)`, `sll(payload, ethertype)`,
  `sll2(payload, ethertype)`, `null_loopback(payload, af, big_endian=...)`;
- shortcuts: `eth_ipv4_tcp(...)`, `eth_ipv6_tcp(...)`.

File writers (``path`` may be a `pathlib.Path` or str; ``*_bytes`` variants return bytes):

- `write_pcap(path, linktype, packets, nanosecond=False, big_endian=False, snaplen=262144)`
  with ``packets`` a list of ``(ts_ns, frame)`` or ``(ts_ns, frame, orig_len)``;
- `write_pcapng(path, interfaces, packets, big_endian=False)` with ``interfaces`` a list of
  ``(linktype, name)`` or `Idb` (for snaplen/tsresol/tsoffset) and ``packets`` a list of
  ``(ts_ns, iface, frame)`` or ``(ts_ns, iface, frame, orig_len)``;
- low-level pcapng blocks to assemble odd files: `shb`, `idb`, `epb`, `spb`, `pb`, `block`.

The protocol constants below mirror the link types in `shark_tui.engine.packet`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8

FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16

NS = 1_000_000_000


# -- packets ------------------------------------------------------------------------------------


def _packed(addr: str | bytes) -> bytes:
    if isinstance(addr, bytes):
        return addr
    return ipaddress.ip_address(addr).packed


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp(
    src: str | bytes,
    dst: str | bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    *,
    window: int = 65535,
    options: bytes = b"",
) -> bytes:
    """A TCP header (+ options, padded to 4 bytes) and payload, with a correct checksum."""
    options += b"\x01" * (-len(options) % 4)  # NOP padding
    doff = (20 + len(options)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0)
    seg = hdr + options + payload
    s, d = _packed(src), _packed(dst)
    if len(s) == 4:
        pseudo = s + d + struct.pack("!BBH", 0, 6, len(seg))
    else:
        pseudo = s + d + struct.pack("!IxxxB", len(seg), 6)
    csum = checksum(pseudo + seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def ipv4(
    src: str | bytes,
    dst: str | bytes,
    proto: int,
    payload: bytes,
    *,
    ident: int = 1,
    ttl: int = 64,
    flags_frag: int = 0x4000,
    options: bytes = b"",
    total_length: int | None = None,
) -> bytes:
    """An IPv4 header (DF set by default) + payload. ``total_length`` overrides the field."""
    options += b"\0" * (-len(options) % 4)
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(payload) if total_length is None else total_length
    hdr = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            0,
            total,
            ident,
            flags_frag,
            ttl,
            proto,
            0,
            _packed(src),
            _packed(dst),
        )
        + options
    )
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def ipv4_tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    *,
    ident: int = 1,
    window: int = 65535,
) -> bytes:
    return ipv4(
        src,
        dst,
        6,
        tcp(src, dst, sport, dport, seq, ack, flags, payload, window=window),
        ident=ident,
    )


def ext_header(next_header: int, body: bytes = b"") -> bytes:
    """A generic IPv6 extension header (hop-by-hop, routing, destination options): 8n bytes.

    ``body`` is the header's content after its first two bytes, padded with PadN as needed.
    """
    raw = body + b"\0" * (-(len(body) + 2) % 8)
    return struct.pack("!BB", next_header, (len(raw) + 2) // 8 - 1) + raw


def ipv6(
    src: str | bytes,
    dst: str | bytes,
    next_header: int,
    payload: bytes,
    *,
    ext: Sequence[tuple[int, bytes]] = (),
    hop_limit: int = 64,
) -> bytes:
    """An IPv6 header, extension headers, payload.

    ``ext`` is a list of ``(type, body)`` extension headers in order (0 hop-by-hop, 43 routing,
    60 destination options); their next-header fields are chained automatically, the last one
    pointing at ``next_header``.
    """
    chain = b""
    types = [t for t, _ in ext] + [next_header]
    for i, (_t, body) in enumerate(ext):
        chain += ext_header(types[i + 1], body)
    first = types[0]
    body = chain + payload
    return (
        struct.pack("!IHBB16s16s", 6 << 28, len(body), first, hop_limit, _packed(src), _packed(dst))
        + body
    )


def ipv6_tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    *,
    ext: Sequence[tuple[int, bytes]] = (),
    window: int = 65535,
) -> bytes:
    return ipv6(
        src, dst, 6, tcp(src, dst, sport, dport, seq, ack, flags, payload, window=window), ext=ext
    )


def ipv4_fragments(packet: bytes, size: int) -> list[bytes]:
    """Split an IPv4 datagram (header without options) into fragments of ``size`` data bytes
    (rounded down to a multiple of 8), in order."""
    ihl = (packet[0] & 15) * 4
    hdr, data = packet[:ihl], packet[ihl:]
    size -= size % 8
    out = []
    for off in range(0, len(data), size):
        chunk = data[off : off + size]
        more = off + size < len(data)
        h = bytearray(hdr)
        struct.pack_into("!H", h, 2, ihl + len(chunk))
        struct.pack_into("!H", h, 6, (0x2000 if more else 0) | (off // 8))
        struct.pack_into("!H", h, 10, 0)
        struct.pack_into("!H", h, 10, checksum(bytes(h)))
        out.append(bytes(h) + chunk)
    return out


def ipv6_fragments(
    src: str,
    dst: str,
    next_header: int,
    upper: bytes,
    size: int,
    *,
    ident: int = 0x1234,
    ext_before: Sequence[tuple[int, bytes]] = (),
) -> list[bytes]:
    """Fragment ``upper`` (the fragmentable part: e.g. a TCP segment, or destination options +
    TCP with ``next_header`` naming its first header) into IPv6 fragments of ``size`` bytes
    (rounded down to a multiple of 8), with ``ext_before`` unfragmentable extension headers
    (e.g. hop-by-hop) before the fragment header."""
    size -= size % 8
    out = []
    for off in range(0, len(upper), size):
        chunk = upper[off : off + size]
        more = off + size < len(upper)
        frag = struct.pack("!BBHI", next_header, 0, off | int(more), ident)
        out.append(ipv6(src, dst, 44, frag + chunk, ext=ext_before))
    return out


def ethernet(
    payload: bytes,
    ethertype: int = ETH_IPV4,
    *,
    src_mac: bytes = b"\x02\x00\x00\x00\x00\x01",
    dst_mac: bytes = b"\x02\x00\x00\x00\x00\x02",
    vlans: Sequence[tuple[int, int]] = (),
    pad_to: int = 0,
) -> bytes:
    """An Ethernet II frame. ``vlans``: ``(tpid, vlan id)`` tags outermost first, e.g.
    ``[(0x88a8, 100), (0x8100, 200)]``. ``pad_to``: pad with zeros to that frame length (60 is
    the Ethernet minimum without FCS)."""
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in vlans)
    frame = dst_mac + src_mac + tags + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, pad_to - len(frame))


def sll(payload: bytes, ethertype: int = ETH_IPV4, *, pkttype: int = 0) -> bytes:
    """A Linux cooked (v1, link type 113) header + payload."""
    return struct.pack("!HHH8sH", pkttype, 1, 6, b"\x02\0\0\0\0\x01\0\0", ethertype) + payload


def sll2(payload: bytes, ethertype: int = ETH_IPV4, *, ifindex: int = 1, pkttype: int = 0) -> bytes:
    """A Linux cooked v2 (link type 276) header + payload."""
    return (
        struct.pack("!HHIHBB8s", ethertype, 0, ifindex, 1, pkttype, 6, b"\x02\0\0\0\0\x01\0\0")
        + payload
    )


def null_loopback(payload: bytes, af: int = 2, *, big_endian: bool = False) -> bytes:
    """A BSD loopback (NULL, link type 0; LOOP 108 is the big-endian one) header + payload."""
    return struct.pack(">I" if big_endian else "<I", af) + payload


def eth_ipv4_tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    **kw: int,
) -> bytes:
    """Ethernet + IPv4 + TCP, padded to the 60-byte Ethernet minimum like a real NIC."""
    return ethernet(ipv4_tcp(src, dst, sport, dport, seq, ack, flags, payload, **kw), pad_to=60)


def eth_ipv6_tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    *,
    ext: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    return ethernet(
        ipv6_tcp(src, dst, sport, dport, seq, ack, flags, payload, ext=ext), ETH_IPV6, pad_to=60
    )


# -- classic pcap -------------------------------------------------------------------------------


def pcap_bytes(
    linktype: int,
    packets: Sequence[tuple[int, bytes] | tuple[int, bytes, int]],
    *,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> bytes:
    """A classic pcap file in memory. ``packets``: ``(ts_ns, frame[, orig_len])``."""
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for p in packets:
        ts, frame = p[0], p[1]
        orig = p[2] if len(p) > 2 else len(frame)  # type: ignore[misc]
        sec, rem = divmod(ts, NS)
        frac = rem if nanosecond else rem // 1000
        out.append(struct.pack(e + "IIII", sec, frac, len(frame), orig))
        out.append(frame)
    return b"".join(out)


def write_pcap(
    path: str | Path,
    linktype: int,
    packets: Sequence[tuple[int, bytes] | tuple[int, bytes, int]],
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> Path:
    path = Path(path)
    path.write_bytes(
        pcap_bytes(linktype, packets, nanosecond=nanosecond, big_endian=big_endian, snaplen=snaplen)
    )
    return path


# -- pcapng -------------------------------------------------------------------------------------


@dataclass
class Idb:
    """An interface for `write_pcapng`. ``tsresol`` is the raw if_tsresol byte (6 = µs,
    9 = ns, 0x80 | n = 2^-n); ``tsoffset`` the if_tsoffset in seconds."""

    linktype: int
    name: str | None = None
    snaplen: int = 0
    tsresol: int | None = 9
    tsoffset: int | None = None


def block(btype: int, body: bytes, *, big_endian: bool = False) -> bytes:
    """A pcapng block: type, total length, body padded to 4, total length."""
    e = ">" if big_endian else "<"
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def options(opts: Sequence[tuple[int, bytes]], *, big_endian: bool = False) -> bytes:
    """Encoded pcapng options, with opt_endofopt, or b"" when there are none."""
    if not opts:
        return b""
    e = ">" if big_endian else "<"
    out = b""
    for code, value in opts:
        out += struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
    return out + struct.pack(e + "HH", 0, 0)


def shb(*, big_endian: bool = False, opts: Sequence[tuple[int, bytes]] = ()) -> bytes:
    e = ">" if big_endian else "<"
    body = struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options(opts, big_endian=big_endian)
    return block(0x0A0D0D0A, body, big_endian=big_endian)


def idb(interface: Idb | tuple[int, str | None], *, big_endian: bool = False) -> bytes:
    e = ">" if big_endian else "<"
    i = interface if isinstance(interface, Idb) else Idb(interface[0], interface[1])
    opts: list[tuple[int, bytes]] = []
    if i.name is not None:
        opts.append((2, i.name.encode()))
    if i.tsresol is not None:
        opts.append((9, bytes([i.tsresol])))
    if i.tsoffset is not None:
        opts.append((14, struct.pack(e + "q", i.tsoffset)))
    body = struct.pack(e + "HHI", i.linktype, 0, i.snaplen) + options(opts, big_endian=big_endian)
    return block(1, body, big_endian=big_endian)


def epb(
    iface: int,
    ts_units: int,
    frame: bytes,
    orig_len: int | None = None,
    *,
    big_endian: bool = False,
    opts: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """An Enhanced Packet Block; ``ts_units`` in the interface's resolution."""
    e = ">" if big_endian else "<"
    body = (
        struct.pack(
            e + "IIIII",
            iface,
            ts_units >> 32,
            ts_units & 0xFFFFFFFF,
            len(frame),
            len(frame) if orig_len is None else orig_len,
        )
        + frame
        + b"\0" * (-len(frame) % 4)
        + options(opts, big_endian=big_endian)
    )
    return block(6, body, big_endian=big_endian)


def spb(frame: bytes, orig_len: int | None = None, *, big_endian: bool = False) -> bytes:
    e = ">" if big_endian else "<"
    body = struct.pack(e + "I", len(frame) if orig_len is None else orig_len) + frame
    return block(3, body, big_endian=big_endian)


def pb(
    iface: int,
    ts_units: int,
    frame: bytes,
    orig_len: int | None = None,
    *,
    big_endian: bool = False,
) -> bytes:
    """The obsolete Packet Block (type 2)."""
    e = ">" if big_endian else "<"
    body = (
        struct.pack(
            e + "HHIIII",
            iface,
            0,
            ts_units >> 32,
            ts_units & 0xFFFFFFFF,
            len(frame),
            len(frame) if orig_len is None else orig_len,
        )
        + frame
    )
    return block(2, body, big_endian=big_endian)


def _units(ts_ns: int, tsresol: int | None) -> int:
    r = 6 if tsresol is None else tsresol
    if r & 0x80:
        return (ts_ns << (r & 0x7F)) // NS
    return ts_ns * 10**r // NS


def pcapng_bytes(
    interfaces: Sequence[Idb | tuple[int, str | None]],
    packets: Sequence[tuple[int, int, bytes] | tuple[int, int, bytes, int]],
    *,
    big_endian: bool = False,
) -> bytes:
    """A one-section pcapng file in memory. ``packets``: ``(ts_ns, iface, frame[, orig_len])``;
    interfaces default to nanosecond resolution."""
    ifs = [i if isinstance(i, Idb) else Idb(i[0], i[1]) for i in interfaces]
    out = [shb(big_endian=big_endian)] + [idb(i, big_endian=big_endian) for i in ifs]
    for p in packets:
        ts, iface, frame = p[0], p[1], p[2]
        orig = p[3] if len(p) > 3 else None  # type: ignore[misc]
        i = ifs[iface]
        units = _units(ts - (i.tsoffset or 0) * NS, i.tsresol)
        out.append(epb(iface, units, frame, orig, big_endian=big_endian))
    return b"".join(out)


def write_pcapng(
    path: str | Path,
    interfaces: Sequence[Idb | tuple[int, str | None]],
    packets: Sequence[tuple[int, int, bytes] | tuple[int, int, bytes, int]],
    big_endian: bool = False,
) -> Path:
    path = Path(path)
    path.write_bytes(pcapng_bytes(interfaces, packets, big_endian=big_endian))
    return path


def inet_pton(addr: str) -> bytes:
    """Text address -> packed bytes (what `TcpSegment` carries)."""
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
