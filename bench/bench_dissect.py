"""The dissect benchmark: ``shark-tui dissect --json`` against ``tshark`` on the same capture.

    python -m bench.bench_dissect            # full size (builds/reuses the ≥ 1.1 M-packet file)
    python -m bench.bench_dissect --small    # the CI size
    python -m bench.bench_dissect --capture FILE.pcap   # a capture built by bench.mkcapture

In one run, on one file (page cache warmed first, tools run one after another):

- ``tcpdump -r FILE -w /dev/null`` — the raw read floor;
- ``shark-tui dissect FILE --json`` — stdout to a file, then counted;
- ``tshark -r FILE -Y http -T fields ...`` — stdout to a file, then paired into exchanges:
  requests give (method, uri), responses their code; within each TCP stream a response is
  paired with the oldest unanswered request (HTTP/1 order; tshark's own ``http.request_in``
  is wrong for pipelined requests that share a frame, so it is only checked, not used);
  requests left over have no status.

Each tool's wall time, CPU time and peak RSS are measured around its own process
(``os.wait4`` rusage ``ru_maxrss``, and a 20 ms poll of the summed RSS of its process tree; the
larger is reported). Then the (method, uri, status) multisets are compared: shark-tui's from its
entries (``method``, ``summary``, ``status``, HTTP entries only), tshark's as above, and both
against the truth — the servers' own records of the seed, expanded over the copies. Differences
are counted, explained where a known tshark limitation applies (a ``HEAD`` in a pipelined
connection: tshark cannot tell which response answers the HEAD, expects a body of its
``Content-Length`` after it, and loses that response and the ones behind it; a difference is
explained when its URI was carried by such a seed connection), and shown.

Exit status: 0 when shark-tui equals the truth and every tshark difference is explained; 1
otherwise; 2 for bad usage (or a missing tool).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import mkcapture

Exchange = tuple[str | None, str, int | None]

TSHARK_FIELDS = ["frame.number", "tcp.stream", "http.request.method", "http.request.uri",
                 "http.response.code", "http.request_in", "http.response_for.uri"]
AGG = "\x1f"  # tshark's aggregator between occurrences (URIs may hold commas)
HTTP_PROTOS = {"http", "graphql"}


@dataclass
class Run:
    name: str
    argv: list[str]
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    #: Peak of the summed proportional set size (shared pages split between the processes that
    #: map them): the fair figure for a tool that forks workers sharing its pages.
    peak_pss_mb: float = 0.0
    returncode: int = 0
    stderr: str = ""
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# running and measuring


def _tree_mem_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) summed over ``pid`` and its descendants, in KiB."""
    total = pss = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total, pss


def measure(name: str, argv: list[str], out: Path | None, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Run:
    """Run ``argv`` (stdout to ``out`` or /dev/null), measuring wall, CPU and peak RSS."""
    run = Run(name, argv, out=out)
    if out:
        # A new file, not the last run's truncated: ext4 writes a file that was truncated and
        # written again out when it is closed (auto_da_alloc), which bills the tool ~0.35 s
        # for the 956 MB of JSON shark-tui writes on the full capture (measured).
        out.unlink(missing_ok=True)
    stdout = open(out, "wb") if out else open(os.devnull, "wb")  # noqa: SIM115
    errf = tempfile.TemporaryFile()  # noqa: SIM115
    peak = [0, 0]
    done = threading.Event()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=errf, stdin=subprocess.DEVNULL, env=env,
                            cwd=cwd)

    def poll() -> None:
        while not done.wait(0.02):
            rss, pss = _tree_mem_kb(proc.pid)
            peak[0] = max(peak[0], rss)
            peak[1] = max(peak[1], pss)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, ru = os.wait4(proc.pid, 0)
    run.wall_s = time.monotonic() - t0
    done.set()
    poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout.close()
    errf.seek(0)
    run.stderr = errf.read().decode(errors="replace")
    errf.close()
    run.returncode = proc.returncode
    run.cpu_s = ru.ru_utime + ru.ru_stime
    run.peak_rss_mb = max(ru.ru_maxrss, peak[0]) / 1024
    run.peak_pss_mb = peak[1] / 1024
    return run


