"""`QueryEngine` over a store loaded with `offline.import_capture`, checked against
``shark-tui dissect FILE --json`` on the same file.

The file is real HTTP/1.1 on loopback (a threaded ``http.server``, keep-alive connections used
round-robin so entries of different connections interleave), captured by tcpdump (root). The
cursor and cache bounds are tested by feeding the same packets into a `Recorder` a few at a
time, as the daemon's writer does, and polling between the steps.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpkt
import pytest

from shark_tui.engine.capfile import CaptureFile
from shark_tui.engine.filter import compile_filter
from shark_tui.engine.offline import import_capture
from shark_tui.engine.query import QueryEngine, parse_id, summary
from shark_tui.engine.store import Recorder
from tests import realpeers
from tests.engine import fixtures_pcap as fx
from tests.engine import http_traffic
from tests.engine.http_traffic import Call, http_server, make_traffic

Entry = dict[str, Any]

#: Fields of an entry that do not depend on how flows were numbered.
STABLE = ("proto", "method", "summary", "status", "ts", "latency_ms", "request_size",
          "response_size", "error", "tls")  # fmt: skip


def stable(e: Entry) -> tuple[Any, ...]:
    return (e["src"]["port"], e["dst"]["port"], *(e.get(k) for k in STABLE))


def id_key(e: Entry) -> tuple[float, int, int]:
    num, n = parse_id(e["id"]) or (0, 0)
    return e["ts"], num, n


@dataclass
class Capture:
    path: Path
    port: int  # the HTTP server's
    calls: list[Call]
    entries: list[Entry]  # dissect FILE --json

    def dissect(self, *args: str) -> list[Entry]:
        return realpeers.run_dissect(self.path, *args).check().entries


@pytest.fixture(scope="module")
def cap(capture_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Capture:
    path = tmp_path_factory.mktemp("query") / "http.pcap"
    with http_server() as port, realpeers.capture(ports=[port], path=path):
        calls = make_traffic(port, conns=5, per_conn=6)
    entries = realpeers.run_dissect(path).check().entries
    assert len(entries) == len(calls) == 30, "the capture lost packets"
    return Capture(path, port, calls, entries)


@pytest.fixture
def engine(cap: Capture, tmp_path: Path) -> Iterator[QueryEngine]:
    rec, warning = import_capture(str(cap.path), str(tmp_path / "store"))
    assert warning is None
    q = QueryEngine(rec, threading.Lock())
    yield q
    q.close()
    rec.close()


def run(q: QueryEngine, text: str = "", **kw: Any) -> list[Entry]:
    """The backlog as a client sees it: summaries unless ``detail`` (the engine hands out
    full entries when the filter made it dissect them anyway; the server strips them)."""
    got = [e for batch in q.backlog(compile_filter(text), **kw) for e in batch]
    return got if kw.get("detail") else [summary(e) for e in got]


# -- the backlog against dissect ----------------------------------------------------------------


def test_backlog_is_what_dissect_prints(cap: Capture, engine: QueryEngine) -> None:
    # what the clients did, in the order they did it (requests went out one at a time)
    assert [(e["src"]["port"], e["method"], e["summary"], e["status"]) for e in cap.entries] == [
        (c.cport, c.method, c.target, c.status) for c in cap.calls
    ]
    got = run(engine)
    assert [stable(e) for e in got] == [stable(e) for e in cap.entries]
    # summaries: the entry without request/response, ids included (same flow numbering)
    assert got == [summary(e) for e in cap.entries]
    # full entries, exactly what dissect prints
    assert run(engine, detail=True) == cap.entries
    # asking again answers from the cache, the same
    before = engine.stats["dissected_packets"]
    assert run(engine) == got
    assert engine.stats["dissected_packets"] == before


FILTERS = [
    'method == "POST"',
    "status >= 400",
    'method in ["GET", "DELETE"] and latency_ms >= 0',
    'summary ~ "^/items/1"',
    "not http",
    'proto == "http" and status == 204',
    # L7: these look into requests and responses
    'path ~ "^/items/"',
    'request.headers contains "json"',
    'response.body contains "boom"',
    'request.body ~ "pppp"',
]


@pytest.mark.parametrize("text", FILTERS)
def test_filter_equals_dissect_filter(cap: Capture, engine: QueryEngine, text: str) -> None:
    want = cap.dissect("--filter", text)
    assert run(engine, text) == [summary(e) for e in want]
    assert run(engine, text, detail=True) == want


def test_pushdown_dissects_only_the_flows_it_may_match(cap: Capture, engine: QueryEngine) -> None:
    cport = cap.calls[2].cport
    for text in (f"src.port == {cport}", f"port == {cport} and status < 300"):
        want = cap.dissect("--filter", text)
        assert want and all(e["src"]["port"] == cport for e in want)
        q = QueryEngine(engine.recorder, engine.lock)
        assert run(q, text) == [summary(e) for e in want]
        flows = {parse_id(e["id"])[0] for e in cap.entries}  # type: ignore[index]
        # only that connection was read: its packets, not the others'
        assert q.stats["dissected_packets"] < engine.recorder.stats["packets"] / (len(flows) - 1)
    assert run(engine, f"dst.port == {cap.port}") == [summary(e) for e in cap.entries]
    assert run(engine, f"dst.port == {cap.port + 1}") == []


@pytest.mark.parametrize("text", ["", "status >= 400", 'method == "GET"', 'path ~ "items"'])
def test_newest_first_limit_is_the_newest_n(cap: Capture, engine: QueryEngine, text: str) -> None:
    matching = cap.dissect("--filter", text) if text else cap.entries
    newest = sorted(matching, key=id_key, reverse=True)
    for limit in (1, 2, 5, 11, len(matching), len(matching) + 10, 0):
        got = run(engine, text, newest_first=True, limit=limit)
        assert [e["id"] for e in got] == [e["id"] for e in newest[: limit or None]], limit
        assert got == [summary(e) for e in newest[: limit or None]]
        # without newest_first, ``limit`` keeps the newest N too, in ts order
        tail = run(engine, text, limit=limit)
        assert tail == [summary(e) for e in sorted(newest[: limit or None], key=id_key)]


def test_since(cap: Capture, engine: QueryEngine) -> None:
    mid = cap.entries[len(cap.entries) // 2]["ts"]
    want = [summary(e) for e in cap.entries if e["ts"] >= mid]
    assert run(engine, since_ns=int(mid * 1e9)) == want
    got = run(engine, since_ns=int(mid * 1e9), newest_first=True, limit=4)
    assert got == sorted(want, key=id_key, reverse=True)[:4]


def test_get_entry_is_dissects_entry(cap: Capture, engine: QueryEngine) -> None:
    # cold (nothing cached yet), then after a backlog cached the summaries
    for _ in range(2):
        for e in cap.entries:
            assert engine.get_entry(e["id"]) == e, e["id"]
        run(engine)
    for bad in ("999:1", "1:0", "1:99", "x", "", "1:", ":1", "-1:1", "1:2:3"):
        assert engine.get_entry(bad) is None, bad


# -- export -------------------------------------------------------------------------------------


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    with open(path, "rb") as f:
        return [(float(ts), bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]


def ports_of(frame: bytes) -> tuple[int, int]:
    tcp = dpkt.ethernet.Ethernet(frame).data.data
    return tcp.sport, tcp.dport


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line.split("\t") for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("text", ["status >= 400", 'method == "POST"', "", "dst.port == 1"])
def test_export_of_a_filter(cap: Capture, engine: QueryEngine, tmp_path: Path, text: str) -> None:
    nums = engine.flows_of(compile_filter(text), [])
    out = tmp_path / "out.pcapng"
    out.write_bytes(b"".join(engine.export(nums)))
    matching = cap.dissect("--filter", text) if text else cap.entries
    cports = {e["src"]["port"] for e in matching}
    assert nums == {parse_id(e["id"])[0] for e in matching}  # type: ignore[index]
    if not matching:  # a section header alone (dpkt wants an interface block: tshark only)
        assert tshark_fields(out, "frame.number") == []
        return
    # every packet of those connections in the original capture, once each, in time order
    want = [(ts, frame) for ts, frame in read_pcap(cap.path) if set(ports_of(frame)) & cports]
    with open(out, "rb") as f:
        got = [(float(ts), bytes(buf)) for ts, buf in dpkt.pcapng.Reader(f)]
    assert [frame for _, frame in got] == [frame for _, frame in want]
    assert [round(ts, 6) for ts, _ in got] == [round(ts, 6) for ts, _ in want]
    assert engine.last_export_packets == len(want)
    # tshark reads it: the same packets, each connection from its SYN to its last FIN/ACK
    rows = tshark_fields(out, "tcp.stream", "tcp.srcport", "tcp.flags.syn", "tcp.flags.ack")
    assert len(rows) == len(want)
    streams: dict[str, list[list[str]]] = {}
    for row in rows:
        streams.setdefault(row[0], []).append(row)
    assert len(streams) == len(cports)
    for rows_of in streams.values():
        assert rows_of[0][2:] in (["1", "0"], ["True", "False"]), "the handshake is exported"


def test_export_of_ids(cap: Capture, engine: QueryEngine, tmp_path: Path) -> None:
    ids = [cap.entries[3]["id"], cap.entries[17]["id"], cap.entries[18]["id"], "999:1", "zz"]
    nums = engine.flows_of(None, ids)
    assert nums == {parse_id(i)[0] for i in ids[:3]} | {999}  # type: ignore[index]
    out = tmp_path / "ids.pcapng"
    out.write_bytes(b"".join(engine.export(nums)))
    cports = {cap.entries[i]["src"]["port"] for i in (3, 17, 18)}
    rows = tshark_fields(out, "tcp.srcport", "tcp.dstport")
    want = [f for _, f in read_pcap(cap.path) if set(ports_of(f)) & cports]
    assert len(rows) == len(want) > 0
    assert {int(r[0]) for r in rows} | {int(r[1]) for r in rows} == cports | {cap.port}


def test_export_keeps_original_lengths(tmp_path: Path) -> None:
    """A capture cut at a snaplen: the export says how long each packet really was."""
    packets = []
    for ts, frame in http_flow(40001, [(REQ, RESP)]):
        cut = frame[:60]
        packets.append((ts, cut, len(frame)))
    path = fx.write_pcap(tmp_path / "cut.pcap", fx.LINKTYPE_ETHERNET, packets, snaplen=60)
    rec, _ = import_capture(str(path), str(tmp_path / "store"))
    q = QueryEngine(rec, threading.Lock())
    data = b"".join(q.export(set(rec.index.by_num)))  # cut short: no entries, still a flow
    out = tmp_path / "out.pcapng"
    out.write_bytes(data)
    rows = tshark_fields(out, "frame.len", "frame.cap_len")
    assert [(int(a), int(b)) for a, b in rows] == [(orig, len(cut)) for _, cut, orig in packets]


# -- bounds: the summary cache and the cursors --------------------------------------------------


def test_small_summary_cache_evicts_and_stays_right(cap: Capture, engine: QueryEngine) -> None:
    small = QueryEngine(engine.recorder, engine.lock, max_cached_entries=4)
    want = [summary(e) for e in cap.entries]
    newest = sorted(want, key=id_key, reverse=True)
    for _ in range(2):
        assert run(small) == want
        assert run(small, newest_first=True) == newest
        assert run(small, newest_first=True, limit=7) == newest[:7]
        assert run(small, "status >= 400") == [
            summary(e) for e in cap.entries if (e["status"] or 0) >= 400
        ]
        assert run(small, detail=True) == cap.entries
        for e in cap.entries[::7]:
            assert small.get_entry(e["id"]) == e
    assert small.stats["cache_evictions"] > 0
    assert small._cached_entries <= 6  # one flow's entries over the bound at most


def packets_of(path: Path) -> tuple[int, list[tuple[int, bytes, int]]]:
    with open(path, "rb") as f:
        cf = CaptureFile(f)
        pkts = [(ts, bytes(pkt), orig) for ts, _iface, pkt, orig in cf]
        return cf.interfaces[0].linktype, pkts


def feed_and_poll(
    tmp: Path,
    linktype: int,
    packets: list[tuple[int, bytes, int]],
    seed: int,
    on_step: Any = None,
    **kw: int,
) -> tuple[QueryEngine, list[Entry]]:
    """The daemon's way: packets stored a few at a time, the flows that got some polled."""
    rec = Recorder(str(tmp), 1 << 40, 1 << 62)
    sid = rec.source("lo", linktype)
    lock = threading.Lock()
    q = QueryEngine(rec, lock, **kw)
    rec.index.dirty = set()
    rnd = random.Random(seed)
    emitted: list[Entry] = []
    i = 0
    while i < len(packets):
        step = rnd.randint(1, 6)
        for ts, data, orig in packets[i : i + step]:
            rec.add(sid, ts, data, orig)
        i += step
        rec.flush()
        dirty, rec.index.dirty = rec.index.dirty, set()
        nums = list(dirty or ())
        rnd.shuffle(nums)
        emitted += q.poll(nums)
        if on_step is not None:
            emitted += on_step(q)
    emitted += q.poll(list(rec.index.by_num))
    return q, emitted


