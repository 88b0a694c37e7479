"""Real HTTP/1.1 traffic on loopback and a real `shark-tui daemon`, for the query, server and
attach tests (root: the daemon and tcpdump capture on ``lo``).

- `http_server()`: a threaded ``http.server`` on 127.0.0.1 (keep-alive HTTP/1.1) answering
  ``GET /items/N`` (200, JSON), ``GET /big?size=N`` (200, N text bytes), ``POST /items`` (201),
  ``DELETE /items/N`` (204), ``GET /missing`` (404), ``GET /boom`` (500).
- `make_traffic(port, ...)`: several keep-alive connections used round-robin, so the entries of
  different connections interleave in time; returns what the clients did (`Call`s).
- `DaemonProc`: ``shark-tui daemon --iface lo`` on a free port, its stderr kept, its status.
- `synthetic_flow(...)`: one whole HTTP/1.1 connection as Ethernet frames (byte-exact, no root).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.engine import fixtures_pcap as fx
from tests.realpeers import free_port, shark_tui_command

SHARK = shark_tui_command()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", ctype: str = "text/plain") -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path.startswith("/items/"):
            self._reply(200, json.dumps({"item": path[7:]}).encode(), "application/json")
        elif path == "/big":
            size = int(dict(p.split("=") for p in query.split("&") if "=" in p).get("size", 0))
            self._reply(200, (b"0123456789abcdef" * (size // 16 + 1))[:size])
        elif path == "/boom":
            self._reply(500, b"boom")
        else:
            self._reply(404, b"nope")

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self._reply(201, json.dumps({"got": len(body)}).encode(), "application/json")

    def do_DELETE(self) -> None:
        self._reply(204)


@contextlib.contextmanager
def http_server() -> Iterator[int]:
    """The test HTTP server; yields its port."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


@dataclass
class Call:
    cport: int  # the client's port
    method: str
    target: str
    status: int


def _request(i: int) -> tuple[str, str, bytes | None]:
    """Request number ``i`` (of the whole run): the kinds come in turn."""
    kinds = [
        ("GET", f"/items/{i}?page={i % 3}", None),
        ("POST", "/items", json.dumps({"n": i, "pad": "p" * (i % 50)}).encode()),
        ("GET", "/missing", None),
        ("DELETE", f"/items/{i}", None),
        ("GET", "/boom", None),
        ("GET", f"/big?size={1000 + i}", None),
    ]
    return kinds[i % len(kinds)]


def make_traffic(port: int, conns: int = 5, per_conn: int = 6, big: int = 0) -> list[Call]:
    """``conns`` keep-alive connections, ``per_conn`` requests each, sent round-robin; each
    connection closes at the end. ``big``: every request is ``/big?size=big`` instead."""
    clients = []
    for _ in range(conns):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.connect()
        clients.append(c)
    calls: list[Call] = []
    for r in range(per_conn):
        for k, c in enumerate(clients):
            i = r * conns + k
            method, target, body = ("GET", f"/big?size={big}", None) if big else _request(i)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            c.request(method, target, body=body, headers=headers)
            resp = c.getresponse()
            resp.read()
            assert c.sock is not None
            calls.append(Call(c.sock.getsockname()[1], method, target, resp.status))
    for c in clients:
        c.close()
    return calls


class DaemonProc:
    """``shark-tui daemon --iface lo`` on 127.0.0.1:PORT with its own store and token file."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        if os.geteuid() != 0:
            raise AssertionError("the daemon tests need root (live capture on lo)")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.store = str(workdir / "store")
        self.token_file = str(workdir / "token")
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*SHARK, "daemon", "--listen", self.address, "--token-file", self.token_file,
             "--iface", "lo", "--store", self.store, *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("capturing on")
        with open(self.token_file) as f:
            self.token = f.read().strip()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                time.sleep(0.1)
                raise AssertionError(f"the daemon exited {self.proc.returncode}: {self.lines}")
            time.sleep(0.02)
        raise AssertionError(f"the daemon never said {text!r}; it said: {self.lines}")

    def status(self) -> dict[str, Any]:
        """The last ``status.json`` (written every second)."""
        with open(os.path.join(self.store, "status.json")) as f:
            data: dict[str, Any] = json.load(f)
        return data

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._reader.join(5)
        return rc


T0 = 1_700_000_000 * fx.NS
REQ = b"GET /abc HTTP/1.1\r\nHost: x\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def synthetic_flow(
    cport: int,
    exchanges: list[tuple[bytes, bytes]],
    t: int = T0,
    client: str = "10.0.0.1",
    server: str = "10.0.0.2",
    sport: int = 80,
    step_ns: int = 1_000_000,
) -> list[tuple[int, bytes]]:
    """``(ts_ns, frame)``: handshake, each request and its response in one segment each, FINs.
    Segments over 64000 bytes are split."""
    out: list[tuple[int, bytes]] = []
    cs, ss = 1000, 5000

    def add(fwd: bool, seq: int, ack: int, flags: int, payload: bytes = b"") -> None:
        nonlocal t
        for i in range(0, max(len(payload), 1), 64000):
            t += step_ns
            part = payload[i : i + 64000]
            if fwd:
                frame = fx.eth_ipv4_tcp(client, server, cport, sport, seq + i, ack, flags, part)
            else:
                frame = fx.eth_ipv4_tcp(server, client, sport, cport, seq + i, ack, flags, part)
            out.append((t, frame))

    add(True, cs, 0, fx.SYN)
    add(False, ss, cs + 1, fx.SYN | fx.ACK)
    cs, ss = cs + 1, ss + 1
    add(True, cs, ss, fx.ACK)
    for req, resp in exchanges:
        add(True, cs, ss, fx.PSH | fx.ACK, req)
        cs += len(req)
        add(False, ss, cs, fx.PSH | fx.ACK, resp)
        ss += len(resp)
    add(True, cs, ss, fx.FIN | fx.ACK)
    add(False, ss, cs + 1, fx.FIN | fx.ACK)
    add(True, cs + 1, ss + 1, fx.ACK)
    return out
