"""Go crypto/tls plaintext through eBPF, end to end: a Go HTTPS server and a Go HTTPS client
(standard library only, built here with Debian's golang-go) plain, stripped (-s -w), PIE and
stripped PIE; HTTP/1.1 and h2 by ALPN; the stripped pair built by newer toolchains too
(`NEWER`: offsets from that Go version's table entry); and a Go client against a Python TLS
server (plaintext seen at both ends: each exchange once). Each call must appear with its
method, path, status, the secret header, the client's real 5-tuple and ``tls: true``, and an
export must show tshark the plaintext. Root and BCC needed (CI has them): fails, never skips,
without them."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemonpeers import SHARK, Daemon
from tests.ebpf import goprogs, tlspeers
from tests.ebpf.test_openssl import export, header, tshark_fields, wait_entries

# The client waits before its first call: the tracer probes a new program at its next scan
# (once a second) and reading a binary with DWARF takes ~1 s; calls before that are missed.
DELAY_MS = 5000


@pytest.fixture(scope="module")
def gobins() -> Iterator[dict[str, dict[str, str]]]:
    with tempfile.TemporaryDirectory(prefix="shark-go-tls-") as tmp:
        try:
            bins = goprogs.build(tmp)
        except goprogs.GoMissing as exc:
            pytest.fail(str(exc))
        yield bins


@pytest.fixture(scope="module")
def newer_gobins() -> Iterator[Callable[[str], dict[str, str]]]:
    """``get(version)``: the stripped server and client built by that toolchain, once each."""
    with tempfile.TemporaryDirectory(prefix="shark-go-tls-v-") as tmp:
        built: dict[str, dict[str, str]] = {}

        def get(version: str) -> dict[str, str]:
            if version not in built:
                variants = {"stripped": goprogs.VARIANTS["stripped"]}
                try:
                    built[version] = goprogs.build(f"{tmp}/{version}", variants,
                                                   version)["stripped"]  # fmt: skip
                except goprogs.GoMissing as exc:
                    pytest.fail(str(exc))
            return built[version]

        yield get


@pytest.fixture(scope="module")
def tls_daemon() -> Iterator[tuple[Daemon, str, str]]:
    # every binary probed here leaves uprobes to detach on exit: give that time
    with tlspeers.tls_daemon("shark-go-tls-d-", exit_wait=120) as found:
        yield found


def go_server(path: str, cert: Path) -> tuple[subprocess.Popen[str], int]:
    return goprogs.server(path, cert)


def go_client(path: str, url: str, secret: str, n: int, mode: str) -> dict[str, Any]:
    return goprogs.client(path, url, secret, n, mode, DELAY_MS)


# HTTP/1.1 for every build (plain, stripped, PIE, stripped PIE); h2 for all but the last
MODES = [(v, "h1") for v in goprogs.VARIANTS] + [("plain", "h2"), ("stripped", "h2"),
                                                 ("pie", "h2")]  # fmt: skip


@pytest.mark.parametrize(("variant", "mode"), MODES)
def test_go_client_to_go_server(
    gobins: dict[str, dict[str, str]], tls_daemon: tuple[Daemon, str, str], variant: str,
    mode: str,
) -> None:  # fmt: skip
    """Both ends are Go (both traced: the connection is taken from one): HTTP/1.1, or h2 by
    ALPN, three calls on one connection."""
    check_go_pair(gobins[variant], tls_daemon, f"go-{variant}", mode)


# newer toolchains (scripts/setup installs them), stripped: functions from the pclntab, struct
# offsets from OFFSET_TABLE[that version]; the oldest and newest there, h2 with the newest
NEWER = [("1.21.13", "h1"), ("1.27.3", "h1"), ("1.27.3", "h2")]


@pytest.mark.parametrize(("version", "mode"), NEWER)
def test_newer_go_stripped_client_to_server(
    newer_gobins: Callable[[str], dict[str, str]], tls_daemon: tuple[Daemon, str, str],
    version: str, mode: str,
) -> None:  # fmt: skip
    bins = newer_gobins(version)
    check_go_pair(bins, tls_daemon, f"go{version}-stripped", mode)
    _d, sock, token = tls_daemon
    report = tls_status(sock, token)
    text = tls_status(sock, token, text=True)
    major, minor = version.split(".")[:2]
    rows = [p for p in report["processes"]
            if p.get("go") and p["go"]["version"] == f"go{version}"]  # fmt: skip
    assert len(rows) >= 2, [p.get("go") for p in report["processes"]]  # server and client
    for p in rows:
        go = p["go"]
        assert go["error"] is None, go
        assert (go["functions_from"], go["offsets_from"]) == (
            "pclntab", f"table go{major}.{minor}")  # fmt: skip
        assert go["probes"] > 2
        # the readable form: one line per process, visible, with where everything came from
        head = f"{p['pid']:>7}  {p['comm'][:16]:<16} {'yes':<8} "
        reason = (f"visible: Go go{version} crypto/tls uprobes (functions from pclntab, "
                  f"offsets from table go{major}.{minor})")  # fmt: skip
        line = re.compile(rf"{re.escape(head)} *\d+  {re.escape(reason)}")
        assert any(line.fullmatch(t) for t in text), (line.pattern, text)


def check_go_pair(
    bins: dict[str, str], tls_daemon: tuple[Daemon, str, str], secret: str, mode: str
) -> None:
    """Run the Go server and client (three calls on one connection) and check every entry."""
    _d, sock, token = tls_daemon
    proto, version = ("http", "HTTP/1.1") if mode == "h1" else ("http2", "HTTP/2.0")
    with tempfile.TemporaryDirectory() as tmp:
        cert, _ = tlspeers.make_cert(Path(tmp))
        server, port = go_server(bins["server"], cert)
        try:
            res = go_client(bins["client"], f"https://127.0.0.1:{port}", secret, 3, mode)
            got = wait_entries(sock, token, f"dst.port == {port}", 3)
        finally:
            server.terminate()
            server.wait(10)
        assert [r["proto"] for r in res["replies"]] == [version] * 3
        assert len(res["locals"]) == 1  # one keep-alive connection
        lport = int(res["locals"][0].rsplit(":", 1)[1])
        assert [(e["proto"], e["src"]["port"]) for e in got] == [(proto, lport)] * 3, [
            (e["proto"], e["summary"], e["src"]["port"], e["error"]) for e in got]  # fmt: skip
        for i, e in enumerate(sorted(got, key=lambda e: e["ts"])):
            assert e["tls"] is True
            assert (e["method"], e["summary"], e["status"]) == ("GET", f"/go/items/{i}", 201)
            assert (e["src"]["ip"], e["dst"]["ip"], e["dst"]["port"]) == (
                "127.0.0.1", "127.0.0.1", port)
            assert header(e["request"], "X-Secret") == [secret]
            assert header(e["response"], "X-Echo") == [secret]
        check_export(sock, token, port, lport, mode, 3, f"{tmp}/go.pcapng")


def check_export(sock: str, token: str, port: int, lport: int, mode: str, n: int,
                 out: str) -> None:  # fmt: skip
    """Export the connection to ``port`` as pcapng: tshark reads the ``n`` calls the Go client
    made from ``lport`` in it."""
    export(sock, token, f"dst.port == {port}", out)
    if mode == "h1":
        rows = tshark_fields(out, [f"tcp.port=={port},http"], "http.request",
                             ["tcp.srcport", "http.request.uri"])  # fmt: skip
    else:
        rows = tshark_fields(out, [f"tcp.port=={port},http2"], "http2.headers.path",
                             ["tcp.srcport", "http2.headers.path"])  # fmt: skip
    assert sorted(r[1] for r in rows if r[0] == str(lport)) == [
        f"/go/items/{i}" for i in range(n)], rows  # fmt: skip


def test_go_client_to_python_server_gives_each_exchange_once(
    gobins: dict[str, dict[str, str]], tls_daemon: tuple[Daemon, str, str]
) -> None:
    """Both ends are traced — Go probes in the client, OpenSSL probes in the Python server —
    and both report plaintext (tls-status counts chunks from each): the connection is taken
    from one end, so each call shows once, whole."""
    _d, sock, token = tls_daemon
    secret = "mixed-secret"
    with tempfile.TemporaryDirectory() as tmp:
        cert, _ = tlspeers.make_cert(Path(tmp))
        with tlspeers.python_tls_server(cert) as (port, server_pid):
            result = go_client(gobins["plain"]["client"], f"https://127.0.0.1:{port}", secret,
                               4, "h1")  # fmt: skip
            got = wait_entries(sock, token, f"dst.port == {port}", 4)
            report = tls_status(sock, token)
        assert [(r["status"], r["proto"]) for r in result["replies"]] == [(200, "HTTP/1.1")] * 4
        assert len(result["locals"]) == 1  # one keep-alive connection
        lport = int(result["locals"][0].rsplit(":", 1)[1])
        assert len(got) == 4, [(e["proto"], e["summary"], e["src"]["port"]) for e in got]
        for i, e in enumerate(sorted(got, key=lambda e: e["ts"])):
            assert (e["tls"], e["proto"]) == (True, "http")
            assert (e["method"], e["summary"], e["status"]) == ("GET", f"/go/items/{i}", 200)
            assert (e["src"]["ip"], e["src"]["port"], e["dst"]["ip"], e["dst"]["port"]) == (
                "127.0.0.1", lport, "127.0.0.1", port)  # fmt: skip
            assert header(e["request"], "X-Secret") == [secret]
            assert header(e["response"], "X-Echo") == [secret]
            assert json.loads(e["response"]["body"]) == {"path": f"/go/items/{i}"}
        check_export(sock, token, port, lport, "h1", 4, f"{tmp}/mixed.pcapng")
    procs = {p["pid"]: p for p in report["processes"]}
    server, client = procs.get(server_pid), procs.get(result["pid"])
    assert server is not None and client is not None, report["processes"]
    # plaintext came from both ends: 4 requests and 4 replies each way, at least
    assert server["chunks"] >= 8 and server.get("go") is None and server["visible"], server
    assert client["chunks"] >= 8 and client["go"]["version"] == goprogs.go_version(), client
    assert client["visible"] and client["go"]["error"] is None, client


def tls_status(sock: str, token: str, text: bool = False) -> Any:
    """The daemon's ``tls-status``: its JSON, or (``text``) its readable lines."""
    out = subprocess.run(
        [SHARK, "tls-status", "--attach", sock, "--token-file", token,
         *(() if text else ("--json",))],
        capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    return out.splitlines() if text else json.loads(out)


def test_go_writes_were_copied_at_entry_and_nothing_was_lost(
    tls_daemon: tuple[Daemon, str, str],
) -> None:
    """After the checks above (module order): every Go write was copied by the tail-called
    program at entry (none fell back to its RET) and no buffer was unreadable."""
    _d, sock, token = tls_daemon
    lost = tls_status(sock, token)["lost"]
    assert lost["go_writes_at_return"] == 0, lost
    assert lost["unreadable_bytes"] == 0, lost
    assert lost["unreadable_lost"] == 0, lost
    assert lost["ring_full_chunks"] == 0, lost
