"""``shark-tui dissect`` on real h2c traffic: nginx (``listen ... http2``, prior knowledge) in
front of the aiohttp backend, driven by ``nghttp -m N`` and by the ``h2`` library over a raw
socket, captured by tcpdump on ``lo``; the entries (docs/ENTRIES.md, "http2") are checked
against what each client sent and received, and against tshark.

The main scenario is driven once per module. Mid-connection capture (the HPACK dynamic table
already populated when tcpdump starts) has its own capture.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import realpeers
from tests.integration import oracle2
from tests.realpeers import DissectResult, capture, pattern_text, run_dissect
from tests.realpeers2 import (
    Entry,
    H2Client,
    H2Stream,
    NghttpRun,
    body_bytes,
    by_connection,
    conn_key,
    nghttp,
    pairs,
)

BODY_CAP = 64 * 1024  # dissect's default --max-body
NGINX_ONLY = ("/nocontent", "/notmodified", "/redirect", "/teapot", "/static/")


def _pseudo_first(headers: list[tuple[str, str]]) -> bool:
    seen_regular = False
    for k, _ in headers:
        if k.startswith(":"):
            if seen_regular:
                return False
        else:
            seen_regular = True
    return True


@dataclass
class Scenario:
    path: Path
    run: DissectResult
    h2: H2Client  # closed; its record stays
    ng_get: NghttpRun
    ng_post: NghttpRun
    post_data: bytes
    h2c_port: int
    backend_port: int
    reset_sid: int


def drive(ngx: realpeers.Nginx, tmp: Path) -> tuple[H2Client, NghttpRun, NghttpRun, bytes, int]:
    port = ngx.h2c_port
    assert port is not None
    # nghttp: 3 paths x 3 = 9 concurrent streams on one connection
    ng_get = nghttp([ngx.h2c_url("/status/200?run=ng"), ngx.h2c_url("/status/404?run=ng"),
                     ngx.h2c_url("/big?size=100000&run=ng")], multiply=3)
    post_data = pattern_text(5000)
    data_file = tmp / "post.bin"
    data_file.write_bytes(post_data)
    ng_post = nghttp([ngx.h2c_url("/echo?raw=1&run=ngpost"), ngx.h2c_url("/echo?run=ngpost")],
                     multiply=2, data=data_file)
    # h2 library: several streams in flight on one connection
    c = H2Client("127.0.0.1", port)
    big_post = bytes(i % 251 for i in range(200_000))
    sids = [
        c.send("POST", "/echo?raw=1", big_post, [("content-type", "application/octet-stream"),
                                                 ("x-trace", "h2-bigpost")]),
        c.send("GET", "/big?size=300000", headers=[("x-trace", "h2-big")]),
        c.send("GET", "/status/404", headers=[("accept", "application/json")]),
        c.send("POST", "/echo", b'{"hello":"h2"}', [("content-type", "application/json")]),
        c.send("GET", "/gz/big?size=5000", headers=[("accept-encoding", "gzip")]),
        c.send("GET", "/nocontent"),
        c.send("GET", "/teapot"),
        c.send("HEAD", "/big?size=7000"),
    ]
    c.wait(sids)
    # one more round on the same connection: the HPACK dynamic table is in use by now
    for target in ("/status/201", "/status/500", "/anything?x=1&y=2"):
        c.request("GET", target, headers=[("x-trace", "h2-again")])
    # a stream the client resets before the answer
    reset_sid = c.send("GET", "/slow?ms=400")
    time.sleep(0.05)
    c.reset(reset_sid)
    c.request("GET", "/status/202")  # the connection goes on after the reset
    c.close()
    return c, ng_get, ng_post, post_data, reset_sid


@pytest.fixture(scope="module")
def main(http_backend: realpeers.Peer, nginx_proxy: realpeers.Nginx,
         tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    d = tmp_path_factory.mktemp("h2main")
    assert nginx_proxy.h2c_port is not None
    ports = [nginx_proxy.h2c_port, http_backend.port]
    with capture("lo", ports=ports, path=d / "h2.pcap") as cap:
        c, ng_get, ng_post, post_data, reset_sid = drive(nginx_proxy, d)
        time.sleep(0.5)  # the reset /slow finishes upstream inside the capture
    assert cap.stats.get("dropped") == 0, cap.stats
    return Scenario(cap.path, run_dissect(cap.path), c, ng_get, ng_post, post_data,
                    nginx_proxy.h2c_port, http_backend.port, reset_sid)


def client_conns(sc: Scenario) -> dict[str, list[Entry]]:
    """'h2', 'ng_get', 'ng_post' -> that client connection's entries."""
    conns = by_connection(sc.run.check().entries)
    out: dict[str, list[Entry]] = {}
    for key, entries in conns.items():
        if key[1][1] != sc.h2c_port:
            continue
        if key[0] == sc.h2.local:
            out["h2"] = entries
        elif any("run=ngpost" in (e.get("summary") or "") for e in entries):
            out["ng_post"] = entries
        elif any("run=ng" in (e.get("summary") or "") for e in entries):
            out["ng_get"] = entries
        else:
            out.setdefault("unknown", []).extend(entries)
    return out