@pytest.mark.parametrize("seed", range(4))
def test_live_polls_with_one_cursor(cap: Capture, tmp_path: Path, seed: int) -> None:
    """max_cursors=1: flows are dissected again from their start; nothing twice, nothing
    wrong, nothing missing."""
    linktype, packets = packets_of(cap.path)
    q, emitted = feed_and_poll(tmp_path, linktype, packets, seed, max_cursors=1)
    ids = [e["id"] for e in emitted]
    assert len(ids) == len(set(ids)), "an entry came out twice"
    assert sorted(emitted, key=id_key) == cap.entries
    assert q.stats["cursor_evictions"] > 0
    assert run(q) == [summary(e) for e in cap.entries]


@pytest.mark.parametrize("seed", range(3))
def test_live_polls_with_a_small_cache_and_backlogs(
    cap: Capture, tmp_path: Path, seed: int
) -> None:
    """Other clients' backlogs run between polls (their newly dissected entries are new for
    the live feed too) while the cache keeps evicting: every entry reaches the live feed once."""
    linktype, packets = packets_of(cap.path)
    seen_backlogs: list[list[Entry]] = []

    def other_client(q: QueryEngine) -> list[Entry]:
        new: list[Entry] = []
        seen_backlogs.append(run(q, newest_first=bool(len(seen_backlogs) % 2), on_new=new.extend))
        return new

    q, emitted = feed_and_poll(
        tmp_path, linktype, packets, seed, other_client, max_cached_entries=3, max_cursors=2
    )
    ids = [e["id"] for e in emitted]
    assert len(ids) == len(set(ids)), "an entry came out twice"
    assert sorted(emitted, key=id_key) == cap.entries
    assert q.stats["cache_evictions"] > 0
    final = run(q)
    assert final == [summary(e) for e in cap.entries]
    # every backlog along the way was a prefix-consistent view: only complete entries, right
    by_id = {e["id"]: summary(e) for e in cap.entries}
    for b in seen_backlogs:
        for e in b:
            assert e == by_id[e["id"]]


