"""A cluster-aware daemon (``shark-tui daemon --kube``) end to end: the stand-in API server
(which kubectl drives, tests/kube/apiserver.py) holds the pods, real network namespaces with
real processes are the pods (tests/netpods.py), and the daemon is the real program.

- entries between namespace-pods name both ends (pod, ns); a pod deleted and its address taken
  by a new pod resolves right on both sides of the change; an export opened later (the daemon
  gone) still names them;
- targeting by namespace and by regex changes what is captured, live (`SetTargets`);
- an Envoy sidecar (a real TCP proxy whose executable is called ``envoy``, started with
  ``INSTANCE_IP``) in front of a real server: the app ↔ sidecar plaintext on the pod's ``lo``
  appears as entries.

Root is needed (namespaces, capture): these fail, never skip, without it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shark_tui.engine.client import Client
from tests import realpeers
from tests.daemonpeers import SHARK, Daemon
from tests.kube.apiserver import ApiServer
from tests.netpods import Node, Pod

NODE = "node-a"
HTTP_PORT = 8000
#: A TCP proxy: listen on ARGV[1]:ARGV[2], forward each connection to 127.0.0.1:ARGV[3].
PROXY = r"""
import socket, sys, threading
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(16)
print("listening", flush=True)
def pipe(a, b):
    while True:
        data = a.recv(65536)
        if not data:
            b.shutdown(socket.SHUT_WR)
            return
        b.sendall(data)
def serve(c):
    u = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
    pipe(c, u)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def k8s_pod(name: str, ns: str, pod: Pod, node: str = NODE) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIP": pod.ip, "podIPs": [{"ip": pod.ip}]},
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def http_server(pod: Pod, port: int = HTTP_PORT, bind: str = "0.0.0.0") -> None:
    proc = pod.popen([sys.executable, "-m", "http.server", str(port), "--bind", bind],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")  # fmt: skip
    deadline = time.monotonic() + 10
    host = pod.ip if bind == "0.0.0.0" else bind
    probe = f"import socket; socket.create_connection(({host!r}, {port}), 1)"
    while pod.run(["python3", "-c", probe], capture_output=True).returncode:
        assert proc.poll() is None and time.monotonic() < deadline, "http.server did not start"
        time.sleep(0.1)


def curl(pod: Pod, url: str) -> int:
    out = pod.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
                  capture_output=True, text=True, timeout=30)  # fmt: skip
    return int(out.stdout or 0)


def entries(sock: str, token: str, flt: str = "") -> list[dict[str, Any]]:
    args = [SHARK, "dissect", "--attach", sock, "--token-file", token, "--json"]
    if flt:
        args += ["--filter", flt]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_entries(sock: str, token: str, flt: str, n: int, timeout: float = 20) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = entries(sock, token, flt)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def set_targets(sock: str, token: str, pods: str = "", namespaces: list[str] | None = None
                ) -> dict[str, Any]:  # fmt: skip
    async def go() -> dict[str, Any]:
        c = await Client.connect(sock, Path(token).read_text().strip())
        try:
            return await c.set_targets(pods, namespaces)
        finally:
            await c.close()

    return asyncio.run(go())


def ends(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["src"]["pod"], e["src"]["ns"], e["dst"]["pod"], e["dst"]["ns"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ApiServer, Node, Path]]:
    if os.geteuid() != 0:
        pytest.fail("the cluster tests need root (namespaces, capture): CI runs as root")
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing (RECIPES.md: it comes with the machine image)")
    with ApiServer() as api, Node(pods=4) as node:
        for p in node.pods:  # every pod has a process: that is how the daemon finds it
            p.popen(["sleep", "600"])
        for ns in ("shop", "db"):
            api.create(namespace(ns))
        yield api, node, api.kubeconfig(tmp_path / "kubeconfig")


def start_daemon(tmp: Path, kubeconfig: Path, *args: str) -> tuple[Daemon, str, str]:
    sock, token = f"unix:{tmp}/sock", str(tmp / "token")
    d = Daemon(str(tmp / "store"), "--kube", "--kubeconfig", str(kubeconfig), "--node", NODE,
               "--listen", sock, "--token-file", token, *args)  # fmt: skip
    d.wait_for("capturing on", timeout=60)
    return d, sock, token


