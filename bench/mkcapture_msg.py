"""Build the Redis / Kafka / AMQP benchmark captures: record a real seed, replicate it.

    python -m bench.mkcapture_msg --proto redis          # full size: ≥ 500 k packets
    python -m bench.mkcapture_msg --proto amqp --small   # ~20 k packets (CI)

Prints the capture's path and manifest. Cached under ``bench/out/`` (``msgseed-*``,
``msgcapture-*``) keyed by the parameters; ``--force`` rebuilds.

1. Seed: ``bench.msgworkload`` in a private network namespace (``unshare -n``; root).
2. Replication: ``bench.mkcapture.split_connections`` + ``bench.mkcapture.replicate``,
   unchanged: every connection ``N`` times with its own addresses, client port and ISNs,
   interleaved in time, checksums recomputed, ``q000000`` rewritten to the copy number (Redis
   keys and AMQP queue names/routing keys hold it; same length, so RESP lengths and AMQP
   frame sizes stay right; the Kafka workload does not use it: record batches carry CRCs).
3. Truth: the seed's TCP streams (from the same templates) are parsed by the small, independent
   framing parsers below (RESP arrays/replies; Kafka request headers; AMQP method frames and
   the routing_key/queue arguments), checked against the clients' own counts
   (``meta.json``), and expanded over the copies.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import mkcapture
from bench.mkcapture import OUT_DIR, REPO_DIR
from bench.msgworkload import PLACEHOLDER

WORKLOAD_VERSION = 1
#: Bump when the truth parsers change (rebuilds the captures, keeps the seeds).
TRUTH_VERSION = 3
PROTOS = ("redis", "kafka", "amqp")
FULL = {"packets": 500_000, "seed_scale": {"redis": 1.0, "kafka": 1.0, "amqp": 0.3}}
SMALL = {"packets": 20_000, "seed_scale": {"redis": 0.1, "kafka": 0.1, "amqp": 0.1}}
_U32 = 0xFFFFFFFF


def seed_dir(proto: str, scale: float, seed: int) -> Path:
    return OUT_DIR / f"msgseed-{proto}-v{WORKLOAD_VERSION}-x{scale:g}-s{seed}"


def ensure_seed(proto: str, scale: float, seed: int = 1, force: bool = False) -> Path:
    d = seed_dir(proto, scale, seed)
    if not force and (d / "meta.json").exists() and (d / "seed.pcap").exists():
        return d
    if os.geteuid() != 0:
        raise SystemExit("mkcapture_msg: recording the seed needs root (unshare -n)")
    d.mkdir(parents=True, exist_ok=True)
    cmd = ["unshare", "-n", sys.executable, "-m", "bench.msgworkload", str(d), "--proto", proto,
           "--scale", f"{scale:g}", "--seed", str(seed)]
    problem = ""
    for _attempt in range(3):
        for name in ("seed.pcap", "meta.json"):
            (d / name).unlink(missing_ok=True)
        p = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=900)
        if p.returncode != 0 or not (d / "meta.json").exists():
            problem = f"recording the seed failed: {cmd}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
            continue
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("tcpdump", {}).get("dropped", 1) != 0:
            problem = f"tcpdump dropped packets while recording the seed: {meta}"
            continue
        return d
    raise RuntimeError(problem)


# ---------------------------------------------------------------------------------------------
# the seed's byte streams and the independent parsers


def segment_starts(conn: mkcapture.Conn, to_server: bool = True) -> list[int]:
    """Stream offsets at which the segments of one direction start (sorted)."""
    pk = [p for p in conn.packets if p.to_server == to_server]
    syn = [p for p in pk if p.tcp[13] & 0x02]
    base = (syn[0].seq + 1) & _U32 if syn else min((p.seq for p in pk), default=0)
    return sorted({(p.seq - base) & _U32 for p in pk if p.payload})


def streams(conn: mkcapture.Conn) -> tuple[bytes, bytes]:
    """(client→server, server→client) bytes of one seed connection, by sequence number."""
    out = []
    for direction in (True, False):
        pk = [p for p in conn.packets if p.to_server == direction]
        syn = [p for p in pk if p.tcp[13] & 0x02]
        base = (syn[0].seq + 1) & _U32 if syn else min((p.seq for p in pk), default=0)
        buf = bytearray()
        for p in pk:
            if not p.payload:
                continue
            off = (p.seq - base) & _U32
            if off > 1 << 30:
                continue
            if len(buf) < off + len(p.payload):
                buf.extend(bytes(off + len(p.payload) - len(buf)))
            buf[off:off + len(p.payload)] = p.payload
        out.append(bytes(buf))
    return out[0], out[1]


def _resp(data: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 value at ``pos``: (("type", value), end)."""
    t = data[pos:pos + 1]
    eol = data.index(b"\r\n", pos)
    line = data[pos + 1:eol]
    pos = eol + 2
    if t == b"+":
        return ("simple", line.decode()), pos
    if t == b"-":
        return ("error", line.decode()), pos
    if t == b":":
        return ("integer", int(line)), pos
    if t == b"$":
        n = int(line)
        if n < 0:
            return ("null", None), pos
        return ("bulk", data[pos:pos + n]), pos + n + 2
    if t in b"*~>%":
        n = int(line)
        if n < 0:
            return ("null", None), pos
        items = []
        for _ in range(n * (2 if t == b"%" else 1)):
            v, pos = _resp(data, pos)
            items.append(v)
        return ({b"*": "array", b"~": "set", b">": "push", b"%": "map"}[t], items), pos
    if t == b"_":
        return ("null", None), pos
    if t in b"#,(":
        return ({b"#": "boolean", b",": "double", b"(": "big_number"}[t], line.decode()), pos
    if t in b"=!":
        n = int(line)
        return ("verbatim" if t == b"=" else "blob_error", data[pos:pos + n]), pos + n + 2
    raise ValueError(f"RESP type {t!r} at {pos}")


