"""The port-forward relay (`shark_tui.engine.portforward.Forwarder`) and tap's port-forward
streams (`deploy.open_portforward`).

The stand-in API server (tests/kube/apiserver.py) serves no ``pods/portforward``, so:

- the relay runs against local servers through `FakePortForward`, an object with the interface
  the ``kubernetes`` client's ``PortForward`` has (``socket(port)`` one end of a socket pair,
  ``error(port)``, ``close()``), carried over a plain TCP connection instead of a websocket;
- the real ``kubernetes.stream.portforward`` runs against `FakeKubelet`: a local server that
  answers the websocket upgrade on ``/api/v1/namespaces/NS/pods/POD/portforward?ports=P`` as
  the API server does with the ``v4.channel.k8s.io`` protocol (each channel's first frame
  carries the port, channel 0 the data, channel 1 the kubelet's error) and connects channel 0 to
  a local TCP port — through it, the TUI's own client talks to a real daemon `Server`.

What no test here shows: a real API server and kubelet (SPDY/websocket proxying, kubelet
timeouts, the daemon's port inside a hostNetwork pod).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from shark_tui.engine import deploy
from shark_tui.engine.client import Client
from shark_tui.engine.kube import load_client
from shark_tui.engine.portforward import Forwarder
from shark_tui.engine.server import Server
from shark_tui.engine.store import Recorder

PORT = 8898
POD = "shark-tui-node-a"
KUBELET_REFUSED = (
    f"error forwarding port {PORT} to pod 3f2a, uid : failed to execute portforward in network "
    f'namespace "/var/run/netns/cni-1": failed to connect to localhost:{PORT} inside namespace '
    f'"3f2a", IPv4: dial tcp4 127.0.0.1:{PORT}: connect: connection refused '
)


# ---------------------------------------------------------------------------------------------
# local servers


class Echo:
    """A TCP server that sends back what it gets (the pod's port); counts connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)
        conn.close()

    def close(self) -> None:
        self.sock.close()


def refused_port() -> int:
    s = socket.create_server(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class FakePortForward:
    """``kubernetes.stream.ws_client.PortForward``'s interface over TCP: ``socket(port)`` is one
    end of a socket pair whose other end a thread carries to ``127.0.0.1:upstream``; when that
    refuses, ``error(port)`` holds the kubelet's words and the socket ends, as the client does
    with the error channel."""

    opened = 0

    def __init__(self, upstream: int, port: int = PORT) -> None:
        FakePortForward.opened += 1
        self.port = port
        self._mine, self._python = socket.socketpair()
        self._error: str | None = None
        self.closed = False
        try:
            self._up = socket.create_connection(("127.0.0.1", upstream), timeout=2)
            self._up.settimeout(None)
        except OSError:
            self._error = KUBELET_REFUSED
            self._python.close()
            return
        threading.Thread(target=self._pipe, args=(self._python, self._up), daemon=True).start()
        threading.Thread(target=self._pipe, args=(self._up, self._python), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):  # the client closes everything when either side ends
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def socket(self, port: int) -> socket.socket:
        assert port == self.port
        return self._mine

    def error(self, port: int) -> str | None:
        return self._error

    def close(self) -> None:
        self.closed = True
        self._mine.close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


@contextlib.contextmanager
def forwarder(*args: Any, **kw: Any) -> Iterator[Forwarder]:
    fw = Forwarder(*args, **kw)
    fw.start()
    try:
        yield fw
    finally:
        fw.stop()


def connect(fw: Forwarder) -> socket.socket:
    host, _, port = fw.address.rpartition(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def read_all(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = s.recv(65536)
        if not data:
            break
        buf += data
    return bytes(buf)


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# the relay


def test_relays_both_ways_with_a_stream_per_connection(echo: Echo) -> None:
    FakePortForward.opened = 0
    with forwarder(lambda: FakePortForward(echo.port), PORT, name="node a") as fw:
        assert fw.address.startswith("127.0.0.1:")
        payloads = [os.urandom(1 << 20) for _ in range(3)]
        socks = [connect(fw) for _ in payloads]
        results: list[bytes] = [b""] * 3

        def talk(i: int) -> None:
            threading.Thread(target=socks[i].sendall, args=(payloads[i],), daemon=True).start()
            results[i] = read_all(socks[i], len(payloads[i]))

        threads = [threading.Thread(target=talk, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results == payloads
        assert FakePortForward.opened == 3 and echo.accepted == 3
        for s in socks:
            s.close()
        wait_for(lambda: fw.active == 0)
        assert fw.stats == {
            "connections": 3,
            "refused": 0,
            "failed": 0,
            "bytes_out": 3 << 20,
            "bytes_in": 3 << 20,
        }
        assert fw.last_error is None


def test_the_pod_closing_closes_the_local_connection(echo: Echo) -> None:
    with forwarder(lambda: FakePortForward(echo.port), PORT) as fw:
        s = connect(fw)
        s.sendall(b"ping")
        assert read_all(s, 4) == b"ping"
        wait_for(lambda: len(echo.conns) == 1)
        echo.conns[0].shutdown(socket.SHUT_RDWR)  # the daemon hangs up
        assert s.recv(10) == b""
        wait_for(lambda: fw.active == 0)
        s.close()


def test_kubelet_error_is_kept_and_the_connection_closed() -> None:
    errors: list[str] = []
    upstream = refused_port()
    with forwarder(
        lambda: FakePortForward(upstream), PORT, name="node a", on_error=errors.append
    ) as fw:
        s = connect(fw)
        assert s.recv(10) == b""
        wait_for(lambda: fw.stats["failed"] == 1)
        assert fw.last_error == f"node a: {KUBELET_REFUSED.strip()}"
        assert errors == [fw.last_error]
        s.close()


def test_a_stream_that_cannot_open_closes_the_connection_and_says_why() -> None:
    def refuse() -> FakePortForward:
        raise deploy.DeployError("forbidden: cannot create pods/portforward in namespace x")

    with forwarder(refuse, PORT, name="node b") as fw:
        s = connect(fw)
        assert s.recv(10) == b""
        wait_for(lambda: fw.last_error is not None)
        assert fw.last_error == "node b: forbidden: cannot create pods/portforward in namespace x"
        with pytest.raises(deploy.DeployError):
            fw.check()
        s.close()


def test_check_opens_one_stream_and_closes_it(echo: Echo) -> None:
    streams: list[FakePortForward] = []

    def opener() -> FakePortForward:
        streams.append(FakePortForward(echo.port))
        return streams[-1]

    with forwarder(opener, PORT) as fw:
        fw.check()
        assert len(streams) == 1 and streams[0].closed


def test_connections_are_capped(echo: Echo) -> None:
    with forwarder(lambda: FakePortForward(echo.port), PORT, max_connections=2) as fw:
        held = [connect(fw) for _ in range(2)]
        for s in held:
            s.sendall(b"x")
            assert read_all(s, 1) == b"x"
        extra = connect(fw)
        assert extra.recv(10) == b""
        assert fw.stats["refused"] == 1 and fw.active == 2
        for s in [*held, extra]:
            s.close()


def test_stop_ends_open_connections_and_the_listener(echo: Echo) -> None:
    fw = Forwarder(lambda: FakePortForward(echo.port), PORT)
    fw.start()
    address = fw.address
    s = connect(fw)
    s.sendall(b"hi")
    assert read_all(s, 2) == b"hi"
    fw.stop()
    assert s.recv(10) == b""
    host, _, port = address.rpartition(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2)
    s.close()


# ---------------------------------------------------------------------------------------------
# the kubernetes client's port-forward, against a fake kubelet


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeKubelet:
    """The API server's and kubelet's side of a ``pods/portforward`` websocket (see the module
    docstring); ``status`` other than 101 refuses the upgrade with that HTTP status."""

    def __init__(self, upstream: int, status: int = 101) -> None:
        self.upstream = upstream
        self.status = status
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(4096)
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {
                k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])
            }
            self.requests.append((target, headers))
            if self.status != 101:
                body = json.dumps(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": "Forbidden",
                        "message": f'pods "{POD}" is forbidden: User "dev" cannot create resource '
                        '"pods/portforward" in API group "" in the namespace "shark-tui"',
                        "code": self.status,
                    }
                ).encode()
                conn.sendall(
                    b"HTTP/1.1 %d Forbidden\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (self.status, len(body), body)
                )
                return
            key = headers["sec-websocket-key"]
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + f"Sec-WebSocket-Accept: {accept}\r\n".encode()
                + b"Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
            )
            port = int(parse_qs(urlsplit(target).query)["ports"][0])
            lock = threading.Lock()

            def send(payload: bytes, opcode: int = 2) -> None:
                n = len(payload)
                head = bytes([0x80 | opcode])
                if n < 126:
                    head += bytes([n])
                elif n < 1 << 16:
                    head += bytes([126]) + struct.pack(">H", n)
                else:
                    head += bytes([127]) + struct.pack(">Q", n)
                with lock:
                    conn.sendall(head + payload)

            for channel in (0, 1):  # each channel's first frame: the port, little-endian
                send(bytes([channel]) + struct.pack("<H", port))
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
            except OSError:
                send(b"\x01" + KUBELET_REFUSED.encode())
                send(b"", 8)
                return
            up.settimeout(None)

            def downstream() -> None:
                with contextlib.suppress(OSError):
                    while data := up.recv(65536):
                        send(b"\x00" + data)
                    send(b"", 8)  # the pod's end closed: close the websocket
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

            threading.Thread(target=downstream, daemon=True).start()
            reader = _FrameReader(conn, rest)
            while (frame := reader.next()) is not None:
                opcode, payload = frame
                if opcode == 8:
                    break
                if opcode == 2 and payload[:1] == b"\x00":
                    up.sendall(payload[1:])
            up.close()


class _FrameReader:
    """Client frames (masked), one at a time: (opcode, payload), None at EOF."""

    def __init__(self, conn: socket.socket, buf: bytes) -> None:
        self.conn = conn
        self.buf = bytearray(buf)

    def _take(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            data = self.conn.recv(65536)
            if not data:
                return None
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def next(self) -> tuple[int, bytes] | None:
        head = self._take(2)
        if head is None:
            return None
        opcode, n = head[0] & 0x0F, head[1] & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._take(2) or b"\0\0")[0]
        elif n == 127:
            n = struct.unpack(">Q", self._take(8) or b"\0" * 8)[0]
        mask = self._take(4) if head[1] & 0x80 else b"\0\0\0\0"
        payload = self._take(n) if n else b""
        if mask is None or payload is None:
            return None
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def client_for(kubelet: FakeKubelet, tmp_path: Path) -> Any:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": kubelet.url}}],
        "users": [{"name": "c", "user": {"token": "dev-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return load_client(str(path))


def test_kubernetes_port_forward_through_the_relay(echo: Echo, tmp_path: Path) -> None:
    kubelet = FakeKubelet(echo.port)
    client = client_for(kubelet, tmp_path)

    def opener() -> Any:
        return deploy.open_portforward(client, "shark-tui", POD, PORT)

    with forwarder(opener, PORT, name="node node-a") as fw:
        socks = [connect(fw) for _ in range(2)]
        for i, s in enumerate(socks):
            data = bytes([i]) * 300_000  # several websocket frames each way
            threading.Thread(target=s.sendall, args=(data,), daemon=True).start()
            assert read_all(s, len(data)) == data
        for s in socks:
            s.close()
        wait_for(lambda: fw.active == 0)
        assert fw.last_error is None
    target, headers = kubelet.requests[0]
    assert len(kubelet.requests) == 2
    assert target == f"/api/v1/namespaces/shark-tui/pods/{POD}/portforward?ports={PORT}"
    assert headers["upgrade"].lower() == "websocket"
    assert "v4.channel.k8s.io" in headers["sec-websocket-protocol"]
    assert headers["authorization"] == "Bearer dev-token"
    kubelet.close()


def test_kubelet_error_channel_and_forbidden_handshake(tmp_path: Path) -> None:
    kubelet = FakeKubelet(refused_port())
    client = client_for(kubelet, tmp_path)
    with forwarder(
        lambda: deploy.open_portforward(client, "shark-tui", POD, PORT), PORT, name="node node-a"
    ) as fw:
        s = connect(fw)
        assert s.recv(10) == b""
        wait_for(lambda: fw.last_error is not None)
        assert fw.last_error == f"node node-a: {KUBELET_REFUSED.strip()}"
        s.close()
    kubelet.close()

    forbidden = FakeKubelet(refused_port(), status=403)
    client = client_for(forbidden, tmp_path)
    with pytest.raises(Exception) as info:
        deploy.open_portforward(client, "shark-tui", POD, PORT)
    error = deploy._portforward_error(info.value, "shark-tui", POD, "node-a")
    assert str(error) == (
        "forbidden: cannot create pods/portforward in namespace shark-tui: "
        "ask a cluster admin for that permission"
    )
    forbidden.close()


def test_the_tui_client_reaches_a_real_daemon_server_through_it(tmp_path: Path) -> None:
    """Chain: `Client` (what the TUI's links use) → `Forwarder` → ``kubernetes`` websocket →
    fake kubelet → the daemon's query `Server`: the Hello (token checked) gets through."""
    rec = Recorder(str(tmp_path / "store"), 1 << 30, 1 << 62)
    server = Server(rec, threading.Lock(), "the-token", ("127.0.0.1", 0), rec.status, node="node-a")
    server.start()
    kubelet = FakeKubelet(int(server.address.rpartition(":")[2]))
    client = client_for(kubelet, tmp_path)
    try:
        with forwarder(lambda: deploy.open_portforward(client, "shark-tui", POD, PORT), PORT) as fw:

            async def hello() -> tuple[str, dict[str, Any]]:
                c = await Client.connect(fw.address, "the-token")
                try:
                    assert c.hello is not None
                    return c.hello.node, await c.get_tls_status()
                finally:
                    await c.close()

            node, tls = asyncio.run(asyncio.wait_for(hello(), 20))
            assert node == "node-a" and isinstance(tls, dict)
    finally:
        server.stop()
        kubelet.close()
