"""`cluster.host_filter`: the kernel filter of the host interfaces of a ``--kube`` daemon
(``--iface``) names the targeted pods' addresses, up to `MAX_BPF_HOSTS` of them; past that it
narrows nothing (every TCP packet is recorded), and with no pod targeted it matches nothing.
Each filter is compiled by libpcap, as the capture threads do, and run on frames to and from
targeted and other addresses. (The daemon applying them live: tests/kube/test_cluster.py.)"""

from __future__ import annotations

import pcapy

from shark_tui.engine.cluster import MAX_BPF_HOSTS, NOTHING, host_filter
from shark_tui.engine.daemon import capture_filter
from tests.engine import fixtures_pcap as fx


def _daemon_filter(ips: list[str]) -> str:
    """What a host interface gets (as `Daemon._narrow_host_filter` builds it, no --bpf)."""
    return capture_filter(host_filter(ips))


def _passes(expr: str, src: str, dst: str) -> bool:
    prog = pcapy.compile(fx.LINKTYPE_ETHERNET, 262144, expr, 1, 0)
    return prog.filter(fx.eth_ipv4_tcp(src, dst, 40000, 80, 1, 0, fx.SYN)) > 0


def _ips(n: int) -> list[str]:
    return [f"10.244.{i // 250}.{i % 250 + 1}" for i in range(n)]


def test_up_to_the_limit_the_filter_names_each_address_once() -> None:
    ips = _ips(MAX_BPF_HOSTS)
    got = host_filter(ips + ips[:10])  # an address of two pods (or listed twice) counts once
    assert got.split(" or ") == [f"host {ip}" for ip in sorted(ips)]
    expr = _daemon_filter(ips)
    assert _passes(expr, ips[0], "192.168.1.1") and _passes(expr, "192.168.1.1", ips[-1])
    assert not _passes(expr, "192.168.1.1", "192.168.1.2")  # nobody targeted at either end


def test_past_the_limit_every_tcp_packet_is_recorded() -> None:
    ips = _ips(MAX_BPF_HOSTS + 1)
    assert host_filter(ips) == ""
    expr = _daemon_filter(ips)
    assert expr == capture_filter("")  # TCP, nothing narrower
    assert _passes(expr, ips[0], ips[1]) and _passes(expr, "192.168.1.1", "192.168.1.2")


def test_nothing_targeted_matches_nothing() -> None:
    assert host_filter([]) == host_filter(iter(())) == NOTHING
    expr = _daemon_filter([])
    for src, dst in (("10.244.0.1", "10.244.0.2"), ("192.168.1.1", "192.168.1.2")):
        assert not _passes(expr, src, dst)
    assert _passes(capture_filter(""), "192.168.1.1", "192.168.1.2")  # the frames do pass TCP
