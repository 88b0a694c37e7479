"""OpenSSL plaintext through eBPF, end to end, with real peers on loopback: a daemon started
with ``--tls`` on ``lo``; curl → nginx over TLS (HTTP/1.1, and h2 chosen by ALPN) and a Python
client → a Python TLS server. Each call must appear once, with its method, path, status, a
secret header value, the 5-tuple the client really used and ``tls: true``; the wire connection
must not be an extra row; an exported pcapng must show tshark the plaintext; ``tls-status`` must
name ``openssl s_server -www`` as not visible because of BIO-based I/O while its curl client is.

These run as root with BCC (CI does): a machine without them fails here, never skips.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemonpeers import SHARK, Daemon
from tests.ebpf import tlspeers


@pytest.fixture(scope="module")
def tls_daemon() -> Iterator[tuple[Daemon, str, str]]:
    with tlspeers.tls_daemon() as found:
        yield found


def entries(sock: str, token: str, flt: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [SHARK, "dissect", "--attach", sock, "--token-file", token, "--json", "--filter", flt],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines()]


def wait_entries(sock: str, token: str, flt: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        got = entries(sock, token, flt)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def header(entry_half: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in entry_half["headers"] if k.lower() == name.lower()]


def tshark_fields(path: str, decode: list[str], flt: str, fields: list[str]) -> list[list[str]]:
    args = ["tshark", "-r", path, "-Y", flt, "-T", "fields"]
    for d in decode:
        args += ["-d", d]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def export(sock: str, token: str, flt: str, out: str) -> None:
    subprocess.run(
        [SHARK, "export", "--attach", sock, "--token-file", token, "--filter", flt, "-o", out],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_curl_to_nginx_over_tls_http1_and_h2(tls_daemon: tuple[Daemon, str, str]) -> None:
    _d, sock, token = tls_daemon
    secret = "sekrit-" + secrets.token_hex(6)
    reply = "reply-" + secrets.token_hex(6)
    with tlspeers.nginx_tls(reply) as ngx:
        h1 = [tlspeers.curl(f"https://127.0.0.1:{ngx.port}/api/items", "--http1.1",
                            "-H", f"X-Secret: {secret}-{i}", "-d", '{"n": 1}')
              for i in range(3)]  # fmt: skip
        h2 = tlspeers.curl(f"https://localhost:{ngx.h2_port}/api/items", "--http2",
                           "-H", f"X-Secret: {secret}-h2")  # fmt: skip
        missing = tlspeers.curl(f"https://127.0.0.1:{ngx.port}/nope", "--http1.1")
        assert [r["status"] for r in h1] == [201, 201, 201] and h2["version"] == "2"
        assert missing["status"] == 404
        ports = [ngx.port, ngx.h2_port]
        # (not the readiness probes, which carry no bytes: counting them, the wait could end
        # before the last two calls' entries came)
        flt = f"(dst.port == {ngx.port} or dst.port == {ngx.h2_port}) and request_size > 0"
        got = wait_entries(sock, token, flt, 5)

    # one entry per call, all TLS plaintext: the ciphertext twins are not extra rows
    assert sorted(e["proto"] for e in got) == ["http", "http", "http", "http", "http2"], [
        (e["proto"], e["summary"]) for e in got
    ]
    assert all(e["tls"] is True for e in got)
    by_port = {e["src"]["port"]: e for e in got}
    for i, call in enumerate(h1):
        e = by_port[call["local_port"]]
        assert (e["method"], e["summary"], e["status"]) == ("POST", "/api/items", 201)
        assert e["src"]["ip"] == e["dst"]["ip"] == "127.0.0.1" and e["dst"]["port"] == ports[0]
        assert header(e["request"], "X-Secret") == [f"{secret}-{i}"]
        assert header(e["response"], "X-Reply-Token") == [reply]
        assert e["response"]["body"] == '{"created": true}'
    e = by_port[h2["local_port"]]
    assert (e["proto"], e["method"], e["summary"], e["status"]) == (
        "http2",
        "GET",
        "/api/items",
        201,
    )
    assert e["dst"]["port"] == ports[1]
    assert header(e["request"], "X-Secret") == [f"{secret}-h2"]
    assert by_port[missing["local_port"]]["status"] == 404

    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/tls.pcapng"
        export(sock, token, "tls and " + f"({flt})", out)
        rows = tshark_fields(
            out, [f"tcp.port=={ports[0]},http", f"tcp.port=={ports[1]},http2"],
            "http.request or http2.type == 1",
            ["tcp.srcport", "http.request.method", "http.request.uri", "http.response.code",
             "http2.header.value"],
        )  # fmt: skip
        text = json.dumps(rows)
        for i, call in enumerate(h1):
            assert any(r[0] == str(call["local_port"]) and r[1] == "POST" and r[2] == "/api/items"
                       for r in rows), rows  # fmt: skip
            assert f"{secret}-{i}" in subprocess.run(
                ["tshark", "-r", out, "-d", f"tcp.port=={ports[0]},http", "-Y",
                 f"tcp.srcport == {call['local_port']} and http.request", "-T", "fields",
                 "-e", "http.request.line"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
        assert f"{secret}-h2" in text  # the HPACK-decoded header value, as tshark reads it


def test_python_client_to_python_tls_server(tls_daemon: tuple[Daemon, str, str]) -> None:
    _d, sock, token = tls_daemon
    secret = "py-" + secrets.token_hex(6)
    with tempfile.TemporaryDirectory() as tmp:
        cert, _key = tlspeers.make_cert(Path(tmp))
        with tlspeers.python_tls_server(cert) as (port, _pid):
            result = tlspeers.python_tls_client(port, secret, 4)
            got = wait_entries(sock, token, f"dst.port == {port}", 4)
        assert [r[0] for r in result["replies"]] == [202] * 4
        assert len(got) == 4, got
        for i, e in enumerate(sorted(got, key=lambda e: e["ts"])):
            assert e["tls"] is True and e["proto"] == "http"
            assert (e["method"], e["summary"], e["status"]) == ("POST", f"/py/orders/{i}", 202)
            assert (e["src"]["port"], e["dst"]["port"]) == (result["local_port"], port)
            assert header(e["request"], "X-Secret") == [secret]
            assert json.loads(e["response"]["body"]) == {"echo": {"n": i}}
        out = f"{tmp}/py.pcapng"
        export(sock, token, f"dst.port == {port}", out)
        rows = tshark_fields(out, [f"tcp.port=={port},http"], "http.request",
                             ["tcp.srcport", "http.request.uri"])  # fmt: skip
        assert sorted(r[1] for r in rows) == [f"/py/orders/{i}" for i in range(4)]
        assert {r[0] for r in rows} == {str(result["local_port"])}
        # the store's own segments hold the ciphertext and the plaintext: offline, too, the
        # connection reads as its four calls, not as an extra tcp row
        offline = []
        for seg in sorted(glob.glob(f"{_d.store}/seg-*.pcapng")):
            out = subprocess.run(
                [SHARK, "dissect", seg, "--json", "--filter", f"dst.port == {port}"],
                capture_output=True, text=True, timeout=60,
            ).stdout  # fmt: skip
            offline += [json.loads(line) for line in out.splitlines()]
        assert sorted((e["proto"], e["tls"], e["summary"]) for e in offline) == [
            ("http", True, f"/py/orders/{i}") for i in range(4)
        ], offline


def test_tls_status_names_bio_based_s_server(tls_daemon: tuple[Daemon, str, str]) -> None:
    _d, sock, token = tls_daemon
    with tempfile.TemporaryDirectory() as tmp:
        cert, _key = tlspeers.make_cert(Path(tmp))
        with tlspeers.openssl_s_server(cert) as (port, server_pid):
            curl_pid = tlspeers.curl_once(port)
            deadline = time.monotonic() + 20
            while True:
                report = json.loads(subprocess.run(
                    [SHARK, "tls-status", "--attach", sock, "--token-file", token, "--json"],
                    capture_output=True, text=True, check=True, timeout=60,
                ).stdout)  # fmt: skip
                procs = {p["pid"]: p for p in report["processes"]}
                srv = procs.get(server_pid)
                settled = srv and srv["reason"].startswith("BIO") and curl_pid in procs
                if settled or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            text = subprocess.run(
                [SHARK, "tls-status", "--attach", sock, "--token-file", token],
                capture_output=True, text=True, check=True, timeout=60,
            ).stdout  # fmt: skip
    assert report["enabled"] is True and report["kernel_path"] == "tracepoints"
    assert srv is not None, report
    assert srv["comm"] == "openssl" and srv["visible"] is False, srv
    assert srv["reason"].startswith("BIO-based I/O"), srv
    assert any(f"127.0.0.1:{port}" in c for c in srv["tls_connections"]), srv
    client = procs[curl_pid]
    assert client["comm"] == "curl" and client["visible"] is True, client
    assert f"{server_pid}  openssl" in text and "BIO-based I/O" in text, text


def test_big_writes_are_split_and_what_is_past_the_copy_limit_is_a_gap(
    tls_daemon: tuple[Daemon, str, str],
) -> None:
    """A 1.5 MB upload (curl writes it in pieces) arrives whole; the server's echo goes out in
    one SSL_write bigger than the probe copies (1 MiB): the rest is a counted gap, the entry
    keeps its exact size and the connection stays in step."""
    _d, sock, token = tls_daemon
    with tempfile.TemporaryDirectory() as tmp:
        cert, _key = tlspeers.make_cert(Path(tmp))
        body = Path(tmp) / "body.json"
        body.write_text(json.dumps({"blob": "x" * 1_500_000}))
        with tlspeers.python_tls_server(cert) as (port, _pid):
            out = subprocess.run(
                ["curl", "-sk", "-o", f"{tmp}/reply", "-w", "%{size_request} %{size_upload} "
                 "%{local_port}", "-H", "Content-Type: application/json", "--data-binary",
                 f"@{body}", f"https://127.0.0.1:{port}/big"],
                capture_output=True, text=True, check=True, timeout=60,
            ).stdout.split()  # fmt: skip
            reply_size = os.path.getsize(f"{tmp}/reply")
            got = wait_entries(sock, token, f"dst.port == {port}", 1)
        report = json.loads(subprocess.run(
            [SHARK, "tls-status", "--attach", sock, "--token-file", token, "--json"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout)  # fmt: skip
    assert len(got) == 1, got
    e = got[0]
    assert e["tls"] and e["status"] == 202 and e["src"]["port"] == int(out[2])
    assert e["request_size"] == int(out[0]) + int(out[1])  # every byte of the upload
    # headers + the whole body, the gap included
    assert e["response_size"] > reply_size, (report["lost"], e["error"], e["response_size"])
    assert report["lost"]["bytes_past_max_call"] > 0


def test_probes_are_detached_when_the_daemon_stops() -> None:
    def ours() -> set[int]:
        """Ids of loaded BPF programs with the names our program uses."""
        progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"],
                                          capture_output=True, text=True, check=True).stdout)
        return {p["id"] for p in progs if p.get("name", "").startswith(
            ("enter_write", "return_read", "tracepoint__sock"))}  # fmt: skip

    before = ours()  # (the module's daemon, and any other, keep theirs)
    with tempfile.TemporaryDirectory(prefix="shark-tls-") as tmp:
        d = Daemon(f"{tmp}/store", "--tls", "--iface", "lo", "--listen", f"unix:{tmp}/s",
                   "--token-file", f"{tmp}/t")  # fmt: skip
        try:
            d.wait_for("capturing on", timeout=60)
            mine = ours() - before
            assert len(mine) >= 5, mine
        finally:
            assert d.stop() == 0
    assert not mine & ours()