# -- synthetic flows (byte-exact) ---------------------------------------------------------------

T0 = http_traffic.T0
C, S = "10.0.0.1", "10.0.0.2"
REQ, RESP = http_traffic.REQ, http_traffic.RESP
http_flow = http_traffic.synthetic_flow


def test_cursor_evicted_in_the_middle_of_a_request(tmp_path: Path) -> None:
    """Flow 1's cursor has fed half a request when flow 2's poll evicts it: flow 1 must be
    dissected again from its first packet, not from where the dropped cursor stopped."""
    rec = Recorder(str(tmp_path), 1 << 40, 1 << 62)
    sid = rec.source("eth0", fx.LINKTYPE_ETHERNET)
    q = QueryEngine(rec, threading.Lock(), max_cursors=1)
    t = T0

    def add(
        src: str, dst: str, sp: int, dp: int, seq: int, ack: int, fl: int, pl: bytes = b""
    ) -> None:
        nonlocal t
        t += 1_000_000
        frame = fx.eth_ipv4_tcp(src, dst, sp, dp, seq, ack, fl, pl)
        rec.add(sid, t, frame, len(frame))
        rec.flush()

    for cp in (1111, 2222):
        add(C, S, cp, 80, 100, 0, fx.SYN)
        add(S, C, 80, cp, 500, 101, fx.SYN | fx.ACK)
        add(C, S, cp, 80, 101, 501, fx.ACK)
    add(C, S, 1111, 80, 101, 501, fx.ACK, REQ[:10])
    assert q.poll([1]) == []
    add(C, S, 2222, 80, 101, 501, fx.ACK, REQ)
    add(C, S, 1111, 80, 111, 501, fx.ACK | fx.PSH, REQ[10:])
    assert q.poll([2, 1]) == []
    add(S, C, 80, 1111, 501, 101 + len(REQ), fx.ACK | fx.PSH, RESP)
    add(S, C, 80, 2222, 501, 101 + len(REQ), fx.ACK | fx.PSH, RESP)
    got = {e["id"]: (e["method"], e["summary"], e["status"], e["error"]) for e in q.poll([1, 2])}
    assert got == {"1:1": ("GET", "/abc", 200, None), "2:1": ("GET", "/abc", 200, None)}


