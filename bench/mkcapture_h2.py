"""Build the h2c/gRPC benchmark capture: record a real seed, then replicate it to ≥ 500 k packets.

    python -m bench.mkcapture_h2              # full size: ≥ 550 k packets
    python -m bench.mkcapture_h2 --small      # ~20 k packets (CI)
    python -m bench.mkcapture_h2 --packets 2000000

Prints the path of the capture and its manifest (JSON). Results are cached under
``bench/out/`` keyed by the parameters; ``--force`` rebuilds.

1. Seed: ``bench.h2workload`` records nginx h2c and grpcio traffic driven by nghttp, the ``h2``
   library and grpcio clients on the loopback of a private network namespace (``unshare -n``;
   root), with the clients' own record of every stream as the truth (``truth.json``).
2. Replicate: ``bench.mkcapture``'s replicator, unchanged — every TCP connection written ``N``
   times with its own addresses, client port and initial sequence numbers, copies interleaved
   in time, checksums recomputed. Every copy starts at the connection's first packet, so each
   copy has its own complete HPACK state. The placeholder ``q000000`` is rewritten to the copy
   number where it occurs in the byte stream: in HTTP/2 that is only the paths of the ``h2``
   library connections that encode headers without Huffman coding (a literal of the same
   length: HPACK stays consistent), and the backend's JSON echo of them. Huffman-coded paths
   (nghttp2, grpcio, half of the ``h2`` connections) are the same in every copy: the expected
   multiset counts them ``N`` times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import mkcapture
from bench.mkcapture import OUT_DIR, REPO_DIR

#: Bump when the workload or what this module writes changes (invalidates the cache).
WORKLOAD_VERSION = 3

FULL = {"packets": 550_000, "seed_scale": 3.0}
SMALL = {"packets": 20_000, "seed_scale": 0.34}

#: (kind, method, path, status): kind "http2" (status = :status) or "grpc" (method =
#: "package.Service/Method", status = grpc-status).
Stream = tuple[str, str | None, str | None, int | None]


def seed_dir(scale: float, seed: int) -> Path:
    return OUT_DIR / f"h2seed-v{WORKLOAD_VERSION}-x{scale:g}-s{seed}"


def ensure_seed(scale: float, seed: int = 1, force: bool = False) -> Path:
    """Record the seed (cached). Needs root for ``unshare -n``."""
    d = seed_dir(scale, seed)
    if not force and (d / "truth.json").exists() and (d / "seed.pcap").exists():
        return d
    if os.geteuid() != 0:
        raise SystemExit("mkcapture_h2: recording the seed needs root (unshare -n for a "
                         "private loopback with MTU 1500)")
    d.mkdir(parents=True, exist_ok=True)
    cmd = ["unshare", "-n", sys.executable, "-m", "bench.h2workload", str(d),
           "--scale", f"{scale:g}", "--seed", str(seed)]
    problem = ""
    for _attempt in range(4):
        for name in ("truth.json", "seed.pcap", "meta.json"):
            (d / name).unlink(missing_ok=True)
        proc = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not (d / "truth.json").exists():
            problem = f"recording the seed failed: {cmd}\n{proc.stdout}\n{proc.stderr}"
            continue
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("tcpdump", {}).get("dropped", 1) != 0:
            problem = f"tcpdump dropped packets while recording the seed: {meta}"
            continue
        if not meta.get("nginx_log_matches_clients"):
            problem = f"nginx's access log and the clients' records disagree: {meta}"
            continue
        return d
    for name in ("truth.json", "seed.pcap", "meta.json"):
        (d / name).unlink(missing_ok=True)
    raise RuntimeError(problem)


def seed_streams(truth: dict[str, Any]) -> Counter[tuple[Stream, bool]]:
    """((kind, method, path, status), rewritten) of the seed's streams, counted."""
    return Counter(((kind, m, p, s), bool(rw)) for _, _, _, kind, m, p, s, rw in truth["records"])


def expected_streams(manifest: dict[str, Any]) -> Counter[Stream]:
    """(kind, method, path, status) of every stream in the capture, from the clients' records,
    expanded over the copies (placeholder rewritten where the replicator rewrote it)."""
    truth = json.loads((Path(manifest["seed_dir"]) / "truth.json").read_text())
    tag = truth["placeholder"]
    out: Counter[Stream] = Counter()
    copies = manifest["copies"]
    for (st, rewrite), n in seed_streams(truth).items():
        if not rewrite:
            out[st] += n * copies
            continue
        kind, m, p, s = st
        for j in range(1, copies + 1):
            out[(kind, m, (p or "").replace(tag, f"q{j:06d}"), s)] += n
    return out