def check_common(e: Entry, sid: int, method: str, path: str, status: int | None,
                 where: str) -> None:
    assert e["proto"] == "http2", (where, e["proto"])
    assert e["tls"] is False, where
    assert e["stream_id"] == sid, (where, e.get("stream_id"))
    assert e["method"] == method, (where, e["method"])
    assert e["summary"] == path, (where, e["summary"])
    assert e["status"] == status, (where, e["status"], status)
    req = e["request"]
    assert req is not None, where
    assert req["version"] == "HTTP/2", where
    assert req["stream_id"] == sid, where
    assert req["method"] == method, where
    assert req["path"] == path.split("?")[0], (where, req["path"])
    assert req["scheme"] == "http", where
    assert _pseudo_first(pairs(req["headers"])), (where, req["headers"])
    if e["response"] is not None:
        assert e["response"]["version"] == "HTTP/2", where
        assert _pseudo_first(pairs(e["response"]["headers"])), where


def check_body(msg: dict[str, Any], want: bytes, where: str) -> None:
    got = body_bytes(msg)
    assert msg["body_size"] == len(want), (where, msg["body_size"], len(want))
    if msg["body_truncated"]:
        assert len(want) > BODY_CAP, (where, "truncated below the cap", len(want))
        assert 0 < len(got) <= BODY_CAP and want.startswith(got), where
    else:
        assert got == want, (where, got[:80], want[:80])


# 1 ------------------------------------------------------------------------------------------


def test_dissect_is_clean(main: Scenario) -> None:
    run = main.run.check()
    assert run.stderr_lines == [], run.stderr
    ts = [e["ts"] for e in run.entries]
    assert ts == sorted(ts), "entries not in ts order"
    assert len({e["id"] for e in run.entries}) == len(run.entries), "duplicate ids"
    conns = client_conns(main)
    assert set(conns) == {"h2", "ng_get", "ng_post"}, {k: len(v) for k, v in conns.items()}
    for entries in conns.values():
        assert len({e["id"].split(":")[0] for e in entries}) == 1, "one flow per connection"


