"""Real TLS peers on loopback for the eBPF tests: a self-signed certificate, nginx with TLS
(HTTP/1.1 on one port, h2 via ALPN on another), a Python TLS server and client (the standard
library's ``ssl``, i.e. the system libssl), and ``openssl s_server -www``."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.realpeers import NGINX_BIN, _stop, free_port, wait_for_port


def make_cert(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


_NGINX_TLS = """\
daemon off;
master_process off;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    default_type application/json;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    server {{
        listen 127.0.0.1:{p1} ssl;
        listen 127.0.0.1:{p2} ssl http2;
        location = /api/items {{
            add_header X-Reply-Token "{reply}";
            return 201 '{{"created": true}}';
        }}
        location / {{ return 404 '{{"error": "no such thing"}}'; }}
    }}
}}
"""


@dataclass
class TlsNginx:
    port: int  # HTTP/1.1 over TLS
    h2_port: int  # TLS with ALPN h2
    reply_token: str
    cert: Path
    pid: int


@contextlib.contextmanager
def nginx_tls(reply_token: str) -> Iterator[TlsNginx]:
    workdir = Path(tempfile.mkdtemp(prefix="shark-nginx-tls-"))
    proc = None
    try:
        cert, key = make_cert(workdir)
        p1, p2 = free_port(), free_port()
        conf = _NGINX_TLS.format(w=workdir, cert=cert, key=key, p1=p1, p2=p2, reply=reply_token)
        (workdir / "nginx.conf").write_text(conf)
        proc = subprocess.Popen(
            [NGINX_BIN, "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
             "-e", str(workdir / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_for_port("127.0.0.1", p1, proc=proc)
        wait_for_port("127.0.0.1", p2, proc=proc)
        yield TlsNginx(p1, p2, reply_token, cert, proc.pid)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def curl(url: str, *args: str) -> dict[str, Any]:
    """Run curl; its local port, status and body."""
    out = subprocess.run(
        ["curl", "-sk", "-o", "-", "-w", "\n%{local_port} %{http_code} %{http_version}", *args,
         url],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    body, _, tail = out.rpartition("\n")
    port, code, version = tail.split()
    return {"local_port": int(port), "status": int(code), "version": version, "body": body}


_PY_SERVER = r"""
import http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between headers and body
    wbufsize = -1  # headers and body in one write
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        got = self.rfile.read(n)
        body = json.dumps({"echo": json.loads(got)}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Echo", self.headers.get("X-Secret", ""))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""

_PY_CLIENT = r"""
import http.client, json, ssl, sys
ctx = ssl._create_unverified_context()
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx)
c.connect()
port = c.sock.getsockname()[1]
out = []
for i in range(int(sys.argv[3])):
    c.request("POST", f"/py/orders/{i}", body=json.dumps({"n": i}),
              headers={"X-Secret": sys.argv[2], "Content-Type": "application/json"})
    r = c.getresponse()
    out.append([r.status, r.read().decode()])
c.close()
print(json.dumps({"local_port": port, "replies": out}), flush=True)
"""


@contextlib.contextmanager
def python_tls_server(cert: Path) -> Iterator[tuple[int, int]]:
    """(port, pid) of a Python HTTPS server: POST echoes the JSON body (status 202); GET
    answers 200 with the request's ``X-Secret`` echoed as ``X-Echo``."""
    key = cert.with_name("key.pem")
    proc = subprocess.Popen(
        [sys.executable, "-c", _PY_SERVER, str(cert), str(key)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield port, proc.pid
    finally:
        _stop(proc)


def python_tls_client(port: int, secret: str, requests: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _PY_CLIENT, str(port), secret, str(requests)],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


@contextlib.contextmanager
def openssl_s_server(cert: Path) -> Iterator[tuple[int, int]]:
    """(port, pid) of ``openssl s_server -www``."""
    key = cert.with_name("key.pem")
    port = free_port()
    proc = subprocess.Popen(
        ["openssl", "s_server", "-www", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
         "-key", str(key)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield port, proc.pid
    finally:
        _stop(proc)


@contextlib.contextmanager
def tls_daemon(
    prefix: str = "shark-tls-", exit_wait: float | None = None
) -> Iterator[tuple[Any, str, str]]:
    """``shark-tui daemon --tls --iface lo`` on a private socket: (Daemon, address, token file).
    Fails (never skips) without root: CI runs as root with eBPF. ``exit_wait``: seconds its exit
    may take (probed Go binaries leave a uprobe per RET to detach: longer than `Daemon.stop`
    waits)."""
    import os
    import signal

    import pytest

    from tests.daemonpeers import Daemon

    if os.geteuid() != 0:
        pytest.fail("eBPF tests need root (CI runs as root)")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        sock, token = f"unix:{tmp}/sock", f"{tmp}/token"
        d = Daemon(f"{tmp}/store", "--tls", "--iface", "lo", "--listen", sock,
                   "--token-file", token)  # fmt: skip
        try:
            d.wait_for("capturing on", timeout=60)
            assert any("TLS plaintext: OpenSSL uprobes" in line for line in d.lines), d.lines
            yield d, sock, token
        finally:
            if exit_wait is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    d.proc.wait(exit_wait)
            d.stop()


def curl_once(port: int) -> int:
    """One ``curl -k https://127.0.0.1:PORT/`` that must answer 200; its pid (tls-status lists
    the process after it exited)."""
    proc = subprocess.Popen(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=30)
    assert out == "200", out
    return proc.pid