def build(packets: int, seed_scale: float, seed: int = 1, concurrency: int = 400,
          max_rate: float = 100_000.0, force: bool = False, log: Any = None) -> Path:
    """The replicated capture for these parameters (cached). Returns its path; the manifest
    is beside it (``PATH.json``)."""
    key = hashlib.sha1(json.dumps([WORKLOAD_VERSION, mkcapture.REPLICATOR_VERSION, packets,
                                   seed_scale, seed, concurrency, max_rate]).encode())
    out = OUT_DIR / f"h2capture-{packets}p-{key.hexdigest()[:10]}.pcap"
    man = Path(str(out) + ".json")
    if not force and out.exists() and man.exists():
        return out
    t0 = time.monotonic()
    sd = ensure_seed(seed_scale, seed, force=force)
    truth = json.loads((sd / "truth.json").read_text())
    t1 = time.monotonic()
    nginx_port, grpc_port = truth["nginx_port"], truth["grpc_port"]
    conns, base_us = mkcapture.split_connections(sd / "seed.pcap", {nginx_port, grpc_port})
    keys = Counter(c.key for c in conns)
    dup = [k for k, n in keys.items() if n > 1]
    if dup:
        raise RuntimeError(f"client port reused within the seed: {dup}")
    missing = {f"{sp}:{cp}" for _, sp, cp, *_ in truth["records"] if cp} - set(keys)
    if missing:
        raise RuntimeError(f"streams recorded on connections not in the seed capture: {missing}")
    seed_pkts = sum(len(c.packets) for c in conns)
    copies = max(2, math.ceil(packets / seed_pkts))
    if log:
        log(f"seed {sd}: {seed_pkts} packets, {len(conns)} connections, "
            f"{len(truth['records'])} streams; writing {copies} copies")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    # nginx's connections get the "nginx" addresses (127.2.a.b), gRPC's the "backend" ones
    info = mkcapture.replicate(conns, copies, out, base_us, seed, nginx_port, concurrency,
                               max_rate)
    rewritten = sum(1 for *_, rw in truth["records"] if rw)
    manifest = {
        **info,
        "file": str(out),
        "copies": copies,
        "streams": len(truth["records"]) * copies,
        "seed_dir": str(sd),
        "seed_packets": seed_pkts,
        "seed_connections": len(conns),
        "seed_connections_by_port": dict(Counter(str(c.server_port) for c in conns)),
        "seed_streams": len(truth["records"]),
        "seed_streams_rewritten": rewritten,
        "nginx_port": nginx_port,
        "grpc_port": grpc_port,
        "params": {"packets": packets, "seed_scale": seed_scale, "seed": seed,
                   "concurrency": concurrency, "max_rate": max_rate},
        "checksums": "recomputed (valid IPv4 and TCP checksums)",
        "linktype": "Ethernet (1), classic pcap, microseconds",
        "record_s": round(t1 - t0, 2),
        "replicate_s": round(time.monotonic() - t1, 2),
    }
    man.write_text(json.dumps(manifest, indent=1))
    return out


def build_profile(small: bool, packets: int | None = None, force: bool = False,
                  log: Any = None) -> Path:
    prof = SMALL if small else FULL
    return build(packets or int(prof["packets"]), float(prof["seed_scale"]), force=force,
                 log=log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="build the h2c/gRPC dissect benchmark capture")
    ap.add_argument("--small", action="store_true", help="~20 k packets (CI)")
    ap.add_argument("--packets", type=int, help="at least this many packets")
    ap.add_argument("--seed-scale", type=float, help="size of the recorded seed (see h2workload)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=400,
                    help="mean number of connections open at once")
    ap.add_argument("--force", action="store_true", help="re-record and rebuild")
    args = ap.parse_args(argv)
    prof = SMALL if args.small else FULL
    path = build(args.packets or int(prof["packets"]),
                 args.seed_scale or float(prof["seed_scale"]), args.seed, args.concurrency,
                 force=args.force, log=lambda s: print(s, file=sys.stderr))
    print(path)
    print(json.dumps(mkcapture.load_manifest(path), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
