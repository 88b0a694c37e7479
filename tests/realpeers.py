"""Real peers on loopback: servers, packet captures and the ``dissect`` command, for tests and
benchmarks.

Everything here starts a real process bound to loopback (``127.0.0.1`` or ``::1``) on a free
port, waits until it accepts (or, for tcpdump, until it says it is listening), and cleans up
(kills the process, removes its scratch directory) when the ``with`` block ends, also on error.
Nothing here talks to any other address.

    from tests.realpeers import aiohttp_backend, nginx, capture, run_dissect

    with aiohttp_backend() as be, nginx(backend_port=be.port) as ngx:
        with capture(ports=[be.port, ngx.port]) as cap:
            ...  # drive traffic to ngx.url("/status/500")
        result = run_dissect(cap.path)
        for entry in result.entries: ...

API (all context managers yield a small object; see each docstring):

- ``aiohttp_backend(port=None, host="127.0.0.1") -> Peer`` — ``tests/peers/http_backend.py``.
- ``nginx(backend_port, port=None, host="127.0.0.1", backend_host=None, h2c=False) -> Nginx`` —
  a reverse proxy in front of the backend, with ``h2c_port`` when ``h2c`` is true.
- ``redis_server(port=None, host="127.0.0.1", extra=()) -> Peer`` (extra redis-server args).
- ``capture(iface="lo", bpf=None, path=None, ports=None, snaplen=None, linktype=None,
  settle=0.3, buffer_kib=32768, extra_args=()) -> Capture`` — tcpdump writing a pcap file;
  ``cap.path`` is complete and ``cap.stats`` (captured/received/dropped) filled once the block
  has exited.
- ``run_dissect(path, *args, json=True, stdin=None, timeout=120) -> DissectResult`` — runs
  ``shark-tui dissect`` and parses its JSON lines.
- helpers: ``free_port``, ``wait_for_port``, ``ports_bpf``, ``shark_tui_command``,
  ``pattern_text(size)`` (the body ``/big`` and ``/gzip`` answer), ``STATIC_FILES`` (what
  nginx's ``/static/`` serves).

Import it as ``tests.realpeers`` with the repository root on ``sys.path`` (pytest puts it there
for anything under ``tests/``; from ``bench/`` run pytest from the root or add the root).
"""

from __future__ import annotations

import atexit
import contextlib
import json as jsonlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
HTTP_BACKEND = TESTS_DIR / "peers" / "http_backend.py"

#: How long a server may take to start accepting before the harness gives up.
START_TIMEOUT = 15.0


def pattern_text(size: int) -> bytes:
    """The deterministic body of ``/big?size=N`` and the decoded body of ``/gzip?size=N``."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-shark-tui-\n"
    reps = size // len(line) + 1
    return (line * reps)[:size]


# --------------------------------------------------------------------------------------------
# ports and processes


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to 0, read, close)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float = START_TIMEOUT, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Wait until ``host:port`` accepts a TCP connection; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode} before {host}:{port} accepted"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5) as probe:
                # Close both ways before returning, so the probe's FINs cannot land in a
                # capture that starts right after: half-close, then wait for the server's.
                probe.shutdown(socket.SHUT_WR)
                probe.settimeout(0.3)
                with contextlib.suppress(OSError):
                    while probe.recv(4096):
                        pass
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} did not accept within {timeout} s") from None
            time.sleep(0.02)


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Signal ``proc`` (only that process), wait, and kill it if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@dataclass
class Peer:
    """A server process listening on ``host:port``."""

    host: str
    port: int
    proc: subprocess.Popen[Any]
    workdir: Path | None = None

    @property
    def hostport(self) -> str:
        """``host:port`` with IPv6 hosts in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.hostport}{path}"


# --------------------------------------------------------------------------------------------
# aiohttp backend


