"""Http2Dissector against real byte streams: an h2 client and an h2 server driven in memory.

``Conv`` drives both ends, records every byte each end sent (in order, by direction) and what
each end's h2 events said (the truth), then the recorded bytes are fed to the dissector.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    DataReceived,
    InformationalResponseReceived,
    PushedStreamReceived,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
)
from h2.settings import SettingCodes
from hpack import Encoder
from hpack.struct import NeverIndexedHeaderTuple
from hyperframe.frame import ContinuationFrame, HeadersFrame, SettingsFrame

from shark_tui.proto.base import (
    CLIENT,
    SERVER,
    Desynced,
    Event,
    Exchange,
    ExchangeCompleted,
    Truncated,
)
from shark_tui.proto.http2 import (
    MAX_HEADER_BLOCK,
    MAX_STREAMS,
    PREFACE,
    Http2Dissector,
    looks_like_http2_frames,
)

Headers = list[tuple[str, str]]


@dataclass
class Truth:
    req_headers: list[list[str]] | None = None
    req_body: bytes = b""
    req_trailers: list[list[str]] | None = None
    resp_headers: list[list[str]] | None = None
    resp_body: bytes = b""
    resp_trailers: list[list[str]] | None = None
    info: list[list[list[str]]] = field(default_factory=list)
    reset: int | None = None
    pushed: bool = False

    def all_pairs(self) -> list[list[str]]:
        out: list[list[str]] = []
        for block in (self.req_headers, self.req_trailers, self.resp_headers, self.resp_trailers):
            out += block or []
        for block in self.info:
            out += block
        return out


def _pairs(headers: Iterable[tuple[Any, Any]]) -> list[list[str]]:
    return [[_s(n), _s(v)] for n, v in headers]


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class Conv:
    """Both ends of one HTTP/2 connection, in memory; ``chunks`` is what went over the wire."""

    def __init__(
        self,
        *,
        client_settings: dict[int, int] | None = None,
        server_settings: dict[int, int] | None = None,
        upgrade: bool = False,
    ) -> None:
        self.c = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.s = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.chunks: list[tuple[int, bytes]] = []
        self.truth: dict[int, Truth] = {}
        self.upgrade_settings: bytes | None = None
        if upgrade:
            self.upgrade_settings = self.c.initiate_upgrade_connection()
            self.s.initiate_upgrade_connection(self.upgrade_settings)
            self.truth[1] = Truth()
        else:
            self.c.initiate_connection()
            self.s.initiate_connection()
        if client_settings:
            self.c.update_settings(client_settings)
        if server_settings:
            self.s.update_settings(server_settings)
        self.pump()

    def t(self, sid: int) -> Truth:
        return self.truth.setdefault(sid, Truth())

    def pump(self, *, only: int | None = None) -> None:
        while True:
            moved = False
            if only in (None, CLIENT):
                data = self.c.data_to_send()
                if data:
                    moved = True
                    self.chunks.append((CLIENT, data))
                    self._server_events(self.s.receive_data(data))
            if only in (None, SERVER):
                data = self.s.data_to_send()
                if data:
                    moved = True
                    self.chunks.append((SERVER, data))
                    self._client_events(self.c.receive_data(data))
            if not moved:
                return

    def _server_events(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, RequestReceived):
                self.t(ev.stream_id).req_headers = _pairs(ev.headers)
            elif isinstance(ev, DataReceived):
                self.t(ev.stream_id).req_body += ev.data
                self.s.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, TrailersReceived):
                self.t(ev.stream_id).req_trailers = _pairs(ev.headers)
            elif isinstance(ev, StreamReset):
                self.t(ev.stream_id).reset = ev.error_code

    def _client_events(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, ResponseReceived):
                self.t(ev.stream_id).resp_headers = _pairs(ev.headers)
            elif isinstance(ev, InformationalResponseReceived):
                self.t(ev.stream_id).info.append(_pairs(ev.headers))
            elif isinstance(ev, DataReceived):
                self.t(ev.stream_id).resp_body += ev.data
                self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, TrailersReceived):
                self.t(ev.stream_id).resp_trailers = _pairs(ev.headers)
            elif isinstance(ev, StreamReset):
                self.t(ev.stream_id).reset = ev.error_code
            elif isinstance(ev, PushedStreamReceived):
                t = self.t(ev.pushed_stream_id)
                t.req_headers = _pairs(ev.headers)
                t.pushed = True

    # -- conveniences ------------------------------------------------------------------------

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        body: bytes = b"",
        extra: Headers | None = None,
        end: bool = True,
    ) -> int:
        sid = self.c.get_next_available_stream_id()
        headers = [
            (":method", method),
            (":path", path),
            (":scheme", "https"),
            (":authority", "api.example"),
            *(extra or []),
        ]
        self.c.send_headers(sid, headers, end_stream=end and not body)
        if body:
            self.send_body(self.c, sid, body, end=end)
        self.pump()
        return sid

    def respond(
        self,
        sid: int,
        status: int = 200,
        body: bytes = b"",
        *,
        extra: Headers | None = None,
        trailers: Headers | None = None,
        end: bool = True,
    ) -> None:
        headers = [(":status", str(status)), *(extra or [])]
        self.s.send_headers(sid, headers, end_stream=end and not body and not trailers)
        if body:
            self.send_body(self.s, sid, body, end=end and not trailers)
        if trailers:
            self.s.send_headers(sid, trailers, end_stream=True)
        self.pump()

    def send_body(self, conn: H2Connection, sid: int, body: bytes, *, end: bool) -> None:
        """Send ``body`` in frames of at most the peer's max frame size, pumping for windows."""
        pos = 0
        while pos < len(body) or (not body and end):
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if room <= 0:
                self.pump()
                continue
            piece = body[pos : pos + room]
            pos += len(piece)
            conn.send_data(sid, piece, end_stream=end and pos >= len(body))
            if not body:
                break
        self.pump()

    def client_bytes(self) -> bytes:
        return b"".join(d for dr, d in self.chunks if dr == CLIENT)

    def server_bytes(self) -> bytes:
        return b"".join(d for dr, d in self.chunks if dr == SERVER)