_RESP3 = {"map", "set", "push", "boolean", "double", "big_number", "verbatim", "blob_error"}


def _flat_types(v: tuple[str, Any], out: Counter[str], resp3: Counter[str],
                inside: bool = False) -> None:
    """Count a reply's values as tshark's fields do (nested elements too; null bulk = bulk);
    ``resp3`` counts those that are, or are inside, a RESP3-only type."""
    kind, val = v
    inside = inside or kind in _RESP3
    out["bulk" if kind == "null" else kind] += 1
    if inside:
        resp3["bulk" if kind == "null" else kind] += 1
    if kind in ("array", "set", "push", "map"):
        for x in val:
            _flat_types(x, out, resp3, inside)


def redis_truth(conns: list[mkcapture.Conn]) -> dict[str, Counter[Any]]:
    req: Counter[Any] = Counter()
    ent: Counter[Any] = Counter()
    flat: Counter[Any] = Counter()
    resp3: Counter[Any] = Counter()
    straddle: Counter[Any] = Counter()
    for c in conns:
        cs, sc = streams(c)
        cmds = []
        pos = 0
        starts = segment_starts(c)
        while pos < len(cs):
            begin = pos
            (_, args), pos = _resp(cs, pos)
            a = [x[1].decode() for x in args]
            cmd, key = a[0].upper(), (a[1] if len(a) > 1 else "")
            cmds.append((cmd, key))
            req[(cmd, key)] += 1
            i = bisect.bisect_right(starts, begin)
            if i < len(starts) and starts[i] < pos:
                straddle[(cmd, key)] += 1
        pos = 0
        replies = []
        while pos < len(sc):
            v, pos = _resp(sc, pos)
            replies.append(v)
            _flat_types(v, flat, resp3)
        if len(replies) != len(cmds):
            raise RuntimeError(f"seed connection {c.key}: {len(cmds)} commands, "
                               f"{len(replies)} replies")
        for (cmd, key), (kind, val) in zip(cmds, replies):
            status = ("OK" if kind == "simple" and val == "OK" else val if kind == "error"
                      else kind)
            ent[(cmd, key, status)] += 1
    return {"requests": req, "entries": ent, "reply_values": flat, "resp3_values": resp3,
            "requests_straddling": straddle}


def kafka_truth(conns: list[mkcapture.Conn]) -> dict[str, Counter[Any]]:
    req: Counter[Any] = Counter()
    for c in conns:
        cs, _ = streams(c)
        pos = 0
        while pos + 12 <= len(cs):
            size, key, ver, corr = struct.unpack_from("!ihhi", cs, pos)
            req[(key, ver, corr)] += 1
            pos += 4 + size
    return {"requests": req}