def test_h2_library_streams_match_the_client(main: Scenario) -> None:
    entries = client_conns(main)["h2"]
    by_sid = {e["stream_id"]: e for e in entries}
    assert sorted(by_sid) == sorted(main.h2.streams), (sorted(by_sid), sorted(main.h2.streams))
    assert len(entries) == len(main.h2.streams), "one entry per stream"
    for sid, st in main.h2.streams.items():
        e = by_sid[sid]
        where = f"h2 stream {sid} {st.method} {st.path} -> entry {e['id']}"
        if sid == main.reset_sid:
            continue  # test_client_reset_stream
        check_common(e, sid, st.method, st.path, st.status, where)
        assert e["error"] is None, (where, e["error"])
        assert e["host"] == st.req(":authority"), where
        req, resp = e["request"], e["response"]
        assert req["authority"] == st.req(":authority"), where
        assert pairs(req["headers"]) == st.req_headers, (where, req["headers"], st.req_headers)
        check_body(req, st.req_body, where + " request")
        assert resp is not None and resp["status"] == st.status, where
        assert pairs(resp["headers"]) == st.resp_headers, (where, resp["headers"])
        if st.resp("content-encoding") == "gzip":
            assert resp["content_encoding"] == "gzip", where
            import gzip

            assert body_bytes(resp) == gzip.decompress(st.resp_body), where
            assert resp["body_size"] == len(st.resp_body), where
        else:
            check_body(resp, st.resp_body, where + " response")
        assert e["request_size"] >= len(st.req_body), where
        assert e["response_size"] >= len(st.resp_body), where
        assert st.t_start - 0.005 <= e["ts"] <= st.t_end + 0.005, (where, e["ts"])
        assert e["latency_ms"] is not None
        assert 0 <= e["latency_ms"] <= (st.t_end - st.t_start) * 1000 + 5, where


def test_h2_special_responses(main: Scenario) -> None:
    by_sid = {e["stream_id"]: e for e in client_conns(main)["h2"]}
    streams = {(s.method, s.path): s for s in main.h2.streams.values()}
    big = by_sid[streams[("GET", "/big?size=300000")].stream_id]
    assert streams[("GET", "/big?size=300000")].resp_data_frames > 5  # many DATA frames
    assert big["response"]["body_size"] == 300_000 and big["response"]["body_truncated"]
    assert body_bytes(big["response"]) == pattern_text(300_000)[: len(body_bytes(big["response"]))]
    post = by_sid[streams[("POST", "/echo?raw=1")].stream_id]
    assert post["request"]["body_size"] == 200_000 and post["request"]["body_truncated"]
    head = by_sid[streams[("HEAD", "/big?size=7000")].stream_id]
    assert head["status"] == 200 and head["response"]["body_size"] == 0
    for target, code in (("/nocontent", 204), ("/teapot", 418), ("/status/404", 404)):
        assert by_sid[streams[("GET", target)].stream_id]["status"] == code


def test_client_reset_stream(main: Scenario) -> None:
    """The client sends RST_STREAM(CANCEL) before any answer: the entry exists, has no
    status, and says the stream was reset (``rst_stream`` "CANCEL" on the response object, or
    an error)."""
    by_sid = {e["stream_id"]: e for e in client_conns(main)["h2"]}
    e = by_sid[main.reset_sid]
    assert (e["method"], e["summary"]) == ("GET", "/slow?ms=400")
    assert e["status"] is None, e["status"]
    resp = e["response"]
    assert (resp is not None and resp.get("rst_stream") == "CANCEL") or e["error"] is not None, (
        e["error"], resp)


def _check_ng(entries: list[Entry], run: NghttpRun, post_data: bytes | None) -> None:
    by_sid = {e["stream_id"]: e for e in entries}
    assert sorted(by_sid) == sorted(run.streams), (sorted(by_sid), sorted(run.streams))
    assert len(entries) == len(run.streams)
    for sid, st in run.streams.items():
        e = by_sid[sid]
        where = f"nghttp stream {sid} {st.method} {st.path} -> entry {e['id']}"
        check_common(e, sid, st.method, st.path, st.status, where)
        assert e["error"] is None, (where, e["error"])
        req, resp = e["request"], e["response"]
        assert pairs(req["headers"]) == st.req_headers, (where, req["headers"], st.req_headers)
        assert pairs(resp["headers"]) == st.resp_headers, (where, resp["headers"])
        assert resp["body_size"] == st.recv_data, (where, resp["body_size"], st.recv_data)
        assert req["body_size"] == st.sent_data, (where, req["body_size"], st.sent_data)
        if post_data is not None:
            check_body(req, post_data, where)
            if "raw=1" in st.path:
                check_body(resp, post_data, where + " echo")
        assert run.t_start - 0.005 <= e["ts"] <= run.t_end + 0.005, where