def test_pods_named_on_both_ends_through_ip_reuse_and_in_a_later_export(
    cluster: tuple[ApiServer, Node, Path], tmp_path: Path
) -> None:
    api, node, kubeconfig = cluster
    web, server = node.pods[0], node.pods[1]
    api.create(k8s_pod("web-0", "shop", web))
    api.create(k8s_pod("api-1", "shop", server))
    api.create(k8s_pod("elsewhere", "shop", node.pods[2], node="node-b"))  # not this node's
    http_server(server)
    d, sock, token = start_daemon(tmp_path, kubeconfig)
    try:
        d.wait_for("pod shop/api-1", timeout=20)
        d.wait_for("pod shop/web-0", timeout=20)
        assert not any("shop/elsewhere" in line for line in d.lines)
        url = f"http://{server.ip}:{HTTP_PORT}"
        assert [curl(web, f"{url}/before/{i}") for i in range(2)] == [404] * 2
        before = wait_entries(sock, token, 'path ~ "^/before"', 2)
        assert [ends(e) for e in before] == [("web-0", "shop", "api-1", "shop")] * 2

        # api-1 goes; api-2 (another namespace) gets its address
        mark = len(d.lines)
        api.delete("pods", "api-1", "shop")
        api.create(k8s_pod("api-2", "db", server))
        d.wait_for("pod db/api-2", timeout=20, after=mark)
        assert [curl(web, f"{url}/after/{i}") for i in range(2)] == [404] * 2
        after = wait_entries(sock, token, 'path ~ "^/after"', 2)
        assert [ends(e) for e in after] == [("web-0", "shop", "api-2", "db")] * 2
        # both sides of the change, asked again now: dissect --json asks for full entries,
        # which the daemon dissects again from the stored packets (its summary cache is not
        # read), each end named by who held the address at that entry's time
        assert [ends(e) for e in entries(sock, token, 'path ~ "^/before"')] == [ends(before[0])] * 2
        assert [e["summary"] for e in entries(sock, token, 'dst.pod == "api-2"')] == [
            "/after/0", "/after/1"]  # fmt: skip

        out = tmp_path / "calls.pcapng"
        subprocess.run([SHARK, "export", "--attach", sock, "--token-file", token,
                        "--filter", f"dst.port == {HTTP_PORT}", "-o", str(out)],
                       check=True, timeout=60)  # fmt: skip
    finally:
        d.stop()
    # the daemon is gone: the file alone still names both ends on both sides of the change
    res = realpeers.run_dissect(out).check()
    assert [(e["summary"], *ends(e)) for e in res.entries] == [
        ("/before/0", "web-0", "shop", "api-1", "shop"),
        ("/before/1", "web-0", "shop", "api-1", "shop"),
        ("/after/0", "web-0", "shop", "api-2", "db"),
        ("/after/1", "web-0", "shop", "api-2", "db"),
    ]


