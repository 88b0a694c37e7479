"""Pausing capture (`wire.Pause`, the TUI's `P`).

The request in-process: a daemon that does not capture refuses it, one that does answers with
its status and tells every client watching stats at once. Then the real thing (root): a
``shark-tui daemon`` capturing a pod's host veth, paused by a `Client` — what crosses the veth
while paused is counted and not stored, and after resuming it is stored again (checked in the
segments with tshark).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shark_tui.engine.client import Client, RequestFailed
from shark_tui.engine.server import Server
from shark_tui.engine.store import Recorder
from tests.engine.test_daemon import (
    Daemon,
    client_ports,
    curl,
    segments,
    start_server,
    tshark_packets,
)
from tests.netpods import Node, cleanup_stale

TOKEN = "t0k"


def arun(coro: Any, timeout: float = 30.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


# -- the request, in-process ---------------------------------------------------------------------


def _server(tmp: Path, pause: Any) -> Server:
    rec = Recorder(str(tmp / "store"), 1 << 30, 1 << 62)
    state = {"paused": False}

    def status() -> dict[str, Any]:
        return dict(rec.status(), capturing=["eth0"], paused=state["paused"])

    def do_pause(paused: bool) -> None:
        state["paused"] = paused
        pause(paused)

    srv = Server(rec, threading.Lock(), TOKEN, str(tmp / "sock"), status, node="n",
                 pause=do_pause if pause is not None else None)  # fmt: skip
    srv.start()
    return srv


def _refused(tmp_path: Path, request: Callable[[Client], Awaitable[Any]], match: str) -> None:
    """A daemon without capture control refuses ``request`` with a `Failed` for it alone: the
    connection goes on serving."""
    srv = _server(tmp_path, None)

    async def main() -> None:
        c = await Client.connect(srv.address, TOKEN)
        try:
            assert c.hello is not None and "pause" not in c.hello.capabilities
            with pytest.raises(RequestFailed, match=match):
                await request(c)
            assert await c.get_stats()  # and it goes on serving
        finally:
            await c.close()

    try:
        arun(main())
    finally:
        srv.stop()


def test_a_daemon_that_does_not_capture_refuses(tmp_path: Path) -> None:
    _refused(tmp_path, lambda c: c.pause(True), "nothing to pause")


def test_a_daemon_without_kube_refuses_targets(tmp_path: Path) -> None:
    """`SetTargets` (pods to capture, changed live) needs ``--kube``; the refusal is a
    `Failed` for that request only (tests/kube/test_cluster.py drives a --kube daemon)."""
    _refused(tmp_path, lambda c: c.set_targets("^api-", ["shop"]), "without --kube")


def test_pause_answers_with_the_status_and_tells_the_watchers(tmp_path: Path) -> None:
    calls: list[bool] = []
    srv = _server(tmp_path, calls.append)

    async def main() -> None:
        a = await Client.connect(srv.address, TOKEN)
        b = await Client.connect(srv.address, TOKEN)
        try:
            assert a.hello is not None and "pause" in a.hello.capabilities
            assert (await b.get_stats())["paused"] is False  # b watches stats
            st = await a.pause(True)
            assert st["paused"] is True and calls == [True]
            for _ in range(50):  # pushed at once, not at the next second's push
                if b.stats.get("paused"):
                    break
                await asyncio.sleep(0.01)
            assert b.stats["paused"] is True
            st = await a.pause(False)
            assert st["paused"] is False and calls == [True, False]
        finally:
            await a.close()
            await b.close()

    try:
        arun(main())
    finally:
        srv.stop()


# -- a real daemon capturing ---------------------------------------------------------------------


@pytest.fixture
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.fail("the pause test needs root (network namespaces, live capture)")
    cleanup_stale()
    with Node(pods=2) as n:
        yield n


def test_a_paused_daemon_stores_no_packets(node: Node, tmp_path: Path) -> None:
    p0, p1 = node.pods
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f").write_bytes(b"z" * 20_000)
    start_server(p0, tmp_path / "www")
    store = str(tmp_path / "store")
    d = Daemon(store, "--iface", p0.host_veth)
    address = f"unix:{store}.sock"
    url = f"http://{p0.ip}:8000/f"
    try:
        d.wait_for("capturing on")
        with open(f"{store}.token") as f:
            token = f.read().strip()
        before = curl(p1, url, 2)
        time.sleep(1.2)  # stored (the writer holds batches 250 ms, flushes every 200 ms)

        async def pause(paused: bool) -> dict[str, Any]:
            c = await Client.connect(address, token)
            try:
                assert c.hello is not None and "pause" in c.hello.capabilities
                return await c.pause(paused)
            finally:
                await c.close()

        async def stats() -> dict[str, Any]:
            c = await Client.connect(address, token)
            try:
                return await c.get_stats()
            finally:
                await c.close()

        st = arun(pause(True))
        assert st["paused"] is True
        d.wait_for("capture paused")
        stored = st["packets"]
        assert stored > 0
        during = curl(p1, url, 3)
        time.sleep(1.2)
        st = arun(stats())
        assert st["paused"] is True
        assert st["packets"] == stored, "packets were stored while paused"
        (src,) = [s for s in st["sources"] if s["name"] == p0.host_veth]
        # 3 connections of 20 kB: a handshake, ~14 data segments, their ACKs, FINs each
        assert src["paused"] >= 3 * 20, src
        assert arun(pause(False))["paused"] is False
        after = curl(p1, url, 2)
        time.sleep(1.2)
        st = arun(stats())
        assert st["packets"] > stored
    finally:
        assert d.stop() == 0
    ports = client_ports(tshark_packets(segments(store)))
    assert ports == set(before) | set(after)
    assert not ports & set(during)
    assert d.status()["paused"] is False