def test_full_entries_of_an_ended_flow_wait_for_its_unflushed_tail(tmp_path: Path) -> None:
    """The index knows a flow ended (its FINs are stored) while the last part of its response
    is still in the writer's buffer: full entries (``detail``) leave the exchange out until the
    tail is in the file — never a cut ``truncated`` one (the live TLS test saw one under load)."""
    body = b"x" * 200_000
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    packets = http_flow(40000, [(REQ, resp)])
    rec = Recorder(str(tmp_path), 1 << 40, 1 << 62)
    sid = rec.source("eth0", fx.LINKTYPE_ETHERNET)
    q = QueryEngine(rec, threading.Lock())
    cut = len(packets) - 4  # two body segments, the FINs and the last ACK unflushed
    for ts, frame in packets[:cut]:
        rec.add(sid, ts, frame, len(frame))
    rec.flush()
    for ts, frame in packets[cut:]:
        rec.add(sid, ts, frame, len(frame))
    assert rec.index.by_num[1].state & 6 == 6  # both FINs indexed, not yet in the file
    assert run(q, detail=True) == []
    assert run(q) == []
    rec.flush()
    got = run(q, detail=True)
    assert [(e["status"], e["error"], e["response_size"]) for e in got] == [
        (200, None, len(resp))
    ]