def test_targets_change_what_is_captured_live(
    cluster: tuple[ApiServer, Node, Path], tmp_path: Path
) -> None:
    api, node, kubeconfig = cluster
    web, shop_api, db_client, db = node.pods
    api.create(k8s_pod("web-0", "shop", web))
    api.create(k8s_pod("api-0", "shop", shop_api))
    api.create(k8s_pod("worker-0", "db", db_client))
    api.create(k8s_pod("store-0", "db", db))
    http_server(shop_api)
    http_server(db)
    d, sock, token = start_daemon(tmp_path, kubeconfig, "-n", "shop")
    try:
        d.wait_for("pod shop/web-0", timeout=20)
        d.wait_for("pod shop/api-0", timeout=20)

        def calls(tag: str) -> None:
            assert curl(web, f"http://{shop_api.ip}:{HTTP_PORT}/shop/{tag}") == 404
            assert curl(db_client, f"http://{db.ip}:{HTTP_PORT}/db/{tag}") == 404

        def seen(tag: str) -> set[str]:
            time.sleep(1.0)
            got = entries(sock, token, f'path ~ "/{tag}$"')
            return {e["summary"].split("/")[1] for e in got}

        calls("one")
        assert wait_entries(sock, token, 'path ~ "/one$"', 1) and seen("one") == {"shop"}

        mark = len(d.lines)
        st = set_targets(sock, token, namespaces=["db"])
        assert st["kube"]["targets"] == {"pods": "", "namespaces": ["db"]}
        d.wait_for("pod db/store-0", timeout=20, after=mark)
        d.wait_for("stopped capturing on shop/", timeout=20, after=mark)
        calls("two")
        assert wait_entries(sock, token, 'path ~ "/two$"', 1) and seen("two") == {"db"}

        mark = len(d.lines)
        set_targets(sock, token, pods="^web-")  # web-0 only: its calls, from its side
        d.wait_for("pod shop/web-0", timeout=20, after=mark)
        calls("three")
        assert wait_entries(sock, token, 'path ~ "/three$"', 1) and seen("three") == {"shop"}
        status = json.loads((tmp_path / "store" / "status.json").read_text())
        assert status["kube"]["pods"] == ["shop/web-0"]

        # a bad regex is refused with the reason, and the targets stay
        with pytest.raises(Exception, match="bad pod regex"):
            set_targets(sock, token, pods="(")
    finally:
        d.stop()


