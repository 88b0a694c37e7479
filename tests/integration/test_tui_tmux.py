"""The real app, end to end, in tmux: `shark-tui` on this host (its embedded daemon capturing
the host-side veths of namespace-pods), real servers and clients in the pods, driven by keys
(send-keys) and read from the screen (capture-pane): protocol and address filtered by keys, an
entry opened, marked entries saved, the saved file read by tshark, the app gone after q.
Filtering by pod name (a --kube daemon naming the pods): test_tui_tmux_kube.py. Root needed
(CI is root)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.netpods import Node, cleanup_stale

SHARK = os.path.join(os.path.dirname(sys.executable), "shark-tui")
SERVER = r"""
import http.server, os, socket, sys
os.chdir(sys.argv[1])
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
S(("::", 8000), H).serve_forever()
"""


@pytest.fixture
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.fail("the TUI end-to-end test needs root (namespaces, live capture)")
    for tool in ("tmux", "tshark", "curl", "redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/setup")
    cleanup_stale()
    with Node(pods=2) as n:
        yield n


class Tmux:
    """A private tmux server (its own socket, no config): nobody else's options apply."""

    def __init__(self, name: str, command: str, cwd: Path) -> None:
        self.name = name
        self.base = ["tmux", "-L", name, "-f", "/dev/null"]
        subprocess.run(
            [*self.base, "new-session", "-d", "-s", name, "-x", "200", "-y", "45",
             "-c", str(cwd), command],
            check=True,
        )  # fmt: skip
        subprocess.run([*self.base, "set-option", "-g", "window-size", "manual"], check=True)
        subprocess.run([*self.base, "resize-window", "-t", name, "-x", "200", "-y", "45"])

    def screen(self) -> str:
        res = subprocess.run(
            [*self.base, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return res.stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        args = [*self.base, "send-keys", "-t", self.name, *(["-l"] if literal else []), *keys]
        subprocess.run(args, check=True)
        time.sleep(0.2)

    def wait(self, pred: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if pred(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"never saw {what}; the screen:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def rows(screen: str) -> list[list[str]]:
    """The list's rows on screen, split into their cells."""
    return [re.split(r"\s{2,}|\s→\s", line.strip()) for line in screen.splitlines()
            if " → " in line and re.match(r"\s*[● ]*\d\d:\d\d:\d\d\.\d{3}", line)]  # fmt: skip


def test_tui_in_tmux(node: Node, tmp_path: Path) -> None:
    p0, p1 = node.pods
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f").write_bytes(b"x" * 3000)
    p0.popen([sys.executable, "-c", SERVER, str(tmp_path / "www")])
    p0.popen(["redis-server", "--port", "6379", "--save", "", "--appendonly", "no",
              "--protected-mode", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):  # both listening (probed inside the pod: no packet on the veths)
        ok = p0.run(["sh", "-c", "redis-cli -p 6379 ping && curl -s -o /dev/null "
                     "http://127.0.0.1:8000/f"], capture_output=True)  # fmt: skip
        if ok.returncode == 0:
            break
        time.sleep(0.1)
    bpf = f"net {node.subnet}"
    cmd = f'{SHARK} -i {p0.host_veth} -i {p1.host_veth} -f "{bpf}"'
    # (COLUMNS/LINES from the test runner would fix the app's size at theirs, not tmux's)
    env = f"env -u COLUMNS -u LINES XDG_CONFIG_HOME={tmp_path} XDG_STATE_HOME={tmp_path}"
    done = tmp_path / "exited"  # the shell goes on when the app has exited
    tui = Tmux(f"sktui{os.getpid()}", f"sh -c '{env} {cmd}; touch {done}; sleep 60'", tmp_path)
    try:
        # ("not capturing" while the daemon still loads its TLS probes does not count)
        tui.wait(lambda s: "daemons 1/1" in s and " capturing sk" in s, "the daemon capturing")
        for i in range(3):
            p1.run(["curl", "-s", "-o", "/dev/null", f"http://{p0.ip}:8000/f?n={i}"], check=True)
        p1.run(["redis-cli", "-h", p0.ip, "-p", "6379", "set", "k", "v"], check=True)
        p1.run(["redis-cli", "-h", p0.ip, "-p", "6379", "get", "k"], check=True)
        screen = tui.wait(
            lambda s: s.count("/f?n=") == 3 and "redis" in s, "three GETs and the redis calls"
        )
        protos = {r[3] for r in rows(screen)}
        assert {"http", "redis"} <= protos, screen

        # 1 toggles http: the daemon is asked again and only http rows come back
        tui.keys("1")
        screen = tui.wait(lambda s: "(http)" in s and s.count("/f?n=") == 3, "the http filter")
        assert {r[3] for r in rows(screen)} == {"http"}, screen

        # p picks the server's address: the list is what ip == that address gives
        tui.keys("p")
        tui.keys(p0.ip, literal=True)
        tui.keys("Enter")
        screen = tui.wait(lambda s: f"ip == \"{p0.ip}\"" in s or f"ip == {p0.ip}" in s,
                          "the address filter")  # fmt: skip
        shown = rows(tui.wait(lambda s: s.count("/f?n=") == 3, "the rows again"))
        assert shown and all(p0.ip in " ".join(r) for r in shown), screen

        # enter opens the entry under the cursor (the newest GET): its request
        tui.keys("Enter")
        # the pane's title comes first; the request itself once GetEntry has answered
        screen = tui.wait(lambda s: "Request" in s and "GET /f?n=2" in s and "Host" in s,
                          "the detail pane with its request")  # fmt: skip
        tui.keys("Escape")
        tui.wait(lambda s: "Request" not in s, "the list again")

        # mark two rows, save them, read the file with tshark
        tui.keys("space")
        tui.keys("k")
        tui.keys("space")
        tui.keys("w")
        tui.wait(lambda s: "pcapng" in s, "the save dialog")
        tui.keys("Enter")
        deadline = time.monotonic() + 20
        saved: list[str] = []
        while time.monotonic() < deadline and not saved:
            saved = glob.glob(str(tmp_path / "shark-tui-*.pcapng"))
            time.sleep(0.2)
        assert saved, tui.screen()
        time.sleep(0.5)
        out = subprocess.run(
            ["tshark", "-r", saved[0], "-T", "fields", "-e", "tcp.stream",
             "-e", "http.request.uri"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        streams = {line.split("\t")[0] for line in out.splitlines()}
        uris = {line.split("\t")[1] for line in out.splitlines() if line.split("\t")[1]}
        assert len(streams) == 2, out
        assert uris == {"/f?n=1", "/f?n=2"}, out
        tui.keys("q")
        tui.wait(lambda s: done.exists(), "the app exiting after q")
    finally:
        tui.kill()
