"""Pods on a node, made of real Linux network namespaces, for tests and benchmarks.

A :class:`Node` is a bridge in the root namespace with N pods: each pod is a network namespace
whose ``eth0`` (one end of a veth pair) has an IPv4 address in a private /24 and an IPv6 ULA in
a /64; the other end of the pair (``pod.host_veth``) is a port of the bridge, in the root
namespace, which is where a capture on a node listens. The bridge and the host-side veths have
no address (not even IPv6 link-local), so nothing is routed to or from the rest of the machine:
pod traffic stays on the bridge. Every pod has its own namespace, so servers in pods can listen
on fixed ports.

Needs root and the ``ip`` command (iproute2). Standard library only.

    with Node(pods=2) as node:
        server = node.pods[0].popen(["python3", "-m", "http.server", "8080"])
        node.pods[1].run(["curl", f"http://{node.pods[0].ip}:8080/"])

Names: ``sk<pid><n>`` + role, with ``<n>`` a letter per Node in the process: bridge
``sk<pid><n>b``, host veth ``sk<pid><n>h<i>``, namespace ``sk<pid><n>p<i>``; the pod side of
each veth is ``eth0`` inside its namespace. :func:`cleanup_stale` removes what a dead process
left behind.

Offloads: TCP segmentation offload would put 64 KiB super-segments on the veths, so every
veth gets ``gso_max_segs 1`` (segments are MTU-sized); if ``ethtool`` is installed, TSO, GSO
and GRO are also switched off with it.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import re
import shutil
import signal
import string
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["CLONE_NEWNET", "Node", "Pod", "cleanup_stale", "in_netns"]

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
POD_IFNAME = "eth0"
MAX_PODS = 250

_node_counter = itertools.count()
_libc: ctypes.CDLL | None = None


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip [-n NETNS] ARGS``; raise with ip's stderr on failure when ``check``."""
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip() or res.returncode}")
    return res


