"""TLS plaintext (chunks from the eBPF probes) as synthetic TCP packets on the ``tls`` interface.

Each connection gets the real 5-tuple, a fabricated three-way handshake before its first
plaintext, sequence and acknowledgement numbers per direction, and FINs when the kernel says the
socket closed — so the store, the index, the dissectors, the export and Wireshark treat it as an
ordinary TCP connection carrying cleartext.

Which end is the client: the end whose local port was listening is the server (the caller says
so, from ``/proc``), else the end that wrote first. Both ends of one connection may be traced
(curl and nginx on one host): the connection is taken from the first end that reported it and
the other end's chunks are counted and dropped, so each exchange is stored once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Chunk", "Synthesizer"]

MAX_PAYLOAD: Final = 32768
#: A closed connection's 4-tuple is a new connection only after this (TIME_WAIT keeps a
#: client port far longer); chunks before it are the other end's late reads.
REUSE_AFTER_NS: Final = 2_000_000_000
_ETH4: Final = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
_ETH6: Final = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x86\xdd"
_IP4: Final = struct.Struct("!BBHHHBBH4s4s")
_IP6: Final = struct.Struct("!IHBB16s16s")
_TCP: Final = struct.Struct("!HHIIBBHHH")
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10
_MASK: Final = 0xFFFFFFFF

Endpoint = tuple[bytes, int]


@dataclass(slots=True)
class Chunk:
    """Plaintext one process moved through one TLS call (or, ``closed``, the socket closing).
    ``laddr``/``lport`` are this process's end; ``outgoing`` says it wrote the bytes."""

    ts_ns: int
    pid: int
    comm: str
    fd: int
    laddr: bytes
    lport: int
    raddr: bytes
    rport: int
    outgoing: bool
    data: bytes = b""
    closed: bool = False
    listening: bool | None = None  # the local port is a listening one: this end is the server
    gap_after: int = 0  # bytes of the same call that were not copied: a hole after ``data``
    library: str = "openssl"


@dataclass(slots=True)
class _Conn:
    client: Endpoint
    server: Endpoint
    owner: Endpoint  # the local end of the process the plaintext is taken from
    pid: int
    next_seq: list[int] = field(default_factory=lambda: [1, 1])  # client->server, server->client
    ip_id: int = 0
    closed: bool = False
    closed_ns: int = 0


class Synthesizer:
    """Chunks in, ``(ts_ns, ethernet frame)`` packets out. ``stats`` counts what was made and
    what was dropped (``other_end``: the same bytes seen from the connection's other end)."""

    def __init__(self) -> None:
        self._conns: dict[tuple[Endpoint, Endpoint], _Conn] = {}
        self.stats = {"chunks": 0, "bytes": 0, "packets": 0, "connections": 0, "other_end": 0,
                      "closed": 0, "no_socket": 0, "gap_bytes": 0, "after_close": 0}  # fmt: skip

    @staticmethod
    def _key(a: Endpoint, b: Endpoint) -> tuple[Endpoint, Endpoint]:
        return (a, b) if a <= b else (b, a)

    def feed(self, ch: Chunk) -> list[tuple[int, bytes]]:
        local: Endpoint = (ch.laddr, ch.lport)
        remote: Endpoint = (ch.raddr, ch.rport)
        if not ch.lport or not ch.rport or len(ch.laddr) not in (4, 16):
            self.stats["no_socket"] += 1
            return []
        key = self._key(local, remote)
        conn = self._conns.get(key)
        out: list[tuple[int, bytes]] = []
        if ch.closed:
            if conn is not None and not conn.closed and conn.owner == local:
                out = self._close(conn, ch.ts_ns)
            return out
        if conn is not None and conn.closed:
            if ch.ts_ns - conn.closed_ns < REUSE_AFTER_NS:
                # a late read at the end that was not followed (its close came first)
                self.stats["after_close"] += 1
                return []
            del self._conns[key]  # the 4-tuple is used again
            conn = None
        if conn is None:
            server = ch.listening if ch.listening is not None else not ch.outgoing
            client, srv = (remote, local) if server else (local, remote)
            conn = _Conn(client, srv, local, ch.pid)
            self._conns[key] = conn
            self.stats["connections"] += 1
            out = self._handshake(conn, ch.ts_ns - 3000)
        elif conn.owner != local:
            self.stats["other_end"] += 1
            return []
        self.stats["chunks"] += 1
        self.stats["bytes"] += len(ch.data)
        side = 0 if (local == conn.client) == ch.outgoing else 1  # 0: client -> server
        data = ch.data
        for i in range(0, len(data), MAX_PAYLOAD):
            out.append((ch.ts_ns, self._packet(conn, side, PSH | ACK, data[i : i + MAX_PAYLOAD])))
        if ch.gap_after:  # the sequence skips what was lost: the dissector sees a gap, not a splice
            conn.next_seq[side] = (conn.next_seq[side] + ch.gap_after) & _MASK
            self.stats["gap_bytes"] += ch.gap_after
        return out

    def forget_closed(self) -> None:
        """Drop state of connections that ended (call now and then)."""
        for key in [k for k, c in self._conns.items() if c.closed]:
            del self._conns[key]

    # -- packets --------------------------------------------------------------------------------

    def _handshake(self, conn: _Conn, ts: int) -> list[tuple[int, bytes]]:
        conn.next_seq = [0, 0]
        syn = self._packet(conn, 0, SYN, b"", advance=1, ack=False)
        synack = self._packet(conn, 1, SYN | ACK, b"", advance=1)
        ack = self._packet(conn, 0, ACK, b"")
        return [(ts, syn), (ts + 1000, synack), (ts + 2000, ack)]

    def _close(self, conn: _Conn, ts: int) -> list[tuple[int, bytes]]:
        conn.closed = True
        conn.closed_ns = ts
        self.stats["closed"] += 1
        fin1 = self._packet(conn, 0, FIN | ACK, b"", advance=1)
        fin2 = self._packet(conn, 1, FIN | ACK, b"", advance=1)
        last = self._packet(conn, 0, ACK, b"")
        return [(ts, fin1), (ts + 1000, fin2), (ts + 2000, last)]

    def _packet(
        self,
        conn: _Conn,
        side: int,
        flags: int,
        payload: bytes,
        advance: int = 0,
        ack: bool = True,
    ) -> bytes:
        src, dst = (conn.client, conn.server) if side == 0 else (conn.server, conn.client)
        seq = conn.next_seq[side]
        ackno = conn.next_seq[1 - side] if ack else 0
        conn.next_seq[side] = (seq + len(payload) + advance) & _MASK
        tcp = _TCP.pack(src[1], dst[1], seq, ackno, 5 << 4, flags, 65535, 0, 0)
        conn.ip_id = (conn.ip_id + 1) & 0xFFFF
        self.stats["packets"] += 1
        if len(src[0]) == 4:
            total = 20 + len(tcp) + len(payload)
            ip = _IP4.pack(0x45, 0, total, conn.ip_id, 0x4000, 64, 6, 0, src[0], dst[0])
            ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
            return _ETH4 + ip + tcp + payload
        ip6 = _IP6.pack(6 << 28, len(tcp) + len(payload), 6, 64, src[0], dst[0])
        return _ETH6 + ip6 + tcp + payload


def _checksum(header: bytes) -> int:
    s: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