def test_flow_bigger_than_the_cache(tmp_path: Path) -> None:
    """One connection with more exchanges than the whole cache holds still answers in full."""
    exchanges = [(REQ.replace(b"/abc", b"/n%d" % i), RESP) for i in range(12)]
    packets = http_flow(40000, exchanges) + http_flow(40002, exchanges[:3], T0 + 10**9)
    path = fx.write_pcap(
        tmp_path / "f.pcap", fx.LINKTYPE_ETHERNET, sorted(packets), nanosecond=True
    )
    rec, _ = import_capture(str(path), str(tmp_path / "store"))
    q = QueryEngine(rec, threading.Lock(), max_cached_entries=5)
    want = realpeers.run_dissect(path).check().entries
    assert len(want) == 15
    for _ in range(2):
        assert run(q) == [summary(e) for e in want]
        assert run(q, newest_first=True) == sorted(
            [summary(e) for e in want], key=id_key, reverse=True
        )
        assert run(q, 'summary == "/n11"') == [summary(want[11])]


def test_import_keeps_nanoseconds_and_ids_match_dissect(tmp_path: Path) -> None:
    packets = http_flow(40000, [(REQ, RESP)] * 2, T0 + 123)
    path = fx.write_pcap(tmp_path / "ns.pcap", fx.LINKTYPE_ETHERNET, packets, nanosecond=True)
    rec, warning = import_capture(str(path), str(tmp_path / "store"))
    assert warning is None
    q = QueryEngine(rec, threading.Lock())
    want = realpeers.run_dissect(path).check().entries
    assert run(q, detail=True) == want
    out = b"".join(q.export({1}))
    # the export's EPB timestamps are the file's nanoseconds
    ts = []
    pos = 0
    while pos < len(out):
        btype, blen = struct.unpack_from("<II", out, pos)
        if btype == 6:
            hi, lo = struct.unpack_from("<II", out, pos + 12)
            ts.append(hi << 32 | lo)
        pos += blen
    assert ts == [t for t, _ in packets]


def test_import_of_a_truncated_file_warns(tmp_path: Path) -> None:
    packets = http_flow(40000, [(REQ, RESP)])
    data = fx.pcap_bytes(fx.LINKTYPE_ETHERNET, packets)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-7])
    rec, warning = import_capture(str(path), str(tmp_path / "store"))
    assert warning
    assert rec.stats["packets"] == len(packets) - 1


