"""The h2c/gRPC dissect benchmark: ``shark-tui dissect --json`` against ``tshark`` on one capture.

    python -m bench.bench_h2            # full size (builds/reuses the ≥ 550 k-packet file)
    python -m bench.bench_h2 --small    # the CI size
    python -m bench.bench_h2 --capture FILE.pcap   # a capture built by bench.mkcapture_h2

In one run, on one file (page cache warmed first, tools run one after another, each measured
by ``bench.bench_dissect.measure``: wall, CPU, peak RSS and PSS of the process tree):

- ``tcpdump -r FILE -w /dev/null`` — the raw read floor;
- ``shark-tui dissect FILE --json`` — one entry per HTTP/2 stream: ``http2`` entries give
  (``method``, ``summary`` = ``:path``, ``status`` = ``:status``), ``grpc`` entries
  (``method`` = ``package.Service/Method``, ``summary`` = ``:path``, ``status`` = grpc-status);
- ``tshark -r FILE -d tcp.port==9080,http2 -d tcp.port==50051,http2 -Y http2.type==1 -T fields
  -E occurrence=a ...`` — every HEADERS frame's header list. One packet often carries several
  HTTP/2 frames of several streams, and ``http2.headers.method``/``path``/``status`` occur only
  in the frames that hold them, so their occurrences cannot be matched to stream ids. Instead
  the per-frame fields are aligned: ``http2.streamid`` and ``http2.type`` occur once per
  frame, ``http2.header.length`` (the block's decoded size) once per HEADERS frame, and
  ``http2.header.name``/``value`` once per header: a packet's header list is cut into its
  frames' blocks by those sizes. Per (``tcp.stream``, stream id): the request's ``:method``,
  ``:path`` and ``content-type``, the first final ``:status``, and ``grpc-status`` from the response
  trailers (or from a trailers-only response). A stream is gRPC when its request's
  content-type starts with ``application/grpc``.

The (kind, method, path, status) multisets of both tools are compared with the truth — what
the clients recorded (nghttp's HAR, the ``h2`` library's events, grpcio's status codes),
expanded over the copies — and with each other. Exit status: 0 when shark-tui equals the truth
and every tshark difference is explained; 1 otherwise; 2 for bad usage (or a missing tool).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import bench_dissect, mkcapture, mkcapture_h2
from bench.bench_dissect import AGG, Run, measure, shark_tui_argv, shark_tui_available
from bench.mkcapture_h2 import Stream

H2_PROTOS = {"http2", "grpc"}
TSHARK_FIELDS = ["frame.number", "tcp.stream", "tcp.dstport", "http2.streamid", "http2.type",
                 "http2.header.length", "http2.header.name", "http2.header.value"]


# ---------------------------------------------------------------------------------------------
# reading the tools' outputs


def shark_streams(path: Path) -> tuple[Counter[Stream], Counter[str]]:
    """(kind, method, summary, status) of the http2/grpc entries of ``dissect --json``; and
    the count of entries per proto."""
    import msgspec

    class Entry(msgspec.Struct):
        proto: str | None = None
        method: str | None = None
        summary: str | None = None
        status: Any = None

    dec = msgspec.json.Decoder(Entry)
    got: Counter[Stream] = Counter()
    protos: Counter[str] = Counter()
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            e = dec.decode(line)
            protos[str(e.proto)] += 1
            if e.proto in H2_PROTOS:
                got[(e.proto, e.method, e.summary, e.status)] += 1
    return got, protos


class _H2Stream:
    __slots__ = ("ctype", "grpc_status", "method", "order", "path", "status")

    def __init__(self, order: int) -> None:
        self.method: str | None = None
        self.path: str | None = None
        self.ctype: str | None = None
        self.status: int | None = None
        self.grpc_status: int | None = None
        self.order = order


def _split_blocks(lengths: list[int], names: list[str],
                  values: list[str]) -> list[list[tuple[str, str]]] | None:
    """Split a packet's header list into its HEADERS frames' blocks, by each block's decoded
    size (``http2.header.length``: tshark 4.0 sums name + value + 8 over the block's headers,
    its own measure, not RFC 7541's + 32). Not by ``http2.header.count``: that also counts a
    dynamic table size update, which has no name or value. None when the sizes do not add
    up."""
    blocks: list[list[tuple[str, str]]] = []
    pos = 0
    for want in lengths:
        acc = 0
        block = []
        while acc < want and pos < len(names):
            n, v = names[pos], values[pos]
            acc += len(n.encode()) + len(v.encode()) + 8
            block.append((n, v))
            pos += 1
        if acc != want:
            return None
        blocks.append(block)
    return blocks if pos == len(names) else None


def tshark_streams(path: Path, server_ports: set[int]) -> tuple[Counter[Stream], dict[str, int]]:
    """(kind, method, path, status) per HTTP/2 stream from tshark's fields output."""
    streams: dict[tuple[int, int], _H2Stream] = {}
    misaligned = headers_frames = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < len(TSHARK_FIELDS):
                continue
            tcp_stream = int(cols[1])
            to_server = int(cols[2]) in server_ports
            sids = cols[3].split(AGG) if cols[3] else []
            types = cols[4].split(AGG) if cols[4] else []
            lengths = [int(c) for c in cols[5].split(AGG)] if cols[5] else []
            names = cols[6].split(AGG) if cols[6] else []
            values = cols[7].split(AGG) if cols[7] else []
            heads = [int(s) for s, t in zip(sids, types) if t == "1"]
            if len(sids) != len(types) or len(heads) != len(lengths) or len(names) != len(
                    values):
                misaligned += 1
                continue
            blocks = _split_blocks(lengths, names, values)
            if blocks is None:
                misaligned += 1
                continue
            for sid, hdrs in zip(heads, blocks):
                headers_frames += 1
                key = (tcp_stream, sid)
                st = streams.get(key)
                if st is None:
                    st = streams[key] = _H2Stream(len(streams))
                d = dict(hdrs)
                if to_server:
                    if ":method" in d and st.method is None:
                        st.method = d[":method"]
                        st.path = d.get(":path")
                        st.ctype = d.get("content-type")
                    continue
                if ":status" in d and st.status is None:
                    code = int(d[":status"])
                    if code >= 200:
                        st.status = code
                if "grpc-status" in d:
                    st.grpc_status = int(d["grpc-status"])
    got: Counter[Stream] = Counter()
    no_request = no_response = 0
    for st in streams.values():
        if st.method is None:
            no_request += 1
        if st.status is None:
            no_response += 1
        if st.ctype and st.ctype.startswith("application/grpc"):
            m = st.path[1:] if st.path and st.path.startswith("/") else st.path
            got[("grpc", m, st.path, st.grpc_status)] += 1
        else:
            got[("http2", st.method, st.path, st.status)] += 1
    return got, {"streams": len(streams), "headers_frames": headers_frames,
                 "packets_misaligned": misaligned, "streams_without_request": no_request,
                 "streams_without_response": no_response}


# ---------------------------------------------------------------------------------------------
# comparing


def fmt_examples(c: Counter[Stream], k: int = 6) -> list[str]:
    return [f"{n}x {kind} {m} {p} {s}" for (kind, m, p, s), n in sorted(
        c.items(), key=lambda kv: tuple(str(x) for x in kv[0]))[:k]]


def explain(missing: Counter[Stream], extra: Counter[Stream]) -> tuple[int, list[str]]:
    """How many differences are explained, and the unexplained ones (none are expected: both
    tools see every connection from its SYN, so HPACK state is always known)."""
    bad = [f"missing {n}x {st}" for st, n in missing.items()]
    bad += [f"extra {n}x {st}" for st, n in extra.items()]
    return 0, bad


def compare(res: dict[str, Any], key: str, want: Counter[Stream], got: Counter[Stream],
            names: tuple[str, str] = ("missing", "extra")) -> list[str]:
    a, b = want - got, got - want
    explained, bad = explain(a, b)
    res[key] = {names[0]: sum(a.values()), names[1]: sum(b.values()),
                "explained": explained, "unexplained": sum(a.values()) + sum(b.values())
                - explained,
                f"{names[0]}_examples": fmt_examples(a), f"{names[1]}_examples": fmt_examples(b)}
    return bad


# ---------------------------------------------------------------------------------------------
# the benchmark


def tshark_argv(capture: Path, ports: list[int]) -> list[str]:
    argv = ["tshark", "-r", str(capture)]
    for p in ports:
        argv += ["-d", f"tcp.port=={p},http2"]
    argv += ["-o", "tcp.desegment_tcp_streams:TRUE", "-o", "tcp.reassemble_out_of_order:TRUE",
             "-Y", "http2.type==1", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
             "-E", f"aggregator={AGG}"]
    for fld in TSHARK_FIELDS:
        argv += ["-e", fld]
    return argv


def bench(capture: Path, skip_shark: bool = False, skip_tshark: bool = False,
          log: Any = print) -> dict[str, Any]:
    manifest = mkcapture.load_manifest(capture)
    out = mkcapture.OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    expected = mkcapture_h2.expected_streams(manifest)
    ports = [manifest["nginx_port"], manifest["grpc_port"]]
    with open(capture, "rb") as f:  # warm the page cache: every tool reads from memory
        while f.read(1 << 24):
            pass
    runs: dict[str, Run] = {}
    runs["tcpdump"] = measure("tcpdump", ["tcpdump", "-r", str(capture), "-w", "/dev/null"], None)
    if not skip_shark:
        runs["shark-tui"] = measure(
            "shark-tui", [*shark_tui_argv(), "dissect", str(capture), "--json"],
            out / f"{capture.stem}.shark-tui.jsonl", cwd=mkcapture.REPO_DIR)
    if not skip_tshark:
        runs["tshark"] = measure("tshark", tshark_argv(capture, ports),
                                 out / f"{capture.stem}.tshark.tsv")
    kinds = Counter()
    for (kind, *_), n in expected.items():
        kinds[kind] += n
    res: dict[str, Any] = {"capture": str(capture), "packets": manifest["packets"],
                           "connections": manifest["connections"],
                           "bytes": manifest["bytes"],
                           "expected_exchanges": sum(expected.values()),
                           "distinct_expected": len(expected),
                           "expected_by_kind": dict(kinds), "runs": {}, "problems": []}
    got: dict[str, Counter[Stream]] = {}
    for name, r in runs.items():
        res["runs"][name] = {"argv": r.argv, "wall_s": round(r.wall_s, 3),
                             "cpu_s": round(r.cpu_s, 3), "peak_rss_mb": round(r.peak_rss_mb, 1),
                             "peak_pss_mb": round(r.peak_pss_mb, 1),
                             "returncode": r.returncode,
                             "packets_per_s": round(manifest["packets"] / r.wall_s)}
        if r.returncode != 0:
            res["problems"].append(f"{name} exited {r.returncode}: {r.stderr.strip()[-500:]}")
            continue
        assert r.out is not None or name == "tcpdump"
        if name == "shark-tui" and r.out is not None:
            ex, protos = shark_streams(r.out)
            got[name] = ex
            res["runs"][name]["entries"] = sum(protos.values())
            res["runs"][name]["protos"] = dict(protos)
            res["runs"][name]["exchanges"] = sum(ex.values())
        elif name == "tshark" and r.out is not None:
            ex, info = tshark_streams(r.out, set(ports))
            got[name] = ex
            res["runs"][name].update(info)
            res["runs"][name]["entries"] = info["streams"]
            res["runs"][name]["exchanges"] = sum(ex.values())
            if info["packets_misaligned"]:
                res["problems"].append(f"tshark: {info['packets_misaligned']} packets whose "
                                       "per-frame fields could not be aligned")
    if "shark-tui" in got:
        bad = compare(res, "shark_vs_truth", expected, got["shark-tui"])
        if bad:
            res["problems"].append(f"shark-tui differs from the truth: {bad[:5]}")
    if "tshark" in got:
        bad = compare(res, "tshark_vs_truth", expected, got["tshark"])
        if bad:
            res["problems"].append(f"tshark differs from the truth: {bad[:5]}")
    if "tshark" in got and "shark-tui" in got:
        compare(res, "shark_vs_tshark", got["tshark"], got["shark-tui"],
                ("only_tshark", "only_shark_tui"))
        s, t = runs["shark-tui"], runs["tshark"]
        res["speed_ratio"] = round(t.wall_s / s.wall_s, 2)
        res["memory_ratio"] = round(t.peak_rss_mb / s.peak_rss_mb, 2)
        if s.peak_pss_mb and t.peak_pss_mb:
            res["memory_ratio_pss"] = round(t.peak_pss_mb / s.peak_pss_mb, 2)
    return res


def table(res: dict[str, Any]) -> str:
    text = bench_dissect.table(res)
    kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(res["expected_by_kind"].items()))
    return text.replace("\n\n", f"\nexpected streams by kind: {kinds}\n\n", 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="shark-tui dissect vs tshark on h2c/gRPC")
    ap.add_argument("--small", action="store_true", help="the CI size (~20 k packets)")
    ap.add_argument("--capture", type=Path, help="a capture built by bench.mkcapture_h2")
    ap.add_argument("--packets", type=int)
    ap.add_argument("--no-shark-tui", action="store_true", help="validate with tshark only")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.capture:
        capture = args.capture
        if not Path(str(capture) + ".json").exists():
            print(f"bench_h2: {capture} has no manifest ({capture}.json)", file=sys.stderr)
            return 2
    else:
        capture = mkcapture_h2.build_profile(args.small, args.packets,
                                             log=lambda s: print(s, file=sys.stderr))
    if not args.no_shark_tui:
        why = shark_tui_available()
        if why:
            print(f"bench_h2: {why}", file=sys.stderr)
            return 2
    res = bench(capture, skip_shark=args.no_shark_tui, skip_tshark=args.no_tshark)
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