def test_nghttp_concurrent_gets_match(main: Scenario) -> None:
    run = main.ng_get
    assert len(run.streams) == 9
    assert sorted(s.status or 0 for s in run.streams.values()) == [200] * 6 + [404] * 3
    _check_ng(client_conns(main)["ng_get"], run, None)


def test_nghttp_posts_match(main: Scenario) -> None:
    run = main.ng_post
    assert len(run.streams) == 4
    assert all(s.sent_data == len(main.post_data) for s in run.streams.values())
    _check_ng(client_conns(main)["ng_post"], run, main.post_data)


# 2 ------------------------------------------------------------------------------------------


def test_matches_tshark(main: Scenario) -> None:
    ostreams = oracle2.h2_streams(main.path, [main.h2c_port])
    conns = by_connection(main.run.check().entries)
    h2conns = {k: v for k, v in conns.items() if k[1][1] == main.h2c_port}
    assert set(h2conns) == set(ostreams), (set(h2conns), set(ostreams))
    for key, entries in h2conns.items():
        want = {sid: (o.method, o.path, o.status, o.req_data, o.resp_data)
                for sid, o in ostreams[key].items() if o.method is not None}
        got = {}
        for e in entries:
            if e["proto"] != "http2":
                got[e.get("stream_id")] = ("not http2", e["proto"])
                continue
            got[e["stream_id"]] = (e["method"], e["summary"], e["status"],
                                   e["request"]["body_size"],
                                   e["response"]["body_size"] if e["response"] else 0)
        assert got == want, key
        for e in entries:  # every header tshark decoded is in the entry, in order
            o = ostreams[key][e["stream_id"]]
            assert pairs(e["request"]["headers"]) == o.req_headers, e["id"]
            if e["response"] is not None:
                assert pairs(e["response"]["headers"]) == o.resp_headers, e["id"]


def test_upstream_hop_is_http1(main: Scenario) -> None:
    """What nginx proxied shows once, as HTTP/1.1 entries on the backend hop."""
    entries = main.run.check().entries
    up = [e for e in entries if e["dst"]["port"] == main.backend_port]
    assert all(e["proto"] == "http" for e in up), {e["proto"] for e in up}
    proxied = [(s.method, s.path) for s in main.h2.streams.values()
               if not s.path.startswith(NGINX_ONLY)]
    proxied += [(s.method, s.path) for r in (main.ng_get, main.ng_post)
                for s in r.streams.values()]
    got = sorted((e["method"], e["summary"]) for e in up)
    want = sorted((m, p[len("/gz"):] if p.startswith("/gz/") else p) for m, p in proxied)
    assert got == want


def test_filter_http2_macro(main: Scenario) -> None:
    run = run_dissect(main.path, "--filter", "http2").check()
    want = [e for e in main.run.entries if e["proto"] == "http2"]
    assert run.entries == want
    run = run_dissect(main.path, "--filter", "http2 and status == 404").check()
    assert sorted(e["summary"] for e in run.entries) == sorted(
        ["/status/404"] + ["/status/404?run=ng"] * 3)


# 3 ------------------------------------------------------------------------------------------
# Mid-connection capture. The h2 library indexes every request header it sends (HPACK
# incremental indexing), so after a few requests the later ones refer to the dynamic table
# that was built before tcpdump started; nginx 1.22 encodes response headers as literals with
# indexed static names, so responses decode anyway.
#
# What tshark 4.0 recovers from the same file (test_mid_connection_vs_tshark): every field that
# is a static-table reference or a literal (":method GET", ":scheme http", a new "x-new" header,
# a ":path" not sent before, all response headers); each field that refers to the unknown
# dynamic table comes out as "<unknown>" with an empty value -- so for a repeated request it has
# no :path, no :authority and none of the repeated headers. What we demand of shark-tui: an
# entry per later stream (with its stream id), at least every header tshark decoded, no header
# value the client did not send or receive on that stream, `headers_lost: true` and
# `error: "header_state_unknown"` where headers were lost, and the bodies.