def run(
    chunks: Iterable[tuple[int, bytes]],
    d: Http2Dissector | None = None,
    *,
    finish: bool = True,
) -> tuple[list[Exchange], list[Event], Http2Dissector]:
    d = d or Http2Dissector()
    events: list[Event] = []
    for i, (direction, data) in enumerate(chunks):
        events += d.feed(direction, data, 1000.0 + i)
    if finish:
        events += d.finish(2000.0)
    exchanges = [e.exchange for e in events if isinstance(e, ExchangeCompleted)]
    return exchanges, events, d


def by_stream(exchanges: list[Exchange]) -> dict[int, Exchange]:
    out: dict[int, Exchange] = {}
    for ex in exchanges:
        sid = ex.extra["stream_id"]
        assert sid not in out, f"stream {sid} emitted twice"
        out[sid] = ex
    return out


def frame_bytes(data: bytes, preface: bool) -> dict[int, int]:
    """Bytes of the frames of each stream in one direction (frame headers included)."""
    pos = len(PREFACE) if preface else 0
    sizes: dict[int, int] = {}
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        if sid:
            sizes[sid] = sizes.get(sid, 0) + 9 + length
        pos += 9 + length
    return sizes


def assert_matches(ex: Exchange, t: Truth) -> None:
    """The exchange says what h2's own events said."""
    assert ex.error is None, ex.error
    assert ex.request is not None and ex.response is not None
    assert ex.request["headers"] == t.req_headers
    assert ex.response["headers"] == t.resp_headers
    assert ex.request.get("trailers") == t.req_trailers
    assert ex.response.get("trailers") == t.resp_trailers
    assert ex.request["body_size"] == len(t.req_body)
    assert ex.response["body_size"] == len(t.resp_body)
    req = dict(t.req_headers or [])
    resp = dict(t.resp_headers or [])
    assert ex.method == req[":method"]
    assert ex.summary == req[":path"]
    assert ex.status == int(resp[":status"])
    assert ex.extra["host"] == req.get(":authority")


def check_all(conv: Conv, exchanges: list[Exchange]) -> dict[int, Exchange]:
    got = by_stream(exchanges)
    assert set(got) == set(conv.truth)
    for sid, t in conv.truth.items():
        assert_matches(got[sid], t)
    return got


# -- basics ------------------------------------------------------------------------------------