AMQP_NAMES = {
    10: ("connection", {10: "start", 11: "start-ok", 20: "secure", 21: "secure-ok", 30: "tune",
                        31: "tune-ok", 40: "open", 41: "open-ok", 50: "close", 51: "close-ok",
                        60: "blocked", 61: "unblocked", 70: "update-secret",
                        71: "update-secret-ok"}),
    20: ("channel", {10: "open", 11: "open-ok", 20: "flow", 21: "flow-ok", 40: "close",
                     41: "close-ok"}),
    40: ("exchange", {10: "declare", 11: "declare-ok", 20: "delete", 21: "delete-ok",
                      30: "bind", 31: "bind-ok", 40: "unbind", 51: "unbind-ok"}),
    50: ("queue", {10: "declare", 11: "declare-ok", 20: "bind", 21: "bind-ok", 30: "purge",
                   31: "purge-ok", 40: "delete", 41: "delete-ok", 50: "unbind",
                   51: "unbind-ok"}),
    60: ("basic", {10: "qos", 11: "qos-ok", 20: "consume", 21: "consume-ok", 30: "cancel",
                   31: "cancel-ok", 40: "publish", 50: "return", 60: "deliver", 70: "get",
                   71: "get-ok", 72: "get-empty", 80: "ack", 90: "reject",
                   100: "recover-async", 110: "recover", 111: "recover-ok", 120: "nack"}),
    85: ("confirm", {10: "select", 11: "select-ok"}),
    90: ("tx", {10: "select", 11: "select-ok", 20: "commit", 21: "commit-ok", 30: "rollback",
                31: "rollback-ok"}),
}


def amqp_name(cls: int, meth: int) -> str:
    c = AMQP_NAMES.get(cls)
    if c is None or meth not in c[1]:
        return f"{cls}.{meth}"
    return f"{c[0]}.{c[1][meth]}"


def _shortstr(b: bytes, pos: int) -> tuple[str, int]:
    n = b[pos]
    return b[pos + 1:pos + 1 + n].decode(), pos + 1 + n


#: (class, method) -> layout up to the last of routing_key/queue: "s" short, "S" shortstr,
#: "L" longlong, "o" octet; "Q"/"R" mark the shortstr that is the queue / routing key.
_AMQP_ARGS = {(60, 40): "sSR", (60, 60): "SLoSR", (60, 71): "LoSR", (60, 50): "sSSR",
              (50, 10): "sQ", (50, 11): "Q", (50, 40): "sQ", (50, 30): "sQ", (50, 20): "sQSR",
              (50, 50): "sQSR", (60, 20): "sQ", (60, 70): "sQ", (50, 41): ""}


def amqp_truth(conns: list[mkcapture.Conn]) -> dict[str, Counter[Any]]:
    frames: Counter[Any] = Counter()
    keys: Counter[Any] = Counter()
    queues: Counter[Any] = Counter()
    for c in conns:
        for data in streams(c):
            pos = 8 if data.startswith(b"AMQP") else 0
            while pos + 7 <= len(data):
                ftype, _ch, size = struct.unpack_from("!BHI", data, pos)
                body = data[pos + 7:pos + 7 + size]
                pos += 8 + size
                if ftype != 1:
                    continue
                cls, meth = struct.unpack_from("!HH", body, 0)
                frames[amqp_name(cls, meth)] += 1
                p = 4
                for f in _AMQP_ARGS.get((cls, meth), ""):
                    if f == "s":
                        p += 2
                    elif f == "L":
                        p += 8
                    elif f == "o":
                        p += 1
                    else:
                        v, p = _shortstr(body, p)
                        if f == "Q":
                            queues[v] += 1
                        elif f == "R":
                            keys[v] += 1
    return {"frames": frames, "routing_keys": keys, "queues": queues}


TRUTH = {"redis": redis_truth, "kafka": kafka_truth, "amqp": amqp_truth}


def check_truth(proto: str, truth: dict[str, Counter[Any]], meta: dict[str, Any]) -> list[str]:
    """Where the parsed seed disagrees with the clients' own counts (``meta.json``)."""
    cl = meta.get("clients") or {}
    bad = []
    if proto == "redis":
        n = cl["redis-benchmark_n"]
        for cmd, key in (("LPUSH", "mylist"), ("HSET", "myhash")):
            if truth["requests"][(cmd, key)] != n:
                bad.append(f"{cmd} {key}: {truth['requests'][(cmd, key)]} in the seed, "
                           f"redis-benchmark -n {n}")
        wrong = sum(v for (_, _, st), v in truth["entries"].items()
                    if str(st).startswith("WRONGTYPE"))
        if wrong != cl["redis-py"]["error"]:
            bad.append(f"WRONGTYPE: {wrong} in the seed, redis-py saw {cl['redis-py']['error']}")
    elif proto == "amqp":
        for meth, k in (("basic.publish", "publish"), ("basic.get-ok", "get"),
                        ("basic.deliver", "deliver")):
            if truth["frames"][meth] != cl[k]:
                bad.append(f"{meth}: {truth['frames'][meth]} in the seed, pika {cl[k]}")
    return bad


