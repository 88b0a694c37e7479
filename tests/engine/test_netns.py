"""netns: names and paths resolved, labels, and one thread (only) moved into a namespace.

Needs root and `ip` (iproute2): fails, not skips, without them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from shark_tui.engine import netns
from shark_tui.engine.netns import NetnsError

T = TypeVar("T")
PID = os.getpid()


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture(scope="module")
def root_and_ip() -> None:
    if os.geteuid() != 0:
        pytest.fail("netns tests need root (ip netns add, setns): run them as root")
    if shutil.which("ip") is None:
        pytest.fail("netns tests need `ip` (apt-get install iproute2)")


@pytest.fixture
def ns(root_and_ip: None) -> Iterator[str]:
    """A fresh namespace with a veth pair in it; its name."""
    name = f"skNS{PID}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", f"skna{PID}", "type", "veth", "peer", "name", f"sknb{PID}")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread that ends afterwards (whatever namespace it was left in)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=20)


def ident(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def thread_ns() -> tuple[int, int]:
    return ident("/proc/thread-self/ns/net")


# --- resolve ---------------------------------------------------------------------------------


def test_resolve_name(ns: str) -> None:
    assert netns.resolve(ns) == f"/run/netns/{ns}"
    assert netns.resolve(f"/run/netns/{ns}") == f"/run/netns/{ns}"


def test_resolve_proc_pid(ns: str) -> None:
    assert netns.resolve(f"/proc/{PID}/ns/net") == f"/proc/{PID}/ns/net"
    with subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "30"]) as proc:
        try:
            path = netns.resolve(f"/proc/{proc.pid}/ns/net")
            # `ip netns exec` setns()es before exec: wait until the sleep is in the namespace
            for _ in range(200):
                if ident(path) == ident(f"/run/netns/{ns}"):
                    break
                time.sleep(0.01)
            assert ident(path) == ident(f"/run/netns/{ns}")
            assert netns.label(path) == f"pid{proc.pid}"
        finally:
            proc.kill()


def test_resolve_missing_name(root_and_ip: None) -> None:
    name = f"skNSnone{PID}"
    with pytest.raises(NetnsError) as e:
        netns.resolve(name)
    msg = str(e.value)
    assert msg == (
        f"network namespace '{name}': no /run/netns/{name} (create it with"
        f" `ip netns add {name}`, or give /proc/PID/ns/net)"
    )


def test_resolve_missing_pid(root_and_ip: None) -> None:
    with pytest.raises(NetnsError, match=r"no process 999999999 \(give the PID of a running"):
        netns.resolve("/proc/999999999/ns/net")


@pytest.mark.parametrize("spec", ["", ".", ".."])
def test_resolve_not_a_name(spec: str) -> None:
    with pytest.raises(NetnsError, match="ip netns list"):
        netns.resolve(spec)


def test_resolve_missing_path() -> None:
    with pytest.raises(NetnsError, match="no such file"):
        netns.resolve(f"/nonexistent/skNS{PID}")


def test_resolve_not_a_namespace(root_and_ip: None, tmp_path: Path) -> None:
    plain = os.path.join(tmp_path, "net")
    with open(plain, "w"):
        pass
    with pytest.raises(NetnsError, match="is not a namespace"):
        netns.resolve(plain)
    with pytest.raises(NetnsError, match="is a mount namespace, not a network one"):
        netns.resolve("/proc/self/ns/mnt")


def test_errors_are_one_line(root_and_ip: None) -> None:
    for spec in ("", f"skNSnone{PID}", "/proc/999999999/ns/net", "/proc/self/ns/uts"):
        with pytest.raises(NetnsError) as e:
            netns.resolve(spec)
        assert "\n" not in str(e.value)


# --- label -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("blue", "blue"),
        ("/run/netns/blue", "blue"),
        ("/var/run/netns/blue", "blue"),
        ("/proc/1234/ns/net", "pid1234"),
        ("/proc/1234/ns/net/", "pid1234"),
        ("/proc/1234/task/1240/ns/net", "tid1240"),
        ("/var/lib/cni/ns/cni-4f1e", "cni-4f1e"),
    ],
)
def test_label(spec: str, expected: str) -> None:
    assert netns.label(spec) == expected


# --- enter / switched / same_as_root ---------------------------------------------------------


def test_enter_moves_only_the_calling_thread(ns: str) -> None:
    path = netns.resolve(ns)
    home = thread_ns()
    entered = threading.Event()
    release = threading.Event()
    seen: dict[str, object] = {}

    def worker() -> None:
        netns.enter(path)
        seen["ns"] = thread_ns()
        seen["names"] = {name for _, name in socket.if_nameindex()}
        seen["same"] = netns.same_as_root("/proc/thread-self/ns/net")
        entered.set()
        release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert entered.wait(10)
        # while the worker is inside, this thread and the process stay home
        assert thread_ns() == home
        assert ident("/proc/self/ns/net") == home
        assert f"skna{PID}" not in {name for _, name in socket.if_nameindex()}
    finally:
        release.set()
        thread.join()
    assert seen["ns"] == ident(path)
    assert seen["names"] == {"lo", f"skna{PID}", f"sknb{PID}"}
    assert seen["same"] is False


def test_switched_goes_back(ns: str) -> None:
    path = netns.resolve(ns)

    def run() -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        before = thread_ns()
        with netns.switched(path):
            inside = thread_ns()
        return before, inside, thread_ns()

    before, inside, after = in_thread(run)
    assert inside == ident(path)
    assert before == after == ident("/proc/self/ns/net")


def test_switched_goes_back_on_error(ns: str) -> None:
    path = netns.resolve(ns)

    def run() -> tuple[int, int]:
        with pytest.raises(ZeroDivisionError), netns.switched(path):
            assert thread_ns() == ident(path)
            _ = 1 / 0
        return thread_ns()

    assert in_thread(run) == ident("/proc/self/ns/net")


def test_switched_to_bad_path_does_not_move(root_and_ip: None) -> None:
    def run() -> tuple[int, int]:
        with (
            pytest.raises(NetnsError, match="not a network namespace"),
            netns.switched("/proc/self/ns/uts"),
        ):
            pytest.fail("entered a uts namespace as a network one")
        return thread_ns()

    assert in_thread(run) == ident("/proc/self/ns/net")


def test_enter_errors(root_and_ip: None) -> None:
    with pytest.raises(NetnsError, match=r"No such file or directory \(give a name"):
        in_thread(lambda: netns.enter(f"/run/netns/skNSnone{PID}"))
    with pytest.raises(NetnsError, match="cannot enter network namespace /etc/hostname"):
        in_thread(lambda: netns.enter("/etc/hostname"))


def test_same_as_root(ns: str) -> None:
    assert netns.same_as_root("/proc/self/ns/net")
    assert netns.same_as_root(f"/proc/{PID}/ns/net")
    assert not netns.same_as_root(netns.resolve(ns))

    def run() -> tuple[bool, bool]:
        with netns.switched(netns.resolve(ns)):
            # /proc/self is the main thread, still home; this thread is not
            return (
                netns.same_as_root("/proc/self/ns/net"),
                netns.same_as_root("/proc/thread-self/ns/net"),
            )

    assert in_thread(run) == (True, False)
    with pytest.raises(NetnsError, match="give a name from `ip netns list`"):
        netns.same_as_root(f"/run/netns/skNSnone{PID}")
