"""The capture daemon on real traffic between namespace-pods (root needed; CI runs as root).

Each test builds pods on a bridge (`tests.netpods`), runs `shark-tui daemon` as a real process,
drives real HTTP between the pods, and checks the segments it leaves with tshark, with our own
reader and against a tcpdump capture of the same traffic.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shark_tui.engine.store import Recorder
from tests.daemonpeers import Daemon as PeerDaemon
from tests.daemonpeers import Tcpdump
from tests.netpods import Node, Pod, cleanup_stale

ROOT = Path(__file__).resolve().parents[2]
SHARK = str(ROOT / ".venv" / "bin" / "shark-tui")
if not os.path.exists(SHARK):
    SHARK = os.path.join(os.path.dirname(sys.executable), "shark-tui")

@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the daemon tests need root (network namespaces, live capture)")
    cleanup_stale()


SERVER = r"""
import http.server, os, sys
os.chdir(sys.argv[1])
http.server.ThreadingHTTPServer.address_family = __import__("socket").AF_INET6
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("::", 8000), H)
s.serve_forever()
"""


class Daemon(PeerDaemon):
    """`PeerDaemon` on its own unix socket and token (daemons of parallel runs never share
    8898), with its status file and a kill -9."""

    def __init__(self, store: str, *args: str) -> None:
        super().__init__(
            store, "--listen", f"unix:{store}.sock", "--token-file", f"{store}.token", *args
        )

    def status(self) -> dict:
        with open(os.path.join(self.store, "status.json")) as f:
            return json.load(f)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)


@pytest.fixture
def node() -> Iterator[Node]:
    with Node(pods=2) as n:
        yield n


def start_server(pod: Pod, docroot: Path) -> subprocess.Popen:
    proc = pod.popen([sys.executable, "-c", SERVER, str(docroot)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pod.run(["python3", "-c", _PROBE], capture_output=True).returncode == 0:
            return proc
        time.sleep(0.05)
    raise AssertionError("the HTTP server in the pod never listened")


_PROBE = "import socket; socket.create_connection(('::1', 8000), 1).close()"


def curl(pod: Pod, url: str, n: int = 1) -> list[int]:
    """``n`` fetches of ``url`` from ``pod``, one curl (one connection) each; their client
    ports. (One curl with several URLs may send the next request on a connection the server
    is closing, and then retry it on a new one.)"""
    fetch = f"curl -s -o /dev/null -w '%{{http_code}} %{{local_port}}\\n' '{url}'"
    script = f"for i in $(seq {n}); do {fetch}; done"
    out = pod.run(["sh", "-c", script], capture_output=True, text=True, timeout=60).stdout.split()
    codes, ports = out[0::2], [int(p) for p in out[1::2]]
    assert codes == ["200"] * n, out
    return ports


def tshark_packets(paths: list[str]) -> collections.Counter:
    """Every TCP packet in ``paths`` as (src, sport, dst, dport, seq, ack, flags, len)."""
    got: collections.Counter = collections.Counter()
    for path in paths:
        res = subprocess.run(
            ["tshark", "-r", path, "-T", "fields", "-E", "separator=,",
             "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "ip.dst",
             "-e", "ipv6.dst", "-e", "tcp.dstport", "-e", "tcp.seq_raw", "-e", "tcp.ack_raw",
             "-e", "tcp.flags", "-e", "tcp.len"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "cut short" not in res.stderr and "appears to be damaged" not in res.stderr, (
            res.stderr
        )
        for line in res.stdout.splitlines():
            s4, s6, sp, d4, d6, dp, seq, ack, flags, ln = line.split(",")
            got[(s4 or s6, int(sp), d4 or d6, int(dp), int(seq), int(ack), flags, int(ln))] += 1
    return got


def _size(path: str) -> int:
    """A segment's size; 0 when retention removed it since it was listed."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def segments(store: str) -> list[str]:
    return sorted(glob.glob(os.path.join(store, "seg-*.pcapng")))


def client_ports(packets: collections.Counter, server_port: int = 8000) -> set[int]:
    return {k[1] for k in packets if k[3] == server_port}