def _disable_offloads(ifname: str, netns: str | None = None) -> None:
    """MTU-sized segments on ``ifname``: ``gso_max_segs 1``, plus ``ethtool -K`` if installed."""
    _ip("link", "set", "dev", ifname, "gso_max_segs", "1", netns=netns)
    if shutil.which("ethtool") is None:
        return
    cmd = ["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    subprocess.run(cmd, capture_output=True)  # best effort: some features may be fixed


def _stop(proc: subprocess.Popen, timeout: float = 1.0) -> None:
    """SIGTERM a process (its group, if it leads one), then SIGKILL after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def _kill_netns_pids(netns: str) -> None:
    """SIGKILL every process left in ``netns`` (never the calling process)."""
    res = _ip("netns", "pids", netns, check=False)
    for word in res.stdout.split():
        pid = int(word)
        if pid == os.getpid():
            continue
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Pod:
    """One pod: a network namespace with ``eth0`` on the node's bridge."""

    index: int
    name: str
    ip: str
    ip6: str
    host_veth: str
    mac: str
    host_mac: str
    ifname: str = POD_IFNAME
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    @property
    def netns_path(self) -> str:
        """``/run/netns/NAME``: for :func:`in_netns` or ``setns``."""
        return f"{NETNS_DIR}/{self.name}"

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` prefixed with ``ip netns exec NAME``."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, args: Sequence[str], **popen_kwargs: Any) -> subprocess.CompletedProcess:
        """``subprocess.run(args)`` inside the pod's namespace."""
        return subprocess.run(self.command(args), **popen_kwargs)

    def popen(self, args: Sequence[str], **kw: Any) -> subprocess.Popen:
        """``subprocess.Popen(args)`` inside the pod's namespace, in a new session by default;
        the Node stops it at teardown if it is still running."""
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.command(args), **kw)
        self._procs.append(proc)
        return proc

    def stop_processes(self) -> None:
        """Stop the processes this pod's :meth:`popen` started that still run."""
        while self._procs:
            _stop(self._procs.pop())


class Node:
    """A bridge in the root namespace with ``pods`` pods; a context manager (or call
    :meth:`close`). Setup failures undo what was made before re-raising."""

    def __init__(self, pods: int = 2, mtu: int = 1500) -> None:
        if not 1 <= pods <= MAX_PODS:
            raise ValueError(f"pods must be 1..{MAX_PODS}, got {pods}")
        pid = os.getpid()
        k = next(_node_counter)
        self.mtu = mtu
        self.prefix = f"sk{pid}{string.ascii_lowercase[k % 26]}"
        self.bridge = f"{self.prefix}b"
        a, b = 200 + pid % 50, (pid // 50 + k) % 250
        self.subnet = f"10.{a}.{b}.0/24"
        self.subnet6 = f"fd00:{a:02x}{b:02x}::/64"
        mac = f"{pid >> 16 & 0xFF:02x}:{pid >> 8 & 0xFF:02x}:{pid & 0xFF:02x}:{k % 256:02x}"
        self.bridge_mac = f"0e:00:{mac}"
        self.pods: list[Pod] = [
            Pod(
                index=i,
                name=f"{self.prefix}p{i}",
                ip=f"10.{a}.{b}.{i + 1}",
                ip6=f"fd00:{a:02x}{b:02x}::{i + 1:x}",
                host_veth=f"{self.prefix}h{i}",
                mac=f"02:{i:02x}:{mac}",
                host_mac=f"0a:{i:02x}:{mac}",
            )
            for i in range(pods)
        ]
        self._closed = False
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        # STP off: ports forward at once; snooping off: IPv6 neighbour discovery is flooded.
        _ip("link", "add", self.bridge, "address", self.bridge_mac, "mtu", str(self.mtu),
            "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
        _ip("link", "set", "dev", self.bridge, "addrgenmode", "none")
        _ip("link", "set", "dev", self.bridge, "up")
        for pod in self.pods:
            _ip("netns", "add", pod.name)
            _ip("link", "set", "dev", "lo", "up", netns=pod.name)
            self._add_link(pod)

    def _add_link(self, pod: Pod) -> None:
        """Make ``pod``'s veth pair, addresses, bridge port; all up."""
        _ip("link", "add", pod.host_veth, "address", pod.host_mac, "mtu", str(self.mtu),
            "type", "veth", "peer", "name", pod.ifname, "address", pod.mac,
            "mtu", str(self.mtu), "netns", pod.name)
        _ip("link", "set", "dev", pod.host_veth, "addrgenmode", "none")
        _disable_offloads(pod.host_veth)
        _ip("link", "set", "dev", pod.host_veth, "master", self.bridge, "up")
        _disable_offloads(pod.ifname, pod.name)
        _ip("addr", "add", f"{pod.ip}/24", "dev", pod.ifname, netns=pod.name)
        _ip("addr", "add", f"{pod.ip6}/64", "dev", pod.ifname, "nodad", netns=pod.name)
        _ip("link", "set", "dev", pod.ifname, "up", netns=pod.name)

    def remove_pod_link(self, i: int) -> None:
        """Delete pod ``i``'s veth pair (the interface disappears)."""
        _ip("link", "del", self.pods[i].host_veth)

    def restore_pod_link(self, i: int) -> None:
        """Recreate pod ``i``'s veth pair as it was (names, MACs, addresses, bridge port)."""
        self._add_link(self.pods[i])

    def close(self) -> None:
        """Stop pod processes, delete veths, namespaces and the bridge. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for pod in self.pods:
            pod.stop_processes()
        for pod in self.pods:
            if os.path.exists(pod.netns_path):
                _kill_netns_pids(pod.name)
            _ip("link", "del", pod.host_veth, check=False)
            _ip("netns", "del", pod.name, check=False)
        _ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> Node:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Node(bridge={self.bridge!r}, subnet={self.subnet!r}, pods={len(self.pods)})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(prefix: str = "sk") -> list[str]:
    """Delete namespaces and root-namespace links named ``<prefix><pid><letter>...`` whose pid
    is not alive (left by a crashed run); return the names removed."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)[a-z]")

    def stale(name: str) -> bool:
        m = pattern.match(name)
        return m is not None and not _pid_alive(int(m.group(1)))

    removed: list[str] = []
    links = []
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        # "7: sk123ah0@if2: <...>" -> "sk123ah0"
        name = line.split(": ", 2)[1].split("@", 1)[0] if ": " in line else ""
        if stale(name):
            links.append(name)
    # Veths first (deleting a namespace would remove them asynchronously), bridges last.
    for name in sorted(links, key=lambda n: n.endswith("b")):
        if _ip("link", "del", name, check=False).returncode == 0:
            removed.append(name)
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split(" ", 1)[0]
        if name and stale(name):
            _kill_netns_pids(name)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def in_netns(name_or_path: str) -> Iterator[None]:
    """Switch only the calling thread into a network namespace (a name under ``/run/netns``
    or a path) and back to the thread's own namespace on exit. Sockets made inside stay in
    the pod's namespace after the switch back."""
    path = name_or_path if "/" in name_or_path else f"{NETNS_DIR}/{name_or_path}"
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such network namespace", path) from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
