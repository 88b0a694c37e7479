"""Build a synthetic capture of many short, complete HTTP/1.1 connections (the live-capture load).

    python -m bench.mkflows                    # 100 000 connections (1 M packets)
    python -m bench.mkflows --conns 500        # a small one
    python -m bench.mkflows --force            # rebuild

Prints the path of the capture and its manifest (JSON). Cached under ``bench/out/`` as
``flows-<N>c-s<SEED>-v<VERSION>.pcap`` with ``PATH.json`` beside it; ``--force`` rebuilds.

Every connection is the same ten packets, Ethernet/IPv4/TCP, written with ``struct``:

    client SYN (MSS, SACK-permitted, timestamps, window scale)      74 bytes
    server SYN-ACK (same options)                                   74
    client ACK                                                      66
    client GET /api/items/<i> HTTP/1.1 (Host, User-Agent, Accept)  ~190
    server ACK                                                      66
    server HTTP/1.1 200 OK, JSON body of 40–400 bytes              ~250–620
    client ACK                                                      66
    client FIN+ACK, server FIN+ACK, client ACK                   3 × 66

Connection ``i`` goes from client ``10.1.a.b`` (``a.b`` = ``i mod 65536``), port
``20000 + i // 65536``, to server ``10.2.0.s`` (``s`` = 1 + ``i mod 200``) port 80, so every
connection has its own 4-tuple. Every connection has its own random initial sequence numbers
(seeded RNG); the IPv4 and TCP checksums are valid. The Ethernet addresses are locally
administered and match no interface, so a host that receives the frames on a veth hands them to
packet sockets and nothing else. Connections are interleaved in groups of ``WINDOW``: step ``k``
of each connection in the group, then step ``k+1`` ... (about ``WINDOW`` connections open at
once); timestamps rise by ``GAP_US`` per packet (a nominal 100 k packets/s — tcpreplay replays
at a given rate anyway).
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"

#: Bump when what is written changes (invalidates the cache).
VERSION = 1
FULL_CONNS = 100_000
PACKETS_PER_CONN = 10
WINDOW = 64
GAP_US = 10
SERVERS = 200
SERVER_PORT = 80

CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")

_PCAP_HDR = struct.Struct("<IHHiIII")
_REC_HDR = struct.Struct("<IIII")
_ETH = struct.Struct("!6s6sH")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_PSEUDO = struct.Struct("!4s4sBBH")

SYN, ACK, FIN, PSH = 0x02, 0x10, 0x01, 0x08
# MSS 1460, SACK permitted, timestamps (filled per packet), NOP, window scale 7
_SYN_OPTS = struct.Struct("!BBHBBBBIIBBBB")
# NOP, NOP, timestamps
_ACK_OPTS = struct.Struct("!BBBBII")


def _csum(data: bytes) -> int:
    """The Internet checksum of ``data`` (one's complement sum of 16-bit words)."""
    if len(data) & 1:
        data += b"\0"
    # the one's complement sum does not depend on the byte order: sum native words, swap once
    s = sum(memoryview(data).cast("H"))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    s = ~s & 0xFFFF
    return ((s & 0xFF) << 8) | (s >> 8) if sys.byteorder == "little" else s


def frame(
    src_mac: bytes,
    dst_mac: bytes,
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    opts: bytes,
    payload: bytes,
    ident: int,
) -> bytes:
    """One Ethernet/IPv4/TCP frame with valid checksums."""
    thl = 20 + len(opts)
    tcp_wo = (
        _TCP.pack(
            sport, dport, seq, ack, (thl // 4) << 4, flags, 65535 if flags & SYN else 502, 0, 0
        )
        + opts
        + payload
    )
    tsum = _csum(_PSEUDO.pack(src, dst, 0, 6, len(tcp_wo)) + tcp_wo)
    tcp_seg = tcp_wo[:16] + struct.pack("!H", tsum) + tcp_wo[18:]
    total = 20 + len(tcp_seg)
    ip_wo = _IP4.pack(0x45, 0, total, ident & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
    ip_hdr = ip_wo[:10] + struct.pack("!H", _csum(ip_wo)) + ip_wo[12:]
    return _ETH.pack(dst_mac, src_mac, 0x0800) + ip_hdr + tcp_seg


def endpoints(i: int) -> tuple[bytes, int, bytes, int]:
    """(client ip, client port, server ip, server port) of connection ``i``."""
    j = i % 65536
    client = bytes((10, 1, j >> 8, j & 0xFF))
    server = bytes((10, 2, 0, 1 + i % SERVERS))
    return client, 20000 + i // 65536, server, SERVER_PORT


def connection(i: int, rng: random.Random) -> list[bytes]:
    """The ten frames of connection ``i``."""
    cip, cport, sip, sport = endpoints(i)
    cisn, sisn = rng.getrandbits(32), rng.getrandbits(32)
    ts0 = rng.getrandbits(31)
    host = f"svc-{i % SERVERS}.bench.example"
    req = (
        f"GET /api/items/{i}?fields=id,name,price HTTP/1.1\r\nHost: {host}\r\n"
        f"User-Agent: shark-bench/1.0\r\nAccept: application/json\r\n\r\n"
    ).encode()
    body = json.dumps(
        {
            "id": i,
            "name": f"item-{i}",
            "tags": ["x" * rng.randint(1, 30) for _ in range(rng.randint(1, 10))],
        },
        separators=(",", ":"),
    ).encode()
    resp = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: bench\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    U32 = 0xFFFFFFFF

    def syn_opts(tsval: int, tsecr: int) -> bytes:
        return _SYN_OPTS.pack(2, 4, 1460, 4, 2, 8, 10, tsval, tsecr, 1, 3, 3, 7)

    def ack_opts(tsval: int, tsecr: int) -> bytes:
        return _ACK_OPTS.pack(1, 1, 8, 10, tsval, tsecr)

    c, s = (cip, cport), (sip, sport)
    ident = [rng.getrandbits(16), rng.getrandbits(16)]

    def pkt(
        fr: tuple[bytes, int],
        to: tuple[bytes, int],
        seq: int,
        ack: int,
        flags: int,
        opts: bytes,
        payload: bytes = b"",
    ) -> bytes:
        side = fr is s
        ident[side] += 1
        return frame(
            SERVER_MAC if side else CLIENT_MAC,
            CLIENT_MAC if side else SERVER_MAC,
            fr[0],
            to[0],
            fr[1],
            to[1],
            seq & U32,
            ack & U32,
            flags,
            opts,
            payload,
            ident[side],
        )

    ct, st = ts0, ts0 + 1000
    cs, ss = cisn + 1, sisn + 1  # next sequence numbers after the handshake
    return [
        pkt(c, s, cisn, 0, SYN, syn_opts(ct, 0)),
        pkt(s, c, sisn, cs, SYN | ACK, syn_opts(st, ct)),
        pkt(c, s, cs, ss, ACK, ack_opts(ct + 1, st)),
        pkt(c, s, cs, ss, PSH | ACK, ack_opts(ct + 1, st), req),
        pkt(s, c, ss, cs + len(req), ACK, ack_opts(st + 1, ct + 1)),
        pkt(s, c, ss, cs + len(req), PSH | ACK, ack_opts(st + 2, ct + 1), resp),
        pkt(c, s, cs + len(req), ss + len(resp), ACK, ack_opts(ct + 2, st + 2)),
        pkt(c, s, cs + len(req), ss + len(resp), FIN | ACK, ack_opts(ct + 3, st + 2)),
        pkt(s, c, ss + len(resp), cs + len(req) + 1, FIN | ACK, ack_opts(st + 3, ct + 3)),
        pkt(c, s, cs + len(req) + 1, ss + len(resp) + 1, ACK, ack_opts(ct + 4, st + 3)),
    ]


def path_for(conns: int, seed: int = 1) -> Path:
    return OUT_DIR / f"flows-{conns}c-s{seed}-v{VERSION}.pcap"


def load_manifest(path: Path) -> dict[str, Any]:
    return json.loads(Path(str(path) + ".json").read_text())  # type: ignore[no-any-return]


def build(conns: int = FULL_CONNS, seed: int = 1, force: bool = False, log: Any = None) -> Path:
    """The capture of ``conns`` connections (cached). Returns its path; the manifest is beside
    it (``PATH.json``)."""
    out = path_for(conns, seed)
    man = Path(str(out) + ".json")
    if not force and out.exists() and man.exists():
        return out
    t0 = time.monotonic()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    tmp = out.with_suffix(".pcap.tmp")
    packets = nbytes = 0
    ts_us = 1_700_000_000 * 1_000_000
    with open(tmp, "wb") as f:
        f.write(_PCAP_HDR.pack(0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for first in range(0, conns, WINDOW):
            group = [connection(i, rng) for i in range(first, min(conns, first + WINDOW))]
            chunks = []
            for step in range(PACKETS_PER_CONN):
                for frames in group:
                    fr = frames[step]
                    chunks.append(
                        _REC_HDR.pack(ts_us // 1_000_000, ts_us % 1_000_000, len(fr), len(fr))
                    )
                    chunks.append(fr)
                    ts_us += GAP_US
                    packets += 1
                    nbytes += len(fr)
            f.write(b"".join(chunks))
    tmp.rename(out)
    manifest = {
        "file": str(out),
        "version": VERSION,
        "connections": conns,
        "packets": packets,
        "tcp_packets": packets,
        "packets_per_connection": PACKETS_PER_CONN,
        "frame_bytes": nbytes,
        "file_bytes": out.stat().st_size,
        "seed": seed,
        "build_s": round(time.monotonic() - t0, 2),
    }
    man.write_text(json.dumps(manifest, indent=1))
    if log:
        log(
            f"mkflows: wrote {out} ({conns} connections, {packets} packets) "
            f"in {manifest['build_s']} s"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="synthetic capture of complete HTTP/1.1 connections")
    ap.add_argument("--conns", type=int, default=FULL_CONNS, help="connections (default 100000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = ap.parse_args(argv)
    if args.conns < 1:
        print("mkflows: --conns must be at least 1", file=sys.stderr)
        return 2
    out = build(args.conns, args.seed, args.force, log=lambda s: print(s, file=sys.stderr))
    print(out)
    print(json.dumps(load_manifest(out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
