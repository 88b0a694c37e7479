"""Build the benchmark capture: record a real seed, then replicate it to ≥ 1 M packets.

    python -m bench.mkcapture              # full size: ≥ 1.1 M packets, ≥ 10 k connections
    python -m bench.mkcapture --small      # ~20 k packets (CI)
    python -m bench.mkcapture --packets 3000000 --min-conns 50000

Prints the path of the capture and its manifest (JSON). Results are cached under
``bench/out/`` keyed by the parameters; ``--force`` rebuilds.

1. Seed: ``bench.workload`` records real nginx/aiohttp traffic on the loopback of a private
   network namespace (``unshare -n``; root), with the servers' own record of every exchange as
   the truth (``truth.json``).
2. Replicate: the seed is split into TCP connections; every connection is written ``N`` times
   (copy ``j`` = 1..N), each copy with its own addresses (client ``127.1.a.b``, nginx
   ``127.2.a.b``, backend ``127.3.a.b`` from ``j``), its own client port (a bijection per copy),
   its own initial sequence numbers, and the placeholder ``q000000`` in every URI (and wherever
   else it occurs in the byte stream, across segment boundaries too) rewritten to ``q`` + the
   6-digit ``j`` — same length, so lengths and chunk sizes stay right. Each connection copy
   starts at a random time in a window sized for the wanted concurrency, keeping its own
   packet spacing, and all copies are merged in time order (a heap over the active ones), so
   copies interleave with realistic overlap. IP and TCP checksums are recomputed (valid).
   Output: classic pcap, Ethernet, microseconds, written streaming with ``struct``.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import os
import random
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"

#: Bump when the workload or the replicator changes what they write (invalidates the cache).
WORKLOAD_VERSION = 2
REPLICATOR_VERSION = 1

PLACEHOLDER = b"q000000"

FULL = {"packets": 1_100_000, "min_conns": 10_000, "seed_conns": 700}
SMALL = {"packets": 20_000, "min_conns": 200, "seed_conns": 60}

_PCAP_HDR = struct.Struct("<IHHiIII")
_REC_HDR = struct.Struct("<IIII")
_U32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# the seed


def seed_dir(conns: int, seed: int) -> Path:
    return OUT_DIR / f"seed-v{WORKLOAD_VERSION}-c{conns}-s{seed}"


def ensure_seed(conns: int, seed: int = 1, force: bool = False) -> Path:
    """Record the seed (cached). Needs root for ``unshare -n``."""
    d = seed_dir(conns, seed)
    if not force and (d / "truth.json").exists() and (d / "seed.pcap").exists():
        return d
    if os.geteuid() != 0:
        raise SystemExit("mkcapture: recording the seed needs root (unshare -n for a private "
                         "loopback with MTU 1500 and ports 80/8080)")
    d.mkdir(parents=True, exist_ok=True)
    cmd = ["unshare", "-n", sys.executable, "-m", "bench.workload", str(d),
           "--conns", str(conns), "--seed", str(seed)]
    problem = ""
    for _attempt in range(4):
        for name in ("truth.json", "seed.pcap", "meta.json"):
            (d / name).unlink(missing_ok=True)
        proc = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not (d / "truth.json").exists():
            problem = f"recording the seed failed: {cmd}\n{proc.stdout}\n{proc.stderr}"
            continue
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("tcpdump", {}).get("dropped", 1) == 0:
            return d
        problem = f"tcpdump dropped packets while recording the seed: {meta}"
    for name in ("truth.json", "seed.pcap", "meta.json"):
        (d / name).unlink(missing_ok=True)
    raise RuntimeError(problem)


# ---------------------------------------------------------------------------------------------
# reading the seed and splitting it into connections


def read_pcap(path: Path) -> Iterator[tuple[int, bytes]]:
    """(timestamp in µs, frame) of each record of a classic pcap (µs or ns, either byte order)."""
    with open(path, "rb") as f:
        hdr = f.read(24)
        magic = hdr[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            endian = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            endian = ">"
        else:
            raise ValueError(f"{path}: not a classic pcap file")
        nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        linktype = struct.unpack(endian + "I", hdr[20:24])[0]
        if linktype != 1:
            raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
        rec = struct.Struct(endian + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, caplen, _ = rec.unpack(h)
            data = f.read(caplen)
            yield sec * 1_000_000 + (frac // 1000 if nano else frac), data


@dataclass
class Packet:
    rel_us: int
    to_server: bool
    eth: bytes
    ip: bytearray  # IPv4 header, addresses and checksum zeroed
    tcp: bytearray  # TCP header with options, ports/seq/ack/checksum rewritten per copy
    payload: bytes
    seq: int
    ack: int
    has_ack: bool
    patches: list[tuple[int, int]] = field(default_factory=list)  # (payload offset, digit)
    payload_sum: int = 0


@dataclass
class Conn:
    client_port: int
    server_port: int
    packets: list[Packet]
    start_us: int

    @property
    def key(self) -> str:
        return f"{self.server_port}:{self.client_port}"

    @property
    def duration_us(self) -> int:
        return self.packets[-1].rel_us if self.packets else 0


def split_connections(path: Path, server_ports: set[int]) -> tuple[list[Conn], int]:
    """TCP connections of the seed, in order of their first packet; and the first timestamp."""
    conns: list[Conn] = []
    open_by_key: dict[tuple[int, int], Conn] = {}
    first_ts = None
    raw: dict[int, list[tuple[int, bytes]]] = {}
    for ts, frame in read_pcap(path):
        if first_ts is None:
            first_ts = ts
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ihl = (frame[14] & 0x0F) * 4
        t = 14 + ihl
        sport, dport = struct.unpack_from("!HH", frame, t)
        flags = frame[t + 13]
        if dport in server_ports:
            cport, srv, to_server = sport, dport, True
        elif sport in server_ports:
            cport, srv, to_server = dport, sport, False
        else:
            continue
        k = (cport, srv)
        conn = open_by_key.get(k)
        # a SYN from the client after other packets: the port was reused for a new connection
        if conn is None or (flags & 0x12 == 0x02 and to_server and
                            any(f[t + 13] & 0x12 != 0x02 for _, f in raw[id(conn)])):
            conn = Conn(cport, srv, [], ts)
            open_by_key[k] = conn
            conns.append(conn)
            raw[id(conn)] = []
        raw[id(conn)].append((ts, frame))
    for conn in conns:
        conn.packets = _templates(conn, raw.pop(id(conn)))
    return conns, first_ts or 0


def _templates(conn: Conn, frames: list[tuple[int, bytes]]) -> list[Packet]:
    pkts: list[Packet] = []
    isn: dict[bool, int] = {}
    for ts, frame in frames:
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        t = 14 + ihl
        doff = (frame[t + 12] >> 4) * 4
        end = 14 + total
        ip = bytearray(frame[14:t])
        ip[10:12] = b"\0\0"
        ip[12:20] = bytes(8)
        tcp = bytearray(frame[t:t + doff])
        tcp[16:18] = b"\0\0"
        seq, ack = struct.unpack_from("!II", frame, t + 4)
        flags = frame[t + 13]
        to_server = struct.unpack_from("!H", frame, t + 2)[0] == conn.server_port
        if flags & 0x02:
            isn[to_server] = seq
        elif to_server not in isn:
            isn[to_server] = (seq - 1) & _U32
        pkts.append(Packet(ts - conn.start_us, to_server, frame[:14], ip, tcp,
                           frame[t + doff:end], seq, ack, bool(flags & 0x10)))
    # find the placeholder in each direction's byte stream, across segment boundaries
    for direction in (True, False):
        segs = [(((p.seq - isn[direction] - 1) & _U32), p) for p in pkts
                if p.to_server == direction and p.payload]
        if not segs:
            continue
        size = max(off + len(p.payload) for off, p in segs)
        stream = bytearray(size)
        for off, p in segs:
            stream[off:off + len(p.payload)] = p.payload
        digits: dict[int, int] = {}
        pos = stream.find(PLACEHOLDER)
        while pos >= 0:
            for d in range(6):
                digits[pos + 1 + d] = d
            pos = stream.find(PLACEHOLDER, pos + 1)
        if not digits:
            continue
        for off, p in segs:
            p.patches = [(i - off, digits[i]) for i in range(off, off + len(p.payload))
                         if i in digits]
    for p in pkts:
        p.payload_sum = _sum16(p.payload)
    return pkts


def _sum16(data: bytes) -> int:
    """The one's complement sum of ``data`` as 16-bit words, modulo 65535 (65536 ≡ 1)."""
    if len(data) & 1:
        data = data + b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


