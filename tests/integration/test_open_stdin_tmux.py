"""`shark-tui open -` in tmux: the capture comes on a pipe, the keys from the terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.engine.test_dissect import capture
from tests.integration.test_tui_tmux import Tmux

SHARK = f"{sys.executable} -m shark_tui"


def test_open_stdin_takes_keys_from_the_terminal(tmp_path: Path) -> None:
    assert shutil.which("tmux"), "tmux is needed (scripts/setup installs it)"
    data, _ = capture(3, conns=2)
    (tmp_path / "c.pcap").write_bytes(data)
    done = tmp_path / "exited"
    env = f"env -u COLUMNS -u LINES XDG_CONFIG_HOME={tmp_path} XDG_STATE_HOME={tmp_path}"
    cmd = f"cat c.pcap | {env} {SHARK} open -; touch {done}; sleep 30"
    tui = Tmux(f"skopen{os.getpid()}", f"sh -c '{cmd}'", tmp_path)
    try:
        tui.wait(lambda s: "GET" in s, "the capture's requests")
        tui.keys("?")
        tui.wait(lambda s: "shark-tui keys" in s, "the help screen")
        tui.keys("Escape")
        tui.wait(lambda s: "shark-tui keys" not in s, "the help screen closed")
        tui.keys("q")
        tui.wait(lambda s: done.exists(), "the app quitting")
    finally:
        tui.kill()


def test_open_stdin_without_a_terminal_says_so(tmp_path: Path) -> None:
    data, _ = capture(3, conns=2)
    res = subprocess.run(
        [sys.executable, "-m", "shark_tui", "open", "-"],
        input=data,
        capture_output=True,
        start_new_session=True,  # no controlling terminal: /dev/tty cannot be opened
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.decode().strip().splitlines()
    assert "no terminal to read keys from" in lines[-1], lines