@contextlib.contextmanager
def aiohttp_backend(port: int | None = None, host: str = "127.0.0.1") -> Iterator[Peer]:
    """The aiohttp backend of ``tests/peers/http_backend.py`` (routes in its docstring).

    ``port=None`` lets the backend bind port 0 and report the port it got (no race).
    """
    proc = subprocess.Popen(
        [sys.executable, str(HTTP_BACKEND), "--host", host, "--port", str(port or 0)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _readline_with_timeout(proc, START_TIMEOUT)
        if not line.startswith("listening "):
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise RuntimeError(f"aiohttp backend did not start: {line!r} {err[-2000:]}")
        got = int(line.split()[2])  # printed after listen(): it accepts already, no probe
        yield Peer(host=host, port=got, proc=proc)
    finally:
        _stop(proc, signal.SIGINT)


def _readline_with_timeout(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    t.start()
    t.join(timeout)
    if not out:
        raise TimeoutError(f"no startup line within {timeout} s")
    return out[0].strip()


# --------------------------------------------------------------------------------------------
# nginx

NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"

#: Files served by ``/static/`` (name -> content).
STATIC_FILES: dict[str, bytes] = {
    "hello.txt": b"hello from nginx\n",
    "index.html": b"<!doctype html><title>shark</title><p>static page</p>\n",
    "big.txt": pattern_text(50_000),
}

_NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {w}/access.log;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    types {{ text/plain txt; text/html html; application/json json; }}
    default_type application/octet-stream;
    keepalive_requests 10000;
    keepalive_timeout 120s;
    upstream backend {{
        server {backend};
        keepalive 16;
    }}
{servers}
}}
"""

_NGINX_SERVER = """\
    server {{
        listen {listen};
        server_name _;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
        # gzip done by nginx (the backend answers uncompressed): /gz/big?size=N -> /big?size=N
        location /gz/ {{
            gzip on;
            gzip_types *;
            gzip_min_length 0;
            gzip_proxied any;
            proxy_pass http://backend/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
        location /static/ {{
            alias {w}/www/;
        }}
        location /gzstatic/ {{
            alias {w}/www/;
            gzip on;
            gzip_types *;
            gzip_min_length 0;
        }}
        location = /nocontent {{ return 204; }}
        location = /notmodified {{ return 304; }}
        location = /redirect {{ return 302 /static/hello.txt; }}
        location = /teapot {{ return 418 "short and stout\\n"; }}
    }}
"""


@dataclass
class Nginx(Peer):
    """nginx listening on ``port`` (HTTP/1.x) and, if asked, ``h2c_port`` (HTTP/2 cleartext,
    prior knowledge). ``/static/NAME`` serves ``STATIC_FILES``; other paths are proxied to the
    backend (``/gz/...`` with nginx's gzip on, prefix stripped); ``/nocontent`` 204,
    ``/notmodified`` 304, ``/redirect`` 302, ``/teapot`` 418 come from nginx itself."""

    h2c_port: int | None = None
    backend_port: int = 0

    def h2c_url(self, path: str = "/") -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.h2c_port}{path}"


def _hp(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextlib.contextmanager
def nginx(
    backend_port: int,
    port: int | None = None,
    host: str = "127.0.0.1",
    backend_host: str | None = None,
    h2c: bool = False,
    h2c_port: int | None = None,
) -> Iterator[Nginx]:
    """nginx (one process, ``master_process off``) with a private conf in a temp dir, proxying
    to ``backend_host:backend_port`` (default: ``host``) over HTTP/1.1 with upstream keepalive.

    ``h2c=True`` (or an explicit ``h2c_port``) adds a second server block, ``listen ... http2``.
    """
    backend_host = backend_host or host
    workdir = Path(tempfile.mkdtemp(prefix="shark-nginx-"))
    proc: subprocess.Popen[Any] | None = None
    try:
        (workdir / "www").mkdir()
        for name, content in STATIC_FILES.items():
            (workdir / "www" / name).write_bytes(content)
        for attempt in range(5):
            p = port or free_port(host)
            p2 = (h2c_port or free_port(host)) if (h2c or h2c_port) else None
            servers = _NGINX_SERVER.format(listen=_hp(host, p), w=workdir)
            if p2 is not None:
                servers += _NGINX_SERVER.format(listen=_hp(host, p2) + " http2", w=workdir)
            conf = _NGINX_CONF.format(
                w=workdir, backend=_hp(backend_host, backend_port), servers=servers
            )
            (workdir / "nginx.conf").write_text(conf)
            proc = subprocess.Popen(
                [NGINX_BIN, "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
                 "-e", str(workdir / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                wait_for_port(host, p, proc=proc)
                if p2 is not None:
                    wait_for_port(host, p2, proc=proc)
                break
            except RuntimeError:
                log = (workdir / "error.log").read_text(errors="replace")
                _stop(proc)
                proc = None
                if "Address already in use" in log and port is None and attempt < 4:
                    continue
                raise RuntimeError(f"nginx did not start: {log[-2000:]}") from None
        assert proc is not None
        yield Nginx(
            host=host, port=p, proc=proc, workdir=workdir, h2c_port=p2, backend_port=backend_port
        )
    finally:
        if proc is not None:
            _stop(proc, signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# redis


@contextlib.contextmanager
def redis_server(
    port: int | None = None, host: str = "127.0.0.1", extra: Sequence[str] = ()
) -> Iterator[Peer]:
    """redis-server without persistence, bound to ``host``."""
    workdir = Path(tempfile.mkdtemp(prefix="shark-redis-"))
    proc = None
    try:
        p = port or free_port(host)
        proc = subprocess.Popen(
            ["redis-server", "--port", str(p), "--bind", host, "--save", "", "--appendonly", "no",
             "--dir", str(workdir), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(host, p, proc=proc)
        yield Peer(host=host, port=p, proc=proc, workdir=workdir)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# capture


@dataclass
class Capture:
    """A running tcpdump. ``path`` is the file; after the ``with`` block, ``stats`` holds
    tcpdump's closing counters (``captured``, ``received``, ``dropped``) when it printed them."""

    path: Path
    iface: str
    bpf: str
    proc: subprocess.Popen[Any]
    stderr_lines: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


_TEMP_DIRS: list[Path] = []


@atexit.register
def _remove_temp_dirs() -> None:
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


def ports_bpf(ports: Sequence[int]) -> str:
    """``tcp port A or tcp port B ...``."""
    return " or ".join(f"tcp port {p}" for p in ports)


@contextlib.contextmanager
def capture(
    iface: str = "lo",
    bpf: str | None = None,
    path: str | os.PathLike[str] | None = None,
    ports: Sequence[int] | None = None,
    snaplen: int | None = None,
    linktype: str | None = None,
    settle: float = 0.3,
    buffer_kib: int = 32768,
    extra_args: Sequence[str] = (),
) -> Iterator[Capture]:
    """``tcpdump -i IFACE -U --immediate-mode -w PATH BPF`` for the duration of the block.

    ``bpf`` defaults to ``ports_bpf(ports)`` (or to all TCP). ``iface="any"`` gives Linux
    cooked captures (``linktype="LINUX_SLL2"`` for SLL2; the default there is SLL).
    ``snaplen`` cuts each packet (``-s``). Without ``path`` the file goes in a temp dir that is
    removed when the Python process exits (pytest users: pass ``tmp_path / "x.pcap"``).
    On entry, waits until tcpdump prints "listening on". On exit, waits ``settle`` seconds for
    the last packets, stops tcpdump with SIGINT and waits, so the file is complete.
    ``buffer_kib`` is the kernel buffer (``-B``): with the 2 MiB default, ``-i any`` was
    measured dropping packets of even a few dozen loopback requests; check ``cap.stats``.
    """
    if bpf is None:
        bpf = ports_bpf(ports) if ports else "tcp"
    if path is None:
        out = Path(tempfile.mkdtemp(prefix="shark-cap-")) / "capture.pcap"
        _TEMP_DIRS.append(out.parent)
    else:
        out = Path(path)
    cmd = ["tcpdump", "-i", iface, "-U", "--immediate-mode", "-Z", "root", "-w", str(out), "-n"]
    cmd += ["-B", str(buffer_kib)]
    if snaplen is not None:
        cmd += ["-s", str(snaplen)]
    if linktype is not None:
        cmd += ["-y", linktype]
    cmd += [*extra_args, bpf]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    cap = Capture(path=out, iface=iface, bpf=bpf, proc=proc)
    listening = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            cap.stderr_lines.append(line.rstrip("\n"))
            if "listening on" in line:
                listening.set()
        listening.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        if not listening.wait(START_TIMEOUT) or proc.poll() is not None:
            raise RuntimeError(f"tcpdump did not start: {cmd} {cap.stderr_lines}")
        yield cap
        time.sleep(settle)
    finally:
        _stop(proc, signal.SIGINT, timeout=10)
        reader.join(5)
        for line in cap.stderr_lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                if "captured" in line:
                    cap.stats["captured"] = int(parts[0])
                elif "received by filter" in line:
                    cap.stats["received"] = int(parts[0])
                elif "dropped by kernel" in line:
                    cap.stats["dropped"] = int(parts[0])


# --------------------------------------------------------------------------------------------
# shark-tui dissect


def shark_tui_command() -> list[str]:
    """The argv prefix that runs shark-tui: the console script beside this Python, else
    ``python -m shark_tui``."""
    script = Path(sys.executable).parent / "shark-tui"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "shark_tui"]


@dataclass
class DissectResult:
    """What ``shark-tui dissect`` did: exit code, parsed entries (JSON lines), raw output."""

    returncode: int
    entries: list[dict[str, Any]]
    stdout: str
    stderr: str
    argv: list[str]

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {e["id"]: e for e in self.entries}

    def check(self) -> DissectResult:
        """Raise with the whole story unless the exit code was 0."""
        if self.returncode != 0:
            raise AssertionError(
                f"{self.argv} exited {self.returncode}\nstderr: {self.stderr[-4000:]}"
            )
        return self


def run_dissect(
    path: str | os.PathLike[str] | None,
    *args: str,
    json: bool = True,
    stdin: bytes | None = None,
    timeout: float = 120,
) -> DissectResult:
    """Run ``shark-tui dissect PATH [--json] ARGS...`` (``path=None`` or ``"-"`` reads
    ``stdin``) and parse each stdout line as JSON when ``json`` is true. Lines that are not JSON
    make the result's ``entries`` parsing fail loudly (an AssertionError naming the line)."""
    argv = [*shark_tui_command(), "dissect", "-" if path is None else str(path)]
    if json:
        argv.append("--json")
    argv += list(args)
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=REPO_DIR,
    )
    out = proc.stdout.decode("utf-8", errors="replace")
    err = proc.stderr.decode("utf-8", errors="replace")
    entries: list[dict[str, Any]] = []
    if json:
        for n, line in enumerate(out.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(jsonlib.loads(line))
            except ValueError as exc:
                raise AssertionError(f"stdout line {n} is not JSON: {line[:300]!r}") from exc
    return DissectResult(returncode=proc.returncode, entries=entries, stdout=out, stderr=err,
                         argv=argv)