def shark_tui_argv() -> list[str]:
    script = Path(sys.executable).parent / "shark-tui"
    if script.exists():
        return [str(script)]
    found = shutil.which("shark-tui")
    return [found] if found else [sys.executable, "-m", "shark_tui"]


def shark_tui_available() -> str | None:
    """None when ``shark-tui dissect`` runs, else why not."""
    try:
        p = subprocess.run([*shark_tui_argv(), "dissect", "--help"], capture_output=True,
                           text=True, timeout=60, cwd=mkcapture.REPO_DIR)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"shark-tui dissect --help failed: {e}"
    if p.returncode != 0:
        return f"shark-tui dissect --help exited {p.returncode}: {p.stderr.strip()[-300:]}"
    return None


# ---------------------------------------------------------------------------------------------
# reading the tools' outputs


def shark_exchanges(path: Path) -> tuple[Counter[Exchange], Counter[str]]:
    """(method, summary, status) of the HTTP entries of ``dissect --json`` output; and the count
    of entries per proto."""
    import msgspec

    class Entry(msgspec.Struct):
        proto: str | None = None
        method: str | None = None
        summary: str | None = None
        status: Any = None

    dec = msgspec.json.Decoder(Entry)
    ex: Counter[Exchange] = Counter()
    protos: Counter[str] = Counter()
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            e = dec.decode(line)
            protos[str(e.proto)] += 1
            if e.proto in HTTP_PROTOS:
                ex[(e.method, e.summary or "", e.status)] += 1
    return ex, protos


def _uri_path(full: str) -> str:
    """``http://host[:port]/p?q`` -> ``/p?q`` (tshark's ``http.response_for.uri``)."""
    i = full.find("://")
    if i < 0:
        return full
    j = full.find("/", i + 3)
    return full[j:] if j >= 0 else "/"


def tshark_exchanges(path: Path) -> tuple[Counter[Exchange], dict[str, int]]:
    """Exchanges from tshark's fields output.

    HTTP/1 answers in request order, so within each TCP stream (``tcp.stream``) a response is
    paired with the oldest request still waiting. tshark's own ``http.request_in`` is not used
    for the pairing: with several pipelined requests in one frame it points every response at
    the last of them (and leaves the other responses without a request); how often it
    disagreed with the order is counted as ``request_in_disagrees``."""
    pending: dict[int, deque[tuple[str, str, int]]] = {}
    ex: Counter[Exchange] = Counter()
    nreq = nresp = orphans = disagree = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 7:
                continue
            frame, stream = int(cols[0]), int(cols[1])
            methods = cols[2].split(AGG) if cols[2] else []
            uris = cols[3].split(AGG) if cols[3] else []
            q = pending.setdefault(stream, deque())
            for k, m in enumerate(methods):
                q.append((m, uris[k] if k < len(uris) else "", frame))
                nreq += 1
            codes = cols[4].split(AGG) if cols[4] else []
            req_in = cols[5].split(AGG) if cols[5] else []
            rfu = cols[6].split(AGG) if cols[6] else []
            for k, c in enumerate(codes):
                nresp += 1
                if q:
                    m, u, rframe = q.popleft()
                    ex[(m, u, int(c))] += 1
                    if k >= len(req_in) or int(req_in[k]) != rframe or (
                            k < len(rfu) and _uri_path(rfu[k]) != u):
                        disagree += 1
                else:
                    orphans += 1
                    ex[(None, _uri_path(rfu[k]) if k < len(rfu) else "", int(c))] += 1
    unanswered = 0
    for q in pending.values():
        for m, u, _ in q:
            unanswered += 1
            ex[(m, u, None)] += 1
    return ex, {"requests": nreq, "responses": nresp, "responses_without_request": orphans,
                "requests_without_response": unanswered, "request_in_disagrees": disagree}


# ---------------------------------------------------------------------------------------------
# comparing


_COPY = re.compile(r"q\d{6}")


def diff(a: Counter[Exchange], b: Counter[Exchange]) -> tuple[Counter[Exchange],
                                                               Counter[Exchange]]:
    """(in a not in b, in b not in a) as multisets."""
    return a - b, b - a