def test_reader_remaps_a_block_it_saw_half_written(tmp_path: Path) -> None:
    """The reader maps a segment at the size it has at that moment; a flush in progress can
    leave that mid-block. A later read of that block must map again, not skip the packet."""
    rec = Recorder(str(tmp_path), 1 << 40, 1 << 62)
    sid = rec.source("eth0", fx.LINKTYPE_ETHERNET)
    for ts, frame in http_flow(40000, [(REQ, RESP)]):
        rec.add(sid, ts, frame, len(frame))
    rec.flush()
    locs = rec.index.by_num[1].locs.tolist()
    path = rec.segment_list()[-1].path
    whole = Path(path).read_bytes()
    q = QueryEngine(rec, threading.Lock())
    cut = (locs[3] & 0xFFFFFFFF) + 40  # inside the 4th packet's block (the request)
    os.truncate(path, cut)
    assert len(q.reader.read(locs[:3])) == 3  # mapped at the cut size
    Path(path).write_bytes(whole)
    got = q.reader.read(locs)
    assert len(got) == len(locs)
    assert REQ in got[3][2]


FACET_FILTERS = [
    'method == "PATCH"',
    "status == 599",
    'status >= 500 and method == "POST"',
    'not (method == "GET") and status == 200',
    "latency_ms > 100000",
    "latency_ms >= 0 and latency_ms < 0.000001",
    "not (latency_ms > 100000) and status == 599",
]


@pytest.mark.parametrize("text", FACET_FILTERS)
def test_method_and_status_facets_rule_flows_out_and_change_nothing(
    cap: Capture, engine: QueryEngine, text: str
) -> None:
    """A filter on method/status skips the flows whose (proto, method, status) values cannot
    match, without reading their entries; the answer is the one dissect gives."""
    q = QueryEngine(engine.recorder, engine.lock)
    run(q)  # summaries (and facets) cached
    want = cap.dissect("--filter", text)
    got = run(q, text, newest_first=True, limit=5)
    assert got == [summary(e) for e in sorted(want, key=id_key, reverse=True)[:5]]
    assert run(q, text) == [summary(e) for e in want]
    flows = {parse_id(e["id"])[0] for e in cap.entries}  # type: ignore[index]
    matching = {parse_id(e["id"])[0] for e in want}  # type: ignore[index]
    if len(matching) < len(flows):
        assert q.stats["facet_skips"] > 0


def test_get_entry_from_a_checkpoint_past_hello_3(
    capture_tools: None, tmp_path: Path
) -> None:
    """A real redis-py RESP3 connection (``HELLO 3`` first), long enough for checkpoints: an
    entry dissected again from a checkpoint keeps the connection's RESP version (3), typed
    replies included — exactly what ``dissect`` prints."""
    import redis

    path = tmp_path / "redis3.pcap"
    with realpeers.redis_server() as srv, realpeers.capture(ports=[srv.port], path=path):
        r: Any = redis.Redis(port=srv.port, protocol=3)
        for i in range(24):  # > 16 KiB of client bytes between turns: a checkpoint each
            r.set(f"k{i}", b"v" * 20_000)
            r.hset(f"h{i}", mapping={"a": i, "b": "x"})
            r.hgetall(f"h{i}")  # a RESP3 map
        r.close()
    entries = realpeers.run_dissect(path).check().entries
    hellos = [e for e in entries if e["method"] == "HELLO"]
    assert len(hellos) == 1 and hellos[0]["response"]["resp"] == 3
    late = [e for e in entries if e["method"] == "HGETALL"][-5:]
    assert len(late) == 5 and all(e["response"]["resp"] == 3 for e in late)
    rec, warning = import_capture(str(path), str(tmp_path / "store"))
    assert warning is None
    q = QueryEngine(rec, threading.Lock())
    try:
        f = rec.index.by_num[parse_id(late[0]["id"])[0]]  # type: ignore[index]
        assert len(f.checkpoints) // 2 >= 10, "too short a connection for checkpoints"
        run(q)  # the summaries are cached: GetEntry starts from checkpoints
        for e in late:
            assert q.get_entry(e["id"]) == e, e["id"]
        assert q.stats["checkpoint_reads"] == len(late)
        assert q.stats["full_reads"] == 0
    finally:
        q.close()
        rec.close()


# -- what GetEntry says of the connection -------------------------------------------------------


