"""Self-test of ``tests/netpods.py``: pods in real network namespaces on a bridge. Needs root and
iproute2; fails (not skips) without them, since CI runs as root."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import netpods

PORT = 8080  # fixed: every pod has its own namespace
BIG = 300_000  # bytes: enough for ~200 full-sized segments


def _names(prefix: str) -> list[str]:
    """Namespaces and root-namespace links whose names start with ``prefix``."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out += subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    words = (w.split("@")[0].rstrip(":") for w in out.split())
    return sorted({w for w in words if w.startswith(prefix)})


def _thread_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def _connect(pod: netpods.Pod, host: str, timeout: float) -> bool:
    """One TCP connect from inside ``pod`` to ``host:PORT``."""
    with netpods.in_netns(pod.name):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, PORT))
        except OSError:
            return False
        return True


def _wait_connect(pod: netpods.Pod, host: str, deadline: float = 3.0) -> None:
    """Poll until a TCP connect from ``pod`` to ``host:PORT`` succeeds."""
    end = time.monotonic() + deadline
    while not _connect(pod, host, 0.2):
        if time.monotonic() > end:
            pytest.fail(f"no TCP connect from {pod.name} to {host}:{PORT} within {deadline} s")
        time.sleep(0.01)


FETCH = """\
import sys, urllib.request
for url in sys.argv[1:]:
    body = urllib.request.urlopen(url, timeout=3).read()
    print(len(body), body[:40].decode().strip())
"""


def _fetch(client: netpods.Pod, *urls: str) -> list[str]:
    res = client.run(
        [sys.executable, "-c", FETCH, *urls], capture_output=True, text=True, timeout=10
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


@pytest.fixture(scope="module", autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/test_netpods.py needs root (network namespaces, veths, a bridge)")
    if shutil.which("ip") is None:
        pytest.fail("tests/test_netpods.py needs the ip command (iproute2)")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netpods.Node]:
    """Two pods; pod 0 runs an HTTP server on PORT (IPv4 and IPv6)."""
    netpods.cleanup_stale()
    root = tmp_path_factory.mktemp("www")
    (root / "hello.txt").write_text("hello from pod 0\n")
    (root / "big.bin").write_bytes(b"x" * BIG)
    with netpods.Node(pods=2) as node:
        node.pods[0].popen(
            [sys.executable, "-m", "http.server", "--bind", "::", "--directory", str(root),
             str(PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_connect(node.pods[0], "127.0.0.1")
        yield node


def test_layout(node: netpods.Node) -> None:
    bridge_ports = subprocess.run(
        ["ip", "-o", "link", "show", "master", node.bridge], capture_output=True, text=True,
        check=True,
    ).stdout
    for pod in node.pods:
        assert Path(f"/sys/class/net/{pod.host_veth}").exists()
        assert f" {pod.host_veth}@" in bridge_ports
        assert os.path.realpath(f"/sys/class/net/{pod.host_veth}/master").endswith(node.bridge)
        assert Path(pod.netns_path).exists()
        assert max(len(pod.name), len(pod.host_veth), len(node.bridge)) <= 15
        addrs = pod.run(["ip", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                        text=True, check=True).stdout
        assert f"inet {pod.ip}/24" in addrs
        assert f"inet6 {pod.ip6}/64" in addrs
    # The bridge and the host side carry no address: nothing reaches the rest of the host.
    for dev in [node.bridge, *(p.host_veth for p in node.pods)]:
        out = subprocess.run(["ip", "-o", "addr", "show", "dev", dev], capture_output=True,
                             text=True, check=True).stdout
        assert out == ""


def test_http_between_pods_ipv4_and_ipv6(node: netpods.Node) -> None:
    server, client = node.pods
    lines = _fetch(
        client,
        f"http://{server.ip}:{PORT}/hello.txt",
        f"http://[{server.ip6}]:{PORT}/hello.txt",
    )
    assert lines == ["17 hello from pod 0", "17 hello from pod 0"]


def test_segments_are_mtu_sized(node: netpods.Node) -> None:
    """A capture on the host-side veth sees wire-sized frames, not 64 KiB GSO segments."""
    server, client = node.pods
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    with cap:
        cap.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        cap.bind((server.host_veth, 0))
        assert _fetch(client, f"http://{server.ip}:{PORT}/big.bin")[0].startswith(f"{BIG} ")
        cap.setblocking(False)
        sizes = []
        while True:
            try:
                sizes.append(len(cap.recv(1 << 17)))
            except BlockingIOError:
                break
    assert sum(sizes) > BIG
    assert max(sizes) <= node.mtu + 14, max(sizes)


def test_in_netns_switches_only_this_thread_and_back(node: netpods.Node) -> None:
    before = _thread_netns()
    with netpods.in_netns(node.pods[0].netns_path):
        assert _thread_netns() == os.stat(node.pods[0].netns_path).st_ino
        with socket.create_connection(("127.0.0.1", PORT), timeout=1):
            pass
    assert _thread_netns() == before
    assert os.stat(f"/proc/{os.getpid()}/task/{os.getpid()}/ns/net").st_ino == before
    with pytest.raises(FileNotFoundError), netpods.in_netns("sk-no-such-netns"):
        pass
    assert _thread_netns() == before


def test_interface_disappears_and_comes_back(node: netpods.Node) -> None:
    server, client = node.pods
    assert _connect(client, server.ip, 1.0)
    node.remove_pod_link(0)
    try:
        assert not Path(f"/sys/class/net/{server.host_veth}").exists()
        assert not _connect(client, server.ip, 0.3)
        assert not _connect(client, server.ip6, 0.3)
    finally:
        node.restore_pod_link(0)
    assert Path(f"/sys/class/net/{server.host_veth}/brport").exists()
    _wait_connect(client, server.ip)
    _wait_connect(client, server.ip6)
    assert _fetch(client, f"http://[{server.ip6}]:{PORT}/hello.txt") == ["17 hello from pod 0"]


def test_teardown_leaves_nothing() -> None:
    with netpods.Node(pods=2) as node:
        assert node.prefix.startswith(f"sk{os.getpid()}")
        assert len(_names(node.prefix)) == 5  # bridge, 2 host veths, 2 namespaces
        sleeper = node.pods[1].popen(["sleep", "60"])
    assert sleeper.poll() is not None
    assert _names(node.prefix) == []
    node.close()  # idempotent


def test_cleanup_stale_removes_only_dead_runs(node: netpods.Node) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    prefix = f"sk{dead.pid}z"
    subprocess.run(["ip", "netns", "add", f"{prefix}p0"], check=True)
    subprocess.run(["ip", "link", "add", f"{prefix}b", "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "add", f"{prefix}h0", "master", f"{prefix}b", "type", "veth",
                    "peer", "name", "eth0", "netns", f"{prefix}p0"], check=True)
    removed = netpods.cleanup_stale()
    assert {f"{prefix}p0", f"{prefix}b", f"{prefix}h0"} <= set(removed)
    assert _names(prefix) == []
    assert len(_names(node.prefix)) == 5  # a live run is left alone


def test_partial_setup_failure_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = netpods.Node._add_link

    def add_link(self: netpods.Node, pod: netpods.Pod) -> None:
        made.append(self.prefix)
        if pod.index == 1:
            raise RuntimeError("boom")
        real(self, pod)

    monkeypatch.setattr(netpods.Node, "_add_link", add_link)
    with pytest.raises(RuntimeError, match="boom"):
        netpods.Node(pods=3)
    assert made and _names(made[0]) == []