@dataclass
class MidScenario:
    path: Path
    run: DissectResult
    before: list[H2Stream]
    after: list[H2Stream]
    client: H2Client
    port: int
    inferred: DissectResult  # the same file without --decode


@pytest.fixture(scope="module")
def mid(nginx_proxy: realpeers.Nginx, tmp_path_factory: pytest.TempPathFactory) -> MidScenario:
    d = tmp_path_factory.mktemp("h2mid")
    port = nginx_proxy.h2c_port
    assert port is not None
    c = H2Client("127.0.0.1", port)
    common = [("user-agent", "shark-mid/1"), ("x-tenant", "acme-corp"), ("accept", "*/*")]
    before = [c.request("GET", "/status/200", headers=common),
              c.request("GET", "/status/404", headers=common),
              c.request("POST", "/echo?raw=1", b"before", [*common, ("x-once", "a")])]
    time.sleep(0.1)
    with capture("lo", ports=[port], path=d / "mid.pcap") as cap:
        after = [
            c.request("GET", "/status/200", headers=common),  # every field indexed: all lost
            c.request("GET", "/status/404", headers=common),
            c.request("POST", "/echo?raw=1", b"after-1", [*common, ("x-new", "fresh")]),
            c.request("GET", "/status/201", headers=[("x-only-new", "n1")]),
        ]
        sids = [c.send("GET", f"/big?size={n}", headers=common) for n in (20000, 30000)]
        c.wait(sids)
        after += [c.streams[s] for s in sids]
    c.close()
    run = run_dissect(cap.path, "--decode", f"{port}=http2")
    return MidScenario(cap.path, run, before, after, c, port, run_dissect(cap.path))


def test_mid_connection_entries(mid: MidScenario) -> None:
    run = mid.run.check()
    mine = [e for e in run.entries if mid.port in (conn_key(e)[1][1], conn_key(e)[0][1])]
    assert mine, f"no entry at all for the joined connection: {run.entries}"
    assert all(e["proto"] == "http2" for e in mine), [(e["proto"], e["summary"]) for e in mine]
    by_sid = {e.get("stream_id"): e for e in mine}
    assert sorted(by_sid) == sorted(s.stream_id for s in mid.after), (
        sorted(by_sid), [s.stream_id for s in mid.after])
    e0 = mine[0]
    assert (e0["src"]["ip"], e0["src"]["port"]) == mid.client.local, "src is the client"


def test_mid_connection_no_wrong_header(mid: MidScenario) -> None:
    run = mid.run.check()
    by_sid = {e.get("stream_id"): e for e in run.entries}
    report = []
    for st in mid.after:
        e = by_sid.get(st.stream_id)
        if e is None:
            continue
        where = f"stream {st.stream_id} {st.method} {st.path}"
        for half, truth in (("request", st.req_headers), ("response", st.resp_headers)):
            msg = e[half]
            if msg is None:
                continue
            for pair in pairs(msg["headers"]):
                assert pair in truth, (where, half, "header never sent on this stream", pair)
            lost = [p for p in truth if p not in pairs(msg["headers"])]
            if lost:
                assert msg.get("headers_lost") is True, (where, half, lost)
                assert e["error"] == "header_state_unknown", (where, e["error"])
            report.append((st.stream_id, half, len(lost)))
        # top-level fields are either right or null, never guessed
        assert e["method"] in (st.method, None), (where, e["method"])
        assert e["summary"] in (st.path, None), (where, e["summary"])
        assert e["status"] in (st.status, None), (where, e["status"])
    # requests with every field from the dynamic table lose their headers; responses decode
    first = by_sid[mid.after[0].stream_id]
    assert first["error"] == "header_state_unknown" and first["request"]["headers_lost"] is True
    for st in mid.after:
        e = by_sid[st.stream_id]
        assert e["status"] == st.status, (st.stream_id, e["status"])  # literal on the wire
        assert body_bytes(e["response"]) == st.resp_body[: len(body_bytes(e["response"]))]
        assert e["response"]["body_size"] == len(st.resp_body)
    new_only = by_sid[mid.after[3].stream_id]  # only a new literal header besides pseudo ones
    assert ("x-only-new", "n1") in pairs(new_only["request"]["headers"]), new_only["request"]


