"""The Redis / Kafka / AMQP dissect benchmark: ``shark-tui dissect --json`` against tshark.

    python -m bench.bench_msg --proto all          # full size: ≥ 500 k packets per protocol
    python -m bench.bench_msg --proto redis --small
    python -m bench.bench_msg --proto kafka --capture FILE.pcap   # built by bench.mkcapture_msg

Per protocol, in one run on one file (page cache warmed, tools one after another, each
measured by ``bench.bench_dissect.measure``: wall, CPU, peak RSS and PSS of the process tree):
``tcpdump -r FILE -w /dev/null`` (the read floor), ``shark-tui dissect FILE --json``, and
``tshark -r FILE -d tcp.port==P,PROTO -Y PROTO -T fields ...``. Compared (as multisets) with
the truth (the seed parsed by ``bench.mkcapture_msg``, expanded over the copies) and with each
other:

- redis: shark-tui's (command, first key, status) per entry; tshark's (command, first key) per
  request array (``resp.array.length`` cuts a frame's ``resp.bulk_string.value`` list) and the
  counts of reply values by type (``resp.string``/``error``/``integer``/``bulk_string``/
  ``array``, nested elements included: tshark's fields cannot be cut into replies).
- kafka: (api_key, api_version, correlation_id) per request; the set of topic names.
- amqp: (class.method) per method frame; the routing_key and queue arguments, as multisets.

Exit status: 0 when shark-tui equals the truth and every tshark difference is explained; 1
otherwise; 2 for bad usage or a missing ``shark-tui dissect``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import bench_dissect, mkcapture, mkcapture_msg
from bench.bench_dissect import AGG, Run, measure, shark_tui_argv, shark_tui_available

TSHARK_FIELDS = {
    "redis": ["frame.number", "tcp.dstport", "resp.array.length", "resp.bulk_string.value",
              "resp.string", "resp.error", "resp.integer", "resp.bulk_string.length"],
    "kafka": ["frame.number", "tcp.dstport", "kafka.api_key", "kafka.api_version",
              "kafka.correlation_id", "kafka.topic_name", "_ws.expert.message"],
    "amqp": ["frame.number", "tcp.dstport", "amqp.method.class", "amqp.method.method",
             "amqp.method.arguments.routing_key", "amqp.method.arguments.queue"],
}
DISSECTOR = {"redis": "resp", "kafka": "kafka", "amqp": "amqp"}


# ---------------------------------------------------------------------------------------------
# reading the tools' outputs


def shark_sets(proto: str, path: Path) -> tuple[dict[str, Counter[Any]], Counter[str]]:
    import msgspec

    class Entry(msgspec.Struct):
        proto: str | None = None
        method: str | None = None
        summary: str | None = None
        status: Any = None
        error: str | None = None
        request: Any = None
        response: Any = None

    dec = msgspec.json.Decoder(Entry)
    protos: Counter[str] = Counter()
    out: dict[str, Counter[Any]] = {}
    for k in {"redis": ("entries", "requests", "errors"),
              "kafka": ("requests", "topics", "errors"),
              "amqp": ("frames", "routing_keys", "queues", "errors")}[proto]:
        out[k] = Counter()
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            e = dec.decode(line)
            protos[str(e.proto)] += 1
            if e.proto != proto:
                continue
            if e.error:
                out["errors"][e.error] += 1
            if proto == "redis":
                out["entries"][(e.method, e.summary, e.status)] += 1
                out["requests"][(e.method, e.summary)] += 1
            elif proto == "kafka":
                r = e.request or {}
                out["requests"][(r.get("api_key"), r.get("api_version"),
                                 r.get("correlation_id"))] += 1
                for t in (e.summary or "").split(", "):
                    if t:
                        out["topics"][t] = 1
            else:
                for side in (e.request, e.response):
                    if not side:
                        continue
                    out["frames"][f"{side['class']}.{side['method']}"] += 1
                    args = side.get("arguments") or {}
                    if "routing_key" in args:
                        out["routing_keys"][args["routing_key"]] += 1
                    if "queue" in args:
                        out["queues"][args["queue"]] += 1
    return out, protos


def _occ(col: str) -> list[str]:
    return col.split(AGG) if col else []


def tshark_sets(proto: str, path: Path, port: int) -> tuple[dict[str, Counter[Any]],
                                                             dict[str, int]]:
    out: dict[str, Counter[Any]] = {}
    info: Counter[str] = Counter()
    with open(path, encoding="utf-8", errors="replace") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    nf = len(TSHARK_FIELDS[proto])
    rows = [r + [""] * (nf - len(r)) for r in rows]
    if proto == "redis":
        req: Counter[Any] = Counter()
        vals: Counter[Any] = Counter()
        for r in rows:
            if int(r[1] or 0) == port:
                values = [bytes.fromhex(v.replace(":", "")).decode(errors="replace")
                          for v in _occ(r[3])]
                pos = 0
                for n in (int(x) for x in _occ(r[2])):
                    part = values[pos:pos + n]
                    pos += n
                    if len(part) < n or not part:
                        info["requests_cut"] += 1
                        continue
                    req[(part[0].upper(), part[1] if len(part) > 1 else "")] += 1
                info["request_frames"] += 1
            else:
                for kind, col in (("simple", 4), ("error", 5), ("integer", 6), ("bulk", 7),
                                  ("array", 2)):
                    n = len(_occ(r[col]))
                    if n:
                        vals[kind] += n
        out = {"requests": req, "reply_values": vals}
    elif proto == "kafka":
        req = Counter()
        topics: Counter[Any] = Counter()
        for r in rows:
            for t in _occ(r[5]):
                topics[t] = 1
            if int(r[1] or 0) != port:
                continue
            keys, vers, corrs = _occ(r[2]), _occ(r[3]), _occ(r[4])
            if not (len(keys) == len(vers) == len(corrs)):
                info["misaligned_frames"] += 1
            bad = "Unsupported" in r[6] or "Unknown" in r[6]
            for k, v, c in zip(keys, vers, corrs):
                req[(int(k), int(v), int(c))] += 1
                if bad:  # header decoded, body not: a version (or key) tshark 4.0 lacks
                    info[f"body not decoded: api_key {k} v{v}"] += 1
        out = {"requests": req, "topics": topics}
    else:
        frames: Counter[Any] = Counter()
        keys_: Counter[Any] = Counter()
        queues: Counter[Any] = Counter()
        for r in rows:
            cls, meth = _occ(r[2]), _occ(r[3])
            if len(cls) != len(meth):
                info["misaligned_frames"] += 1
            for c, m in zip(cls, meth):
                frames[mkcapture_msg.amqp_name(int(c), int(m))] += 1
            for v in _occ(r[4]):
                keys_[v] += 1
            for v in _occ(r[5]):
                queues[v] += 1
        out = {"frames": frames, "routing_keys": keys_, "queues": queues}
    return out, dict(info)


# ---------------------------------------------------------------------------------------------
# comparing and explaining


def _ex(c: Counter[Any], k: int = 6) -> list[str]:
    return [f"{n}x {key}" for key, n in sorted(c.items(), key=lambda kv: -kv[1])[:k]]


def explain_tshark(proto: str, name: str, missing: Counter[Any], extra: Counter[Any],
                   manifest: dict[str, Any]) -> tuple[int, str]:
    """(how many of tshark's differences a known tshark 4.0 limitation explains, which one)."""
    n = sum(missing.values()) + sum(extra.values())
    if proto == "redis" and name == "reply_values":
        # RESP3 (redis-py 7 says HELLO 3): tshark 4.0 knows RESP2 only and loses RESP3
        # aggregates with (some of) their elements: explained when every missing value is, or
        # is inside, a RESP3-only reply of the truth
        resp3 = mkcapture_msg.expected(manifest)["resp3_values"]
        if not extra and not (missing - resp3):
            return n, ("RESP3 replies (redis-py sends HELLO 3): tshark 4.0's resp dissector "
                       "knows RESP2 only and drops a map and the values in it")
    if proto == "redis" and name == "requests":
        # a command whose RESP array straddles a segment boundary: tshark 4.0 sometimes loses
        # it and reads its tail as a command of its own (("F26", "26"): the field and value of
        # an HSET whose head was in the previous segment), and the commands behind it in the
        # same frame shift. Explained when every missing command's key is the key of some
        # command that straddles a boundary in the truth (a plausibility check per key, the
        # pipelines use one key) and no extra one is a real command name.
        exp = mkcapture_msg.expected(manifest)
        names = {cmd for cmd, _ in exp["requests"]}
        cut_keys = {key for _, key in exp["requests_straddling"]}
        if all(key in cut_keys for _, key in missing) and not any(
                cmd in names for cmd, _ in extra):
            return n, ("commands whose RESP array straddles a TCP segment boundary: tshark "
                       "4.0 loses some and reads their tails as commands of their own")
    if proto == "kafka" and name == "topics" and all(
            t == "[ Null ]" or not t.isprintable() for t in set(missing) | set(extra)):
        return n, ("garbled names tshark 4.0 reads from bodies of versions it does not "
                   "support (e.g. 'h.c\\x02', the tail of 'bench.c'), and null names")
    return 0, ""


def compare(res: dict[str, Any], key: str, proto: str, want: dict[str, Counter[Any]],
            got: dict[str, Counter[Any]], manifest: dict[str, Any] | None,
            names: tuple[str, str] = ("missing", "extra")) -> int:
    """Compare every set both hold; returns the number of unexplained differences."""
    res[key] = {}
    unexplained = 0
    for name in want:
        if name not in got or name == "errors":
            continue
        a, b = want[name] - got[name], got[name] - want[name]
        n = sum(a.values()) + sum(b.values())
        # explain_tshark takes (missing from tshark, extra in tshark): against shark-tui
        # (names "only_tshark", "only_shark_tui") a is tshark's extra, b its missing
        ta, tb = (b, a) if names[0] == "only_tshark" else (a, b)
        explained, why = (explain_tshark(proto, name, ta, tb, manifest)
                          if manifest is not None else (0, ""))
        res[key][name] = {"compared": sum(want[name].values()), names[0]: sum(a.values()),
                          names[1]: sum(b.values()), "explained": explained,
                          **({"why": why} if why else {}),
                          f"{names[0]}_examples": _ex(a), f"{names[1]}_examples": _ex(b)}
        unexplained += n - explained
    return unexplained


def tshark_argv(proto: str, capture: Path, port: int) -> list[str]:
    d = DISSECTOR[proto]
    argv = ["tshark", "-r", str(capture), "-d", f"tcp.port=={port},{d}",
            "-o", "tcp.desegment_tcp_streams:TRUE", "-o", "tcp.reassemble_out_of_order:TRUE",
            "-Y", d, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
            "-E", f"aggregator={AGG}"]
    for fld in TSHARK_FIELDS[proto]:
        argv += ["-e", fld]
    return argv


def bench(proto: str, capture: Path, skip_shark: bool = False, skip_tshark: bool = False,
          log: Any = print) -> dict[str, Any]:
    manifest = mkcapture.load_manifest(capture)
    port = manifest["port"]
    out = mkcapture.OUT_DIR
    primary = {"redis": "entries", "kafka": "requests", "amqp": "frames"}[proto]
    with open(capture, "rb") as f:
        while f.read(1 << 24):
            pass
    runs: dict[str, Run] = {}
    runs["tcpdump"] = measure("tcpdump", ["tcpdump", "-r", str(capture), "-w", "/dev/null"], None)
    if not skip_shark:
        runs["shark-tui"] = measure(
            "shark-tui", [*shark_tui_argv(), "dissect", str(capture), "--json"],
            out / f"{capture.stem}.shark-tui.jsonl", cwd=mkcapture.REPO_DIR)
    if not skip_tshark:
        runs["tshark"] = measure("tshark", tshark_argv(proto, capture, port),
                                 out / f"{capture.stem}.tshark.tsv")
    # the truth is loaded after the runs: a tool's ru_maxrss counts the pages it shared with
    # this process between fork and exec, so this process stays small while they run
    expected = mkcapture_msg.expected(manifest)
    if proto == "kafka":
        expected["topics"] = Counter({t: 1 for t in manifest["clients"]["produced"]})
    res: dict[str, Any] = {"proto": proto, "capture": str(capture),
                           "packets": manifest["packets"], "connections": manifest["connections"],
                           "bytes": manifest["bytes"],
                           "expected_exchanges": sum(expected[primary].values()),
                           "distinct_expected": len(expected[primary]),
                           "expected_sizes": {k: sum(v.values()) for k, v in expected.items()},
                           "runs": {}, "problems": []}
    got: dict[str, dict[str, Counter[Any]]] = {}
    for name, r in runs.items():
        res["runs"][name] = {"argv": r.argv, "wall_s": round(r.wall_s, 3),
                             "cpu_s": round(r.cpu_s, 3), "peak_rss_mb": round(r.peak_rss_mb, 1),
                             "peak_pss_mb": round(r.peak_pss_mb, 1), "returncode": r.returncode,
                             "packets_per_s": round(manifest["packets"] / r.wall_s)}
        if r.returncode != 0:
            res["problems"].append(f"{name} exited {r.returncode}: {r.stderr.strip()[-500:]}")
            continue
        if name == "shark-tui" and r.out is not None:
            sets, protos = shark_sets(proto, r.out)
            got[name] = sets
            res["runs"][name].update(entries=sum(protos.values()), protos=dict(protos),
                                     exchanges=sum(sets[primary].values()),
                                     errors=dict(sets["errors"]))
        elif name == "tshark" and r.out is not None:
            sets, info = tshark_sets(proto, r.out, port)
            got[name] = sets
            res["runs"][name].update(info)
            res["runs"][name]["entries"] = sum(next(iter(sets.values())).values())
            res["runs"][name]["exchanges"] = sum(
                sets.get(primary, sets.get("requests", Counter())).values())
    if "shark-tui" in got:
        n = compare(res, "shark_vs_truth", proto, expected, got["shark-tui"], None)
        if n:
            res["problems"].append(f"shark-tui differs from the truth in {n} items")
    if "tshark" in got:
        n = compare(res, "tshark_vs_truth", proto, expected, got["tshark"], manifest)
        if n:
            res["problems"].append(f"tshark differs from the truth in {n} unexplained items")
    if "tshark" in got and "shark-tui" in got:
        compare(res, "shark_vs_tshark", proto, got["tshark"], got["shark-tui"], manifest,
                ("only_tshark", "only_shark_tui"))
        s, t = runs["shark-tui"], runs["tshark"]
        res["speed_ratio"] = round(t.wall_s / s.wall_s, 2)
        res["memory_ratio"] = round(t.peak_rss_mb / s.peak_rss_mb, 2)
        if s.peak_pss_mb and t.peak_pss_mb:
            res["memory_ratio_pss"] = round(t.peak_pss_mb / s.peak_pss_mb, 2)
    return res


def _compact(res: dict[str, Any]) -> dict[str, Any]:
    """The comparisons as one line per set (``bench_dissect.table`` prints them as JSON)."""
    out = dict(res)
    for key in ("shark_vs_truth", "tshark_vs_truth", "shark_vs_tshark"):
        if key in res:
            lines = {}
            for name, d in res[key].items():
                ex = [x for k, v in d.items() if k.endswith("_examples") for x in v][:6]
                lines[name] = (", ".join(f"{k} {v}" for k, v in d.items()
                                         if not k.endswith("_examples") and k != "why")
                               + (f"; examples {ex}" if ex else "")
                               + (f"; explained by: {d['why']}" if d.get("explained") else ""))
            out[key] = lines
    return out


def table(res: dict[str, Any]) -> str:
    text = bench_dissect.table(_compact(res))
    sizes = ", ".join(f"{k} {n:,}" for k, n in res["expected_sizes"].items())
    undecoded = {k: v for k, v in res["runs"].get("tshark", {}).items()
                 if k.startswith("body not decoded")}
    if undecoded:
        text += "\n\ntshark requests whose body it could not decode (header fields only): " + \
            ", ".join(f"{k[len('body not decoded: '):]} {v:,}" for k, v in sorted(
                undecoded.items(), key=lambda kv: -kv[1])) + \
            f" = {sum(undecoded.values()):,} of {res['runs']['tshark']['exchanges']:,}"
    return f"[{res['proto']}]\n" + text.replace("\n\n", f"\ntruth: {sizes}\n\n", 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="shark-tui dissect vs tshark on Redis/Kafka/AMQP")
    ap.add_argument("--proto", choices=[*mkcapture_msg.PROTOS, "all"], default="all")
    ap.add_argument("--small", action="store_true", help="the CI size (~20 k packets each)")
    ap.add_argument("--capture", type=Path, help="a capture built by bench.mkcapture_msg")
    ap.add_argument("--packets", type=int)
    ap.add_argument("--no-shark-tui", action="store_true")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    protos = list(mkcapture_msg.PROTOS) if args.proto == "all" else [args.proto]
    if args.capture and len(protos) != 1:
        print("bench_msg: --capture needs one --proto", file=sys.stderr)
        return 2
    if not args.no_shark_tui:
        why = shark_tui_available()
        if why:
            print(f"bench_msg: {why}", file=sys.stderr)
            return 2
    if len(protos) > 1:
        # one process per protocol: the truth of one must not inflate the next one's RSS
        rcs, results = [], []
        for i, proto in enumerate(protos):
            one = ["--proto", proto, *(["--small"] if args.small else []),
                   *(["--packets", str(args.packets)] if args.packets else []),
                   *(["--no-shark-tui"] if args.no_shark_tui else []),
                   *(["--no-tshark"] if args.no_tshark else [])]
            tmp = args.json.with_name(f"{args.json.name}.{i}") if args.json else None
            if tmp is not None:
                one += ["--json", str(tmp)]
            rcs.append(subprocess.run([sys.executable, "-m", "bench.bench_msg", *one],
                                      cwd=mkcapture.REPO_DIR).returncode)
            if tmp is not None and tmp.exists():
                results += json.loads(tmp.read_text())
                tmp.unlink()
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return max(rcs)
    results = []
    for proto in protos:
        capture = args.capture or mkcapture_msg.build_profile(
            proto, args.small, args.packets, log=lambda s: print(s, file=sys.stderr))
        res = bench(proto, capture, skip_shark=args.no_shark_tui, skip_tshark=args.no_tshark)
        print(table(res), flush=True)
        print()
        results.append(res)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
