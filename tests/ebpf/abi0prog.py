"""A synthetic stack-ABI (ABI0) "Go" TLS client for the Go < 1.17 probes, built with gcc: no Go
toolchain older than 1.17 can be had here (README), so abi0/conn.S defines functions named
``crypto/tls.(*Conn).Write`` and ``Read`` that take their arguments on the stack as Go's ABI0
does and make real write(2)/read(2) calls, and abi0/client.c lays out the receiver as Go's
*tls.Conn → net.TCPConn → netFD is laid out (offsets from goelf's table entry for Go 1.19,
which a go1.16 binary is assumed to share). The ELF carries a pre-1.18 ``.go.buildinfo``
naming `VERSION` and its symbol table. No TLS: the bytes go over plain TCP."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shark_tui.ebpf.goelf import OFFSET_TABLE

SRC = Path(__file__).parent / "abi0"
VERSION = "go1.16.15"
# the -D names the sources use -> goelf's field keys
_DEFINES = {"GO_CONN_OFF": "crypto/tls.Conn.conn", "GO_CONNFD_OFF": "net.conn.fd",
            "GO_PFD_OFF": "net.netFD.pfd", "GO_SYSFD_OFF": "internal/poll.FD.Sysfd",
            "GO_LADDR_OFF": "net.netFD.laddr", "GO_RADDR_OFF": "net.netFD.raddr",
            "GO_IP_OFF": "net.TCPAddr.IP", "GO_PORT_OFF": "net.TCPAddr.Port"}  # fmt: skip


def build(tmp: str | Path) -> str:
    """The client, non-PIE (as Go 1.16 built by default), unstripped, no DWARF; its path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is missing: install build-essential")
    table = OFFSET_TABLE[(1, 19)]
    defines = [f"-D{name}={table[key]}" for name, key in _DEFINES.items()]
    out = f"{tmp}/abi0-client"
    subprocess.run([gcc, "-O1", "-Wall", "-Werror", "-no-pie", *defines,
                    f'-DGO_VERSION="{VERSION}"', "-o", out, str(SRC / "client.c"),
                    str(SRC / "conn.S")], check=True, timeout=120)  # fmt: skip
    return out


class Client:
    """The client started, waiting: ``pid``; `run` lets it make its calls."""

    def __init__(self, path: str, port: int, secret: str, n: int) -> None:
        self.proc = subprocess.Popen([path, str(port), secret, str(n)], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["ready"], line
        self.pid = int(line[1])

    def run(self) -> dict[str, Any]:
        """Its calls, then its JSON (``local``, ``statuses``, ``echo``)."""
        out, err = self.proc.communicate("go\n", timeout=60)
        if self.proc.returncode:
            raise subprocess.CalledProcessError(self.proc.returncode, "abi0-client", out, err)
        result: dict[str, Any] = json.loads(out)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every call on one connection

    def do_GET(self) -> None:
        # ~1.5 KB: the client reads 512 bytes a call, so each response takes several reads
        body = json.dumps({"path": self.path, "pad": "x" * 1500}).encode()
        self.send_response(201)
        self.send_header("X-Echo", self.headers.get("X-Secret", ""))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def http_server() -> Iterator[int]:
    """A plain HTTP/1.1 server on loopback, in a thread of this process: its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