# ---------------------------------------------------------------------------------------------
# replication


def _copy_addrs(j: int) -> tuple[bytes, bytes, bytes]:
    a, b = divmod(j, 250)
    if a > 255:
        raise ValueError("at most 64000 copies")
    return bytes((127, 1, a, b + 1)), bytes((127, 2, a, b + 1)), bytes((127, 3, a, b + 1))


def replicate(conns: list[Conn], copies: int, out: Path, base_us: int, rng_seed: int,
              nginx_port: int, concurrency: int, max_rate: float) -> dict[str, Any]:
    """Write ``copies`` copies of every connection, merged in time order, to ``out``."""
    rng = random.Random(rng_seed)
    npk = sum(len(c.packets) for c in conns) * copies
    busy_us = sum(c.duration_us for c in conns) * copies
    window_us = int(max(busy_us / concurrency, npk / max_rate * 1e6))
    starts = sorted((rng.randrange(window_us), ci, j) for j in range(1, copies + 1)
                    for ci in range(len(conns)))
    heap: list[tuple[int, int, int, int, tuple[Any, ...]]] = []
    pack_rec = _REC_HDR.pack
    pack_ports = struct.Struct("!HHII").pack_into
    pack_h = struct.Struct("!H").pack_into
    written = 0
    nbytes = 24
    buf: list[bytes] = []
    buffered = 0
    si = 0
    uid = 0
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_PCAP_HDR.pack(0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        while si < len(starts) or heap:
            if si < len(starts) and (not heap or starts[si][0] <= heap[0][0]):
                st, ci, j = starts[si]
                si += 1
                cli, ngx, bk = _copy_addrs(j)
                conn = conns[ci]
                srv = ngx if conn.server_port == nginx_port else bk
                cip = ngx if (srv is bk and rng.random() < 0.5) else cli
                cport = 1024 + (conn.client_port - 1024 + j * 7919) % 64000
                state = (conn.packets, cip, srv, cport, conn.server_port, rng.getrandbits(32),
                         rng.getrandbits(32), b"%06d" % j, st)
                uid += 1
                heapq.heappush(heap, (st + conn.packets[0].rel_us, uid, 0, ci, state))
                continue
            ts, _, idx, ci, state = heap[0]
            pkts, cip, sip, cport, sport, d_c, d_s, digits, st = state
            p = pkts[idx]
            if p.to_server:
                src, dst, sp, dp, seq = cip, sip, cport, sport, (p.seq + d_c) & _U32
                ack = (p.ack + d_s) & _U32 if p.has_ack else p.ack
            else:
                src, dst, sp, dp, seq = sip, cip, sport, cport, (p.seq + d_s) & _U32
                ack = (p.ack + d_c) & _U32 if p.has_ack else p.ack
            ip = bytearray(p.ip)
            ip[12:16] = src
            ip[16:20] = dst
            s = int.from_bytes(ip, "big") % 0xFFFF
            pack_h(ip, 10, 0xFFFF - s if s else 0)
            tcp = bytearray(p.tcp)
            pack_ports(tcp, 0, sp, dp, seq, ack)
            payload = p.payload
            psum = p.payload_sum
            if p.patches:
                pl = bytearray(payload)
                for off, d in p.patches:
                    pl[off] = digits[d]
                payload = bytes(pl)
                psum = _sum16(payload)
            tlen = len(tcp) + len(payload)
            s = (int.from_bytes(src + dst + b"\0\x06" + tlen.to_bytes(2, "big") + tcp, "big")
                 + psum) % 0xFFFF
            pack_h(tcp, 16, 0xFFFF - s if s else 0)
            ts_abs = base_us + ts
            n = 14 + len(ip) + tlen
            buf.append(pack_rec(ts_abs // 1_000_000, ts_abs % 1_000_000, n, n))
            buf.append(p.eth)
            buf.append(ip)
            buf.append(tcp)
            buf.append(payload)
            buffered += n + 16
            written += 1
            if idx + 1 < len(pkts):
                uid += 1
                heapq.heapreplace(heap, (st + pkts[idx + 1].rel_us, uid, idx + 1, ci, state))
            else:
                heapq.heappop(heap)
            if buffered > 4 << 20:
                f.write(b"".join(buf))
                nbytes += buffered
                buf.clear()
                buffered = 0
        f.write(b"".join(buf))
        nbytes += buffered
    os.replace(tmp, out)
    return {"packets": written, "connections": len(starts), "bytes": nbytes,
            "window_s": round(window_us / 1e6, 3)}


# ---------------------------------------------------------------------------------------------
# the truth of a replicated capture


def load_manifest(pcap: Path) -> dict[str, Any]:
    return json.loads(Path(str(pcap) + ".json").read_text())  # type: ignore[no-any-return]


def expected_exchanges(manifest: dict[str, Any]) -> Counter[tuple[str, str, int | None]]:
    """(method, uri, status) of every exchange in the capture, from the servers' records."""
    truth = json.loads((Path(manifest["seed_dir"]) / "truth.json").read_text())
    tag = PLACEHOLDER.decode()
    out: Counter[tuple[str, str, int | None]] = Counter()
    recs = Counter((m, u, s) for _, _, m, u, s in truth["records"])
    for j in range(1, manifest["copies"] + 1):
        new = f"q{j:06d}"
        for (m, u, s), n in recs.items():
            out[(m, u.replace(tag, new), s)] += n
    return out


def seed_uri_flags(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Seed URI (with the placeholder) -> flags of the seed connections that carried it:
    ``kind`` (``keepalive``, ``pipeline``, ``oneshot``) and ``pipeline_with_head`` (a pipelined
    connection with a HEAD among its requests, wherever it stands)."""
    truth = json.loads((Path(manifest["seed_dir"]) / "truth.json").read_text())
    heads = {f"{sp}:{cp}" for sp, cp, m, _, _ in truth["records"] if m == "HEAD"}
    flags: dict[str, dict[str, Any]] = {}
    for key, fl in truth["flags"].items():
        flags[key] = {**fl, "pipeline_with_head": fl.get("kind") == "pipeline" and key in heads}
    out: dict[str, list[dict[str, Any]]] = {}
    for sport, cport, _, uri, _ in truth["records"]:
        out.setdefault(uri, []).append(
            flags.get(f"{sport}:{cport}", {"kind": "keepalive", "pipeline_with_head": False}))
    return out


# ---------------------------------------------------------------------------------------------
# the cached build


def build(packets: int, min_conns: int, seed_conns: int, seed: int = 1,
          concurrency: int = 400, max_rate: float = 100_000.0, force: bool = False,
          log: Any = None) -> Path:
    """The replicated capture for these parameters (cached). Returns its path; the manifest
    is beside it (``PATH.json``)."""
    key = hashlib.sha1(json.dumps([WORKLOAD_VERSION, REPLICATOR_VERSION, packets, min_conns,
                                   seed_conns, seed, concurrency, max_rate]).encode())
    out = OUT_DIR / f"capture-{packets}p-{min_conns}c-{key.hexdigest()[:10]}.pcap"
    man = Path(str(out) + ".json")
    if not force and out.exists() and man.exists():
        return out
    t0 = time.monotonic()
    sd = ensure_seed(seed_conns, seed, force=force)
    truth = json.loads((sd / "truth.json").read_text())
    t1 = time.monotonic()
    conns, base_us = split_connections(sd / "seed.pcap",
                                       {truth["nginx_port"], truth["backend_port"]})
    keys = Counter(c.key for c in conns)
    dup = [k for k, n in keys.items() if n > 1]
    if dup:
        raise RuntimeError(f"client port reused within the seed (truth would be ambiguous): {dup}")
    missing = {f"{s}:{c}" for s, c, *_ in truth["records"]} - set(keys)
    if missing:
        raise RuntimeError(f"exchanges recorded on connections not in the seed capture: {missing}")
    seed_pkts = sum(len(c.packets) for c in conns)
    copies = max(math.ceil(packets / seed_pkts), math.ceil(min_conns / len(conns)))
    if log:
        log(f"seed {sd}: {seed_pkts} packets, {len(conns)} connections, "
            f"{len(truth['records'])} exchanges; writing {copies} copies")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    info = replicate(conns, copies, out, base_us, seed, truth["nginx_port"], concurrency,
                     max_rate)
    manifest = {
        **info,
        "file": str(out),
        "copies": copies,
        "exchanges": len(truth["records"]) * copies,
        "seed_dir": str(sd),
        "seed_packets": seed_pkts,
        "seed_connections": len(conns),
        "seed_exchanges": len(truth["records"]),
        "params": {"packets": packets, "min_conns": min_conns, "seed_conns": seed_conns,
                   "seed": seed, "concurrency": concurrency, "max_rate": max_rate},
        "checksums": "recomputed (valid IPv4 and TCP checksums)",
        "linktype": "Ethernet (1), classic pcap, microseconds",
        "record_s": round(t1 - t0, 2),
        "replicate_s": round(time.monotonic() - t1, 2),
    }
    man.write_text(json.dumps(manifest, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="build the dissect benchmark capture")
    ap.add_argument("--small", action="store_true", help="~20 k packets (CI)")
    ap.add_argument("--packets", type=int, help="at least this many packets")
    ap.add_argument("--min-conns", type=int, help="at least this many TCP connections")
    ap.add_argument("--seed-conns", type=int, help="client connections in the recorded seed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=400,
                    help="mean number of connections open at once")
    ap.add_argument("--force", action="store_true", help="re-record and rebuild")
    args = ap.parse_args(argv)
    prof = SMALL if args.small else FULL
    path = build(args.packets or prof["packets"], args.min_conns or prof["min_conns"],
                 args.seed_conns or prof["seed_conns"], args.seed, args.concurrency,
                 force=args.force, log=lambda s: print(s, file=sys.stderr))
    print(path)
    print(json.dumps(load_manifest(path), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
