"""podnet: pods' namespaces found from their processes, matched by IP, their host-side veths and
their sidecars — on real namespaces (`ip netns add`, veth pairs) with real processes in them.

Needs root and `ip` (iproute2): fails, not skips, without them. Addresses are in 10.213.K.0/24
and fd00:213:K::/64 (K from this process's PID) and live only inside the test's namespaces;
the host-side veths get no address, so the host's routes never change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shark_tui.engine import netns, podnet
from shark_tui.engine.podnet import Iface, NetNs, Process, ScanStats

PID = os.getpid()
K = 100 + PID % 100
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # not the test's: no stray INSTANCE_IP


def ip(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def ident(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


@dataclass
class Pod:
    """One test namespace with a veth to the host and processes in it."""

    name: str
    index: int
    host_veth: str
    v4: str
    v6: str
    procs: list[subprocess.Popen[bytes]]

    @property
    def inode(self) -> int:
        return ident(f"/run/netns/{self.name}")[1]

    def start(self, argv: list[str], *, exe: str = "", **env: str) -> int:
        """Run ``argv`` in the namespace (``ip netns exec`` execs it: same PID); its PID once
        it is running there (as ``exe``, default ``argv[0]``)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], env={**ENV, **env})
        self.procs.append(proc)
        want = exe or os.path.basename(argv[0])
        ns = ident(f"/run/netns/{self.name}")
        wait_for(
            lambda: exe_name(proc.pid) == want and ident(f"/proc/{proc.pid}/ns/net") == ns,
            f"{argv} in {self.name}",
        )
        return proc.pid


@contextlib.contextmanager
def make_pod(index: int) -> Iterator[Pod]:
    name = f"skpn{PID}-{index}"
    veth = f"skpv{index}{PID}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    subprocess.run(["ip", "link", "delete", veth], capture_output=True)
    ip("netns", "add", name)
    pod = Pod(name, index, veth, f"10.213.{K}.{10 + index}", f"fd00:213:{K}::{10 + index}", [])
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", f"skpe{index}{PID}", "netns", name)
        ip("-n", name, "link", "set", f"skpe{index}{PID}", "name", "eth0")
        ip("-n", name, "addr", "add", f"{pod.v4}/24", "dev", "eth0")
        ip("-n", name, "addr", "add", f"{pod.v6}/64", "dev", "eth0", "nodad")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("link", "set", veth, "up")
        yield pod
    finally:
        for proc in pod.procs:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        subprocess.run(["ip", "link", "delete", veth], capture_output=True)


@pytest.fixture(scope="module")
def root() -> None:
    if os.geteuid() != 0:
        pytest.fail("podnet tests need root (ip netns add, setns): run them as root")
    if shutil.which("ip") is None:
        pytest.fail("podnet tests need `ip` (apt-get install iproute2)")