def test_get_and_post_with_bodies() -> None:
    conv = Conv()
    s1 = conv.request("/items?id=7&q=a+b%21")
    conv.respond(s1, 200, b'{"ok": true}', extra=[("content-type", "application/json")])
    s3 = conv.request(
        "/items", method="POST", body=b"name=x", extra=[("content-type", "text/plain")]
    )
    conv.respond(s3, 201, b"created")
    exchanges, events, d = run(conv.chunks)
    got = check_all(conv, exchanges)
    ex = got[s1]
    assert ex.proto == "http2"
    assert ex.request is not None and ex.response is not None
    assert ex.request["version"] == "HTTP/2"
    assert ex.request["path"] == "/items"
    assert ex.request["query"] == [["id", "7"], ["q", "a b!"]]
    assert ex.request["authority"] == "api.example"
    assert ex.request["scheme"] == "https"
    assert ex.request["stream_id"] == s1
    assert ex.response["body"] == '{"ok": true}'
    assert ex.response["body_encoding"] == "text"
    assert ex.response["body_truncated"] is False
    assert ex.response["status"] == 200
    assert got[s3].request is not None and got[s3].request["body"] == "name=x"
    assert got[s3].response is not None and got[s3].response["body"] == "created"
    assert ex.latency_ms is not None and ex.latency_ms > 0
    # Sizes: every frame of the stream in that direction, frame headers included.
    csz = frame_bytes(conv.client_bytes(), preface=True)
    ssz = frame_bytes(conv.server_bytes(), preface=False)
    for sid in (s1, s3):
        assert got[sid].request_size == csz[sid]
        assert got[sid].response_size == ssz[sid]
    assert d.stats["settings"] >= 2
    assert d.stats["internal_errors"] == 0
    assert not [e for e in events if isinstance(e, Desynced)]
    assert d.oldest_pending() is None


def test_exchange_is_emitted_when_both_halves_end() -> None:
    conv = Conv()
    sid = conv.request("/slow")
    conv.respond(sid, 200, b"done")
    d = Http2Dissector()
    emitted_at: list[int] = []
    for i, (direction, data) in enumerate(conv.chunks):
        for ev in d.feed(direction, data, 1000.0 + i):
            if isinstance(ev, ExchangeCompleted):
                emitted_at.append(i)
    assert emitted_at == [len(conv.chunks) - 1]


def test_ts_and_latency_follow_the_frames() -> None:
    conv = Conv()
    m1 = len(conv.chunks)
    sid = conv.request("/t")
    m2 = len(conv.chunks)
    conv.respond(sid, 200, b"x")
    req_i = next(i for i in range(m1, m2) if conv.chunks[i][0] == CLIENT)
    resp_i = next(i for i in range(m2, len(conv.chunks)) if conv.chunks[i][0] == SERVER)
    d = Http2Dissector()
    out: list[Event] = []
    for i, (direction, data) in enumerate(conv.chunks):
        out += d.feed(direction, data, 50.0 + i)
    (ex,) = [e.exchange for e in out if isinstance(e, ExchangeCompleted)]
    assert ex.ts == 50.0 + req_i
    assert ex.latency_ms == pytest.approx((resp_i - req_i) * 1000.0)


def test_large_response_over_many_data_frames_is_capped() -> None:
    conv = Conv()
    body = bytes(range(256)) * 800  # 204800 bytes, binary
    sid = conv.request("/big")
    conv.respond(sid, 200, body)
    exchanges, _, d = run(conv.chunks, Http2Dissector(body_cap=65536))
    (ex,) = exchanges
    assert ex.error is None
    assert ex.response is not None
    assert ex.response["body_size"] == len(body)
    assert ex.response["body_truncated"] is True
    assert ex.response["body_encoding"] == "base64"
    assert d.stats["data_frames"] >= len(body) // 16384
    assert d.stats["truncated_bodies"] == 1


def test_many_concurrent_streams_interleaved() -> None:
    conv = Conv()
    sids = [conv.request(f"/s/{i}", method="POST", body=b"q" * i, end=False) for i in range(40)]
    # Finish the requests in another order, then answer them in reverse, bodies interleaved.
    for sid in sids[::3] + [s for s in sids if s not in sids[::3]]:
        conv.c.end_stream(sid)
    conv.pump()
    for sid in reversed(sids):
        conv.s.send_headers(sid, [(":status", "200"), ("x-sid", str(sid))])
    for part in range(3):
        for sid in sids:
            conv.s.send_data(sid, f"{sid}:{part};".encode(), end_stream=part == 2)
        conv.pump()
    exchanges, _, d = run(conv.chunks)
    got = check_all(conv, exchanges)
    for sid in sids:
        resp = got[sid].response
        assert resp is not None
        assert resp["body"] == "".join(f"{sid}:{p};" for p in range(3))
    assert d.stats["exchanges"] == 40


def test_trailers_both_directions() -> None:
    conv = Conv()
    sid = conv.c.get_next_available_stream_id()
    conv.c.send_headers(
        sid, [(":method", "POST"), (":path", "/up"), (":scheme", "http"), (":authority", "h")]
    )
    conv.c.send_data(sid, b"chunk")
    conv.c.send_headers(sid, [("x-checksum", "abc")], end_stream=True)
    conv.pump()
    conv.respond(sid, 200, b"ok", trailers=[("x-result", "fine"), ("x-n", "2")])
    exchanges, _, _ = run(conv.chunks)
    (ex,) = exchanges
    assert_matches(ex, conv.truth[sid])
    assert ex.request is not None and ex.request["trailers"] == [["x-checksum", "abc"]]
    assert ex.response is not None
    assert ex.response["trailers"] == [["x-result", "fine"], ["x-n", "2"]]