def test_envoy_sidecar_lo_hop_is_captured(
    cluster: tuple[ApiServer, Node, Path], tmp_path: Path
) -> None:
    api, node, kubeconfig = cluster
    web, server = node.pods[0], node.pods[1]
    api.create(k8s_pod("web-0", "shop", web))
    api.create(k8s_pod("api-0", "shop", server))
    http_server(server, bind="127.0.0.1")  # the app: only on the pod's lo
    with tempfile.TemporaryDirectory() as tmp:
        envoy = Path(tmp, "envoy")  # the Python interpreter under the name of the proxy
        shutil.copy(sys.executable, envoy)
        script = Path(tmp, "proxy.py")
        script.write_text(PROXY)
        proxy = server.popen(["env", f"INSTANCE_IP={server.ip}", str(envoy), str(script),
                              server.ip, "15001", str(HTTP_PORT)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert proxy.stdout is not None and proxy.stdout.readline().strip() == "listening"
        d, sock, token = start_daemon(tmp_path, kubeconfig, "--pods", "^api-")
        try:
            line = d.wait_for("pod shop/api-0", timeout=20)
            assert "envoy sidecar" in line, line
            d.wait_for("shop/api-0/lo", timeout=20)  # in "capturing on ..."
            assert curl(web, f"http://{server.ip}:15001/through/envoy") == 404
            got = wait_entries(sock, token, 'path == "/through/envoy"', 2)
        finally:
            d.stop()
    by_port = {e["dst"]["port"]: e for e in got}
    assert sorted(by_port) == [HTTP_PORT, 15001], [(e["src"], e["dst"]) for e in got]
    outer, inner = by_port[15001], by_port[HTTP_PORT]
    assert ends(outer) == ("web-0", "shop", "api-0", "shop")
    # the app <-> sidecar hop: plaintext on the pod's lo
    assert (inner["src"]["ip"], inner["dst"]["ip"]) == ("127.0.0.1", "127.0.0.1")
    assert (inner["method"], inner["status"]) == ("GET", 404)


def test_host_interface_filter_follows_the_targets(
    cluster: tuple[ApiServer, Node, Path], tmp_path: Path
) -> None:
    """``--iface`` (the pods' host-side veths) with ``--kube``: the kernel filter names the
    targeted pods' addresses, and changes with the targets."""
    api, node, kubeconfig = cluster
    web, shop_api, db_client, db = node.pods
    for name, ns, pod in (("web-0", "shop", web), ("api-0", "shop", shop_api),
                          ("worker-0", "db", db_client), ("store-0", "db", db)):  # fmt: skip
        api.create(k8s_pod(name, ns, pod))
    http_server(shop_api)
    http_server(db)
    veths = [arg for p in node.pods for arg in ("--iface", p.host_veth)]
    d, sock, token = start_daemon(tmp_path, kubeconfig, *veths, "-n", "shop")
    try:
        line = d.wait_for("host interfaces: filter", timeout=20)
        assert f"host {web.ip}" in line and f"host {shop_api.ip}" in line
        assert db.ip not in line
        assert not any("capturing in its namespace" in x for x in d.lines)  # host side only

        def calls(tag: str) -> set[str]:
            assert curl(web, f"http://{shop_api.ip}:{HTTP_PORT}/shop/{tag}") == 404
            assert curl(db_client, f"http://{db.ip}:{HTTP_PORT}/db/{tag}") == 404
            wait_entries(sock, token, f'path ~ "/{tag}$"', 1)
            time.sleep(1.0)
            return {e["summary"].split("/")[1]
                    for e in entries(sock, token, f'path ~ "/{tag}$"')}  # fmt: skip

        got = calls("one")
        status = json.loads((tmp_path / "store" / "status.json").read_text())
        assert got == {"shop"}, status["filters"]
        mark = len(d.lines)
        set_targets(sock, token, namespaces=["db"])
        line = d.wait_for("host interfaces: filter", timeout=20, after=mark)
        assert f"host {db.ip}" in line and web.ip not in line
        time.sleep(0.5)  # the capture thread applies it within 200 ms
        assert calls("two") == {"db"}
        mark = len(d.lines)
        set_targets(sock, token, pods="^nothing-matches$")
        line = d.wait_for("host interfaces: filter", timeout=20, after=mark)
        assert "less 1" in line
    finally:
        d.stop()


def test_a_call_seen_by_two_nodes_daemons_is_one_row_in_attach(
    cluster: tuple[ApiServer, Node, Path], tmp_path: Path
) -> None:
    """The client pod on node-a, the server pod on node-b, a daemon per node: each captures
    every call (in its own pod's namespace); the TUI attached to both shows each once."""
    from shark_tui.app import SharkApp

    api, node, kubeconfig = cluster
    web, server = node.pods[0], node.pods[1]
    api.create(k8s_pod("web-0", "shop", web, node="node-a"))
    api.create(k8s_pod("api-0", "shop", server, node="node-b"))
    http_server(server)
    daemons = []
    try:
        for name in ("node-a", "node-b"):
            tmp = tmp_path / name
            tmp.mkdir()
            sock, token = f"unix:{tmp}/sock", str(tmp / "token")
            d = Daemon(str(tmp / "store"), "--kube", "--kubeconfig", str(kubeconfig),
                       "--node", name, "--listen", sock, "--token-file", token)  # fmt: skip
            daemons.append((d, sock, token))
        for (d, _, _), pod in zip(daemons, ("shop/web-0", "shop/api-0"), strict=True):
            d.wait_for(f"pod {pod}", timeout=30)
        calls = [f"/twice/{i}" for i in range(5)]
        assert [curl(web, f"http://{server.ip}:{HTTP_PORT}{p}") for p in calls] == [404] * 5
        for _, sock, token in daemons:  # each daemon has every call
            got = wait_entries(sock, token, 'path ~ "^/twice/"', 5)
            assert sorted(e["summary"] for e in got) == calls

        async def attach() -> None:
            links = [(sock, Path(token).read_text().strip()) for _, sock, token in daemons]
            app = SharkApp(links)
            async with app.run_test(size=(160, 30)) as pilot:
                await pilot.pause()
                deadline = time.monotonic() + 20
                rows: list[Any] = []
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    rows = [r for r in app.store.rows if r.summary.startswith("/twice/")]
                    if len(rows) == 5 and app.store.duplicates >= 5:
                        break
                await asyncio.sleep(0.5)  # nothing more comes
                rows = [r for r in app.store.rows if r.summary.startswith("/twice/")]
                assert sorted(r.summary for r in rows) == calls, [(r.node, r.summary) for r in rows]
                assert app.store.duplicates >= 5
                assert {(r.src, r.dst) for r in rows} == {("shop/web-0", "shop/api-0")}

        asyncio.run(attach())
    finally:
        for d, _, _ in daemons:
            d.stop()
