"""The real app, end to end, in tmux, filtered by pod name: a cluster-aware daemon
(``shark-tui daemon --kube``) names the namespace-pods from the stand-in API server
(tests/kube/apiserver.py: pod objects whose IPs are the namespace-pods' IPs), and
``shark-tui attach unix:SOCK --token-file F`` runs in tmux, driven by keys (send-keys) and read
from the screen (capture-pane):

- web-0 (shop) calls api-0 (shop: HTTP and Redis) and cache-0 (db: HTTP);
- ``1`` keeps the http rows; ``p``, part of a pod name, enter: only api-0's calls are shown and
  the filter in the bar names the pod in its namespace;
- enter opens the newest call, esc closes it; two rows marked and saved, the file read by
  tshark; ``q`` quits (the shell runs on and touches a file when the app has exited).

Root is needed (namespaces, capture): this fails, never skips, without it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemonpeers import SHARK, Daemon
from tests.integration.test_tui_tmux import SERVER, Tmux, rows
from tests.kube.apiserver import ApiServer
from tests.kube.test_cluster import k8s_pod, namespace
from tests.netpods import Node, Pod, cleanup_stale

NODE = "node-a"


def calls(screen: str) -> set[str]:
    """The summaries of the rows on screen (paths; Redis keys)."""
    return {r[-1] for r in rows(screen)}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ApiServer, Node, Path]]:
    if os.geteuid() != 0:
        pytest.fail("the TUI end-to-end test needs root (namespaces, live capture)")
    for tool in ("tmux", "tshark", "curl", "redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/setup")
    cleanup_stale()
    with ApiServer() as api, Node(pods=3) as node:
        for ns in ("shop", "db"):
            api.create(namespace(ns))
        yield api, node, api.kubeconfig(tmp_path / "kubeconfig")


def serve(pod: Pod, www: Path) -> None:
    """HTTP on 8000 (www's files) and Redis on 6379 in ``pod``, both answering (probed inside
    the pod: no packet crosses the veths before the capture starts)."""
    pod.popen([sys.executable, "-c", SERVER, str(www)])
    pod.popen(["redis-server", "--port", "6379", "--save", "", "--appendonly", "no",
               "--protected-mode", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):
        ok = pod.run(["sh", "-c", "redis-cli -p 6379 ping && curl -s -o /dev/null "
                      "http://127.0.0.1:8000/f"], capture_output=True)  # fmt: skip
        if ok.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the servers in {pod.name} never answered")


def test_tui_attached_to_a_kube_daemon_filters_by_pod(
    cluster: tuple[ApiServer, Node, Path], tmp_path: Path
) -> None:
    api, node, kubeconfig = cluster
    api_pod, web, cache = node.pods
    api.create(k8s_pod("api-0", "shop", api_pod))
    api.create(k8s_pod("web-0", "shop", web))
    api.create(k8s_pod("cache-0", "db", cache))
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f").write_bytes(b"x" * 3000)
    (tmp_path / "www" / "c").write_bytes(b"y" * 500)
    serve(api_pod, tmp_path / "www")
    serve(cache, tmp_path / "www")
    web.popen(["sleep", "600"])  # a process in the pod: how the daemon finds its namespace

    sock, token = f"unix:{tmp_path}/sock", str(tmp_path / "token")
    d = Daemon(str(tmp_path / "store"), "--kube", "--kubeconfig", str(kubeconfig),
               "--node", NODE, "--listen", sock, "--token-file", token)  # fmt: skip
    done = tmp_path / "exited"
    tui: Tmux | None = None
    try:
        for name in ("shop/api-0", "shop/web-0", "db/cache-0"):
            d.wait_for(f"pod {name}", timeout=60)
        d.wait_for("capturing on", timeout=60)
        # (COLUMNS/LINES from the test runner would fix the app's size at theirs, not tmux's)
        env = f"env -u COLUMNS -u LINES XDG_CONFIG_HOME={tmp_path} XDG_STATE_HOME={tmp_path}"
        cmd = f"{env} {SHARK} attach {sock} --token-file {token}; touch {done}; sleep 60"
        tui = Tmux(f"skkube{os.getpid()}", f"sh -c '{cmd}'", tmp_path)
        tui.wait(lambda s: "daemons 1/1" in s, "the daemon connected", timeout=30)

        for i in range(3):
            web.run(["curl", "-s", "-o", "/dev/null", f"http://{api_pod.ip}:8000/f?n={i}"],
                    check=True)  # fmt: skip
        for i in range(2):
            web.run(["curl", "-s", "-o", "/dev/null", f"http://{cache.ip}:8000/c?m={i}"],
                    check=True)  # fmt: skip
        for cmd, reply in ((["set", "k", "v"], "OK"), (["incr", "n"], "1")):
            res = web.run(["redis-cli", "-h", api_pod.ip, "-p", "6379", *cmd],
                          capture_output=True, text=True, check=True)  # fmt: skip
            assert res.stdout.strip() == reply, res
        screen = tui.wait(lambda s: calls(s) >= {"/f?n=0", "/f?n=1", "/f?n=2", "/c?m=0",
                                                  "/c?m=1", "k", "n"},
                          "the five GETs and the two redis calls", timeout=30)  # fmt: skip
        shown = rows(screen)
        # the ends are pods (ns/pod), not addresses
        assert {(r[1], r[2]) for r in shown} == {
            ("shop/web-0", "shop/api-0"), ("shop/web-0", "db/cache-0")}, screen  # fmt: skip
        assert {r[3] for r in shown} == {"http", "redis"}, screen
        assert api_pod.ip not in screen and cache.ip not in screen

        # 1 toggles http: only http rows come back, to both servers
        tui.keys("1")
        screen = tui.wait(lambda s: "(http)" in s and len(calls(s)) == 5, "the http filter")
        assert {r[3] for r in rows(screen)} == {"http"}, screen

        # p, part of a pod's name, enter: api-0's calls only, the pod named in the filter
        tui.keys("p")
        tui.wait(lambda s: "Pods and addresses seen" in s and "pod  cache-0" in s, "the picker")
        tui.keys("api", literal=True)
        tui.wait(lambda s: "pod  api-0" in s and "pod  cache-0" not in s and "pod  web-0" not in s,
                 "the picker narrowed to api-0")  # fmt: skip
        tui.keys("Enter")
        # (the header shows the filter's start: the toggle's, and-ed with the picker's term
        # ((src.pod == "api-0" and src.ns == "shop") or (dst.pod == ...)))
        term = 'filter: (http) and (((src.pod == "api-0" and'
        screen = tui.wait(lambda s: term in s and calls(s) == {"/f?n=0", "/f?n=1", "/f?n=2"},
                          "the pod filter")  # fmt: skip
        shown = rows(screen)
        assert len(shown) == 3, screen
        assert {(r[1], r[2], r[3]) for r in shown} == {("shop/web-0", "shop/api-0", "http")}

        # enter opens the entry under the cursor (the newest GET): its request
        tui.keys("Enter")
        tui.wait(lambda s: "Request" in s and "GET /f?n=2" in s and "Host" in s,
                 "the detail pane with its request")  # fmt: skip
        tui.keys("Escape")
        tui.wait(lambda s: "Request" not in s, "the list again")

        # mark the two newest rows, save them, read the file with tshark
        tui.keys("space")
        tui.keys("k")
        tui.keys("space")
        tui.wait(lambda s: "marked 2" in s, "two rows marked")
        tui.keys("w")
        tui.wait(lambda s: "2 marked entries" in s, "the save dialog")
        tui.keys("Enter")
        deadline = time.monotonic() + 30
        saved: list[str] = []
        while time.monotonic() < deadline and not saved:
            saved = glob.glob(str(tmp_path / "shark-tui-*.pcapng"))
            time.sleep(0.2)
        assert saved, tui.screen()  # (written to NAME.part, renamed when complete)
        out = subprocess.run(
            ["tshark", "-r", saved[0], "-T", "fields", "-e", "tcp.stream", "-e", "ip.dst",
             "-e", "http.request.uri"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        fields = [line.split("\t") for line in out.splitlines()]
        assert len({f[0] for f in fields}) == 2, out
        requests = [(f[1], f[2]) for f in fields if f[2]]
        # each request once (seen in both pods' namespaces, saved once), both to api-0
        assert sorted(requests) == [(api_pod.ip, "/f?n=1"), (api_pod.ip, "/f?n=2")], out

        tui.keys("q")
        tui.wait(lambda s: done.exists(), "the app exiting after q")
    finally:
        if tui is not None:
            tui.kill()
        d.stop()