@pytest.fixture(scope="module")
def envoy_exe(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of sleep named ``envoy``: its exe and comm say envoy."""
    path = tmp_path_factory.mktemp("bin") / "envoy"
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", path)
    return str(path)


@pytest.fixture(scope="module")
def pods(root: None, envoy_exe: str) -> Iterator[list[Pod]]:
    """Three pods: 0 with an Istio-like envoy (INSTANCE_IP), 1 with an envoy lacking it (not a
    sidecar), 2 with a process carrying linkerd's ``_pod_name``; each with an app ``sleep``."""
    with make_pod(0) as p0, make_pod(1) as p1, make_pod(2) as p2:
        p0.start(["sleep", "60"])
        p0.start([envoy_exe, "60"], INSTANCE_IP=p0.v4)
        p1.start(["sleep", "60"])
        p1.start([envoy_exe, "60"], POD_NAME="x", _INSTANCE_IP="y", XINSTANCE_IP="z")
        p2.start(["sleep", "60"])
        p2.start(["sleep", "61"], _pod_name="x", _pod_ns="default")
        yield [p0, p1, p2]


def by_inode(spaces: list[NetNs]) -> dict[int, NetNs]:
    return {ns.inode: ns for ns in spaces}


# --- scan --------------------------------------------------------------------------------------


def test_scan_lists_each_namespace_once(pods: list[Pod]) -> None:
    stats = ScanStats()
    spaces = podnet.scan(stats=stats)
    assert len({ns.inode for ns in spaces}) == len(spaces)
    found = by_inode(spaces)
    for pod in pods:
        ns = found[pod.inode]
        assert not ns.host
        assert ns.error is None
        assert ns.addrs["lo"] == ("127.0.0.1", "::1")
        assert ns.addrs["eth0"][:2] == (pod.v4, pod.v6)  # IPv4 first
        assert all(a.startswith("fe80::") for a in ns.addrs["eth0"][2:])  # once the link is up
        assert [p.pid for p in ns.procs] == sorted(p.pid for p in pod.procs)
        assert ns.pid == ns.procs[0].pid
        assert ns.path == f"/proc/{ns.pid}/ns/net"
        assert ident(ns.path) == ident(f"/run/netns/{pod.name}")
        eth0 = next(i for i in ns.ifaces if i.name == "eth0")
        assert eth0.kind == "veth" and eth0.peer > 0 and eth0.peer_netnsid is not None
        lo = next(i for i in ns.ifaces if i.name == "lo")
        assert lo.loopback and lo.peer == 0 and lo.kind == ""
    assert stats.scans == 1 and stats.namespaces == len(spaces)
    assert stats.procs >= sum(len(p.procs) for p in pods)


def test_scan_processes(pods: list[Pod]) -> None:
    found = by_inode(podnet.scan())
    procs = found[pods[0].inode].procs
    assert procs == (
        Process(pid=pods[0].procs[0].pid, exe="sleep", comm="sleep"),
        Process(pid=pods[0].procs[1].pid, exe="envoy", comm="envoy"),
    )


def test_scan_includes_the_host_first(pods: list[Pod]) -> None:
    spaces = podnet.scan()
    host = spaces[0]
    assert host.host and [ns for ns in spaces if ns.host] == [host]
    assert ident(host.path) == ident("/proc/self/ns/net")
    assert PID in {p.pid for p in host.procs}
    assert host.addrs["lo"][0] == "127.0.0.1"
    names = {i.name for i in host.ifaces}
    assert {p.host_veth for p in pods} <= names
    # after the host, by the PID the namespace was entered through
    assert [ns.pid for ns in spaces[1:]] == sorted(ns.pid for ns in spaces[1:])


def test_scan_leaves_the_caller_where_it_was(pods: list[Pod]) -> None:
    before = ident("/proc/thread-self/ns/net")
    fds = len(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    for _ in range(3):
        podnet.scan()
    assert ident("/proc/thread-self/ns/net") == before
    assert len(os.listdir("/proc/self/fd")) == fds
    assert threading.active_count() == threads

    # from a thread that is itself in a pod's namespace: the same answer
    out: list[list[NetNs]] = []

    def inside() -> None:
        netns.enter(f"/run/netns/{pods[1].name}")
        out.append(podnet.scan())
        out.append([ns for ns in out[0] if podnet.host_veth(ns) == pods[1].host_veth])

    worker = threading.Thread(target=inside)
    worker.start()
    worker.join()
    assert by_inode(out[0])[pods[1].inode].addrs["eth0"][0] == pods[1].v4
    assert [ns.inode for ns in out[1]] == [pods[1].inode]


def test_scan_unprivileged(root: None) -> None:
    """As nobody: only its own processes can be looked at, and a namespace it may open but not
    enter (setns needs CAP_SYS_ADMIN) is listed without interfaces, saying why."""
    with make_pod(4) as pod:
        mine = pod.start(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60"],
            exe="sleep",
        )
        code = (
            "import json\n"
            "from shark_tui.engine import podnet\n"
            "st = podnet.ScanStats()\n"
            "out = [[n.inode, n.host, n.error, n.addrs, [p.pid for p in n.procs]]"
            " for n in podnet.scan(stats=st)]\n"
            "print(json.dumps([out, st.namespaces_failed, st.procs_unreadable]))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=30,
            user=65534,
            group=65534,
            extra_groups=[],
        )
        assert done.returncode == 0, done.stderr
        spaces, failed, unreadable = json.loads(done.stdout)
        by = {s[0]: s for s in spaces}
        _, host, error, addrs, pids = by[pod.inode]
        assert not host and pids == [mine] and addrs == {}
        assert error.startswith(f"cannot enter network namespace /proc/{mine}/ns/net: ")
        assert "run as root" in error
        [home] = [s for s in spaces if s[1]]
        assert home[2] is None and home[3]["lo"][0] == "127.0.0.1"
        assert failed >= 1 and unreadable > 0  # root's processes: not even their namespace


# --- sidecars --------------------------------------------------------------------------------


def test_sidecars(pods: list[Pod]) -> None:
    found = by_inode(podnet.scan())
    assert found[pods[0].inode].sidecar == "envoy"
    assert found[pods[1].inode].sidecar is None  # envoy, but no INSTANCE_IP: not a sidecar
    assert found[pods[2].inode].sidecar == "linkerd"
    assert next(ns for ns in found.values() if ns.host).sidecar is None


def test_sidecar_rules_on_a_built_proc(root: None, tmp_path: Path) -> None:
    """A fake procfs whose ns/net links point at real namespace files: the environment rules
    exactly (names at the start of a variable only, linkerd by name, envoy winning, the caps)."""
    names = [f"skpf{PID}-{i}" for i in range(6)]
    for name in names:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        ip("netns", "add", name)
    try:

        def proc(pid: int, ns: int, exe: str, comm: str, environ: bytes) -> None:
            d = tmp_path / str(pid)
            (d / "ns").mkdir(parents=True)
            (d / "ns" / "net").symlink_to(f"/run/netns/{names[ns]}")
            (d / "exe").symlink_to(f"/usr/local/bin/{exe}")
            (d / "comm").write_text(comm + "\n")
            (d / "environ").write_bytes(environ)

        proc(101, 0, "pilot-agent", "pilot-agent", b"INSTANCE_IP=1.2.3.4\0")
        proc(102, 0, "envoy", "envoy", b"A=1\0INSTANCE_IP=1.2.3.4\0")  # -> envoy
        proc(201, 1, "envoy", "envoy", b"XINSTANCE_IP=1\0A=INSTANCE_IP=2\0")  # -> None
        proc(301, 2, "linkerd2-proxy", "linkerd2-proxy", b"")  # by name -> linkerd
        proc(401, 3, "app", "app", b"_pod_name=web-0\0")  # by environment -> linkerd
        proc(402, 3, "envoy", "envoy", b"INSTANCE_IP=1\0")  # ...but envoy wins
        proc(501, 4, "app", "app", b"A=1\0" * 10 + b"x" * podnet.MAX_ENVIRON + b"\0_pod_name=y")
        proc(601, 5, "app", "main", b"_pod_name=x\0")
        (tmp_path / "601" / "environ").unlink()  # exited: an unreadable environment says nothing
        (tmp_path / "700").mkdir()  # a kernel thread: no exe
        (tmp_path / "701" / "ns").mkdir(parents=True)  # exited between readlink and stat
        (tmp_path / "701" / "exe").symlink_to("/usr/bin/gone")
        (tmp_path / "self").mkdir()  # not a PID

        stats = ScanStats()
        spaces = podnet.scan(str(tmp_path), stats=stats)
        got = {ns.inode: ns for ns in spaces}
        sidecars = [got[ident(f"/run/netns/{n}")[1]].sidecar for n in names]
        assert sidecars == ["envoy", None, "linkerd", "envoy", None, None]
        ns0 = got[ident(f"/run/netns/{names[0]}")[1]]
        assert ns0.path == f"{tmp_path}/101/ns/net" and ns0.pid == 101
        assert ns0.procs[1] == Process(pid=102, exe="envoy", comm="envoy")
        assert ns0.addrs == {}  # lo is down and bare in a fresh namespace
        assert [i.name for i in ns0.ifaces] == ["lo"]
        assert stats.procs == 10 and stats.procs_unreadable == 1
        assert stats.environs_truncated == 1
        assert len(spaces) == 6 and stats.namespaces == 6

        stats = ScanStats()
        spaces = podnet.scan(str(tmp_path), max_procs=3, max_namespaces=1, stats=stats)
        assert [ns.pid for ns in spaces] == [101]  # pids 101, 102, 201: two namespaces, one kept
        assert stats.procs_over_cap == 7  # 10 numbered directories, 3 examined
        assert stats.namespaces_over_cap == 1
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_environ_reads_are_capped(root: None, tmp_path: Path) -> None:
    name = f"skpf{PID}-cap"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    ip("netns", "add", name)
    try:
        for pid in range(1000, 1000 + podnet.MAX_ENVIRON_READS + 5):
            d = tmp_path / str(pid)
            (d / "ns").mkdir(parents=True)
            (d / "ns" / "net").symlink_to(f"/run/netns/{name}")
            (d / "exe").symlink_to("/usr/bin/app")
            (d / "comm").write_text("app\n")
            (d / "environ").write_bytes(b"A=1\0")
        stats = ScanStats()
        [ns] = podnet.scan(str(tmp_path), stats=stats)
        assert ns.sidecar is None and len(ns.procs) == podnet.MAX_ENVIRON_READS + 5
        assert stats.environs == podnet.MAX_ENVIRON_READS and stats.environs_over_cap == 5
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


# --- find ------------------------------------------------------------------------------------


def test_find(pods: list[Pod]) -> None:
    spaces = podnet.scan()
    for pod in pods:
        for addr in (pod.v4, pod.v6, pod.v6.replace(f":{K}:", f":{K:04}:"), f"{pod.v6}%eth0"):
            ns = podnet.find(addr, spaces)
            assert ns is not None and ns.inode == pod.inode, addr
    assert podnet.find(f"10.213.{K}.99", spaces) is None
    assert podnet.find("127.0.0.1", spaces) is None  # in every namespace: names none
    assert podnet.find("::1", spaces) is None
    assert podnet.find("not-an-ip", spaces) is None
    assert podnet.find("", spaces) is None
    host_only = next(
        a
        for i in spaces[0].ifaces
        for a in i.addrs
        if not i.loopback and all(a not in j.addrs for ns in spaces[1:] for j in ns.ifaces)
    )
    assert podnet.find(host_only, spaces) is spaces[0]


def fake(inode: int, *, host: bool = False, ifaces: tuple[Iface, ...] = ()) -> NetNs:
    return NetNs(
        inode=inode,
        pid=inode,
        path=f"/proc/{inode}/ns/net",
        host=host,
        ifaces=ifaces,
        procs=(),
        sidecar=None,
    )


def iface(name: str, *addrs: str, index: int = 2, kind: str = "veth", peer: int = 0) -> Iface:
    return Iface(
        index=index,
        name=name,
        kind=kind,
        loopback=name == "lo",
        peer=peer,
        peer_netnsid=0 if peer else None,
        addrs=addrs,
    )


def test_find_prefers_a_pod_to_the_host() -> None:
    host = fake(1, host=True, ifaces=(iface("eth0", "10.0.0.1", "10.0.0.9"),))
    a = fake(2, ifaces=(iface("eth0", "10.0.0.9"),))
    b = fake(3, ifaces=(iface("eth0", "10.0.0.9", "fd00::9"),))
    assert podnet.find("10.0.0.9", [host, a, b]) is a
    assert podnet.find("10.0.0.9", [host, b, a]) is b
    assert podnet.find("10.0.0.1", [host, a, b]) is host
    assert podnet.find("fd00:0:0::0009", [host, a, b]) is b
    assert podnet.find("10.0.0.1", []) is None


# --- host_veth -------------------------------------------------------------------------------


def test_host_veth(pods: list[Pod]) -> None:
    spaces = podnet.scan()
    host = spaces[0]
    found = by_inode(spaces)
    for pod in pods:
        ns = found[pod.inode]
        assert podnet.host_veth(ns) == pod.host_veth
        assert podnet.host_veth(ns, host) == pod.host_veth
        peer = next(i for i in host.ifaces if i.name == pod.host_veth)
        assert (
            peer.kind == "veth"
            and peer.peer == next(i for i in ns.ifaces if i.name == "eth0").index
        )
    assert podnet.host_veth(host) is None


def test_host_veth_checks_both_ends(pods: list[Pod]) -> None:
    host = podnet.scan()[0]
    lo = next(i for i in host.ifaces if i.loopback)
    real = next(i for i in host.ifaces if i.name == pods[0].host_veth)
    # eth0 pointing at a host device that is no veth, or at a veth that points elsewhere
    assert (
        podnet.host_veth(fake(9, ifaces=(iface("eth0", "10.1.1.1", peer=lo.index),)), host) is None
    )
    wrong = iface("eth0", "10.1.1.1", index=real.peer + 1000, peer=real.index)
    assert podnet.host_veth(fake(9, ifaces=(wrong,)), host) is None
    # no veth, a veth with no peer elsewhere, or one whose host end is gone
    assert (
        podnet.host_veth(fake(9, ifaces=(iface("eth0", "10.1.1.1", kind="ipvlan", peer=5),)))
        is None
    )
    assert podnet.host_veth(fake(9, ifaces=(iface("eth0", "10.1.1.1"),)), host) is None
    assert podnet.host_veth(fake(9, ifaces=(iface("eth0", peer=10**6),)), host) is None
    # not eth0: the veth holding a routable address
    right = iface("net1", "10.1.1.1", index=real.peer, peer=real.index)
    linklocal = iface("net0", "fe80::1", index=real.peer, peer=lo.index)
    assert podnet.host_veth(fake(9, ifaces=(linklocal, right)), host) == pods[0].host_veth


# --- processes coming and going --------------------------------------------------------------


def test_entered_through_the_next_process_when_the_first_exits(
    root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_pod(3) as pod:
        first = pod.start(["sleep", "60"])
        second = pod.start(["sleep", "61"])
        real_group = podnet._group

        def group_then_exit(*args: Any) -> Any:
            groups = real_group(*args)
            pod.procs[0].kill()
            pod.procs[0].wait()  # reaped: /proc/first is gone
            return groups

        monkeypatch.setattr(podnet, "_group", group_then_exit)
        stats = ScanStats()
        ns = by_inode(podnet.scan(stats=stats))[pod.inode]
        assert [p.pid for p in ns.procs] == [first, second]  # as listed
        assert ns.pid == second and ns.path == f"/proc/{second}/ns/net"
        assert ns.addrs["eth0"][0] == pod.v4
        assert stats.namespaces_vanished == 0

        def group_then_all_exit(*args: Any) -> Any:
            groups = real_group(*args)
            for proc in pod.procs:
                proc.kill()
                proc.wait()
            return groups

        monkeypatch.setattr(podnet, "_group", group_then_all_exit)
        stats = ScanStats()
        assert pod.inode not in by_inode(podnet.scan(stats=stats))
        assert stats.namespaces_vanished == 1


def test_processes_exiting_during_scans(
    pods: list[Pod], capsys: pytest.CaptureFixture[str]
) -> None:
    """Short-lived processes come and go in one pod while scans run: none breaks a scan."""
    churn = subprocess.Popen(
        ["ip", "netns", "exec", pods[1].name, "sh", "-c", "while :; do /bin/true; done"],
        env=ENV,
        start_new_session=True,
    )
    try:
        time.sleep(0.2)
        stats = ScanStats()
        for _ in range(25):
            found = by_inode(podnet.scan(stats=stats))
            assert all(found[p.inode].addrs["eth0"][0] == p.v4 for p in pods)
        with capsys.disabled():
            print(
                f"\n  churn: 25 scans, {stats.procs} processes examined,"
                f" {stats.procs_unreadable} gone meanwhile"
            )
    finally:
        os.killpg(churn.pid, signal.SIGKILL)
        churn.wait()


# --- cost ------------------------------------------------------------------------------------


def test_scan_cost_with_a_thousand_processes(
    root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rough cost of a scan with ~1000 processes in ~40 namespaces (printed, not asserted)."""
    n_ns, per_ns = 40, 22
    names = [f"skpc{PID}-{i}" for i in range(n_ns)]
    delete = "".join(f"netns delete {n}\n" for n in names)
    subprocess.run(["ip", "-force", "-batch", "-"], input=delete, capture_output=True, text=True)
    ip("-batch", "-", stdin="".join(f"netns add {n}\n" for n in names))
    groups: list[subprocess.Popen[bytes]] = []
    try:
        loop = f"for i in $(seq {per_ns}); do sleep 60 & done; wait"
        for n in names:
            groups.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", n, "sh", "-c", loop], env=ENV, start_new_session=True
                )
            )
        want = {ident(f"/run/netns/{n}")[1] for n in names}

        def all_started() -> bool:
            found = by_inode(podnet.scan())
            return all(
                len(found[i].procs) == per_ns + 1 for i in want if i in found
            ) and want <= set(found)

        wait_for(all_started, "the sleeps", timeout=20)
        stats = ScanStats()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            spaces = podnet.scan(stats=stats)
            times.append(time.perf_counter() - t0)
        procs = sum(len(ns.procs) for ns in spaces)
        with capsys.disabled():
            print(
                f"\n  scan: {procs} processes in {len(spaces)} namespaces: "
                f"min {min(times) * 1e3:.1f} ms, median {statistics.median(times) * 1e3:.1f} ms; "
                f"per scan {stats.environs // 5} environments read, "
                f"{stats.environs_over_cap // 5} over the cap",
            )
        assert procs >= n_ns * per_ns
    finally:
        for g in groups:
            os.killpg(g.pid, signal.SIGKILL)
            g.wait()
        subprocess.run(
            ["ip", "-force", "-batch", "-"], input=delete, capture_output=True, text=True
        )
