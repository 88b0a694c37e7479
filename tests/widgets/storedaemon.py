"""A real query daemon for the UI tests that can be stopped and started again: an in-process
`Server` over a store that outlives it, on the same Unix socket each time (as
`tests.widgets.appfixture.fixture_daemon`, whose store goes with its one server).

- ``add(first, n)`` loads connections ``first`` … ``first + n - 1`` of the synthetic HTTP
  capture (4 exchanges each, connection i at 1_700_000_000 + i seconds) — while stopped, or
  live while serving (the server then pushes their entries to subscribers).
- ``capturing=True`` makes the daemon look like a capturing node: its status says it captures
  on ``lo``, and `wire.Pause` reaches ``pause`` (recorded in ``pauses``) instead of failing.
  The capture itself is faked; the real one is paused in ``tests/engine/test_pause.py``.
- ``kube=True`` makes it look like a ``--kube`` daemon: `wire.SetTargets` reaches
  ``set_targets`` (recorded in ``targets``; a bad regex refused as the daemon does) and its
  status has a ``kube`` part with the targets in force. The real one is retargeted in
  ``tests/kube/test_cluster.py``.
"""

from __future__ import annotations

import io
import os
import random
import secrets
import shutil
import tempfile
import threading
from typing import Any

from shark_tui.engine import cluster
from shark_tui.engine.offline import _load
from shark_tui.engine.server import Server
from shark_tui.engine.store import Recorder
from tests.engine.fixtures_pcap import LINKTYPE_ETHERNET, pcap_bytes
from tests.engine.test_dissect import connection

T0 = 1_700_000_000_000_000_000


class StoreDaemon:
    def __init__(
        self, conns: int = 4, *, node: str = "fixture", capturing: bool = False, first: int = 0,
        kube: bool = False,
    ) -> None:  # fmt: skip
        self.tmp = tempfile.mkdtemp(prefix="shark-tui-uitest-")
        self.rec = Recorder(os.path.join(self.tmp, "store"), 1 << 40, 1 << 62)
        self.lock = threading.Lock()
        self.sock = os.path.join(self.tmp, "sock")
        self.address = f"unix:{self.sock}"
        self.token = secrets.token_urlsafe(8)
        self.node = node
        self.capturing = capturing
        self.paused = False
        self.pauses: list[bool] = []
        self.kube = kube
        self.targets: list[cluster.Targets] = []
        self.server: Server | None = None
        self.loaded = 0
        self.add(first, conns)

    def add(self, first: int, n: int) -> None:
        rng = random.Random(first)
        packets = [p for i in range(first, first + n) for p in connection(i, rng, T0 + i * 10**9)]
        with self.lock:
            _load(io.BytesIO(pcap_bytes(LINKTYPE_ETHERNET, packets)), self.rec)
            self.rec.flush()
        self.loaded += n

    def status(self) -> dict[str, Any]:
        st = self.rec.status()
        if self.capturing:
            st.update(capturing=["lo"], failed={}, paused=self.paused)
        if self.kube:
            now = self.targets[-1] if self.targets else cluster.Targets()
            st["kube"] = {"node": self.node, "targets": now.describe(), "pods": []}
        return st

    def _set_targets(self, pods: str, namespaces: list[str]) -> None:
        self.targets.append(cluster.Targets(pods, tuple(namespaces)))  # ValueError: bad regex

    def _pause(self, paused: bool) -> None:
        self.pauses.append(paused)
        self.paused = paused

    def start(self) -> None:
        srv = Server(
            self.rec, self.lock, self.token, self.sock, self.status, node=self.node,
            pause=self._pause if self.capturing else None,
            set_targets=self._set_targets if self.kube else None,
        )  # fmt: skip
        srv.start()
        self.server = srv

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> StoreDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