def test_connection_facts_from_the_index(tmp_path: Path) -> None:
    """`QueryEngine.connection`: the interface, packets and bytes each end sent, first and last
    packet, state, and the handshake's times; a connection joined midway has no handshake."""
    whole = http_flow(40001, [(REQ, RESP)])  # a packet every millisecond
    # the second connection without its handshake and its FINs: joined midway, still open
    midway = http_flow(40002, [(REQ, RESP)], t=T0 + 10**9)[3:-3]
    path = fx.write_pcap(tmp_path / "c.pcap", fx.LINKTYPE_ETHERNET, whole + midway)
    rec, _ = import_capture(str(path), str(tmp_path / "store"))
    q = QueryEngine(rec, threading.Lock())
    nums = {f.cport: f.num for f in rec.index.by_num.values()}

    client = [len(f) for _, f in whole if ports_of(f)[0] == 40001]
    server = [len(f) for _, f in whole if ports_of(f)[0] == 80]
    assert (len(client), len(server)) == (5, 3)  # SYN ACK request FIN ACK / SYN-ACK reply FIN
    assert q.connection(nums[40001]) == {
        "flow": nums[40001],
        "iface": "if0",
        "packets": {"client": 5, "server": 3},
        "bytes": {"client": sum(client), "server": sum(server)},
        "first_ts": whole[0][0] / 1e9,
        "last_ts": whole[-1][0] / 1e9,
        "state": "closed",
        "handshake": {"syn_ts": whole[0][0] / 1e9, "syn_ack_ms": 1.0, "ack_ms": 1.0},
    }
    got = q.connection(nums[40002])
    assert got is not None
    assert got["packets"] == {"client": 1, "server": 1} and got["state"] == "open"
    assert got["handshake"] is None
    assert (got["first_ts"], got["last_ts"]) == (midway[0][0] / 1e9, midway[-1][0] / 1e9)
    assert q.connection(999) is None
    q.close()
    rec.close()


def test_http_get_entry_starts_at_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached HTTP summary keeps a slim ``request`` (path, Host): the entry dissected again
    from a checkpoint is compared with it as a summary, so it is read from there, not from the
    connection's first byte (before, the full request never equalled the slim one)."""
    from shark_tui.engine import flowindex

    monkeypatch.setattr(flowindex, "CHECKPOINT_BYTES", 1)  # a checkpoint before each request
    flow = http_flow(40001, [(REQ, RESP)] * 5)
    path = fx.write_pcap(tmp_path / "c.pcap", fx.LINKTYPE_ETHERNET, flow)
    rec, _ = import_capture(str(path), str(tmp_path / "store"))
    q = QueryEngine(rec, threading.Lock())
    entries = run(q)  # the summaries are cached
    assert entries[1]["request"] == {"path": "/abc", "headers": [["Host", "x"]]}
    for e in entries[1:]:  # the first has no checkpoint before it
        reads = q.stats["checkpoint_reads"]
        got = q.get_entry(e["id"])
        assert got is not None and summary(got) == e
        assert q.stats["checkpoint_reads"] == reads + 1, e["id"]
    q.close()
    rec.close()


def test_get_entry_with_a_body_cap_from_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GetEntry's ``max_body``: the entry dissected again, from its checkpoint, with bodies
    kept up to the cap asked for; without one, cut at the engine's as before."""
    from shark_tui.engine import flowindex

    monkeypatch.setattr(flowindex, "CHECKPOINT_BYTES", 1)  # a checkpoint before each request
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000
    flow = http_flow(40001, [(REQ, RESP)] * 3 + [(REQ, big), (REQ, RESP)])
    path = fx.write_pcap(tmp_path / "c.pcap", fx.LINKTYPE_ETHERNET, flow)
    rec, _ = import_capture(str(path), str(tmp_path / "store"))
    q = QueryEngine(rec, threading.Lock())
    entry = run(q)[3]  # the summaries are cached: GetEntry starts from a checkpoint
    reads = q.stats["checkpoint_reads"]
    got = q.get_entry(entry["id"], body_cap=1 << 20)
    assert got is not None and q.stats["checkpoint_reads"] == reads + 1
    assert got["response"]["body"] == "x" * 100_000 and not got["response"]["body_truncated"]
    assert summary(got) == entry
    cut = q.get_entry(entry["id"])
    assert cut is not None and cut["response"]["body_truncated"]
    assert len(cut["response"]["body"]) == q.body_cap
    q.close()
    rec.close()