def test_informational_responses() -> None:
    conv = Conv()
    sid = conv.request("/up", method="POST", body=b"x", extra=[("expect", "100-continue")])
    conv.s.send_headers(sid, [(":status", "100")])
    conv.s.send_headers(sid, [(":status", "103"), ("link", "</a.css>; rel=preload")])
    conv.pump()
    conv.respond(sid, 204)
    exchanges, _, _ = run(conv.chunks)
    (ex,) = exchanges
    assert_matches(ex, conv.truth[sid])
    assert ex.status == 204
    assert ex.response is not None
    assert ex.response["informational"] == [
        {"status": 100, "headers": [[":status", "100"]]},
        {"status": 103, "headers": [[":status", "103"], ["link", "</a.css>; rel=preload"]]},
    ]


def test_rst_stream_before_and_after_response() -> None:
    conv = Conv()
    s1 = conv.request("/cancelled")
    conv.c.reset_stream(s1, ErrorCodes.CANCEL)
    conv.pump()
    s3 = conv.request("/half")
    conv.s.send_headers(s3, [(":status", "200")])
    conv.s.send_data(s3, b"part")
    conv.s.reset_stream(s3, ErrorCodes.INTERNAL_ERROR)
    conv.pump()
    exchanges, _, d = run(conv.chunks, finish=False)
    got = by_stream(exchanges)
    assert set(got) == {s1, s3}  # emitted at the reset, not at finish
    ex = got[s1]
    assert ex.error == "no_response"
    assert ex.status is None and ex.latency_ms is None
    assert ex.response is not None and ex.response["rst_stream"] == "CANCEL"
    ex = got[s3]
    assert ex.status == 200
    assert ex.response is not None and ex.response["rst_stream"] == "INTERNAL_ERROR"
    assert ex.response["body"] == "part"
    assert d.stats["rst_stream"] == 2


def test_goaway_ends_streams_above_last_stream_id() -> None:
    conv = Conv()
    s1 = conv.request("/a")
    s3 = conv.request("/b")
    s5 = conv.request("/c")
    conv.respond(s1, 200, b"a")
    conv.s.close_connection(last_stream_id=s1)
    conv.pump()
    d = Http2Dissector()
    exchanges, _, d = run(conv.chunks, d, finish=False)
    got = by_stream(exchanges)
    assert set(got) == {s1, s3, s5}
    assert got[s1].error is None
    assert got[s3].error == got[s5].error == "no_response"
    assert d.stats["goaway"] == 1


def test_continuation_frames_joined() -> None:
    conv = Conv()
    big = "v" * 40000  # more than two 16384-byte frames of header block
    sid = conv.request("/cont", extra=[("x-big", big)])
    conv.respond(sid, 200, b"ok", extra=[("x-big-too", big[:20000])])
    assert conv.truth[sid].req_headers is not None
    exchanges, _, d = run(conv.chunks)
    (ex,) = exchanges
    assert_matches(ex, conv.truth[sid])
    assert d.stats["continuation_frames"] >= 3


def handmade_conn(
    client_frames: list[bytes], server_frames: list[bytes]
) -> list[tuple[int, bytes]]:
    settings = SettingsFrame(0).serialize()
    return [
        (CLIENT, PREFACE + settings),
        (SERVER, settings),
        (CLIENT, b"".join(client_frames)),
        (SERVER, b"".join(server_frames)),
    ]


def test_padding_and_small_continuations_handmade() -> None:
    enc_c, enc_s = Encoder(), Encoder()
    req_headers = [
        (":method", "GET"),
        (":path", "/padded"),
        (":scheme", "http"),
        (":authority", "h"),
        ("user-agent", "shark"),
    ]
    block = enc_c.encode(req_headers)
    # HEADERS (padded, with priority) + 2 CONTINUATION frames of a few bytes each.
    h = HeadersFrame(1, flags=["PADDED", "PRIORITY", "END_STREAM"])
    h.data, h.pad_length, h.depends_on, h.stream_weight = block[:3], 7, 0, 15
    c1 = ContinuationFrame(1)
    c1.data = block[3:6]
    c2 = ContinuationFrame(1, flags=["END_HEADERS"])
    c2.data = block[6:]
    resp = HeadersFrame(1, flags=["END_HEADERS", "PADDED"])
    resp.data, resp.pad_length = enc_s.encode([(":status", "200")]), 20
    from hyperframe.frame import DataFrame

    data = DataFrame(1, flags=["PADDED", "END_STREAM"])
    data.data, data.pad_length = b"hello", 200
    chunks = handmade_conn(
        [h.serialize(), c1.serialize(), c2.serialize()],
        [resp.serialize(), data.serialize()],
    )
    exchanges, _, _ = run(chunks)
    (ex,) = exchanges
    assert ex.error is None
    assert ex.request is not None and ex.response is not None
    assert ex.request["headers"] == [list(p) for p in req_headers]
    assert ex.response["body"] == "hello"
    assert ex.response["body_size"] == 5


