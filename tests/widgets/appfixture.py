"""A real query daemon (in-process `Server` over a store loaded from a synthetic HTTP capture,
on a Unix socket) for the UI tests: the app talks to it exactly as to a node's daemon."""

from __future__ import annotations

import copy
import io
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shark_tui.engine.offline import _load
from shark_tui.engine.podmap import PodMap
from shark_tui.engine.server import Server
from shark_tui.engine.store import Recorder
from tests.engine.test_dissect import capture


@contextmanager
def serve_capture(
    data: bytes | None,
    node: str = "fixture",
    prefix: str = "shark-tui-uitest-",
    tls_status: Callable[[], dict[str, Any]] | None = None,
    names: Callable[[PodMap], None] | None = None,
) -> Iterator[tuple[str, str]]:
    """(address, token) of an in-process `Server` on a Unix socket over a store loaded from
    the capture ``data`` (None: an empty store). ``names`` fills the store's pod history (as
    a ``--kube`` daemon's watch would) before anything is dissected."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        rec = Recorder(os.path.join(tmp, "store"), 1 << 40, 1 << 62)
        if data is not None:
            _load(io.BytesIO(data), rec)
        if names is not None:
            names(rec.attach_names())
        rec.flush()
        token = secrets.token_urlsafe(8)
        sock = os.path.join(tmp, "sock")
        srv = Server(rec, threading.Lock(), token, sock, rec.status, node=node,
                     tls_status=tls_status)  # fmt: skip
        srv.start()
        try:
            yield f"unix:{sock}", token
        finally:
            srv.stop()


@contextmanager
def fixture_daemon(
    conns: int = 4, seed: int = 7, node: str = "fixture", first: int = 0
) -> Iterator[tuple[str, str]]:
    """(address, token) of a daemon serving ``conns`` HTTP connections of 4 exchanges each
    (GET 200, POST 201, HEAD 200, GET 500) with fixed timestamps (connections numbered from
    ``first``: two daemons with the same numbers serve the same calls, which a TUI attached to
    both shows once)."""
    data, _ = capture(seed, conns, first=first)
    with serve_capture(data, node) as found:
        yield found


@contextmanager
def tls_report_daemon(
    report: dict[str, Any] | None, node: str = "fixture"
) -> Iterator[tuple[str, str]]:
    """(address, token) of a daemon with an empty store whose ``TlsStatus`` answer is
    ``report`` (a fresh copy each time; None: the daemon runs without TLS capture)."""
    tls = None if report is None else (lambda: copy.deepcopy(report))
    with serve_capture(None, node, tls_status=tls) as found:
        yield found


async def wait_for(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``pred`` until true (the daemon answers on its own threads)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def notes(app) -> list[str]:  # type: ignore[no-untyped-def]
    """The messages of the app's notifications still on screen."""
    return [n.message for n in app._notifications]


def tshark(path: str, *args: str) -> list[str]:
    """``tshark -r path args`` output lines (the test fails when tshark cannot read it)."""
    import subprocess

    out = subprocess.run(
        ["tshark", "-r", path, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.split()