def test_host_veths_each_packet_once_and_new_interfaces_picked_up(
    node: Node, tmp_path: Path
) -> None:
    """No --iface: every interface that is up, and the pods' veths, which appear only after
    the daemon started. Both host-side veths see every packet of a pod-to-pod call: the store
    holds each once — exactly the packets tcpdump sees on one of them."""
    store = str(tmp_path / "store")
    p0, p1 = node.pods
    # Only this node's subnets: the rest of the machine may be busy.
    bpf = f"net {node.subnet} or net {node.subnet6}"
    # Re-create the pods' links after the daemon is up, so they are new to it.
    node.remove_pod_link(0)
    node.remove_pod_link(1)
    d = Daemon(store, "--bpf", bpf)
    try:
        d.wait_for("capturing on")
        mark = len(d.lines)
        node.restore_pod_link(0)
        node.restore_pod_link(1)
        d.wait_for(f"capturing on {p0.host_veth}", after=mark)
        d.wait_for(f"capturing on {p1.host_veth}", after=mark)
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "big").write_bytes(os.urandom(200_000))
        start_server(p0, tmp_path / "www")
        ref = Tcpdump(p0.host_veth, str(tmp_path / "ref.pcap"))
        ports4 = curl(p1, f"http://{p0.ip}:8000/big", 5)
        ports6 = curl(p1, f"http://[{p0.ip6}]:8000/big", 3)
        ref.stop()
        time.sleep(1.2)  # flushed at least once a second
    finally:
        assert d.stop() == 0
    stored = tshark_packets(segments(store))
    expected = tshark_packets([ref.path])
    assert stored == expected
    assert client_ports(stored) == set(ports4) | set(ports6)
    st = d.status()
    assert st["duplicates"] == sum(expected.values())  # the other veth's copy of each
    by_name = {s["name"]: s for s in st["sources"]}
    assert by_name[p0.host_veth]["packets"] + by_name[p1.host_veth]["packets"] == sum(
        expected.values()
    )
    assert by_name[p0.host_veth]["dropped"] == 0 and by_name[p1.host_veth]["dropped"] == 0
    # shark-tui dissect reads the segments back: one GET per connection, each once
    entries = []
    for seg in segments(store):
        out = subprocess.run(
            [SHARK, "dissect", "--json", seg], capture_output=True, text=True, check=True
        ).stdout
        entries += [json.loads(line) for line in out.splitlines()]
    gets = sorted(e["src"]["port"] for e in entries if e.get("method") == "GET")
    assert gets == sorted(ports4 + ports6)
    assert {e["status"] for e in entries if e.get("method") == "GET"} == {200}
    # the index has exactly these connections
    rec = Recorder(store, 1 << 30, 3600 * 10**9)
    rec.recover()
    flows = [f for f in rec.index.by_num.values() if f.sport == 8000]
    assert sorted(f.cport for f in flows) == sorted(ports4 + ports6)
    assert all(f.proto == "http" and f.state & 1 for f in flows)


def test_inside_a_namespace_by_name_and_by_pid(node: Node, tmp_path: Path) -> None:
    """--netns NAME and --netns /proc/PID/ns/net: the pod's own eth0 and lo, named after it."""
    p0, p1 = node.pods
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f").write_bytes(b"x" * 5000)
    server = start_server(p0, tmp_path / "www")
    for spec, label in ((p0.name, p0.name), (f"/proc/{server.pid}/ns/net", f"pid{server.pid}")):
        store = str(tmp_path / f"store-{label}")
        d = Daemon(store, "--netns", spec)
        try:
            d.wait_for("capturing on")
            d.wait_for(f"{label}/eth0")
            ports = curl(p1, f"http://{p0.ip}:8000/f", 2)
            local = curl(p0, "http://127.0.0.1:8000/f", 1)
            time.sleep(1.2)
        finally:
            assert d.stop() == 0
        stored = tshark_packets(segments(store))
        assert client_ports(stored) == set(ports) | set(local)
        st = d.status()
        names = {s["name"] for s in st["sources"]}
        assert {f"{label}/eth0", f"{label}/lo"} <= names
        assert st["duplicates"] == 0
        rec = Recorder(store, 1 << 30, 3600 * 10**9)
        rec.recover()
        srcs = {f.cport: rec.sources[f.source].name for f in rec.index.by_num.values()}
        assert {srcs[p] for p in ports} == {f"{label}/eth0"}
        assert srcs[local[0]] == f"{label}/lo"