def test_header_table_size_settings_go_to_the_right_decoder() -> None:
    # The client tells the server's encoder to use no dynamic table; the server asks the
    # client's encoder for a small one. Many distinct headers force evictions on both sides.
    conv = Conv(
        client_settings={SettingCodes.HEADER_TABLE_SIZE: 0},
        server_settings={SettingCodes.HEADER_TABLE_SIZE: 256},
    )
    d = Http2Dissector()
    exchanges, _, _ = run(conv.chunks, d, finish=False)
    client_side, server_side = d._sides
    # Applied when acknowledged, to the decoder of the direction whose encoder obeys it.
    assert server_side.hpack.max_allowed == 0
    assert client_side.hpack.max_allowed == 256
    for i in range(30):
        sid = conv.request(f"/p{i}", extra=[(f"x-h{i % 7}", f"value-{i}" * 3)])
        conv.respond(sid, 200, b"k", extra=[(f"x-r{i % 5}", f"rv{i}" * 4)])
    exchanges, _, _ = run(conv.chunks)
    check_all(conv, exchanges)


def test_header_table_size_change_mid_connection() -> None:
    conv = Conv()
    s = conv.request("/one", extra=[("x-a", "1")])
    conv.respond(s, 200, extra=[("x-b", "2")])
    conv.s.update_settings({SettingCodes.HEADER_TABLE_SIZE: 100})
    conv.pump()
    for i in range(10):
        s = conv.request("/more", extra=[("x-a", str(i)), ("x-long", "z" * 60)])
        conv.respond(s, 200, extra=[("x-b", "2")])
    exchanges, _, d = run(conv.chunks)
    check_all(conv, exchanges)
    assert d._sides[CLIENT].hpack.max_allowed == 100


def test_gzip_body_is_decoded_for_display() -> None:
    conv = Conv()
    sid = conv.request("/z")
    payload = b'{"msg": "' + b"hello " * 100 + b'"}'
    conv.respond(sid, 200, gzip.compress(payload), extra=[("content-encoding", "gzip")])
    exchanges, _, _ = run(conv.chunks)
    (ex,) = exchanges
    assert ex.response is not None
    assert ex.response["content_encoding"] == "gzip"
    assert ex.response["body"] == payload.decode()
    assert ex.response["body_size"] == len(gzip.compress(payload))


def test_server_push() -> None:
    conv = Conv()
    sid = conv.request("/page")
    conv.s.push_stream(
        sid,
        2,
        [(":method", "GET"), (":path", "/style.css"), (":scheme", "https"), (":authority", "h")],
    )
    conv.s.send_headers(2, [(":status", "200"), ("content-type", "text/css")])
    conv.s.send_data(2, b"body{}", end_stream=True)
    conv.pump()
    conv.respond(sid, 200, b"<html>")
    exchanges, _, d = run(conv.chunks)
    got = check_all(conv, exchanges)
    pushed = got[2]
    assert pushed.method == "GET" and pushed.summary == "/style.css"
    assert pushed.response is not None and pushed.response["body"] == "body{}"
    assert d.stats["push_promise"] == 1


def test_h2c_upgrade() -> None:
    conv = Conv(upgrade=True)
    conv.respond(1, 200, b"upgraded!")
    s3 = conv.request("/after")
    conv.respond(s3, 404)
    assert conv.upgrade_settings is not None
    upgrade = {
        "method": "GET",
        "path": "/start?x=1",
        "headers": [
            ["Host", "h2c.example"],
            ["Connection", "Upgrade, HTTP2-Settings"],
            ["Upgrade", "h2c"],
            ["HTTP2-Settings", conv.upgrade_settings.decode()],
        ],
        "ts": 900.0,
        "size": 120,
    }
    exchanges, events, _ = run(conv.chunks, Http2Dissector(upgrade=upgrade))
    got = by_stream(exchanges)
    ex = got[1]
    assert ex.error is None
    assert ex.ts == 900.0
    assert ex.method == "GET" and ex.summary == "/start?x=1"
    assert ex.request is not None and ex.request["version"] == "HTTP/1.1"
    assert ex.request["path"] == "/start" and ex.request["query"] == [["x", "1"]]
    assert ex.request_size == 120
    assert ex.extra["host"] == "h2c.example"
    assert ex.status == 200
    assert ex.response is not None and ex.response["body"] == "upgraded!"
    assert got[s3].status == 404 and got[s3].error is None
    assert not [e for e in events if isinstance(e, Desynced)]


