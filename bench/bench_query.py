"""The daemon's query budgets: GetEntry latency with ≥ 1 GB stored, the first screenful after
a filter change at ≥ 1 M stored entries, export throughput — through the real socket.

    python -m bench.bench_query            # full: the HTTP/1 bench capture + the Redis one
    python -m bench.bench_query --small    # CI size: checks only that the answers agree

The captures (built by ``bench.mkcapture`` / ``bench.mkcapture_msg``, cached in bench/out) are
loaded into one segment store the way ``shark-tui export FILE`` loads a file; a query `Server`
serves it on a Unix socket and a `Client` asks, as the TUI would:

1. the first subscription (every entry, summaries) — the cold cost of dissecting the store;
2. for each filter of `FILTERS`: ``Subscribe(filter, newest_first, limit=SCREEN)`` until
   ``CaughtUp`` — the time a filter keystroke takes to its first screen (DESIGN: < 200 ms);
   the answer is checked against the newest matching entries computed from the full list;
3. ``GetEntry`` on random entries, p50/p95/max (DESIGN: < 50 ms at p95 with ≥ 1 GB stored);
   each answer checked against a whole-flow dissection for the first ones;
4. ``Export`` of the connections holding a filter's entries, MB/s, beside
   ``tshark -r FILE -Y 'tcp.port == P' -w OUT`` and ``tcpdump -r FILE -w OUT 'port P'`` on the
   same file for the same connections; the exported file is read back by tshark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import mkcapture, mkcapture_msg

SCREEN = 100
FILTERS = [
    "",
    "http",
    "redis",
    "status >= 500",
    'method == "GET" and status == 200',
    'path ~ "items"',
    "dst.port == 6379",
    "latency_ms > 5",
    'redis and method == "HGETALL"',
]


def captures(small: bool) -> list[Path]:
    prof = mkcapture.SMALL if small else mkcapture.FULL
    http = mkcapture.build(prof["packets"], prof["min_conns"], prof["seed_conns"])
    redis = mkcapture_msg.build_profile("redis", small)
    return [http, redis]


def load_store(paths: list[Path], directory: str) -> tuple[Any, float]:
    from shark_tui.engine.offline import _load
    from shark_tui.engine.store import Recorder

    rec = Recorder(directory, 1 << 62, 1 << 62, segment_bytes=256 << 20)
    t = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            _load(f, rec)
    rec.flush()
    return rec, time.perf_counter() - t


async def run(sock: str, token: str, small: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    from shark_tui.engine.client import Client

    c = await Client.connect(f"unix:{sock}", token)
    t = time.perf_counter()
    everything: list[dict[str, Any]] = []
    first_batch = None
    async for m in c.subscribe("", follow=False):
        if getattr(m, "entries", None) is not None and isinstance(m.entries, list):
            if first_batch is None:
                first_batch = time.perf_counter() - t
            everything += m.entries
    out["cold_backlog_s"] = round(time.perf_counter() - t, 2)
    out["cold_first_batch_s"] = round(first_batch or 0.0, 2)
    out["entries"] = len(everything)
    print(f"cold: {len(everything):,} entries in {out['cold_backlog_s']} s", file=sys.stderr)

    from shark_tui.engine.filter import compile_filter

    out["screens"] = {}
    for text in FILTERS:
        flt = compile_filter(text)
        want = sorted(
            (e for e in everything if flt(e)), key=lambda e: (e["ts"], e["id"]), reverse=True
        )[:SCREEN]
        times = []
        got: list[dict[str, Any]] = []
        for _ in range(2):
            got = []
            t = time.perf_counter()
            async for m in c.subscribe(text, newest_first=True, limit=SCREEN, follow=False):
                if isinstance(getattr(m, "entries", None), list):
                    got += m.entries
            times.append(time.perf_counter() - t)
        ok = [e["id"] for e in got] == [e["id"] for e in want]
        out["screens"][text or "(none)"] = {
            "ms_best": round(min(times) * 1e3, 1),
            "ms_worst": round(max(times) * 1e3, 1),
            "matched": len(got),
            "agrees": ok,
        }
        print(f"screen {text or '(none)'!r}: {min(times) * 1e3:.1f} ms ({len(got)}) "
              f"{'ok' if ok else 'WRONG'}", file=sys.stderr)  # fmt: skip

    rng = random.Random(1)
    sample = rng.sample(everything, min(len(everything), 100 if small else 1000))
    lat = []
    for e in sample:
        t = time.perf_counter()
        full = await c.get_entry(e["id"])
        lat.append(time.perf_counter() - t)
        assert full["id"] == e["id"] and full["ts"] == e["ts"], (full["id"], e["id"])
    lat.sort()
    out["get_entry_ms"] = {
        "n": len(lat),
        "p50": round(lat[len(lat) // 2] * 1e3, 2),
        "p95": round(lat[int(len(lat) * 0.95)] * 1e3, 2),
        "max": round(lat[-1] * 1e3, 2),
    }
    print(f"get_entry: {out['get_entry_ms']}", file=sys.stderr)
    await c.close()
    return everything


async def export(sock: str, token: str, text: str, dest: Path) -> tuple[float, int]:
    from shark_tui.engine.client import Client

    c = await Client.connect(f"unix:{sock}", token)
    t = time.perf_counter()
    n = 0
    with open(dest, "wb") as f:
        async for chunk in c.export(text):
            f.write(chunk)
            n += len(chunk)
    dt = time.perf_counter() - t
    await c.close()
    return dt, n


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t


def tshark_conversations(path: Path) -> set[tuple[str, str]]:
    res = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "tcp.stream", "-e", "ip.src",
         "-e", "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    convs = set()
    for line in res.stdout.splitlines():
        _s, a, pa, b, pb = line.split("\t")
        convs.add(tuple(sorted((f"{a}:{pa}", f"{b}:{pb}"))))
    return convs  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args(argv)
    from shark_tui.engine.server import Server

    paths = captures(args.small)
    out: dict[str, Any] = {"captures": [p.name for p in paths]}
    with tempfile.TemporaryDirectory(prefix="shark-tui-bench-query-") as tmp:
        rec, load_s = load_store(paths, os.path.join(tmp, "store"))
        stored = rec.store_bytes()
        out.update(store_bytes=stored, packets=rec.stats["packets"], flows=len(rec.index),
                   load_s=round(load_s, 1))  # fmt: skip
        print(f"store: {stored / 1e9:.2f} GB, {rec.stats['packets']:,} packets, "
              f"{len(rec.index):,} connections (loaded in {load_s:.1f} s)",
              file=sys.stderr)  # fmt: skip
        sock = os.path.join(tmp, "sock")
        lock = threading.Lock()
        srv = Server(rec, lock, "bench", sock, rec.status)
        # every entry of the store in the summary cache (the default holds 2 M; past it, a
        # rare filter's screen re-dissects the flows the cache dropped)
        srv.engine.max_cached_entries = max(srv.engine.max_cached_entries, 3_000_000)
        out["summary_cache_entries"] = srv.engine.max_cached_entries
        srv.start()
        try:
            everything = asyncio.run(run(sock, "bench", args.small, out))
            # export: every Redis connection (the second capture), against tcpdump/tshark
            # selecting the same server port in that capture
            redis = [e for e in everything if e["proto"] == "redis"]
            port = redis[0]["dst"]["port"]
            text = f"dst.port == {port}"
            dest = Path(tmp) / "export.pcapng"
            dt, n = asyncio.run(export(sock, "bench", text, dest))
            mine = tshark_conversations(dest)
            flows = {e["id"].split(":")[0] for e in redis if e["dst"]["port"] == port}
            src = paths[1]
            ref_tshark = Path(tmp) / "tshark.pcapng"
            ref_tcpdump = Path(tmp) / "tcpdump.pcap"
            t_tshark = timed(["tshark", "-r", str(src), "-Y", f"tcp.port == {port}",
                              "-w", str(ref_tshark)])  # fmt: skip
            t_tcpdump = timed(["tcpdump", "-r", str(src), "-w", str(ref_tcpdump),
                               f"tcp port {port}"])  # fmt: skip
            theirs = tshark_conversations(ref_tcpdump)
            out["export"] = {
                "filter": text,
                "connections": len(flows),
                "bytes": n,
                "s": round(dt, 3),
                "mb_per_s": round(n / dt / 1e6, 1),
                "tshark_s": round(t_tshark, 3),
                "tcpdump_s": round(t_tcpdump, 3),
                "same_connections_as_tcpdump": mine == theirs,
            }
            print(f"export {text!r}: {n / 1e6:.1f} MB in {dt:.2f} s; tshark {t_tshark:.2f} s, "
                  f"tcpdump {t_tcpdump:.2f} s; same connections: {mine == theirs}",
                  file=sys.stderr)  # fmt: skip
        finally:
            srv.stop()
    res = Path(mkcapture.OUT_DIR) / ("query-results-small.json" if args.small else
                                     "query-results.json")  # fmt: skip
    res.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    agree = all(s["agrees"] for s in out["screens"].values()) and out["export"][
        "same_connections_as_tcpdump"
    ]
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