def explain_tshark(missing: Counter[Exchange], extra: Counter[Exchange],
                   uri_flags: dict[str, list[dict[str, Any]]]) -> tuple[int, list[str]]:
    """How many of tshark's differences from the truth are explained, and the unexplained."""

    def pipelined_head(uri: str) -> bool:
        flags = uri_flags.get(_COPY.sub("q000000", uri), [])
        return any(f["pipeline_with_head"] for f in flags)

    explained = 0
    bad: list[str] = []
    for kind, cnt in (("missing", missing), ("extra", extra)):
        for (m, u, s), n in cnt.items():
            if pipelined_head(u):
                explained += n
            else:
                bad.append(f"tshark {kind} {n}x {m} {u} {s}")
    return explained, bad


def fmt_examples(c: Counter[Exchange], k: int = 5) -> list[str]:
    return [f"{n}x {m} {u} {s}" for (m, u, s), n in sorted(
        c.items(), key=lambda kv: (str(kv[0][1]), str(kv[0][0])))[:k]]


# ---------------------------------------------------------------------------------------------
# the benchmark


def bench(capture: Path, skip_shark: bool = False, skip_tshark: bool = False,
          log: Any = print) -> dict[str, Any]:
    manifest = mkcapture.load_manifest(capture)
    out = mkcapture.OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    expected = mkcapture.expected_exchanges(manifest)
    uri_flags = mkcapture.seed_uri_flags(manifest)
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
        argv = ["tshark", "-r", str(capture), "-o", "tcp.desegment_tcp_streams:TRUE",
                "-o", "tcp.reassemble_out_of_order:TRUE",
                "-Y", "http", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
                "-E", f"aggregator={AGG}"]
        for fld in TSHARK_FIELDS:
            argv += ["-e", fld]
        runs["tshark"] = measure("tshark", argv, out / f"{capture.stem}.tshark.tsv")
    res: dict[str, Any] = {"capture": str(capture), "packets": manifest["packets"],
                           "connections": manifest["connections"],
                           "bytes": manifest["bytes"], "expected_exchanges": sum(expected.values()),
                           "distinct_expected": len(expected), "runs": {}, "problems": []}
    got: dict[str, Counter[Exchange]] = {}
    for name, r in runs.items():
        res["runs"][name] = {"argv": r.argv, "wall_s": round(r.wall_s, 3),
                             "cpu_s": round(r.cpu_s, 3), "peak_rss_mb": round(r.peak_rss_mb, 1),
                             "peak_pss_mb": round(r.peak_pss_mb, 1),
                             "returncode": r.returncode,
                             "packets_per_s": round(manifest["packets"] / r.wall_s)}
        if r.returncode != 0:
            res["problems"].append(f"{name} exited {r.returncode}: {r.stderr.strip()[-500:]}")
            continue
        if name == "shark-tui":
            assert r.out is not None
            ex, protos = shark_exchanges(r.out)
            got[name] = ex
            res["runs"][name]["entries"] = sum(protos.values())
            res["runs"][name]["protos"] = dict(protos)
            res["runs"][name]["exchanges"] = sum(ex.values())
        elif name == "tshark":
            assert r.out is not None
            ex, info = tshark_exchanges(r.out)
            got[name] = ex
            res["runs"][name].update(info)
            res["runs"][name]["exchanges"] = sum(ex.values())
    if "shark-tui" in got:
        missing, extra = diff(expected, got["shark-tui"])
        res["shark_vs_truth"] = {"missing": sum(missing.values()), "extra": sum(extra.values()),
                                 "missing_examples": fmt_examples(missing),
                                 "extra_examples": fmt_examples(extra)}
        if missing or extra:
            res["problems"].append(
                f"shark-tui differs from the truth: {sum(missing.values())} missing, "
                f"{sum(extra.values())} extra")
    if "tshark" in got:
        missing, extra = diff(expected, got["tshark"])
        explained, bad = explain_tshark(missing, extra, uri_flags)
        res["tshark_vs_truth"] = {"missing": sum(missing.values()), "extra": sum(extra.values()),
                                  "explained": explained, "unexplained": len(bad),
                                  "missing_examples": fmt_examples(missing),
                                  "extra_examples": fmt_examples(extra),
                                  "unexplained_examples": bad[:10]}
        if bad:
            res["problems"].append(f"tshark differs from the truth in {len(bad)} unexplained ways")
    if "tshark" in got and "shark-tui" in got:
        only_shark, only_tshark = diff(got["shark-tui"], got["tshark"])
        explained, bad = explain_tshark(only_shark, only_tshark, uri_flags)
        res["shark_vs_tshark"] = {
            "only_shark_tui": sum(only_shark.values()), "only_tshark": sum(only_tshark.values()),
            "symmetric_difference": sum(only_shark.values()) + sum(only_tshark.values()),
            "explained": explained, "unexplained": len(bad),
            "only_shark_tui_examples": fmt_examples(only_shark),
            "only_tshark_examples": fmt_examples(only_tshark)}
        s, t = runs["shark-tui"], runs["tshark"]
        res["speed_ratio"] = round(t.wall_s / s.wall_s, 2)
        res["memory_ratio"] = round(t.peak_rss_mb / s.peak_rss_mb, 2)
        if s.peak_pss_mb and t.peak_pss_mb:
            res["memory_ratio_pss"] = round(t.peak_pss_mb / s.peak_pss_mb, 2)
    return res


