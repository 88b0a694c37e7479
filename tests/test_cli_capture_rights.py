"""`shark-tui` (the TUI capturing this host) run by a user without root or CAP_NET_RAW: one line
that says so and how to fix it, exit 2 (DESIGN.md: usage or bad input), before any daemon or
terminal is touched. As root, the test runs the real program as ``nobody`` (setpriv drops every
capability with the uid); the same user given CAP_NET_RAW as an ambient capability passes the
check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemonpeers import SHARK

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def unprivileged() -> list[str]:
    """The command prefix that runs as a user without root or CAP_NET_RAW."""
    if os.geteuid() == 0:
        return NOBODY
    caps = Path("/proc/self/status").read_text().split("CapEff:")[1].split()[0]
    if int(caps, 16) & (1 << 13):
        pytest.fail("this user has CAP_NET_RAW: run the test as root or as a plain user")
    return []


@pytest.mark.parametrize("args", [[], ["-i", "lo", "-f", "tcp port 80"]])
def test_live_capture_without_rights_says_so_and_how_to_fix_it(
    args: list[str],
) -> None:
    res = subprocess.run(
        [*unprivileged(), SHARK, *args],
        capture_output=True, text=True, timeout=60, cwd="/",
        env={"PATH": os.environ["PATH"]},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 2, res
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    python = os.path.realpath(sys.executable)
    assert lines[0] == (
        "shark-tui: capturing this host needs root or CAP_NET_RAW: run with sudo, or grant it "
        f"once with `sudo setcap cap_net_raw,cap_net_admin+eip {python}`; to look at a file "
        "instead: shark-tui open FILE"
    )


def test_the_same_user_with_cap_net_raw_passes_the_check() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (to run as nobody with an ambient capability): CI is root")
    probe = "from shark_tui.cli import _can_capture; print(_can_capture())"
    with_cap = ["--inh-caps=+net_raw", "--ambient-caps=+net_raw"]
    for extra, want in (([], "False"), (with_cap, "True")):
        res = subprocess.run([*NOBODY, *extra, sys.executable, "-c", probe],
                             capture_output=True, text=True, timeout=60, cwd="/")  # fmt: skip
        assert res.stdout.strip() == want, (extra, res)
