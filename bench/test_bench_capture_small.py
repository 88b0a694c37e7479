"""CI check of the live-capture benchmark at small size: the tools agree (no timing assertions).

3 000 packets (300 complete HTTP/1.1 connections from `bench.mkflows`) are replayed at 20 k
packets/s on the bench's own veth pair (in a private network namespace), once into tcpdump and
once into ``shark-tui daemon``; both must capture every packet with no drops, the daemon's
segments must hold exactly the packets of tcpdump's file, and its index the 300 connections.
Needs root, ``ip``, ``tcpreplay`` and ``tcpdump``: fails, never skips, without them.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from bench import bench_capture, mkflows
from shark_tui.engine.capfile import CaptureFile
from shark_tui.engine.packet import PacketDecoder

CONNS = 300
RATE = 20_000


def tcp_frames(paths: list[Path]) -> Counter[bytes]:
    """The TCP packets of capture files (pcap or pcapng), as a multiset of frames."""
    dec = PacketDecoder()
    out: Counter[bytes] = Counter()
    for path in paths:
        with open(path, "rb") as f:
            cf = CaptureFile(f)
            for ts, iface, data, _orig in cf:
                if dec.decode(cf.interfaces[iface].linktype, data, ts) is not None:
                    out[data] += 1
            assert cf.warning is None, f"{path}: {cf.warning}"
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bench_capture.Step]:
    if os.geteuid() != 0:
        pytest.fail("the live-capture bench needs root (netns, veth, capture): run as root")
    missing = bench_capture.missing_tools()
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)} (run scripts/setup)")
    pcap = mkflows.build(CONNS)
    bench_capture.stale_cleanup(lambda _s: None)
    work = tmp_path_factory.mktemp("capture")
    out = {}
    with bench_capture.Wire() as wire:
        for kind in ("tcpdump", "shark-tui"):
            out[kind] = bench_capture.step(wire, kind, pcap, RATE, None, work / kind, keep=True)
    return out


@pytest.mark.slow
def test_both_capture_every_packet(runs: dict[str, bench_capture.Step]) -> None:
    expected = CONNS * mkflows.PACKETS_PER_CONN
    for kind, st in runs.items():
        why = f"{kind}: {st.detail}"
        assert st.sent == expected, why
        assert st.exit_code == 0, why
        assert st.dropped == 0, why
        assert st.captured == expected, why
        assert st.holds, why


@pytest.mark.slow
def test_daemon_stores_what_tcpdump_captured(runs: dict[str, bench_capture.Step]) -> None:
    td = runs["tcpdump"].detail
    dumped = tcp_frames([Path(runs["tcpdump"].argv[runs["tcpdump"].argv.index("-w") + 1])])
    store = Path(runs["shark-tui"].argv[runs["shark-tui"].argv.index("--store") + 1])
    segments = sorted(store.glob("seg-*.pcapng"))
    assert segments, f"no segments in {store}"
    stored = tcp_frames(segments)
    expected = CONNS * mkflows.PACKETS_PER_CONN
    assert sum(dumped.values()) == td["captured"] == expected
    assert sum(stored.values()) == expected
    assert stored == dumped  # the same frames, each as often


@pytest.mark.slow
def test_daemon_indexes_every_connection(runs: dict[str, bench_capture.Step]) -> None:
    d = runs["shark-tui"].detail
    assert d["flows"] == CONNS, d
    assert d["duplicates"] == 0, d