def test_mid_connection_vs_tshark(mid: MidScenario) -> None:
    """tshark loses the dynamic-table fields (":path" of a repeated request among them);
    shark-tui must keep every entry and at least every header tshark decoded."""
    (streams,) = oracle2.h2_streams(mid.path, [mid.port]).values()
    first = streams[mid.after[0].stream_id]
    assert first.path is None and first.req_unknown >= 4, first  # tshark: no :path
    assert first.method == "GET" and first.status == mid.after[0].status
    assert streams[mid.after[3].stream_id].path == "/status/201"  # literal: tshark decodes it
    entries = {e.get("stream_id"): e for e in mid.run.check().entries}
    for st in mid.after:
        e = entries[st.stream_id]
        o = streams[st.stream_id]
        got_req = pairs(e["request"]["headers"])
        assert all(h in got_req for h in o.req_headers), (st.stream_id, got_req, o.req_headers)
        assert pairs(e["response"]["headers"]) == o.resp_headers, st.stream_id
        assert (o.req_unknown > 0) == (e["request"].get("headers_lost") is True), st.stream_id


def test_mid_connection_inferred_without_decode_as(mid: MidScenario) -> None:
    """Without ``--decode``, inference from the first bytes (a frame header, no preface) still
    finds HTTP/2 and gives the same entries."""
    assert mid.inferred.check().entries == mid.run.check().entries


def test_json_lines_parse(main: Scenario) -> None:
    for line in main.run.stdout.splitlines():
        assert isinstance(json.loads(line), dict)


def test_harness_tshark_agrees_with_the_clients(main: Scenario) -> None:
    """The oracle and the client records agree with each other (no shark-tui involved): a
    failure here is a harness problem, not a tool bug."""
    ostreams = oracle2.h2_streams(main.path, [main.h2c_port])
    assert len(ostreams) == 3, list(ostreams)
    h2o = ostreams[(main.h2.local, ("127.0.0.1", main.h2c_port))]
    for sid, st in main.h2.streams.items():
        o = h2o[sid]
        assert o.req_headers == st.req_headers, sid
        if sid != main.reset_sid:
            assert o.resp_headers == st.resp_headers, sid
            assert o.resp_data == len(st.resp_body), sid
            assert o.req_data == len(st.req_body), sid
    assert h2o[main.reset_sid].rst == 8
    for run in (main.ng_get, main.ng_post):
        (o,) = [v for v in ostreams.values() if set(v) >= set(run.streams)
                and all(v[s].req_headers == st.req_headers for s, st in run.streams.items())]
        for sid, st in run.streams.items():
            assert (o[sid].status, o[sid].resp_data, o[sid].req_data) == (
                st.status, st.recv_data, st.sent_data)
            assert o[sid].resp_headers == st.resp_headers


def test_padded_frames(nginx_proxy: realpeers.Nginx, tmp_path: Path) -> None:
    """nghttp ``-b 33`` pads every HEADERS and DATA frame it sends: bodies and sizes exclude
    the padding, headers decode as without it."""
    data = tmp_path / "d.bin"
    data.write_bytes(b"padded-body-" * 300)
    assert nginx_proxy.h2c_port is not None
    with capture("lo", ports=[nginx_proxy.h2c_port], path=tmp_path / "pad.pcap") as cap:
        ng = nghttp([nginx_proxy.h2c_url("/echo?raw=1&pad=1")], multiply=3, data=data,
                    extra=["-b", "33"])
    frames = oracle2.h2_frames(cap.path, [nginx_proxy.h2c_port])
    assert any(f.flags & 0x8 for f in frames), "nghttp sent no padded frame"
    run = run_dissect(cap.path).check()
    (entries,) = [v for k, v in by_connection(run.entries).items()
                  if k[1][1] == nginx_proxy.h2c_port]
    _check_ng(entries, ng, data.read_bytes())