def test_kill_9_mid_write_then_restart(node: Node, tmp_path: Path) -> None:
    """Segments cut by kill -9 stay readable, nothing flushed is lost, and the restarted
    daemon indexes the same connections under the same flow numbers."""
    p0, p1 = node.pods
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f").write_bytes(os.urandom(30_000))
    start_server(p0, tmp_path / "www")
    store = str(tmp_path / "store")
    args = ("--iface", p0.host_veth, "--segment-bytes", "200K")
    d = Daemon(store, *args)
    d.wait_for("capturing on")
    stop = threading.Event()
    done: list[tuple[float, list[int]]] = []

    def load() -> None:
        while not stop.is_set():
            ports = curl(p1, f"http://{p0.ip}:8000/f", 3)
            done.append((time.monotonic(), ports))
            time.sleep(0.05)

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(2.0)
        killed_at = time.monotonic()
        d.kill9()
    finally:
        stop.set()
        t.join(60)
    assert len(segments(store)) >= 3
    before = tshark_packets(segments(store))  # readable by tshark as left
    # every connection that finished more than a second before the kill is stored
    settled = {p for ts, ports in done if ts < killed_at - 1.0 for p in ports}
    assert settled and settled <= client_ports(before)
    # the flow numbers the daemon gave, as its comments in the files say (read by tshark)
    numbered: dict[int, int] = {}
    for seg in segments(store):
        out = subprocess.run(
            ["tshark", "-r", seg, "-Y", "frame.comment", "-T", "fields",
             "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "frame.comment"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            sp, dp, comment = line.split("\t")
            client = int(sp) if int(dp) == 8000 else int(dp)
            num = int(comment.removeprefix("shark-tui flow="))
            assert numbered.setdefault(client, num) == num
    assert set(numbered) == client_ports(before)
    n_before = sum(before.values())
    seqs_before = segments(store)
    empty = {p for p in seqs_before if os.path.getsize(p) == 0}
    # A kill during a write() can leave the last block half written: cut the last one so.
    last = [p for p in seqs_before if os.path.getsize(p) > 1000][-1]
    os.truncate(last, os.path.getsize(last) - 10)
    n_before -= 1

    d2 = Daemon(store, *args)
    try:
        d2.wait_for("capturing on")
        assert "trimmed to its last complete block" in d2.wait_for(os.path.basename(last))
        ports = curl(p1, f"http://{p0.ip}:8000/f", 2)
        time.sleep(1.2)
    finally:
        assert d2.stop() == 0
    st = d2.status()
    assert st["recovered_packets"] == n_before
    # every segment stays (a file killed before its first flush held nothing and goes)
    assert all(os.path.exists(p) for p in seqs_before if p not in empty)
    rec = Recorder(store, 1 << 30, 3600 * 10**9)
    rec.recover()
    assert not rec.warnings  # the restart trimmed whatever was cut
    rebuilt = {f.cport: f.num for f in rec.index.by_num.values()}
    assert {p: rebuilt[p] for p in numbered} == numbered
    assert min(rebuilt[p] for p in ports) > max(numbered.values())
    after = tshark_packets(segments(store))
    assert client_ports(after) == client_ports(before) | set(ports)


def test_store_budget_held_under_sustained_load(node: Node, tmp_path: Path) -> None:
    p0, p1 = node.pods
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f").write_bytes(os.urandom(400_000))
    start_server(p0, tmp_path / "www")
    store = str(tmp_path / "store")
    max_bytes, seg_bytes = 1 << 20, 128 << 10
    d = Daemon(store, "--iface", p0.host_veth, "--max-bytes", "1M", "--segment-bytes", "128K")
    peak = 0
    try:
        d.wait_for("capturing on")
        loader = p1.popen(
            ["sh", "-c", f"for i in $(seq 25); do curl -s -o /dev/null http://{p0.ip}:8000/f; done"]
        )
        while loader.poll() is None:
            total = sum(_size(p) for p in segments(store))
            peak = max(peak, total)
            time.sleep(0.01)
        time.sleep(1.2)
    finally:
        assert d.stop() == 0
    st = d.status()
    assert st["bytes"] > 8 * max_bytes  # the load was far above the budget
    assert st["segments_deleted"] > 0
    assert peak <= max_bytes + seg_bytes
    assert st["store_bytes"] <= max_bytes + seg_bytes
    total = sum(os.path.getsize(p) for p in segments(store))
    assert total == st["store_bytes"]
    # what is left is still a valid store: the oldest segments went, the index agrees
    rec = Recorder(store, 1 << 30, 3600 * 10**9)
    rec.recover()
    assert not rec.warnings
    assert len(rec.index) == st["flows"]


def test_interface_disappears_and_comes_back(node: Node, tmp_path: Path) -> None:
    """The only named interface goes away: the daemon keeps running without it, picks it up
    again when it is back, and stores what crosses it from then on."""
    p0, p1 = node.pods
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f").write_bytes(b"y" * 3000)
    start_server(p0, tmp_path / "www")
    store = str(tmp_path / "store")
    d = Daemon(store, "--iface", p1.host_veth)
    try:
        d.wait_for("capturing on")
        first = curl(p1, f"http://{p0.ip}:8000/f", 1)
        time.sleep(0.3)  # libpcap hands packets over a read timeout (50 ms) late
        mark = len(d.lines)
        node.remove_pod_link(1)
        d.wait_for(f"stopped capturing on {p1.host_veth}", after=mark)
        time.sleep(1.2)
        assert d.proc.poll() is None
        assert d.status()["capturing"] == []
        mark = len(d.lines)
        node.restore_pod_link(1)
        d.wait_for(f"capturing on {p1.host_veth}", after=mark)
        later = curl(p1, f"http://{p0.ip}:8000/f", 2)
        time.sleep(1.2)
        assert d.status()["capturing"] == [p1.host_veth]
    finally:
        assert d.stop() == 0
    stored = tshark_packets(segments(store))
    assert client_ports(stored) == set(first) | set(later)
    # the segment names the interface once: the same source before and after the flap
    st = d.status()
    assert [s["name"] for s in st["sources"]] == [p1.host_veth]
