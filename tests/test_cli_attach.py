"""``shark-tui dissect --attach`` and ``export (FILE | --attach)`` as a user runs them.

One scenario per module: an HTTP server on loopback, the real daemon capturing ``lo`` and
tcpdump writing a file at the same time, both narrowed to the server's port (the daemon with
``--bpf``), so that both see the same connections in the same order: the daemon's flow numbers
and the file's are then the same, and so are the entry ids. Then what the daemon serves is
compared with what the file gives.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpkt
import pytest

from tests import realpeers
from tests.engine.http_traffic import Call, DaemonProc, http_server, make_traffic

SHARK = realpeers.shark_tui_command()


def shark(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*SHARK, *args], capture_output=True, timeout=timeout)


@dataclass
class Scenario:
    daemon: DaemonProc
    path: Path  # tcpdump's file of the same traffic
    port: int
    calls: list[Call]
    tmp: Path

    def attach(self, command: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        return shark(
            command, "--attach", self.daemon.address, "--token-file", self.daemon.token_file,
            *args,
        )  # fmt: skip


@pytest.fixture(scope="module")
def scenario(capture_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("attach")
    path = tmp / "same.pcap"
    with http_server() as port:
        daemon = DaemonProc(tmp, "--bpf", f"tcp port {port}")
        try:
            with realpeers.capture(ports=[port], path=path):
                calls = make_traffic(port, conns=4, per_conn=6)
            sc = Scenario(daemon, path, port, calls, tmp)
            deadline = time.monotonic() + 10
            while len(lines(sc.attach("dissect", "--json").stdout)) < len(calls):
                assert time.monotonic() < deadline, "the daemon never served every entry"
                time.sleep(0.2)  # (segments are flushed every 200 ms)
            yield sc
        finally:
            rc = daemon.stop()
    assert rc == 0, daemon.lines


def lines(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.decode().splitlines()]


#: What differs between the daemon's copy of a packet and tcpdump's: the kernel stamps each
#: packet socket's copy when it delivers it (skb timestamps are not enabled on lo), so the same
#: packet gets times a microsecond or so apart in the two captures.
CLOCKED = ("ts", "latency_ms")


def untimed(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k not in CLOCKED}


def test_dissect_attach_json_is_dissect_file_json(scenario: Scenario) -> None:
    file = realpeers.run_dissect(scenario.path).check()
    assert len(file.entries) == len(scenario.calls) == 24
    got = scenario.attach("dissect", "--json")
    assert got.returncode == 0, got.stderr
    assert got.stderr == b""
    attached = lines(got.stdout)
    # The same connections in the same order (both captures narrowed to the server's port:
    # without --bpf the daemon would also number any other loopback connection, and only the
    # fields other than ids would compare), so the same ids, in the same order, and everything
    # else equal but the clock (see CLOCKED).
    assert [untimed(e) for e in attached] == [untimed(e) for e in file.entries]
    for a, b in zip(attached, file.entries, strict=True):
        assert a["ts"] == pytest.approx(b["ts"], abs=0.001)
        assert a["latency_ms"] == pytest.approx(b["latency_ms"], abs=1.0)
    # each line is the entry's JSON, keys in the same order as dissect FILE prints them
    assert [list(e) for e in attached] == [list(e) for e in file.entries]


def table(out: str) -> list[list[str]]:
    """The rows of the table, without the time and latency columns (see CLOCKED)."""
    rows = []
    for line in out.splitlines():
        cols = [c.strip() for c in line.split("  ") if c.strip()]
        # the first column is the time; a latency ("0.3ms") may fall in any later column
        # position, depending on how the padding splits
        rows.append([c for c in cols[1:] if not re.fullmatch(r"[0-9.]+ms", c)])
    return rows


def test_dissect_attach_table_and_filter(scenario: Scenario) -> None:
    for args in ([], ["--filter", "status >= 400"], ["--filter", 'path ~ "^/items/"']):
        want = realpeers.run_dissect(scenario.path, *args, json=False).check()
        got = scenario.attach("dissect", *args)
        assert got.returncode == 0, got.stderr
        assert table(got.stdout.decode()) == table(want.stdout)
        assert got.stdout  # something matched


def read_packets(data: bytes) -> list[bytes]:
    """The packet bytes of a pcap or pcapng, in file order."""
    import io

    reader = dpkt.pcapng.Reader if data[:4] == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader
    return [bytes(buf) for _, buf in reader(io.BytesIO(data))]


def ports(frame: bytes) -> set[int]:
    tcp = dpkt.ethernet.Ethernet(frame).data.data
    return {tcp.sport, tcp.dport}


def tshark_count(path: Path) -> int:
    proc = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return len(proc.stdout.splitlines())


def test_export_attach_to_stdout(scenario: Scenario) -> None:
    got = scenario.attach("export", "--filter", "status == 500", "-o", "-")
    assert got.returncode == 0, got.stderr
    assert got.stdout[:4] == b"\x0a\x0d\x0d\x0a", "pcapng"
    out = scenario.tmp / "attach.pcapng"
    out.write_bytes(got.stdout)
    packets = read_packets(got.stdout)
    assert tshark_count(out) == len(packets) > 0
    # exactly the connections with a 500, every packet of them, as in tcpdump's file
    boom = {c.cport for c in scenario.calls if c.status == 500}
    original = read_packets(scenario.path.read_bytes())
    assert packets == [p for p in original if ports(p) & boom]
    # export FILE of the same file gives the same packets
    out2 = scenario.tmp / "file.pcapng"
    res = shark("export", str(scenario.path), "--filter", "status == 500", "-o", str(out2))
    assert res.returncode == 0, res.stderr
    assert b"connections written to" in res.stderr
    assert read_packets(out2.read_bytes()) == packets
    assert tshark_count(out2) == len(packets)


def test_export_ids(scenario: Scenario) -> None:
    entries = realpeers.run_dissect(scenario.path).check().entries
    ids = ",".join(e["id"] for e in entries[:2])
    out = scenario.tmp / "ids.pcapng"
    got = scenario.attach("export", "--ids", ids, "-o", str(out))
    assert got.returncode == 0, got.stderr
    res = shark("export", str(scenario.path), "--ids", ids, "-o", "-")
    assert res.returncode == 0, res.stderr
    assert read_packets(out.read_bytes()) == read_packets(res.stdout)
    want = {e["src"]["port"] for e in entries[:2]}
    assert {p for f in read_packets(res.stdout) for p in ports(f)} == want | {scenario.port}


def test_export_file_everything(scenario: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "all.pcapng"
    res = shark("export", str(scenario.path), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert read_packets(out.read_bytes()) == read_packets(scenario.path.read_bytes())
    assert "24 connections" not in res.stderr.decode() and "4 connections" in res.stderr.decode()


def test_export_to_a_pcap_name_is_classic_pcap(scenario: Scenario, tmp_path: Path) -> None:
    """DESIGN.md: classic pcap when OUT ends in .pcap and one link type suffices."""
    for source in ("file", "attach"):
        out = tmp_path / f"{source}.pcap"
        if source == "file":
            res = shark("export", str(scenario.path), "-o", str(out))
        else:
            res = scenario.attach("export", "-o", str(out))
        assert res.returncode == 0, res.stderr
        assert out.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"), source
        assert read_packets(out.read_bytes()) == read_packets(scenario.path.read_bytes())


# -- failures -----------------------------------------------------------------------------------


def one_line_usage(res: subprocess.CompletedProcess[bytes], *words: str) -> None:
    err = res.stderr.decode()
    assert res.returncode == 2, (res.returncode, err)
    assert len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err
    assert res.stdout == b""


def test_usage_errors(scenario: Scenario, tmp_path: Path) -> None:
    f = str(scenario.path)
    a = scenario.daemon.address
    tok = scenario.daemon.token_file
    one_line_usage(shark("dissect"), "FILE", "--attach")
    one_line_usage(shark("dissect", f, "--attach", a), "one of them")
    one_line_usage(shark("export", "-o", str(tmp_path / "x")), "FILE", "--attach")
    one_line_usage(shark("export", f, "--attach", a, "-o", "-"), "one of them")
    one_line_usage(shark("dissect", f, "--follow"), "--follow")
    for cmd in (["dissect", "--attach", a, "--token-file", tok],
                ["export", "--attach", a, "--token-file", tok, "-o", "-"],
                ["export", f, "-o", "-"]):  # fmt: skip
        one_line_usage(shark(*cmd, "--filter", "stauts == 1"), "--filter", "stauts")
        one_line_usage(shark(*cmd, "--filter", "(status"), "--filter")
    missing = str(tmp_path / "no-such-token")
    one_line_usage(shark("dissect", "--attach", a, "--token-file", missing), "--token-file")
    one_line_usage(
        shark("export", "--attach", a, "--token-file", missing, "-o", "-"), "--token-file"
    )
    unreadable = tmp_path / "dir-not-file"
    unreadable.mkdir()
    one_line_usage(shark("dissect", "--attach", a, "--token-file", str(unreadable)), "--token-file")
    one_line_usage(shark("export", str(tmp_path / "none.pcap"), "-o", "-"), "none.pcap")
    one_line_usage(shark("export", f, "-o", str(tmp_path / "no" / "dir" / "x")), "-o")
    assert not (tmp_path / "x").exists()


def test_daemon_failures_exit_1(scenario: Scenario, tmp_path: Path) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("wrong\n")
    res = shark("dissect", "--attach", scenario.daemon.address, "--token-file", str(bad))
    assert res.returncode == 1
    assert "token" in res.stderr.decode() and res.stdout == b""
    res = shark("export", "--attach", scenario.daemon.address, "--token-file", str(bad), "-o", "-")
    assert res.returncode == 1 and "token" in res.stderr.decode()
    free = realpeers.free_port()
    res = shark(
        "dissect", "--attach", f"127.0.0.1:{free}", "--token-file", scenario.daemon.token_file
    )
    assert res.returncode == 1
    assert "cannot reach" in res.stderr.decode()
    assert len(res.stderr.decode().strip().splitlines()) == 1


def test_dissect_attach_follow(scenario: Scenario) -> None:
    proc = subprocess.Popen(
        [*SHARK, "dissect", "--attach", scenario.daemon.address, "--token-file",
         scenario.daemon.token_file, "--json", "--follow", "--filter", "method == \"DELETE\""],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    stdout_fd = proc.stdout.fileno()
    try:
        already = sum(1 for c in scenario.calls if c.method == "DELETE")
        buf = b""

        def read_lines(n: int, timeout: float = 10) -> list[dict[str, Any]]:
            nonlocal buf
            deadline = time.monotonic() + timeout
            while buf.count(b"\n") < n:
                left = deadline - time.monotonic()
                assert left > 0, f"got {len(buf.splitlines())} lines of {n}"
                ready, _, _ = select.select([stdout_fd], [], [], left)
                if ready:
                    chunk = os.read(stdout_fd, 1 << 16)
                    assert chunk, "dissect --follow exited"
                    buf += chunk
            return lines(buf)

        assert len(read_lines(already)) == already
        with http_server() as other_port:  # not in the daemon's --bpf: never shows
            make_traffic(other_port, conns=1, per_conn=6)
        more = make_traffic(scenario.port, conns=1, per_conn=12)
        new = [c for c in more if c.method == "DELETE"]
        got = read_lines(already + len(new))[already:]
        assert [(e["src"]["port"], e["summary"]) for e in got] == [(c.cport, c.target) for c in new]
        assert proc.poll() is None, "--follow keeps streaming"
    finally:
        proc.terminate()
        proc.wait(10)
