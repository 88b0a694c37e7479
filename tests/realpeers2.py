"""Real peers on loopback for HTTP/2, gRPC, GraphQL and WebSocket (the companion of
``tests/realpeers.py``, whose conventions it follows: every server binds loopback, prints or is
probed for its port, and is stopped when the ``with`` block ends; nothing talks to any other
address).

Servers (context managers yielding a ``realpeers.Peer``):

- ``grpc_server(port=None, host="127.0.0.1") -> Peer`` — ``tests/peers/grpc_server.py``
  (plaintext grpcio, ``echo.proto``) on a fixed free port; ``peer.workdir`` holds the stubs.
- ``graphql_server(port=None, host="127.0.0.1", h2c=False) -> Peer`` —
  ``tests/peers/graphql_server.py``: aiohttp (HTTP/1.1), or hypercorn with ``h2c=True``
  (h2c prior knowledge and HTTP/1.1 on the same port). Endpoint ``/graphql``.
- ``ws_server(port=None, host="127.0.0.1") -> Peer`` — ``tests/peers/ws_server.py`` (``/ws``).

gRPC stubs: ``grpc_stubs() -> (echo_pb2, echo_pb2_grpc)`` generated once per process with
``grpc_tools.protoc`` from ``tests/peers/echo.proto`` into a temp dir (``STUBS_DIR``).

Clients that keep a record of what they did (the truth the tests compare entries with):

- ``H2Client(host, port)`` — the ``h2`` library over a plain socket (prior knowledge): several
  streams in flight, POST bodies under flow control, every stream's headers/body/trailers/reset
  in ``client.streams[stream_id]`` (``H2Stream``).
- ``nghttp(urls, multiply=1, data=None, extra=()) -> NghttpRun`` — runs ``nghttp -nv`` and parses
  its frame log: per stream id the request headers sent, the response headers received, the DATA
  bytes each way (``NgStream``).
- WebSocket by hand: ``ws_connect_raw(host, port, path) -> RawWebSocket`` (a real HTTP/1.1
  upgrade, then ``send_frame`` / ``read_frame`` with exact bytes; ``ws_frame`` builds a frame).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from tests import realpeers
from tests.realpeers import START_TIMEOUT, Peer, free_port, wait_for_port

TESTS_DIR = Path(__file__).resolve().parent
PEERS_DIR = TESTS_DIR / "peers"
ECHO_PROTO = PEERS_DIR / "echo.proto"
GRPC_SERVER = PEERS_DIR / "grpc_server.py"
GRAPHQL_SERVER = PEERS_DIR / "graphql_server.py"
WS_SERVER = PEERS_DIR / "ws_server.py"

Header = tuple[str, str]


# --------------------------------------------------------------------------------------------
# servers


@contextlib.contextmanager
def _script_peer(script: Path, args: Sequence[str], host: str) -> Iterator[Peer]:
    """A peer script that prints ``listening HOST PORT`` once it accepts."""
    proc = subprocess.Popen(
        [sys.executable, str(script), "--host", host, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=realpeers.REPO_DIR,
    )
    try:
        line = realpeers._readline_with_timeout(proc, START_TIMEOUT)
        if not line.startswith("listening "):
            proc.wait(2) if proc.poll() is None else None
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise RuntimeError(f"{script.name} did not start: {line!r} {err[-2000:]}")
        port = int(line.split()[2])
        wait_for_port(host, port, proc=proc)
        yield Peer(host=host, port=port, proc=proc)
    finally:
        realpeers._stop(proc, signal.SIGINT)


STUBS_DIR = Path(tempfile.mkdtemp(prefix="shark-grpc-stubs-"))
realpeers._TEMP_DIRS.append(STUBS_DIR)
_stubs: tuple[ModuleType, ModuleType] | None = None


def grpc_stubs() -> tuple[ModuleType, ModuleType]:
    """``(echo_pb2, echo_pb2_grpc)``, generated from ``echo.proto`` on first use."""
    global _stubs
    if _stubs is None:
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{PEERS_DIR}",
             f"--python_out={STUBS_DIR}", f"--grpc_python_out={STUBS_DIR}", str(ECHO_PROTO)],
            capture_output=True, text=True, timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"protoc failed: {proc.stderr}")
        if str(STUBS_DIR) not in sys.path:
            sys.path.insert(0, str(STUBS_DIR))
        _stubs = (importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc"))
    return _stubs


@contextlib.contextmanager
def grpc_server(port: int | None = None, host: str = "127.0.0.1") -> Iterator[Peer]:
    """The echo gRPC server (plaintext) on ``host:port`` (a free port when None)."""
    grpc_stubs()
    last: Exception | None = None
    for _ in range(5):
        p = port or free_port(host)
        try:
            cm = _script_peer(GRPC_SERVER, ["--port", str(p), "--stubs", str(STUBS_DIR)], host)
            peer = cm.__enter__()
        except RuntimeError as exc:  # the port was taken in between: try another
            last = exc
            if port is not None:
                raise
            continue
        try:
            peer.workdir = STUBS_DIR
            yield peer
        finally:
            cm.__exit__(None, None, None)
        return
    raise RuntimeError(f"grpc server did not start: {last}")


@contextlib.contextmanager
def graphql_server(
    port: int | None = None, host: str = "127.0.0.1", h2c: bool = False
) -> Iterator[Peer]:
    """The GraphQL server: aiohttp, or hypercorn (h2c prior knowledge + HTTP/1.1) with ``h2c``."""
    args = ["--port", str(port or 0), *(["--h2c"] if h2c else [])]
    with _script_peer(GRAPHQL_SERVER, args, host) as peer:
        yield peer


@contextlib.contextmanager
def ws_server(port: int | None = None, host: str = "127.0.0.1") -> Iterator[Peer]:
    """The aiohttp WebSocket server (``/ws``)."""
    with _script_peer(WS_SERVER, ["--port", str(port or 0)], host) as peer:
        yield peer


# --------------------------------------------------------------------------------------------
# h2 client


@dataclass
class H2Stream:
    """One HTTP/2 stream as the client saw it."""

    stream_id: int
    req_headers: list[Header]
    req_body: bytes = b""
    status: int | None = None
    resp_headers: list[Header] = field(default_factory=list)
    resp_body: bytes = b""
    resp_data_frames: int = 0
    trailers: list[Header] = field(default_factory=list)
    informational: list[list[Header]] = field(default_factory=list)
    reset: int | None = None  # error code of a RST_STREAM either way
    ended: bool = False
    t_start: float = 0.0
    t_end: float = 0.0

    def req(self, name: str) -> str | None:
        return next((v for k, v in self.req_headers if k == name), None)

    def resp(self, name: str) -> str | None:
        return next((v for k, v in self.resp_headers if k == name), None)

    @property
    def method(self) -> str:
        return self.req(":method") or ""

    @property
    def path(self) -> str:
        return self.req(":path") or ""


class H2Client:
    """The ``h2`` library on one plaintext connection (prior knowledge).

    ``send()`` opens a stream and queues its body (sent as flow control allows) and returns the
    stream id; ``wait()`` pumps the connection until the given streams are done;
    ``request()`` is both. Received DATA is acknowledged at once, so big responses flow.
    """

    def __init__(self, host: str, port: int, *, authority: str | None = None,
                 max_frame_size: int | None = None, timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        name = self.sock.getsockname()
        self.local: tuple[str, int] = (name[0], name[1])
        self.remote: tuple[str, int] = (host, port)
        self.authority = authority or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if max_frame_size:
            self.conn.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: max_frame_size})
        self.streams: dict[int, H2Stream] = {}
        self._pending: dict[int, tuple[bytes, bool]] = {}  # stream -> (body left, end)
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.timeout = timeout
        self._flush()

    def _flush(self) -> None:
        for sid in list(self._pending):
            data, end = self._pending[sid]
            while data:
                window = min(self.conn.local_flow_control_window(sid),
                             self.conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk, data = data[:window], data[window:]
                self.conn.send_data(sid, chunk, end_stream=end and not data)
            if data:
                self._pending[sid] = (data, end)
            else:
                del self._pending[sid]
                if end and not self._sent_end(sid):
                    self.conn.end_stream(sid)
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def _sent_end(self, sid: int) -> bool:
        st = self.conn.streams.get(sid)
        return st is None or st.state_machine.state.name in ("HALF_CLOSED_LOCAL", "CLOSED")

    def send(self, method: str, path: str, body: bytes = b"",
             headers: Sequence[Header] = (), *, end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs: list[Header] = [(":method", method), (":path", path), (":scheme", "http"),
                              (":authority", self.authority), *headers]
        if body and not any(k == "content-length" for k, _ in headers):
            hdrs.append(("content-length", str(len(body))))
        self.streams[sid] = H2Stream(sid, hdrs, req_body=body, t_start=time.time())
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        if body or not end:
            self._pending[sid] = (body, end)
        self._flush()
        return sid

    def request(self, method: str, path: str, body: bytes = b"",
                headers: Sequence[Header] = ()) -> H2Stream:
        sid = self.send(method, path, body, headers)
        self.wait([sid])
        return self.streams[sid]

    def wait(self, stream_ids: Sequence[int] | None = None) -> None:
        want = list(self.streams) if stream_ids is None else list(stream_ids)
        deadline = time.monotonic() + self.timeout
        while not all(self.streams[s].ended for s in want):
            if time.monotonic() > deadline:
                left = [s for s in want if not self.streams[s].ended]
                raise TimeoutError(f"streams not done: {left}")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self._handle(self.conn.receive_data(data))
            self._flush()

    def _handle(self, events: list[Any]) -> None:
        for ev in events:
            st = self.streams.get(getattr(ev, "stream_id", 0) or 0)
            if isinstance(ev, h2.events.InformationalResponseReceived) and st:
                st.informational.append(list(ev.headers))
            elif isinstance(ev, h2.events.ResponseReceived) and st:
                st.resp_headers = list(ev.headers)
                st.status = int(st.resp(":status") or 0)
            elif isinstance(ev, h2.events.DataReceived) and st:
                st.resp_body += ev.data
                st.resp_data_frames += 1
                if ev.flow_controlled_length:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived) and st:
                st.trailers = list(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded) and st:
                st.ended, st.t_end = True, time.time()
            elif isinstance(ev, h2.events.StreamReset) and st:
                st.reset, st.ended, st.t_end = int(ev.error_code), True, time.time()
                self._pending.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
                for s in self.streams.values():
                    if not s.ended and s.stream_id > (ev.last_stream_id or 0):
                        s.ended, s.t_end = True, time.time()

    def reset(self, stream_id: int, error_code: int = 8) -> None:
        """RST_STREAM from the client (8 = CANCEL)."""
        self.conn.reset_stream(stream_id, error_code)
        st = self.streams[stream_id]
        st.reset, st.ended, st.t_end = error_code, True, time.time()
        self._pending.pop(stream_id, None)
        self._flush()

    def ping(self, opaque: bytes = b"sharktui") -> None:
        self.conn.ping(opaque)
        self._flush()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close_connection()
            self._flush()
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(1.0)
            while self.sock.recv(65536):
                pass
        self.sock.close()


# --------------------------------------------------------------------------------------------
# nghttp


@dataclass
class NgStream:
    """One stream of an ``nghttp -v`` run."""

    stream_id: int
    req_headers: list[Header] = field(default_factory=list)
    resp_headers: list[Header] = field(default_factory=list)
    sent_data: int = 0  # DATA payload bytes the client sent (without padding)
    recv_data: int = 0  # DATA bytes received
    recv_data_frames: int = 0
    ended_remote: bool = False

    def req(self, name: str) -> str | None:
        return next((v for k, v in self.req_headers if k == name), None)

    @property
    def status(self) -> int | None:
        v = next((v for k, v in self.resp_headers if k == ":status"), None)
        return int(v) if v is not None else None

    @property
    def method(self) -> str:
        return self.req(":method") or ""

    @property
    def path(self) -> str:
        return self.req(":path") or ""


@dataclass
class NghttpRun:
    returncode: int
    streams: dict[int, NgStream]
    stdout: str
    stderr: str
    t_start: float
    t_end: float


_NG_FRAME = re.compile(
    r"^\[\s*[\d.]+\] (send|recv) (\w+) frame <length=(\d+), flags=(0x[0-9a-f]+), stream_id=(\d+)>"
)
_NG_RECV_HDR = re.compile(r"^\[\s*[\d.]+\] recv \(stream_id=(\d+)\) (:?[^:]+): (.*)$")
_NG_INDENTED_HDR = re.compile(r"^\s{10}(:?[a-z0-9][a-z0-9_.-]*): (.*)$")


def parse_nghttp_verbose(text: str) -> dict[int, NgStream]:
    """Stream records from ``nghttp -v`` output."""
    streams: dict[int, NgStream] = {}
    cur_send_headers: NgStream | None = None
    padded_data: tuple[NgStream, str] | None = None  # a padded DATA frame awaiting "(padlen=N)"
    for line in text.splitlines():
        if padded_data is not None:
            pm = re.match(r"^\s+\(padlen=(\d+)\)", line)
            if pm:  # nghttp2's padlen counts the Pad Length byte too
                st, way = padded_data
                if way == "send":
                    st.sent_data -= int(pm.group(1))
                else:
                    st.recv_data -= int(pm.group(1))
                padded_data = None
            elif line.startswith("["):
                padded_data = None
        m = _NG_FRAME.match(line)
        if m:
            way, kind, length, flags, sid = m.groups()
            cur_send_headers = None
            s = int(sid)
            if s == 0:
                continue
            st = streams.setdefault(s, NgStream(s))
            if way == "send" and kind == "HEADERS":
                cur_send_headers = st
            elif kind == "DATA":
                if int(flags, 16) & 0x8:
                    padded_data = (st, way)
                if way == "send":
                    st.sent_data += int(length)
                else:
                    st.recv_data += int(length)
                    st.recv_data_frames += 1
            if way == "recv" and int(flags, 16) & 0x1 and kind in ("DATA", "HEADERS"):
                st.ended_remote = True
            continue
        m = _NG_RECV_HDR.match(line)
        if m:
            cur_send_headers = None
            s = int(m.group(1))
            streams.setdefault(s, NgStream(s)).resp_headers.append((m.group(2), m.group(3)))
            continue
        if cur_send_headers is not None:
            m = _NG_INDENTED_HDR.match(line)
            if m:
                cur_send_headers.req_headers.append((m.group(1), m.group(2)))
    return {s: st for s, st in streams.items() if st.req_headers or st.resp_headers}


def nghttp(urls: Sequence[str], multiply: int = 1, data: str | os.PathLike[str] | None = None,
           extra: Sequence[str] = (), timeout: float = 60) -> NghttpRun:
    """``nghttp -nv [-m N] [-d DATA] URL...``: all requests on one h2c connection (prior
    knowledge, ``http://`` URLs). Fails unless nghttp exits 0."""
    argv = ["nghttp", "-nv", "-m", str(multiply), *extra]
    if data is not None:
        argv += ["-d", str(data)]
    argv += list(urls)
    t0 = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    t1 = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return NghttpRun(proc.returncode, parse_nghttp_verbose(proc.stdout), proc.stdout, proc.stderr,
                     t0, t1)


def nghttp_available() -> bool:
    return shutil.which("nghttp") is not None


# --------------------------------------------------------------------------------------------
# WebSocket by hand


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One WebSocket frame; ``mask`` (4 bytes) masks it (clients must)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


@dataclass
class WsFrame:
    fin: bool
    opcode: int
    payload: bytes  # unmasked
    masked: bool
    wire: bytes


class RawWebSocket:
    """A socket after a real ``101`` upgrade; frames go out exactly as given."""

    def __init__(self, sock: socket.socket, handshake_request: bytes, handshake_response: bytes,
                 leftover: bytes) -> None:
        self.sock = sock
        self.handshake_request = handshake_request
        self.handshake_response = handshake_response
        self.buf = leftover
        name = sock.getsockname()
        self.local = (name[0], name[1])
        self.sent: list[bytes] = []  # wire bytes of each frame sent

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True,
                   mask: bytes | None = None) -> bytes:
        wire = ws_frame(opcode, payload, fin=fin, mask=mask if mask is not None else os.urandom(4))
        self.sock.sendall(wire)
        self.sent.append(wire)
        return wire

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed while reading a frame")
            self.buf += data

    def read_frame(self) -> WsFrame:
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            self._need(off + 4)
            key = self.buf[off : off + 4]
            off += 4
        self._need(off + n)
        payload = self.buf[off : off + n]
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        wire = self.buf[: off + n]
        self.buf = self.buf[off + n :]
        return WsFrame(bool(b0 & 0x80), b0 & 0x0F, payload, masked, wire)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def ws_connect_raw(host: str, port: int, path: str = "/ws", timeout: float = 10) -> RawWebSocket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    hp = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    req = (f"GET {path} HTTP/1.1\r\nHost: {hp}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    sock.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed during the handshake")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    head += b"\r\n\r\n"
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head!r}")
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    if f"sec-websocket-accept: {accept}".lower() not in head.decode().lower():
        raise RuntimeError(f"bad Sec-WebSocket-Accept: {head!r}")
    return RawWebSocket(sock, req, head, rest)