def test_grpc_and_graphql_hooks() -> None:
    pytest.importorskip("shark_tui.proto.grpc")
    conv = Conv()
    sid = conv.request(
        "/pkg.Greeter/SayHello",
        method="POST",
        body=b"\x00\x00\x00\x00\x07\x0a\x05world",
        extra=[("content-type", "application/grpc")],
    )
    conv.respond(
        sid,
        200,
        b"\x00\x00\x00\x00\x07\x0a\x05hello",
        extra=[("content-type", "application/grpc")],
        trailers=[("grpc-status", "0"), ("grpc-message", "")],
    )
    q = b'{"query": "query Hero { hero { name } }"}'
    s3 = conv.request(
        "/graphql", method="POST", body=q, extra=[("content-type", "application/json")]
    )
    conv.respond(s3, 200, b'{"data": {}}')
    exchanges, _, _ = run(conv.chunks)
    got = by_stream(exchanges)
    ex = got[sid]
    assert ex.proto == "grpc"
    assert ex.method == "pkg.Greeter/SayHello"
    assert ex.summary == "/pkg.Greeter/SayHello"
    assert ex.status == 0
    assert ex.request is not None and ex.response is not None
    assert len(ex.request["messages"]) == 1 and len(ex.response["messages"]) == 1
    assert ex.response["grpc_status"] == 0
    g = got[s3]
    if g.proto == "graphql":  # the GraphQL module may still be in progress
        assert g.method == "query" and g.summary == "Hero"
        assert g.request is not None and "graphql" in g.request
        assert g.status == 200


# -- damage: gaps, mid-stream joins, caps ----------------------------------------------------------


def test_gap_inside_data_truncates_only_that_body() -> None:
    conv = Conv()
    s1 = conv.request("/big")
    conv.respond(s1, 200, b"a" * 50000)
    s3 = conv.request("/next", extra=[("x-a", "1")])
    conv.respond(s3, 200, b"fine")
    server = conv.server_bytes()
    cut = server.index(b"a" * 100) + 1000
    d = Http2Dissector()
    d.feed(CLIENT, conv.client_bytes(), 1.0)
    events = d.feed(SERVER, server[:cut], 2.0)
    events += d.gap(SERVER, 500, 3.0)
    events += d.feed(SERVER, server[cut + 500 :], 4.0)
    events += d.finish(5.0)
    got = by_stream([e.exchange for e in events if isinstance(e, ExchangeCompleted)])
    assert got[s1].error == "truncated"
    assert got[s1].response is not None
    assert got[s1].response["body_size"] == 50000
    assert got[s1].response["body_truncated"] is True
    assert_matches(got[s3], conv.truth[s3])  # the header state survived


def test_gap_outside_data_resyncs_and_never_guesses_headers() -> None:
    conv = Conv()
    sids = []
    for i in range(12):
        sid = conv.request(f"/r{i}", extra=[("x-user", "alice"), ("x-n", str(i))])
        conv.respond(sid, 200, b"body%d" % i, extra=[("x-srv", "s1")])
        sids.append(sid)
    client = conv.client_bytes()
    cut = headers_frame_of(client, sids[4]) + 12  # inside the HEADERS block of that stream
    d = Http2Dissector()
    events = d.feed(CLIENT, client[:cut], 1.0)
    events += d.gap(CLIENT, 10, 1.5)
    events += d.feed(CLIENT, client[cut + 10 :], 2.0)
    events += d.feed(SERVER, conv.server_bytes(), 3.0)
    events += d.finish(4.0)
    assert any(isinstance(e, Desynced) for e in events)
    got = by_stream([e.exchange for e in events if isinstance(e, ExchangeCompleted)])
    assert_no_wrong_headers(conv, got)
    for sid in sids[:4]:
        assert_matches(got[sid], conv.truth[sid])
    later = [got[s] for s in sids[5:]]
    assert all(ex.error == "header_state_unknown" for ex in later)
    for ex in later:
        assert ex.request is not None and ex.request["headers_lost"] is True
        # The static ones came through: the method and the scheme.
        assert ex.method == "GET"
        assert ex.status == 200  # the server direction was not damaged


