"""Several worker processes give byte-for-byte what one process gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.test_dissect import capture


def dissect(path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "shark_tui", "dissect", str(path), *args]
    return subprocess.run(cmd, capture_output=True, check=False, timeout=120)


@pytest.mark.parametrize("fmt", [["--json"], []])
def test_jobs_do_not_change_the_output(tmp_path: Path, fmt: list[str]) -> None:
    data, _ = capture(7, conns=9, pipelined=True)
    path = tmp_path / "c.pcap"
    path.write_bytes(data)
    one = dissect(path, *fmt, "--jobs", "1")
    assert one.returncode == 0 and one.stdout.count(b"\n") == 36, one.stderr
    for jobs in ("2", "3", "4"):
        many = dissect(path, *fmt, "--jobs", jobs)
        assert many.returncode == 0, many.stderr
        assert many.stdout == one.stdout


def test_jobs_keep_the_truncation_warning_and_filter(tmp_path: Path) -> None:
    data, _ = capture(8, conns=5)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: len(data) - 7])
    one = dissect(path, "--json", "--jobs", "1", "--filter", "status >= 500")
    many = dissect(path, "--json", "--jobs", "2", "--filter", "status >= 500")
    assert one.stdout == many.stdout and one.stdout.count(b"\n") == 5
    for res in (one, many):
        lines = res.stderr.decode().splitlines()
        assert len(lines) == 1 and "truncated" in lines[0], lines


def test_jobs_with_connections_that_never_carried_a_byte(tmp_path: Path) -> None:
    """SYN-only connections are decided at the end of the file, in every worker."""
    from tests.engine.fixtures_pcap import LINKTYPE_ETHERNET, eth_ipv4_tcp, write_pcap

    t0 = 1_700_000_000_000_000_000
    packets = [
        (t0 + i, eth_ipv4_tcp(f"10.0.0.{i + 1}", "10.0.1.1", 40000 + i, 80, 100, 0, 2))
        for i in range(5)
    ]
    path = write_pcap(tmp_path / "syn.pcap", LINKTYPE_ETHERNET, packets)
    one = dissect(path, "--json", "--jobs", "1")
    many = dissect(path, "--json", "--jobs", "3")
    assert one.returncode == 0 and many.returncode == 0, many.stderr
    assert many.stdout == one.stdout and one.stdout.count(b"\n") == 5
