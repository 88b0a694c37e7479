"""The app's entry points as a user types them, in tmux (send-keys / capture-pane):

- ``shark-tui open FILE``: the app starts on a capture file, its calls listed; q quits;
- ``shark-tui attach HOST:PORT HOST:PORT --token-file F``: two daemons at once, each row with
  its node in the node column; q quits;
- and their one-line refusals (exit 2): no such file, not a capture, not an address, no token.

The daemons attached to are in-process `Server`s over stores loaded from synthetic captures
(the real query daemon; tests/widgets/appfixture.py does the same for the Pilot tests), on
loopback TCP, sharing one token as the daemons of a cluster do."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shark_tui.engine.offline import _load
from shark_tui.engine.server import Server
from shark_tui.engine.store import Recorder
from tests.daemonpeers import SHARK
from tests.engine.test_dissect import capture
from tests.integration.test_tui_tmux import Tmux, rows

#: (COLUMNS/LINES from the test runner would fix the app's size at theirs, not tmux's)
ENV = "env -u COLUMNS -u LINES XDG_CONFIG_HOME={tmp} XDG_STATE_HOME={tmp}"


@pytest.fixture(autouse=True)
def _tmux() -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is missing: run scripts/setup")


def run_in_tmux(name: str, args: str, tmp: Path) -> tuple[Tmux, Path]:
    """``shark-tui ARGS`` in a tmux pane; the returned path appears when the app has exited."""
    done = tmp / f"{name}-exited"
    cmd = f"{ENV.format(tmp=tmp)} {SHARK} {args}; touch {done}; sleep 60"
    return Tmux(f"sk{name}{os.getpid()}", f"sh -c '{cmd}'", tmp), done


def test_open_file(tmp_path: Path) -> None:
    data, _ = capture(5, conns=2)  # 2 connections of GET 200, POST 201, HEAD 200, GET 500
    (tmp_path / "calls.pcap").write_bytes(data)
    tui, done = run_in_tmux("openfile", "open calls.pcap", tmp_path)
    try:
        screen = tui.wait(lambda s: len(rows(s)) == 8 and "entries 8" in s and "daemons 1/1" in s,
                          "the file's 8 calls")  # fmt: skip
        shown = rows(screen)
        # no node column with one source: time, src, dst, proto, method, status, ...
        assert {(r[2], r[3]) for r in shown} == {("10.1.0.1:80", "http")}, screen
        assert sorted(r[4] for r in shown) == ["GET"] * 4 + ["HEAD"] * 2 + ["POST"] * 2
        assert sorted(r[5] for r in shown) == ["200"] * 4 + ["201"] * 2 + ["500"] * 2
        assert "NODE" not in screen, screen
        tui.keys("q")
        tui.wait(lambda s: done.exists(), "the app exiting after q")
    finally:
        tui.kill()


@contextmanager
def daemon(node: str, token: str, seed: int, conns: int, first: int) -> Iterator[str]:
    """The address (127.0.0.1:PORT) of a daemon named ``node`` serving ``conns`` synthetic
    HTTP connections numbered from ``first``."""
    data, _ = capture(seed, conns, first=first)
    with tempfile.TemporaryDirectory(prefix="shark-tui-attach-") as tmp:
        rec = Recorder(os.path.join(tmp, "store"), 1 << 40, 1 << 62)
        _load(io.BytesIO(data), rec)
        rec.flush()
        srv = Server(rec, threading.Lock(), token, ("127.0.0.1", 0), rec.status, node=node)
        srv.start()
        try:
            yield srv.address
        finally:
            srv.stop()


def test_attach_two_daemons_shows_the_node_column(tmp_path: Path) -> None:
    token = "attach-test-token"
    (tmp_path / "token").write_text(token + "\n")
    # other connection numbers on each node: other clients, so no row is a copy of another
    with daemon("node-a", token, 1, 2, 0) as a, daemon("node-b", token, 2, 1, 4) as b:
        assert ":" in a and not a.startswith("unix:")
        tui, done = run_in_tmux("attach", f"attach {a} {b} --token-file token", tmp_path)
        try:
            screen = tui.wait(lambda s: len(rows(s)) == 12 and "daemons 2/2" in s,
                              "both daemons' calls")  # fmt: skip
            assert "NODE" in screen, screen
            # "TIME NODE", src, dst, ...: node-a's 2 connections, node-b's 1
            shown = [(r[0].split()[1], r[1]) for r in rows(screen)]
            assert (
                sorted(shown)
                == [("node-a", "10.0.0.1:40000")] * 4
                + [("node-a", "10.0.0.2:40001")] * 4
                + [("node-b", "10.0.0.5:40004")] * 4
            ), screen
            tui.keys("q")
            tui.wait(lambda s: done.exists(), "the app exiting after q")
        finally:
            tui.kill()


def one_line(args: list[str], cwd: Path, *words: str) -> None:
    res = subprocess.run([SHARK, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                         stdin=subprocess.DEVNULL)  # fmt: skip
    assert res.returncode == 2, res
    assert res.stdout == ""
    lines = res.stderr.splitlines()  # (no "loading" line: stderr is not a terminal)
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], res.stderr


def test_open_and_attach_refusals(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a capture\n" * 10)
    one_line(["open", "missing.pcap"], tmp_path, "missing.pcap", "No such file")
    one_line(["open", "notes.txt"], tmp_path, "notes.txt")
    one_line(["attach", "nowhere", "--token-file", "notes.txt"], tmp_path,
             "not an address", "nowhere")  # fmt: skip
    one_line(["attach", "127.0.0.1:1", "--token-file", "no-token"], tmp_path,
             "--token-file", "no-token")  # fmt: skip
