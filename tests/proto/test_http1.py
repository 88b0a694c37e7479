"""The HTTP/1.x dissector on hand-written byte streams."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import asdict
from typing import TypeVar

import pytest

from shark_tui.proto.base import (
    CLIENT,
    DESYNCED,
    NO_REQUEST,
    NO_RESPONSE,
    PENDING_TIMEOUT,
    SERVER,
    TRUNCATED,
    Desynced,
    Event,
    Exchange,
    ExchangeCompleted,
    Truncated,
)
from shark_tui.proto.http1 import (
    MAX_HEADER_BYTES,
    MAX_PENDING,
    MAX_UPGRADE_BUFFER,
    Http1Dissector,
)

E = TypeVar("E")


class Run:
    """Drives a dissector and collects what it emits."""

    def __init__(self, **kwargs: object) -> None:
        self.d = Http1Dissector(**kwargs)  # type: ignore[arg-type]
        self.events: list[Event] = []

    def c(self, data: bytes, ts: float = 1.0) -> Run:
        self.events += self.d.feed(CLIENT, data, ts)
        return self

    def s(self, data: bytes, ts: float = 2.0) -> Run:
        self.events += self.d.feed(SERVER, data, ts)
        return self

    def gap(self, direction: int, size: int, ts: float = 3.0) -> Run:
        self.events += self.d.gap(direction, size, ts)
        return self

    def close(self, direction: int, ts: float = 4.0) -> Run:
        self.events += self.d.close(direction, ts)
        return self

    def finish(self, ts: float = 5.0) -> Run:
        self.events += self.d.finish(ts)
        return self

    @property
    def ex(self) -> list[Exchange]:
        return [e.exchange for e in self.events if isinstance(e, ExchangeCompleted)]

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


def get(path: str = "/", extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" " + path.encode() + b" HTTP/1.1\r\nHost: h\r\n" + extra + b"\r\n"


def ok(body: bytes = b"ok", extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n"
    return head + body


def chunked(body: bytes, sizes: list[int], trailers: bytes = b"") -> bytes:
    out = b""
    pos = 0
    for size in sizes:
        out += b"%x\r\n" % size + body[pos : pos + size] + b"\r\n"
        pos += size
    return out + b"0\r\n" + trailers + b"\r\n"


# -- basics ------------------------------------------------------------------------------------


def test_one_exchange_full_shape() -> None:
    req = get("/a/b?x=1&y=%20z+w&flag", b"User-Agent: t\r\n")
    resp = ok(b'{"k": 1}', b"Content-Type: application/json\r\n")
    r = Run().c(req, 10.0).s(resp, 10.25)
    (ex,) = r.ex
    assert ex.proto == "http"
    assert ex.ts == 10.0
    assert ex.method == "GET"
    assert ex.summary == "/a/b?x=1&y=%20z+w&flag"
    assert ex.status == 200
    assert ex.latency_ms == pytest.approx(250.0)
    assert ex.request_size == len(req)
    assert ex.response_size == len(resp)
    assert ex.error is None
    assert ex.extra == {"host": "h"}
    assert ex.request == {
        "version": "HTTP/1.1",
        "method": "GET",
        "target": "/a/b?x=1&y=%20z+w&flag",
        "path": "/a/b",
        "query": [["x", "1"], ["y", " z w"], ["flag", ""]],
        "headers": [["Host", "h"], ["User-Agent", "t"]],
        "body": "",
        "body_encoding": "text",
        "body_truncated": False,
        "content_encoding": None,
        "body_size": 0,
    }
    assert ex.response == {
        "version": "HTTP/1.1",
        "status": 200,
        "reason": "OK",
        "headers": [["Content-Length", "8"], ["Content-Type", "application/json"]],
        "body": '{"k": 1}',
        "body_encoding": "text",
        "body_truncated": False,
        "content_encoding": None,
        "body_size": 8,
    }
    json.dumps(asdict(ex))  # JSON-ready
    assert r.d.oldest_pending() is None


def test_keep_alive_many_exchanges_and_leading_blank_lines() -> None:
    r = Run()
    for i in range(5):
        r.c(b"\r\n" * (i % 2) + get(f"/{i}"), float(i)).s(ok(str(i).encode()), i + 0.5)
    assert [e.summary for e in r.ex] == [f"/{i}" for i in range(5)]
    assert [e.response["body"] for e in r.ex if e.response] == [str(i) for i in range(5)]
    assert all(e.error is None for e in r.ex)


def test_pipelining_with_head_inside() -> None:
    reqs = get("/1") + get("/2", method=b"HEAD") + get("/3")
    head_resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"  # no body after HEAD
    r = Run().c(reqs).s(ok(b"one") + head_resp + ok(b"three"))
    assert [(e.method, e.summary, e.status) for e in r.ex] == [
        ("GET", "/1", 200),
        ("HEAD", "/2", 200),
        ("GET", "/3", 200),
    ]
    bodies = [e.response["body"] for e in r.ex if e.response]
    assert bodies == ["one", "", "three"]
    assert r.ex[1].response_size == len(head_resp)


def test_request_body_content_length() -> None:
    req = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    r = Run().c(req).s(ok())
    (ex,) = r.ex
    assert ex.request is not None
    assert ex.request["body"] == "hello"
    assert ex.request["body_size"] == 5
    assert ex.request_size == len(req)


def test_chunked_with_extensions_and_trailers() -> None:
    body = b"hello, chunked world"
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n"
        b"f\r\n, chunked world\r\n"
        b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    )
    r = Run().c(get()).s(wire)
    (ex,) = r.ex
    assert ex.response is not None
    assert ex.response["body"] == body.decode()
    assert ex.response["body_size"] == len(body)
    assert ex.response["trailers"] == [["X-Checksum", "abc"], ["X-Other", "1"]]
    assert ex.response_size == len(wire)


def test_chunked_request() -> None:
    req = b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"abcdef", [2, 4])
    r = Run().c(req).s(ok())
    (ex,) = r.ex
    assert ex.request is not None
    assert ex.request["body"] == "abcdef"
    assert "trailers" not in ex.request
    assert ex.request_size == len(req)


def test_bare_newlines_obs_fold_case_and_repeats() -> None:
    req = b"GET /x HTTP/1.1\nhOsT: example\nX-Long: a\n  b\n\tc\nSet: 1\nSet: 2\n\n"
    resp = b"HTTP/1.1 200 OK\ncontent-length: 2\n\nhi"
    r = Run().c(req).s(resp)
    (ex,) = r.ex
    assert ex.request is not None and ex.response is not None
    assert ex.request["headers"] == [
        ["hOsT", "example"],
        ["X-Long", "a b c"],
        ["Set", "1"],
        ["Set", "2"],
    ]
    assert ex.extra == {"host": "example"}
    assert ex.response["body"] == "hi"
    assert ex.error is None


def test_gzip_and_deflate_bodies() -> None:
    text = b'{"hello": "world"}' * 3
    bodies = {
        b"gzip": gzip.compress(text),
        b"deflate": zlib.compress(text),
    }
    raw = zlib.compressobj(wbits=-15)
    bodies[b"DEFLATE"] = raw.compress(text) + raw.flush()  # raw deflate, odd case
    for coding, body in bodies.items():
        r = Run().c(get()).s(ok(body, b"Content-Encoding: " + coding + b"\r\n"))
        (ex,) = r.ex
        assert ex.response is not None
        assert ex.response["body"] == text.decode(), coding
        assert ex.response["content_encoding"] == coding.decode().lower()
        assert ex.response["body_size"] == len(body)


def test_bad_gzip_keeps_raw_and_says_why() -> None:
    r = Run().c(get()).s(ok(b"\x00\x01not gzip", b"Content-Encoding: gzip\r\n"))
    (ex,) = r.ex
    assert ex.response is not None
    assert ex.response["body_encoding"] == "base64"
    assert ex.response["content_encoding"] is None
    assert ex.response["body_decode_error"].startswith("failed to decode gzip")
    assert ex.error is None


def test_binary_body_is_base64() -> None:
    r = Run().c(get()).s(ok(b"\x89PNG\r\n\x1a\n\x00"))
    (ex,) = r.ex
    assert ex.response is not None
    assert ex.response["body_encoding"] == "base64"
    assert ex.response["body"] == "iVBORw0KGgoA"


# -- 1xx, upgrade, no-body statuses ----------------------------------------------------------


def test_100_continue() -> None:
    head = b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    cont = b"HTTP/1.1 100 Continue\r\n\r\n"
    final = ok(b"done")
    r = Run().c(head, 1.0).s(cont, 1.1)
    assert r.ex == []
    r.c(b"abc", 1.2)
    assert r.ex == []
    r.s(final, 1.5)
    (ex,) = r.ex
    assert ex.status == 200
    assert ex.latency_ms == pytest.approx(500.0)
    assert ex.response_size == len(cont) + len(final)
    assert ex.response is not None
    assert ex.response["informational"] == [
        {"version": "HTTP/1.1", "status": 100, "reason": "Continue", "headers": []}
    ]
    assert ex.request is not None and ex.request["body"] == "abc"


def test_101_upgrade_websocket_hands_over_bytes() -> None:
    req = get("/ws", b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    r = Run().c(req + b"\x81\x85masked").s(resp + b"\x81\x02hi")
    (ex,) = r.ex
    assert ex.status == 101
    assert ex.error is None
    assert r.d.upgraded == "websocket"
    r.c(b"more").s(b"\x81\x01!")
    assert r.d.take_upgrade_bytes() == (b"\x81\x85maskedmore", b"\x81\x02hi\x81\x01!")
    assert r.d.take_upgrade_bytes() == (b"", b"")
    r.c(b"GET / HTTP/1.1\r\n\r\n").finish()
    assert len(r.ex) == 1  # no more HTTP parsing


def test_h2c_preface_sent_before_101_is_not_parsed_as_http() -> None:
    req = get("/", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n")
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    r = Run().c(req).c(preface)
    assert r.of(Desynced) == []
    r.s(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04")
    assert r.d.upgraded == "h2c"
    assert r.d.take_upgrade_bytes() == (preface, b"\x00\x00\x00\x04")
    assert [e.status for e in r.ex] == [101]


def test_101_nobody_asked_for_is_reported_and_parsing_goes_on() -> None:
    """A 101 to a request without Upgrade (a damaged status, a broken server) switches
    nothing: the next exchanges on the connection still parse."""
    r = Run().c(get("/a")).s(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    r.c(get("/b")).s(ok(b"fine"))
    assert [(x.summary, x.status, x.error) for x in r.ex] == [("/a", 101, None), ("/b", 200, None)]
    assert r.d.upgraded is None
    assert [e.reason for e in r.of(Desynced)] == ["101 without an Upgrade request"]


def test_upgrade_refused_resumes_parsing() -> None:
    req = get("/1", b"Upgrade: h2c\r\nConnection: Upgrade\r\n")
    r = Run().c(req + get("/2")).s(ok(b"a"))
    assert [e.summary for e in r.ex] == ["/1"]
    r.s(ok(b"b"))
    assert [e.summary for e in r.ex] == ["/1", "/2"]
    assert r.d.upgraded is None


def test_connect_tunnel() -> None:
    req = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    r = (
        Run()
        .c(req + b"\x16\x03\x01hello")
        .s(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03")
    )
    (ex,) = r.ex
    assert ex.method == "CONNECT"
    assert ex.request is not None and ex.request["path"] == "example.com:443"
    assert r.d.upgraded == "CONNECT"
    assert r.d.take_upgrade_bytes() == (b"\x16\x03\x01hello", b"\x16\x03")


def test_upgrade_buffer_is_capped() -> None:
    r = Run().c(get("/", b"Upgrade: websocket\r\n")).s(b"HTTP/1.1 101 OK\r\n\r\n")
    r.c(b"x" * (MAX_UPGRADE_BUFFER + 10))
    client, _ = r.d.take_upgrade_bytes()
    assert len(client) == MAX_UPGRADE_BUFFER
    assert r.d.stats["upgrade_dropped"] == 10


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_no_body_statuses(status: bytes) -> None:
    resp = b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n"
    r = Run().c(get("/1") + get("/2")).s(resp + ok(b"next"))
    assert [e.status for e in r.ex] == [int(status[:3]), 200]
    assert r.ex[1].response is not None and r.ex[1].response["body"] == "next"


def test_http10_close_delimited() -> None:
    r = Run().c(b"GET /old HTTP/1.0\r\n\r\n").s(b"HTTP/1.0 200 OK\r\n\r\npart1,", 2.0)
    r.s(b"part2", 2.1)
    assert r.ex == []
    r.close(SERVER)
    (ex,) = r.ex
    assert ex.error is None
    assert ex.response is not None and ex.response["body"] == "part1,part2"
    assert ex.response["version"] == "HTTP/1.0"


def test_close_delimited_ends_at_finish() -> None:
    r = Run().c(get()).s(b"HTTP/1.1 200 OK\r\n\r\nstream").finish()
    (ex,) = r.ex
    assert ex.error is None
    assert ex.response is not None and ex.response["body"] == "stream"


def test_http10_keep_alive_with_content_length() -> None:
    r = Run().c(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r.s(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na")
    r.c(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").s(ok(b"b"))
    assert [e.summary for e in r.ex] == ["/a", "/b"]


# -- caps ------------------------------------------------------------------------------------


def test_body_over_cap_counts_fully_and_keeps_framing() -> None:
    body = b"a" * 100
    r = Run(body_cap=10).c(get("/1") + get("/2")).s(ok(body) + ok(b"b"))
    first, second = r.ex
    assert first.response is not None
    assert first.response["body"] == "a" * 10
    assert first.response["body_truncated"] is True
    assert first.response["body_size"] == 100
    assert first.error is None
    assert second.response is not None and second.response["body"] == "b"
    assert r.d.stats["truncated_bodies"] == 1


def test_gzip_output_capped() -> None:
    body = gzip.compress(b"z" * 10_000)
    r = Run(body_cap=100).c(get()).s(ok(body, b"Content-Encoding: gzip\r\n"))
    (ex,) = r.ex
    assert ex.response is not None
    assert ex.response["body"] == "z" * 100
    assert ex.response["body_truncated"] is True


def test_header_block_over_cap() -> None:
    huge = b"X-Big: " + b"b" * MAX_HEADER_BYTES + b"\r\n"
    r = Run().c(b"GET /big HTTP/1.1\r\n" + huge + b"\r\n" + get("/after")).s(ok(b"x"))
    assert r.d.stats["header_overflows"] == 1
    assert len(r.of(Truncated)) == 1
    assert [e.summary for e in r.ex] == ["/after"]
    assert r.d.buffered() <= MAX_HEADER_BYTES + 16


def test_pending_queue_capped() -> None:
    r = Run()
    for i in range(MAX_PENDING + 5):
        r.c(get(f"/{i}"), float(i))
    assert r.d.pending() == MAX_PENDING
    assert r.d.stats["queue_dropped"] == 5
    assert [e.summary for e in r.ex] == [f"/{i}" for i in range(5)]
    assert all(e.error == NO_RESPONSE for e in r.ex)


# -- loss ------------------------------------------------------------------------------------


def test_midstream_join_mid_body() -> None:
    r = Run(midstream=True)
    r.c(b"ody of an earlier request\r\n" + get("/seen"), 1.0)
    r.s(b"rest of earlier response body" + ok(b"x"), 2.0)
    (ex,) = r.ex
    assert ex.summary == "/seen"
    assert ex.error is None
    skipped = [e.skipped for e in r.of(Desynced)]
    assert sorted(skipped) == [27, 29]
    assert r.d.stats["skipped_bytes"] == 56


def test_midstream_join_at_message_start_is_silent() -> None:
    r = Run(midstream=True).c(get()).s(ok())
    assert len(r.ex) == 1
    assert r.of(Desynced) == []


def test_midstream_response_without_request() -> None:
    r = Run(midstream=True).s(ok(b"orphan"), 7.0)
    (ex,) = r.ex
    assert ex.error == NO_REQUEST
    assert ex.request is None
    assert ex.ts == 7.0
    assert ex.method is None and ex.latency_ms is None
    assert ex.status == 200
    assert ex.extra == {"host": None}


def test_gap_inside_content_length_body() -> None:
    r = Run().c(get("/1") + get("/2"))
    r.s(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").gap(SERVER, 4).s(b"def" + ok(b"2"))
    first, second = r.ex
    assert first.error == TRUNCATED
    assert first.response is not None
    assert first.response["body"] == "abcdef"
    assert first.response["body_size"] == 10
    assert first.response["body_truncated"] is True
    assert second.error is None and second.summary == "/2"


def test_gap_inside_chunk_data() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nabcd"
    r = Run().c(get()).s(wire).gap(SERVER, 2).s(b"gh\r\n0\r\n\r\n")
    (ex,) = r.ex
    assert ex.error == TRUNCATED
    assert ex.response is not None and ex.response["body_size"] == 8


def test_gap_inside_headers_desyncs_and_resyncs() -> None:
    r = Run().c(get("/1") + get("/2"))
    r.s(b"HTTP/1.1 200 OK\r\nContent-Le").gap(SERVER, 30).s(b"ngth: 3\r\n\r\nabc" + ok(b"2"))
    # /1 keeps the status line it had (a snaplen-cut head looks like this); /2 pairs with the
    # next status line found by resync.
    first, second = r.ex
    assert (first.summary, first.status, first.error) == ("/1", 200, TRUNCATED)
    assert second.summary == "/2" and second.error is None
    assert second.response is not None and second.response["body"] == "2"
    assert r.of(Desynced)
    r.finish()
    assert len(r.ex) == 2


def test_gap_in_chunk_size_line_ends_message_desynced() -> None:
    r = Run().c(get())
    r.s(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n1").gap(SERVER, 3)
    (ex,) = r.ex
    assert ex.error == DESYNCED
    assert ex.response is not None and ex.response["body"] == "abcd"


def test_gap_larger_than_body_remaining() -> None:
    r = Run().c(get("/1") + get("/2"))
    r.s(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab").gap(SERVER, 10)
    (ex,) = r.ex
    assert ex.error == TRUNCATED
    r.s(b"tail of lost stuff\r\n" + ok(b"ok"))
    assert [e.summary for e in r.ex] == ["/1", "/2"]


def test_garbage_never_raises_and_is_reported() -> None:
    r = Run().c(b"\x00\xff garbage \r\n\r\n" + get("/real")).s(b"nonsense\n" + ok())
    assert [e.summary for e in r.ex] == ["/real"]
    assert {e.direction for e in r.of(Desynced)} == {CLIENT, SERVER}
    assert r.d.stats["desyncs"] == 2
    assert r.d.stats["internal_errors"] == 0


def test_bad_chunk_size_desyncs() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    r = Run().c(get()).s(wire)
    (ex,) = r.ex
    assert ex.error == DESYNCED


# -- end of connection, expiry -------------------------------------------------------------


def test_finish_request_without_response() -> None:
    r = Run().c(get("/lonely"), 3.0)
    assert r.d.oldest_pending() == 3.0
    r.finish()
    (ex,) = r.ex
    assert ex.error == NO_RESPONSE
    assert ex.response is None and ex.status is None and ex.response_size is None
    assert r.d.oldest_pending() is None
    assert r.d.finish(6.0) == []


def test_finish_mid_body_is_truncated() -> None:
    r = Run().c(get()).s(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial").finish()
    (ex,) = r.ex
    assert ex.error == TRUNCATED
    assert ex.response is not None and ex.response["body"] == "partial"


def test_finish_with_partial_head_reports_it() -> None:
    r = Run().c(get()).s(b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-").finish()
    (ex,) = r.ex  # the status line and complete header lines were seen: keep them
    assert (ex.status, ex.error) == (200, TRUNCATED)
    assert ex.response is not None and ex.response["headers"] == [["Server", "x"]]
    r = Run().c(get()).s(b"HTTP/1.1 20").finish()
    (ex,) = r.ex  # not even a status line
    assert ex.error == NO_RESPONSE
    assert r.of(Desynced)


def test_expire_drops_request_and_later_responses_pair_with_the_next() -> None:
    r = Run().c(get("/old"), 100.0).c(get("/new"), 150.0)
    r.events += r.d.expire(100.0 + PENDING_TIMEOUT - 1)
    assert r.ex == []
    r.events += r.d.expire(100.0 + PENDING_TIMEOUT + 1)
    (old,) = r.ex
    assert old.summary == "/old" and old.error == NO_RESPONSE
    assert r.d.oldest_pending() == 150.0
    r.s(ok(b"late"), 161.0)
    assert [(e.summary, e.error) for e in r.ex] == [("/old", NO_RESPONSE), ("/new", None)]
    assert r.d.stats["expired"] == 1


def test_oldest_pending_counts_partial_messages() -> None:
    r = Run().c(b"GET / HT", 4.0)
    assert r.d.oldest_pending() == 4.0
    r.c(b"TP/1.1\r\n\r\n", 5.0)
    assert r.d.oldest_pending() == 4.0
    assert r.d.pending() == 1


def test_message_ts_is_first_byte() -> None:
    r = (
        Run()
        .c(b"GET /", 1.0)
        .c(b" HTTP/1.1\r\n\r\n", 1.5)
        .s(b"HTTP/1.1 2", 3.0)
        .s(b"04 OK\r\n\r\n", 4)
    )
    (ex,) = r.ex
    assert ex.ts == 1.0
    assert ex.latency_ms == pytest.approx(2000.0)


def test_absolute_form_target() -> None:
    r = Run().c(get("http://proxy.example/p/q?a=b")).s(ok())
    (ex,) = r.ex
    assert ex.request is not None
    assert ex.request["path"] == "/p/q"
    assert ex.request["query"] == [["a", "b"]]


def test_non_utf8_header_is_latin1() -> None:
    r = Run().c(get("/", b"X-Name: caf\xe9\r\n")).s(ok())
    (ex,) = r.ex
    assert ex.request is not None
    assert ["X-Name", "café"] in ex.request["headers"]


def test_bad_direction_and_empty_input() -> None:
    d = Http1Dissector()
    assert d.feed(7, b"x", 1.0) == []
    assert d.feed(CLIENT, b"", 1.0) == []
    assert d.gap(CLIENT, 0, 1.0) == []
    assert d.close(9, 1.0) == []


def test_buffers_stay_bounded_on_endless_garbage() -> None:
    from shark_tui.proto.http1 import MAX_START_LINE

    for midstream in (False, True):
        d = Http1Dissector(midstream=midstream)
        for i in range(200):
            d.feed(CLIENT, bytes([65 + i % 20]) * 5000, float(i))
            d.feed(SERVER, b"\x00HTTP/1.1 \xff" * 500, float(i))
            assert d.buffered() <= 2 * (MAX_START_LINE + 1)
        assert d.stats["internal_errors"] == 0
        events = d.finish(1000.0)
        assert any(isinstance(e, Desynced) for e in events)


def test_header_block_fed_byte_by_byte_over_cap() -> None:
    d = Http1Dissector()
    d.feed(CLIENT, b"GET / HTTP/1.1\r\n", 1.0)
    chunk = b"X-A: " + b"a" * 1000 + b"\r\n"
    events: list[Event] = []
    for _ in range(MAX_HEADER_BYTES // len(chunk) + 2):
        events += d.feed(CLIENT, chunk, 1.0)
        assert d.buffered() <= MAX_HEADER_BYTES + len(chunk)
    assert [type(e) for e in events] == [Truncated]


def test_scan_finds_request_after_binary_without_newline() -> None:
    r = Run(midstream=True).c(b"\x00\x01binary tailPOST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    r.s(b"...HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").finish()
    (ex,) = r.ex
    assert (ex.method, ex.summary, ex.status, ex.error) == ("POST", "/x", 201, None)


def test_103_early_hints_then_final() -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
    r = Run().c(get()).s(hints + ok(b"page"))
    (ex,) = r.ex
    assert ex.response is not None
    assert [i["status"] for i in ex.response["informational"]] == [103]
    assert ex.response_size == len(hints) + len(ok(b"page"))


def test_expired_upgrade_request_resumes_client() -> None:
    r = Run().c(get("/ws", b"Upgrade: websocket\r\n") + get("/next"), 1.0)
    r.events += r.d.expire(1.0 + PENDING_TIMEOUT + 1)
    assert [(e.summary, e.error) for e in r.ex] == [("/ws", NO_RESPONSE)]
    r.s(ok(b"n"))
    assert [e.summary for e in r.ex] == ["/ws", "/next"]
    assert r.d.upgraded is None


def test_stats_count_messages() -> None:
    r = Run().c(get("/1") + get("/2")).s(ok() + ok())
    stats = r.d.stats
    assert (stats["requests"], stats["responses"], stats["messages"], stats["exchanges"]) == (
        2,
        2,
        4,
        2,
    )
