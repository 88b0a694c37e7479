"""A local TCP listener relayed to a pod's port through port-forward streams.

The TUI's links are TCP connections; a port-forward through the API server is a websocket
that the ``kubernetes`` client turns into a `Stream`: an object whose ``socket(port)`` is a
connected socket (one end of a socket pair; the client's own thread carries its bytes over the
websocket), whose ``error(port)`` is what the kubelet said went wrong (``None`` when nothing
did) and whose ``close()`` ends it. A `Forwarder` listens on ``127.0.0.1`` (a free port unless
told) and, for every connection it accepts, opens a new stream (``open_stream()``, as ``kubectl
port-forward`` opens a stream pair per connection) and copies bytes both ways until either end
closes; then it closes the other. Nothing here knows Kubernetes: a test hands it any opener
that returns such an object.

Bounded: at most ``max_connections`` relayed at once (more are closed at once and counted in
``stats["refused"]``), one 64 KiB buffer per direction. A stream that fails to open or ends
with an error is counted and kept in `Forwarder.last_error` (and given to ``on_error``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

__all__ = ["MAX_CONNECTIONS", "Forwarder", "Stream"]

MAX_CONNECTIONS: Final = 64
CHUNK: Final = 64 << 10
JOIN_S: Final = 2.0


class Stream(Protocol):
    """What ``kubernetes.stream.portforward`` returns (its ``PortForward``)."""

    def socket(self, port: int) -> Any: ...

    def error(self, port: int) -> str | None: ...

    def close(self) -> None: ...


class _Relay:
    """One accepted connection and its stream."""

    __slots__ = ("conn", "remote", "stream", "threads")

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.stream: Stream | None = None
        self.remote: Any = None
        self.threads: list[threading.Thread] = []

    def shutdown(self) -> None:
        for sock in (self.conn, self.remote):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class Forwarder:
    """See the module docstring. `start` binds and begins accepting; `address` is then
    ``127.0.0.1:PORT``; `stop` closes the listener and every relayed connection."""

    def __init__(
        self,
        open_stream: Callable[[], Stream],
        port: int,
        *,
        name: str = "",
        host: str = "127.0.0.1",
        listen_port: int = 0,
        max_connections: int = MAX_CONNECTIONS,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.open_stream = open_stream
        self.port = port
        self.name = name or f"port {port}"
        self.max_connections = max_connections
        self.on_error = on_error
        self.last_error: str | None = None
        self.stats = dict.fromkeys(
            ("connections", "refused", "failed", "bytes_out", "bytes_in"), 0
        )  # out: to the pod; in: from it
        self._lock = threading.Lock()
        self._relays: set[_Relay] = set()
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._bind = (host, listen_port)
        self._accept_thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._listener.bind(self._bind)
        self._listener.listen(16)
        self._accept_thread = threading.Thread(
            target=self._accept, name=f"forward {self.name}", daemon=True
        )
        self._accept_thread.start()

    def check(self) -> None:
        """Open one stream and close it: raises what opening raises (refused, forbidden)."""
        self.open_stream().close()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(JOIN_S)
        with self._lock:
            relays = list(self._relays)
        for relay in relays:
            relay.shutdown()
        for relay in relays:
            for thread in relay.threads:
                thread.join(JOIN_S)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._relays)

    # ---- internals

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            relay = _Relay(conn)
            with self._lock:
                if len(self._relays) >= self.max_connections:
                    self.stats["refused"] += 1
                    conn.close()
                    continue
                self._relays.add(relay)
                self.stats["connections"] += 1
                thread = threading.Thread(target=self._serve, args=(relay,),
                                          name=f"forward {self.name} in", daemon=True)  # fmt: skip
                relay.threads.append(thread)
            thread.start()

    def _fail(self, text: str) -> None:
        with self._lock:
            self.stats["failed"] += 1
            self.last_error = f"{self.name}: {text}"
        if self.on_error is not None:
            self.on_error(self.last_error)

    def _serve(self, relay: _Relay) -> None:
        try:
            try:
                relay.stream = self.open_stream()
                relay.remote = relay.stream.socket(self.port)
                relay.remote.setblocking(True)
            except Exception as e:  # the opener's own error (a DeployError, an ApiException)
                self._fail(str(e) or type(e).__name__)
                return
            if self._stopping.is_set():
                return
            out = threading.Thread(target=self._pump_out, args=(relay,),
                                   name=f"forward {self.name} out", daemon=True)  # fmt: skip
            with self._lock:
                relay.threads.append(out)
            out.start()
            self._pump_in(relay)
            out.join()
            error = relay.stream.error(self.port)
            if error:
                self._fail(" ".join(error.split()))
        finally:
            with contextlib.suppress(OSError):
                relay.conn.close()
            if relay.stream is not None:
                with contextlib.suppress(Exception):
                    relay.stream.close()
            with self._lock:
                self._relays.discard(relay)

    def _pump_out(self, relay: _Relay) -> None:
        """Local client → pod. Its end (EOF or error) half-closes the stream's socket (the
        ``kubernetes`` client then ends the stream, which ends `_pump_in`)."""
        try:
            while True:
                data = relay.conn.recv(CHUNK)
                if not data:
                    break
                relay.remote.sendall(data)
                with self._lock:
                    self.stats["bytes_out"] += len(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            relay.remote.shutdown(socket.SHUT_WR)

    def _pump_in(self, relay: _Relay) -> None:
        """Pod → local client. Its end closes the local connection both ways (which also
        ends `_pump_out`)."""
        try:
            while True:
                data = relay.remote.recv(CHUNK)
                if not data:
                    break
                relay.conn.sendall(data)
                with self._lock:
                    self.stats["bytes_in"] += len(data)
        except OSError:
            pass
        relay.shutdown()
