"""What eBPF TLS capture costs a TLS client: per-request wall time with and without the probes.

One run, the same loads in every phase, phases interleaved (rounds of: nothing capturing,
``tcpdump -i lo``, ``shark-tui daemon`` on lo without ``--tls``, and with ``--tls``), medians
per phase. Loads, all against real servers on loopback:

- ``curl-new``: one ``curl`` process per request (process start + TLS handshake + request);
- ``curl-keepalive``: one ``curl`` process, many URLs on one TLS connection (SSL calls only);
- ``python-keepalive``: a Python ``http.client`` over ``ssl`` (system libssl), one connection;
- ``go-keepalive``: a Go ``net/http`` client (crypto/tls) to a Go HTTPS server, one connection,
  HTTP/1.1 (both built here from tests/ebpf/go with Debian's golang-go); timed by the client
  itself, from its first request to its last, after a pause that lets the tracer probe it.

With ``--tls`` every SSL_read/SSL_write of both ends (client and server are both on this host
and both use libssl; the Go pair: both ends' crypto/tls Write and Read) is probed: the overhead
per request is what those probe hits cost. The run also checks that the daemon stored every
request of the ``--tls`` phase as an entry.

    python -m bench.bench_tls            # full size
    python -m bench.bench_tls --small    # what CI runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.daemonpeers import SHARK, Daemon
from tests.ebpf import goprogs, tlspeers

OUT = Path(__file__).resolve().parent / "out"
PHASES = ("none", "tcpdump", "daemon", "daemon --tls")
GO_DELAY_MS = 2500


def _curl_new(url: str, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(["curl", "-sk", "-o", "/dev/null", url], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    return (time.perf_counter() - t) / n


def _curl_keepalive(url: str, n: int) -> float:
    t = time.perf_counter()
    subprocess.run(["curl", "-sk", *([url] * n)], check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t) / n


def _python_keepalive(port: int, n: int) -> float:
    t = time.perf_counter()
    tlspeers.python_tls_client(port, "bench", n)
    return (time.perf_counter() - t) / n


def _go_keepalive(client: str, port: int, n: int) -> float:
    # the pause: the tracer probes a new Go program at its next scan (once a second)
    out = goprogs.client(client, f"https://127.0.0.1:{port}", "bench", n, "h1", GO_DELAY_MS)
    assert len(out["replies"]) == n and len(out["locals"]) == 1
    return float(out["elapsed_ns"]) / 1e9 / n


def _count(sock: str, token: str, flt: str) -> int:
    out = subprocess.run(
        [SHARK, "dissect", "--attach", sock, "--token-file", token, "--filter", flt],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    return len(out.splitlines())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="CI size")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    rounds = args.rounds or (1 if args.small else 5)
    sizes = {"curl-new": 20, "curl-keepalive": 200, "python-keepalive": 200,
             "go-keepalive": 200} if args.small else {
        "curl-new": 200, "curl-keepalive": 3000, "python-keepalive": 3000,
        "go-keepalive": 3000}  # fmt: skip
    times: dict[str, dict[str, list[float]]] = {load: {p: [] for p in PHASES} for load in sizes}
    captured: dict[str, int] = {}
    expected: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="shark-bench-tls-") as tmp:
        cert, _ = tlspeers.make_cert(Path(tmp))
        gobin = goprogs.build(f"{tmp}/go", {"plain": []})["plain"]
        goserver, goport = goprogs.server(gobin["server"], cert)
        try:
            with tlspeers.nginx_tls("bench") as ngx, \
                    tlspeers.python_tls_server(cert) as (pyport, _):
                url = f"https://127.0.0.1:{ngx.port}/api/items"
                for r in range(rounds):
                    for phase in PHASES:
                        store = f"{tmp}/store-{r}-{phase.replace(' ', '')}"
                        sock, token = f"unix:{tmp}/sock", f"{tmp}/token"
                        cap: Any = None
                        if phase == "tcpdump":
                            cap = subprocess.Popen(["tcpdump", "-i", "lo", "-w", "/dev/null", "-q"],
                                                   stderr=subprocess.DEVNULL)  # fmt: skip
                            time.sleep(1.0)
                        elif phase.startswith("daemon"):
                            extra = ["--tls"] if phase.endswith("--tls") else []
                            cap = Daemon(store, *extra, "--iface", "lo", "--listen", sock,
                                         "--token-file", token)  # fmt: skip
                            cap.wait_for("capturing on", timeout=60)
                        try:
                            times["curl-new"][phase].append(_curl_new(url, sizes["curl-new"]))
                            times["curl-keepalive"][phase].append(
                                _curl_keepalive(url, sizes["curl-keepalive"])
                            )
                            times["python-keepalive"][phase].append(
                                _python_keepalive(pyport, sizes["python-keepalive"])
                            )
                            times["go-keepalive"][phase].append(
                                _go_keepalive(gobin["client"], goport, sizes["go-keepalive"])
                            )
                            if phase == "daemon --tls" and r == 0:
                                time.sleep(1.5)
                                expected = {"nginx": sizes["curl-new"] + sizes["curl-keepalive"],
                                            "python": sizes["python-keepalive"],
                                            "go": sizes["go-keepalive"]}  # fmt: skip
                                captured = {
                                    "nginx": _count(sock, token, f"tls and dst.port == {ngx.port}"),
                                    "python": _count(sock, token, f"tls and dst.port == {pyport}"),
                                    "go": _count(sock, token, f"tls and dst.port == {goport}"),
                                }
                        finally:
                            if isinstance(cap, Daemon):
                                cap.stop()
                            elif cap is not None:
                                cap.terminate()
                                cap.wait(10)
        finally:
            goserver.terminate()
            goserver.wait(10)
    res: dict[str, Any] = {"rounds": rounds, "sizes": sizes, "captured": captured,
                           "expected": expected, "loads": {}}  # fmt: skip
    head = f"{'load':<18}" + "".join(f"{p:>15}" for p in PHASES) + f"{'probes add':>13}"
    lines = [f"eBPF TLS overhead, {rounds} round(s), medians, µs per request", head]
    for load, per in times.items():
        med = {p: statistics.median(v) * 1e6 for p, v in per.items()}
        res["loads"][load] = med
        lines.append(f"{load:<18}" + "".join(f"{med[p]:>15.0f}" for p in PHASES)
                     + f"{med['daemon --tls'] - med['daemon']:>13.0f}")  # fmt: skip
    lines.append(f"entries stored with --tls: {captured} of {expected}")
    print("\n".join(lines))
    OUT.mkdir(exist_ok=True)
    name = "tls-results-small.json" if args.small else "tls-results.json"
    (OUT / name).write_text(json.dumps(res, indent=2))
    ok = captured == expected
    if not ok:
        print("error: the daemon did not store every request as an entry", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench_tls needs root (capture and eBPF)")
    sys.exit(main())