def assert_no_wrong_headers(conv: Conv, got: dict[int, Exchange]) -> None:
    for sid, ex in got.items():
        true = conv.truth[sid].all_pairs()
        for obj in (ex.request, ex.response):
            if obj is None:
                continue
            for block in (obj.get("headers") or [], obj.get("trailers") or []):
                for pair in block:
                    assert pair in true, (sid, pair)


def busy_conv() -> Conv:
    conv = Conv()
    for i in range(20):
        sid = conv.request(
            f"/api/v1/items/{i}?page={i}",
            method="POST" if i % 3 else "GET",
            body=b"x" * (i * 10) if i % 3 else b"",
            extra=[("x-req", f"r{i % 4}"), ("user-agent", "client/1.0")],
        )
        conv.respond(
            sid,
            200 if i % 5 else 404,
            f"answer {i}".encode(),
            extra=[("content-type", "text/plain"), ("x-srv", f"s{i % 3}")],
        )
    return conv


def test_looks_like_http2_frames() -> None:
    conv = busy_conv()
    client = conv.client_bytes()
    server = conv.server_bytes()
    assert looks_like_http2_frames(client)
    assert looks_like_http2_frames(server)
    assert looks_like_http2_frames(client[len(PREFACE) :])
    assert not looks_like_http2_frames(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not looks_like_http2_frames(b"\x00" * 3)
    assert not looks_like_http2_frames(bytes(range(256)))


@pytest.mark.parametrize("frame_boundary", [True, False])
def test_midstream_never_wrong_headers(frame_boundary: bool) -> None:
    conv = busy_conv()
    client = conv.client_bytes()
    server = conv.server_bytes()
    # Cut both directions somewhere in the middle: at a frame start, or off by a few bytes.
    ccut = frame_starts(client[len(PREFACE) :])[30] + len(PREFACE)
    scut = frame_starts(server)[30]
    if not frame_boundary:
        ccut += 5
        scut += 3
    d = Http2Dissector(midstream=True)
    events = d.feed(CLIENT, client[ccut:], 1.0)
    events += d.feed(SERVER, server[scut:], 2.0)
    events += d.finish(3.0)
    got = by_stream([e.exchange for e in events if isinstance(e, ExchangeCompleted)])
    assert got
    assert_no_wrong_headers(conv, got)
    assert any(ex.error == "header_state_unknown" for ex in got.values())
    assert d.stats["internal_errors"] == 0
    # Static entries still decode: every exchange whose request HEADERS were seen has a method.
    for ex in got.values():
        if ex.request is not None and ex.request["headers"]:
            assert ex.method in ("GET", "POST")
    if not frame_boundary:
        assert any(isinstance(e, Desynced) and e.skipped > 0 for e in events)


def headers_frame_of(client: bytes, sid: int) -> int:
    """Offset of the HEADERS frame of stream ``sid`` in the client's bytes."""
    for pos in frame_starts(client[len(PREFACE) :]):
        at = pos + len(PREFACE)
        if client[at + 3] == 1 and int.from_bytes(client[at + 5 : at + 9], "big") == sid:
            return at
    raise AssertionError(sid)


def frame_starts(data: bytes) -> list[int]:
    starts = []
    pos = 0
    while pos + 9 <= len(data):
        starts.append(pos)
        pos += 9 + int.from_bytes(data[pos : pos + 3], "big")
    return starts


def test_midstream_literal_only_headers_fully_decoded() -> None:
    # The server forbids the client's encoder a dynamic table: every later request header is
    # static or literal, so a dissector joining mid-way decodes them all.
    conv = Conv(server_settings={SettingCodes.HEADER_TABLE_SIZE: 0})
    sids = []
    for i in range(6):
        sid = conv.request(f"/lit/{i}", extra=[("x-k", str(i))])
        conv.respond(sid, 200, b"ok")
        sids.append(sid)
    client = conv.client_bytes()
    start = headers_frame_of(client, sids[2])
    d = Http2Dissector(midstream=True)
    events = d.feed(CLIENT, client[start:], 1.0)
    events += d.feed(SERVER, conv.server_bytes(), 2.0)  # the server side from the start
    events += d.finish(3.0)
    got = by_stream([e.exchange for e in events if isinstance(e, ExchangeCompleted)])
    for sid in sids[2:]:
        ex = got[sid]
        assert ex.request is not None
        assert ex.request["headers"] == conv.truth[sid].req_headers
        assert "headers_lost" not in ex.request
    assert_no_wrong_headers(conv, got)


def test_midstream_recovers_after_table_size_reset() -> None:
    # Joined mid-way, then the encoder empties its table (size update 0): known again.
    conv = Conv()
    for _ in range(3):
        sid = conv.request("/before", extra=[("x-tok", "secret")])
        conv.respond(sid, 200)
    mark = len(conv.chunks)
    conv.s.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
    conv.pump()
    conv.s.update_settings({SettingCodes.HEADER_TABLE_SIZE: 4096})
    conv.pump()
    sids = []
    for i in range(4):
        sid = conv.request("/after", extra=[("x-tok", "secret"), ("x-i", str(i))])
        conv.respond(sid, 200)
        sids.append(sid)
    chunks = conv.chunks[mark:]
    exchanges, _, _ = run(chunks, Http2Dissector(midstream=True))
    got = by_stream(exchanges)
    # The client's encoder signalled a size update to 0 at its first block after the ACK.
    for sid in sids[1:]:
        assert got[sid].request is not None
        assert got[sid].request["headers"] == conv.truth[sid].req_headers
    assert_no_wrong_headers(conv, got)


def test_stream_cap_emits_the_oldest() -> None:
    conv = Conv(client_settings={SettingCodes.MAX_CONCURRENT_STREAMS: 5000})
    conv.s.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 5000})
    conv.pump()
    sids = [conv.request(f"/{i}") for i in range(MAX_STREAMS + 10)]
    exchanges, _, d = run(conv.chunks, finish=False)
    assert len(exchanges) == 10
    assert {ex.extra["stream_id"] for ex in exchanges} == set(sids[:10])
    assert all(ex.error == "no_response" for ex in exchanges)
    assert d.stats["streams_dropped"] == 10
    assert len(d._streams) == MAX_STREAMS


