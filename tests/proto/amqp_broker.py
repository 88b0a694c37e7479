"""A throw-away RabbitMQ broker on loopback, and a recording TCP relay, for AMQP tests.

``rabbitmq_broker()`` starts ``rabbitmq-server`` in a temporary directory, confined to
127.0.0.1 (AMQP listener, Erlang distribution and its own epmd on free ports), yields the AMQP
port and stops the node afterwards. Tests that need it are skipped when the server is not
installed. ``Relay`` sits between a client and the broker and records the exact bytes of each
direction, in order, with the relative order of chunks kept.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

SERVER_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL_BIN = "/usr/lib/rabbitmq/bin/rabbitmqctl"
NODENAME = "x@localhost"
START_TIMEOUT = 60.0


def available() -> bool:
    """Whether a RabbitMQ server can be started here."""
    return os.path.exists(SERVER_BIN) and os.path.exists(CTL_BIN)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(base: str, amqp_port: int) -> dict[str, str]:
    conf = os.path.join(base, "rabbitmq.conf")
    with open(conf, "w") as f:
        f.write(f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n")
        f.write("loopback_users = none\n")
    plugins = os.path.join(base, "enabled_plugins")
    with open(plugins, "w") as f:
        f.write("[].\n")
    env = dict(os.environ)
    env.update(
        {
            "HOME": base,
            "RABBITMQ_NODENAME": NODENAME,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "ERL_EPMD_PORT": str(_free_port()),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": os.path.join(base, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(base, "log"),
            "RABBITMQ_CONFIG_FILE": conf,
            "RABBITMQ_ENABLED_PLUGINS_FILE": plugins,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
    )
    return env


@contextmanager
def rabbitmq_broker() -> Iterator[int]:
    """Start a private RabbitMQ node on loopback; yield its AMQP port; stop it."""
    base = tempfile.mkdtemp(prefix="shark-amqp-")
    port = _free_port()
    env = _env(base, port)
    log = open(os.path.join(base, "server.out"), "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([SERVER_BIN], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=base)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {proc.returncode} (see {base})")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    # A listener is up; the broker answers a protocol header with its start.
                    s.sendall(b"AMQP\x00\x00\x09\x01")
                    if s.recv(1):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server did not start (see {base})")
            time.sleep(0.2)
        yield port
    finally:
        subprocess.run(
            [CTL_BIN, "-n", NODENAME, "stop"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # The node's own epmd, started for the private port, would outlive it.
        subprocess.run(
            ["epmd", "-port", env["ERL_EPMD_PORT"], "-kill"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
        log.close()
        shutil.rmtree(base, ignore_errors=True)


class Relay:
    """A one-connection-at-a-time TCP relay on loopback that records what passes.

    ``chunks`` holds ``(direction, bytes)`` in the order the relay forwarded them (direction 0 =
    client to broker, 1 = broker to client). Each accepted connection is recorded separately in
    ``connections`` (a list of such lists).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections: list[list[tuple[int, bytes]]] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._closed = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            record: list[tuple[int, bytes]] = []
            with self._lock:
                self.connections.append(record)
            for direction, src, dst in ((0, conn, up), (1, up, conn)):
                t = threading.Thread(
                    target=self._pump, args=(direction, src, dst, record), daemon=True
                )
                t.start()
                self._threads.append(t)

    def _pump(
        self,
        direction: int,
        src: socket.socket,
        dst: socket.socket,
        record: list[tuple[int, bytes]],
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                # Record before forwarding, so the answer is always recorded after its cause.
                with self._lock:
                    record.append((direction, data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def wait_idle(self, seconds: float = 0.3) -> None:
        """Wait until nothing was forwarded for ``seconds``."""
        last = -1
        while True:
            with self._lock:
                n = sum(len(c) for c in self.connections)
            if n == last:
                return
            last = n
            time.sleep(seconds)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
