"""Entries name their ends with the pod (and service) that held each address at the entry's
time; the names travel with an export (a section-header comment `open`/`dissect` read back,
and a name resolution block tshark shows).

The capture is built here (two HTTP/1.1 exchanges to one address, an hour apart), and the pod
history is fed as watch events would be: the server's address is reused by another pod between
the two calls."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from shark_tui.engine import podmap
from shark_tui.engine.capfile import CaptureFile
from shark_tui.engine.filter import compile_filter
from shark_tui.engine.offline import import_capture
from shark_tui.engine.podmap import PodMap
from shark_tui.engine.query import QueryEngine
from tests import realpeers
from tests.engine import fixtures_pcap as fx

NS = 1_000_000_000
T1 = 1_700_000_000 * NS  # first call
T2 = T1 + 3600 * NS  # second call, after the address changed hands
WEB, API = "10.244.1.5", "10.244.2.7"


def exchange(t: int, sport: int, path: str) -> list[tuple[int, bytes]]:
    req = f"GET {path} HTTP/1.1\r\nHost: api\r\n\r\n".encode()
    res = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    c, s = 1000, 5000
    ms = 1_000_000

    def p(dt: int, src: str, dst: str, a: int, b: int, seq: int, ack: int, fl: int,
          data: bytes = b"") -> tuple[int, bytes]:  # fmt: skip
        return t + dt * ms, fx.eth_ipv4_tcp(src, dst, a, b, seq, ack, fl, data)

    return [
        p(0, WEB, API, sport, 8080, c, 0, fx.SYN),
        p(1, API, WEB, 8080, sport, s, c + 1, fx.SYN | fx.ACK),
        p(2, WEB, API, sport, 8080, c + 1, s + 1, fx.ACK),
        p(3, WEB, API, sport, 8080, c + 1, s + 1, fx.PSH | fx.ACK, req),
        p(5, API, WEB, 8080, sport, s + 1, c + 1 + len(req), fx.PSH | fx.ACK, res),
        p(6, WEB, API, sport, 8080, c + 1 + len(req), s + 1 + len(res), fx.FIN | fx.ACK),
        p(7, API, WEB, 8080, sport, s + 1 + len(res), c + 2 + len(req), fx.FIN | fx.ACK),
        p(8, WEB, API, sport, 8080, c + 2 + len(req), s + 2 + len(res), fx.ACK),
    ]


def pod(name: str, ip: str, ns: str = "shop", uid: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def history(pm: PodMap | None = None) -> PodMap:
    """The two pods and the address changing hands, as the watch reports them (into ``pm``)."""
    pm = PodMap() if pm is None else pm
    pm.observe("Pod", pod("web-0", WEB), T1 - 60 * NS)
    pm.observe("Pod", pod("api-a", API), T1 - 60 * NS)
    pm.observe("Pod", pod("api-a", API), T1 + 600 * NS, deleted=True)
    pm.observe("Pod", pod("api-b", API, ns="other"), T1 + 900 * NS)
    return pm


def capture(tmp: Path) -> Path:
    return fx.write_pcap(tmp / "calls.pcap", fx.LINKTYPE_ETHERNET,
                         exchange(T1, 40000, "/one") + exchange(T2, 40001, "/two"))  # fmt: skip


def ends(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["summary"], e["src"]["pod"], e["src"]["ns"], e["dst"]["pod"], e["dst"]["ns"])
            for e in entries]  # fmt: skip


WANT = [("/one", "web-0", "shop", "api-a", "shop"), ("/two", "web-0", "shop", "api-b", "other")]


def test_entries_name_both_ends_at_their_time_and_the_export_carries_it(
    tmp_path: Path, capture_tools: None
) -> None:
    rec, warning = import_capture(str(capture(tmp_path)), str(tmp_path / "store"))
    assert warning is None and rec.names is None
    rec.names = history()
    q = QueryEngine(rec, threading.Lock())
    try:
        got = [e for b in q.backlog(compile_filter(""), detail=True) for e in b]
        assert ends(got) == WANT
        # the filter's pod and ns fields see them
        for text, want in (('dst.pod == "api-b"', ["/two"]), ('pod ~ "^api-"', ["/one", "/two"]),
                           ('ns == "other"', ["/two"]), ('src.pod == "api-a"', [])):  # fmt: skip
            sel = [e["summary"] for b in q.backlog(compile_filter(text)) for e in b]
            assert sel == want, text
        out = tmp_path / "out.pcapng"
        out.write_bytes(b"".join(q.export(q.flows_of(None, [e["id"] for e in got]))))
    finally:
        q.close()
        rec.close()

    # read back by `dissect` (the CLI), by the offline import behind `open`, by tshark
    assert ends(realpeers.run_dissect(out).check().entries) == WANT
    rec2, warning = import_capture(str(out), str(tmp_path / "store2"))
    try:
        assert warning is None and rec2.names is not None
        q2 = QueryEngine(rec2, threading.Lock())
        assert ends([e for b in q2.backlog(compile_filter(""), detail=True) for e in b]) == WANT
        q2.close()
    finally:
        rec2.close()
    names = subprocess.run(
        ["tshark", "-r", str(out), "-N", "n", "-Y", "http.request", "-T", "fields",
         "-e", "ip.src_host", "-e", "ip.dst_host"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    # one name per address in the block: the latest holder in the export's window
    assert names == ["web-0.shop", "api-b.other"] * 2


def test_a_damaged_history_is_reported_and_the_entries_stay(tmp_path: Path) -> None:
    rec, _ = import_capture(str(capture(tmp_path)), str(tmp_path / "store"))
    rec.names = history()
    q = QueryEngine(rec, threading.Lock())
    data = b"".join(q.export(set(rec.index.by_num)))
    q.close()
    rec.close()
    tag = podmap.HISTORY_COMMENT.encode()
    at = data.index(tag)
    bad = tmp_path / "bad.pcapng"
    # the history's JSON broken inside (same length: the blocks stay well-formed)
    body = data.index(b"\n", at) + 1
    bad.write_bytes(data[:body] + b"#" * 8 + data[body + 8 :])
    cf = CaptureFile(bad.open("rb"))
    assert len(list(cf)) == 16
    assert any(c.startswith(podmap.HISTORY_COMMENT) for c in cf.reader.comments)
    res = realpeers.run_dissect(bad).check()
    assert [e["summary"] for e in res.entries] == ["/one", "/two"]
    assert all(e["src"]["pod"] is None and e["dst"]["pod"] is None for e in res.entries)
    assert "pod names not restored" in res.stderr, res.stderr
    rec2, warning = import_capture(str(bad), str(tmp_path / "store2"))
    rec2.close()
    assert warning is not None and "pod names not restored" in warning


def test_summaries_cached_before_the_watch_knew_the_pods_are_named_later(tmp_path: Path) -> None:
    """The watch reports pods some time after their first packets: summaries dissected (and
    cached) before that have unnamed ends. A query made once the history knows the addresses
    names them from the cache, at each entry's time — the same names a dissection now gives —
    without dissecting again; a flow whose summaries leave the cache stops waiting."""
    rec, _ = import_capture(str(capture(tmp_path)), str(tmp_path / "store"))
    rec.names = PodMap()  # --kube, nothing reported yet
    q = QueryEngine(rec, threading.Lock())
    try:
        first = [e for b in q.backlog(compile_filter("")) for e in b]  # summaries, now cached
        assert ends(first) == [("/one", None, None, None, None), ("/two", None, None, None, None)]
        assert set(q._unnamed) == {WEB, API}
        dissected = q.stats["dissected_packets"]
        assert [e for b in q.backlog(compile_filter('pod == "web-0"')) for e in b] == []

        history(rec.names)  # the watch catches up
        again = [e for b in q.backlog(compile_filter("")) for e in b]
        assert ends(again) == WANT
        assert q.stats["dissected_packets"] == dissected  # from the cache, not dissected again
        assert q._unnamed == {}
        assert ends([e for b in q.backlog(compile_filter(""), detail=True) for e in b]) == WANT
        sel = [e["summary"] for b in q.backlog(compile_filter('dst.pod == "api-b"')) for e in b]
        assert sel == ["/two"]
    finally:
        q.close()
        rec.close()

    # a flow dropped from the cache (its summaries gone) waits for nothing
    rec, _ = import_capture(str(capture(tmp_path)), str(tmp_path / "store2"))
    rec.names = PodMap()
    q = QueryEngine(rec, threading.Lock(), max_cached_entries=1)
    try:
        assert len([e for b in q.backlog(compile_filter("")) for e in b]) == 2
        assert q.stats["cache_evictions"] == 1
        waiting = {num for nums in q._unnamed.values() for num in nums}
        assert waiting == {n for n, c in q._cache.items() if c.entries}
        assert len(waiting) == 1
    finally:
        q.close()
        rec.close()