def test_expire_and_oldest_pending() -> None:
    conv = Conv()
    conv.request("/waiting")
    d = Http2Dissector()
    for direction, data in conv.chunks:
        d.feed(direction, data, 100.0)
    assert d.oldest_pending() == 100.0
    assert d.expire(150.0) == []
    (ev,) = d.expire(161.0)
    assert isinstance(ev, ExchangeCompleted) and ev.exchange.error == "no_response"
    assert d.oldest_pending() is None
    assert d.stats["expired"] == 1


def test_oversized_header_block_is_truncated() -> None:
    enc = Encoder()
    block = enc.encode(
        [
            (":method", "GET"),
            (":path", "/"),
            ("x-huge", "".join(chr(33 + i % 90) for i in range(400000))),
        ]
    )
    frames = []
    first = HeadersFrame(1, flags=["END_STREAM"])
    first.data = block[:16000]
    frames.append(first.serialize())
    for i in range(16000, len(block), 16000):
        c = ContinuationFrame(1, flags=["END_HEADERS"] if i + 16000 >= len(block) else [])
        c.data = block[i : i + 16000]
        frames.append(c.serialize())
    resp = HeadersFrame(1, flags=["END_HEADERS", "END_STREAM"])
    resp.data = Encoder().encode([(":status", "431")])
    exchanges, events, d = run(handmade_conn(frames, [resp.serialize()]))
    assert any(isinstance(e, Truncated) and e.what == "header block" for e in events)
    (ex,) = exchanges
    assert ex.error == "header_state_unknown"
    assert ex.status == 431
    assert ex.request is not None and ex.request["headers_lost"] is True
    assert len(d._sides[CLIENT].buf) <= MAX_HEADER_BLOCK + 9


def test_literal_never_indexed_headers() -> None:
    conv = Conv()
    sid = conv.c.get_next_available_stream_id()
    conv.c.send_headers(
        sid,
        [
            (":method", "GET"),
            (":path", "/auth"),
            (":scheme", "https"),
            (":authority", "h"),
            NeverIndexedHeaderTuple("authorization", "Bearer t0k3n"),
        ],
        end_stream=True,
    )
    conv.pump()
    conv.respond(sid, 200)
    exchanges, _, _ = run(conv.chunks)
    (ex,) = exchanges
    assert_matches(ex, conv.truth[sid])


def test_garbage_never_raises() -> None:
    d = Http2Dissector()
    junk = bytes((i * 37 + 11) % 256 for i in range(50000))
    events = d.feed(CLIENT, junk, 1.0) + d.feed(SERVER, junk[::-1], 1.0)
    events += d.gap(CLIENT, 100, 2.0) + d.close(CLIENT, 3.0) + d.finish(4.0)
    assert d.stats["internal_errors"] == 0
    assert any(isinstance(e, Desynced) for e in events)


def test_struct_of_frame_header_is_what_hyperframe_writes() -> None:
    # Guard for frame_bytes(): the 9-byte header layout used by the size assertions.
    raw = SettingsFrame(0, settings={1: 5}).serialize()
    length, typ = struct.unpack(">I", b"\x00" + raw[:3])[0], raw[3]
    assert (length, typ) == (6, 4)