def _enc(k: Any) -> Any:
    return list(k) if isinstance(k, tuple) else k


def _dec(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def expected(manifest: dict[str, Any]) -> dict[str, Counter[Any]]:
    """The seed's truth expanded over the copies (``q000000`` -> ``q`` + copy number)."""
    seed = json.loads(Path(manifest["truth_file"]).read_text())
    copies = manifest["copies"]
    out: dict[str, Counter[Any]] = {}
    for name, items in seed.items():
        c: Counter[Any] = Counter()
        for k, n in items:
            k = _dec(k)
            parts = k if isinstance(k, tuple) else (k,)
            if any(isinstance(x, str) and PLACEHOLDER in x for x in parts):
                for j in range(1, copies + 1):
                    new = tuple(x.replace(PLACEHOLDER, f"q{j:06d}") if isinstance(x, str) else x
                                for x in parts)
                    c[new if isinstance(k, tuple) else new[0]] += n
            else:
                c[k] += n * copies
        out[name] = c
    return out


def build(proto: str, packets: int, seed_scale: float, seed: int = 1, concurrency: int = 50,
          max_rate: float = 100_000.0, force: bool = False, log: Any = None) -> Path:
    key = hashlib.sha1(json.dumps([WORKLOAD_VERSION, TRUTH_VERSION, mkcapture.REPLICATOR_VERSION,
                                   proto, packets, seed_scale, seed, concurrency,
                                   max_rate]).encode())
    out = OUT_DIR / f"msgcapture-{proto}-{packets}p-{key.hexdigest()[:10]}.pcap"
    man = Path(str(out) + ".json")
    if not force and out.exists() and man.exists():
        return out
    t0 = time.monotonic()
    sd = ensure_seed(proto, seed_scale, seed, force=force)
    meta = json.loads((sd / "meta.json").read_text())
    t1 = time.monotonic()
    port = meta["port"]
    conns, base_us = mkcapture.split_connections(sd / "seed.pcap", {port})
    truth = TRUTH[proto](conns)
    bad = check_truth(proto, truth, meta)
    if bad:
        raise RuntimeError(f"the seed {sd} disagrees with its clients: {bad}")
    (sd / "truth.json").write_text(json.dumps(
        {name: [[_enc(k), n] for k, n in c.items()] for name, c in truth.items()}))
    seed_pkts = sum(len(c.packets) for c in conns)
    copies = max(2, math.ceil(packets / seed_pkts))
    if log:
        log(f"seed {sd}: {seed_pkts} packets, {len(conns)} connections; writing {copies} copies")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    info = mkcapture.replicate(conns, copies, out, base_us, seed, port, concurrency, max_rate)
    manifest = {
        **info, "proto": proto, "port": port, "file": str(out), "copies": copies,
        "seed_dir": str(sd), "truth_file": str(sd / "truth.json"),
        "seed_packets": seed_pkts, "seed_connections": len(conns),
        "seed_truth_sizes": {k: sum(v.values()) for k, v in truth.items()},
        "clients": meta.get("clients"), "tcpdump": meta.get("tcpdump"),
        "params": {"packets": packets, "seed_scale": seed_scale, "seed": seed,
                   "concurrency": concurrency, "max_rate": max_rate},
        "checksums": "recomputed (valid IPv4 and TCP checksums)",
        "record_s": round(t1 - t0, 2), "replicate_s": round(time.monotonic() - t1, 2),
    }
    man.write_text(json.dumps(manifest, indent=1))
    return out


def build_profile(proto: str, small: bool, packets: int | None = None, force: bool = False,
                  log: Any = None) -> Path:
    prof = SMALL if small else FULL
    scale = prof["seed_scale"][proto]  # type: ignore[index]
    return build(proto, packets or int(prof["packets"]),  # type: ignore[call-overload]
                 float(scale), force=force, log=log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="build the Redis/Kafka/AMQP benchmark captures")
    ap.add_argument("--proto", choices=[*PROTOS, "all"], default="all")
    ap.add_argument("--small", action="store_true", help="~20 k packets (CI)")
    ap.add_argument("--packets", type=int)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    for proto in PROTOS if args.proto == "all" else [args.proto]:
        path = build_profile(proto, args.small, args.packets, args.force,
                             log=lambda s: print(s, file=sys.stderr))
        print(path)
        print(json.dumps(mkcapture.load_manifest(path), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