# --------------------------------------------------------------------------------------------
# reading entries (``dissect --json`` objects)

Entry = dict[str, Any]
Endpoint = tuple[str, int]


def body_bytes(msg: dict[str, Any] | None) -> bytes:
    """The body of a request/response/message object as bytes (base64 or text decoded)."""
    if msg is None or msg.get("body") is None:
        return b""
    if msg.get("body_encoding") == "base64":
        return base64.b64decode(msg["body"])
    return str(msg["body"]).encode("utf-8")


def header_of(msg: dict[str, Any] | None, name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive) in ``msg["headers"]``."""
    for k, v in (msg or {}).get("headers") or []:
        if k.lower() == name.lower():
            return str(v)
    return None


def conn_key(e: Entry) -> tuple[Endpoint, Endpoint]:
    return ((e["src"]["ip"], e["src"]["port"]), (e["dst"]["ip"], e["dst"]["port"]))


def by_connection(entries: Sequence[Entry]) -> dict[tuple[Endpoint, Endpoint], list[Entry]]:
    """(src, dst) -> entries of that connection, in exchange order (``id``'s ``n``)."""
    out: dict[tuple[Endpoint, Endpoint], list[Entry]] = {}
    for e in entries:
        out.setdefault(conn_key(e), []).append(e)
    for lst in out.values():
        lst.sort(key=lambda e: int(e["id"].split(":")[1]))
    return out


def pairs(headers: Any) -> list[Header]:
    """An entry's ``headers`` list as tuples."""
    return [(str(k), str(v)) for k, v in headers or []]