def table(res: dict[str, Any]) -> str:
    lines = [f"capture  {res['capture']}",
             f"packets  {res['packets']:,}   connections {res['connections']:,}   "
             f"bytes {res['bytes'] / 1e6:,.0f} MB   expected exchanges "
             f"{res['expected_exchanges']:,} ({res['distinct_expected']:,} distinct)",
             "",
             f"{'tool':<10} {'entries':>9} {'exchanges':>9} {'wall s':>8} {'cpu s':>8} "
             f"{'packets/s':>10} {'peak RSS MB':>11} {'peak PSS MB':>11}"]
    for name, r in res["runs"].items():
        lines.append(f"{name:<10} {r.get('entries', r.get('responses', '-')):>9} "
                     f"{r.get('exchanges', '-'):>9} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} "
                     f"{r['packets_per_s']:>10,} {r['peak_rss_mb']:>11.1f} "
                     f"{r.get('peak_pss_mb', 0.0):>11.1f}")
    if "speed_ratio" in res:
        lines += ["", f"speed ratio (tshark wall / shark-tui wall): {res['speed_ratio']}x   "
                      f"memory ratio (tshark RSS / shark-tui RSS): {res['memory_ratio']}x   "
                      f"(by PSS, shared pages split: {res.get('memory_ratio_pss', '-')}x)"]
    for k in ("shark_vs_truth", "tshark_vs_truth", "shark_vs_tshark"):
        if k in res:
            lines += ["", f"{k}: " + json.dumps(res[k], indent=1)]
    lines += ["", "commands:"]
    lines += [f"  {name}: {' '.join(_q(a) for a in r['argv'])}" for name, r in res["runs"].items()]
    if res["problems"]:
        lines += ["", "PROBLEMS:"] + [f"  {p}" for p in res["problems"]]
    return "\n".join(lines)


def _q(a: str) -> str:
    if a == AGG:
        return "$'\\x1f'"
    if a.startswith("aggregator="):
        return "aggregator=$'\\x1f'"
    return a if re.fullmatch(r"[\w@%+=:,./-]+", a) else "'" + a.replace("'", "'\\''") + "'"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="shark-tui dissect vs tshark")
    ap.add_argument("--small", action="store_true", help="the CI size (~20 k packets)")
    ap.add_argument("--capture", type=Path, help="a capture built by bench.mkcapture")
    ap.add_argument("--packets", type=int)
    ap.add_argument("--min-conns", type=int)
    ap.add_argument("--no-shark-tui", action="store_true", help="validate with tshark only")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.capture:
        capture = args.capture
        if not Path(str(capture) + ".json").exists():
            print(f"bench: {capture} has no manifest ({capture}.json)", file=sys.stderr)
            return 2
    else:
        prof = mkcapture.SMALL if args.small else mkcapture.FULL
        capture = mkcapture.build(args.packets or prof["packets"],
                                  args.min_conns or prof["min_conns"], prof["seed_conns"],
                                  log=lambda s: print(s, file=sys.stderr))
    if not args.no_shark_tui:
        why = shark_tui_available()
        if why:
            print(f"bench: {why}", file=sys.stderr)
            return 2
    res = bench(capture, skip_shark=args.no_shark_tui, skip_tshark=args.no_tshark)
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
