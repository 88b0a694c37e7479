"""A real query daemon serving web traffic — HTTP/1.1 (a form, a body past the 64 KiB cap),
GraphQL, HTTP/2, gRPC, WebSocket and a protocol nobody knows — for the detail pane's tests.

The bytes are written byte-exact, the same in every run, by the libraries the protocol tests
use for each end: h2's ``H2Connection`` on both sides of the HTTP/2 and gRPC connections
(``tests.proto.test_http2.Conv``), RFC 6455 frames with a fixed mask for WebSocket
(``tests.proto.test_websocket.hand_frame``), hand-written HTTP/1.1. Recording live servers would
bring their Date headers and the races of HTTP/2's frames into the snapshots. Each connection
becomes TCP packets with fixed addresses and times the way ``protofixture`` makes them (one
millisecond per turn of the conversation); the store is loaded from that pcap and served by an
in-process ``Server`` on a Unix socket.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from tests.engine.fixtures_pcap import LINKTYPE_ETHERNET, pcap_bytes
from tests.widgets.appfixture import serve_capture
from tests.widgets.protofixture import CONN_NS, T0_NS, Conn, _packets

WEB = ("10.2.0.2", 80)
GRAPHQL = ("10.2.0.3", 4000)
H2 = ("10.2.0.4", 8080)
GRPC = ("10.2.0.5", 50051)
WS = ("10.2.0.6", 8765)
TCP = ("10.2.0.7", 9000)

#: The body of ``GET /export``: longer than the dissectors keep by default (64 KiB).
BIG_BODY = b"".join(b"line %05d of the export\n" % i for i in range(4000))  # 100,000 bytes
FORM = b"user=J%C3%B6rg&remember=on&next=%2Fcart%3Fitem%3D7&note=tea+and+cake"
HERO = (
    "query Hero($episode: Episode, $withFriends: Boolean!) { hero(episode: $episode) "
    "{ name ... on Droid { primaryFunction } friends @include(if: $withFriends) { name } } }"
)
BROKEN = "query Broken { hero { name }"


def _http1(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


def _web() -> Conn:
    return [
        (0, _http1("POST /login HTTP/1.1\nHost: shop.local\n"
                   "Content-Type: application/x-www-form-urlencoded\n"
                   f"Content-Length: {len(FORM)}\n", FORM)),
        (1, _http1("HTTP/1.1 303 See Other\nLocation: /cart?item=7\nContent-Length: 0\n")),
        (0, _http1("GET /export HTTP/1.1\nHost: shop.local\n")),
        (1, _http1("HTTP/1.1 200 OK\nContent-Type: text/plain; charset=utf-8\n"
                   f"Content-Length: {len(BIG_BODY)}\n", BIG_BODY)),
    ]  # fmt: skip


def _graphql() -> Conn:
    def post(doc: dict[str, object]) -> bytes:
        body = json.dumps(doc).encode()
        head = "POST /graphql HTTP/1.1\nHost: api.shop.local\nContent-Type: application/json\n"
        return _http1(f"{head}Content-Length: {len(body)}\n", body)

    def reply(status: str, doc: dict[str, object]) -> bytes:
        body = json.dumps(doc).encode()
        return _http1(f"HTTP/1.1 {status}\nContent-Type: application/json\n"
                      f"Content-Length: {len(body)}\n", body)  # fmt: skip

    hero = {"hero": {"name": "R2-D2", "primaryFunction": "Astromech",
                     "friends": [{"name": "Luke Skywalker"}, {"name": "Han Solo"}]}}  # fmt: skip
    error = {"message": 'Syntax Error: Expected Name, found <EOF>.',
             "locations": [{"line": 1, "column": 29}]}  # fmt: skip
    variables = {"episode": "EMPIRE", "withFriends": True}
    return [
        (0, post({"query": HERO, "operationName": "Hero", "variables": variables})),
        (1, reply("200 OK", {"data": hero})),
        (0, post({"query": BROKEN})),
        (1, reply("400 Bad Request", {"errors": [error]})),
    ]


def _h2(authority: str, calls: list[tuple[list[tuple[str, str]], bytes,
                                          list[tuple[str, str]], bytes,
                                          list[tuple[str, str]] | None]]) -> Conn:  # fmt: skip
    """One HTTP/2 connection (prior knowledge) of ``calls``: (request headers, body, response
    headers, body, trailers), one after another."""
    from tests.proto.test_http2 import Conv

    conv = Conv()
    for req_headers, req_body, resp_headers, resp_body, trailers in calls:
        sid = conv.c.get_next_available_stream_id()
        headers = [(":authority", authority), *req_headers]
        conv.c.send_headers(sid, headers, end_stream=not req_body)
        if req_body:
            conv.send_body(conv.c, sid, req_body, end=True)
        conv.pump()
        status = dict(resp_headers)[":status"]
        extra = [h for h in resp_headers if h[0] != ":status"]
        conv.respond(sid, int(status), resp_body, extra=extra, trailers=trailers)
    conv.c.close_connection()
    conv.pump()
    return list(conv.chunks)


def _http2() -> Conn:
    items = json.dumps([{"sku": "tea-01", "qty": 3}, {"sku": "cake-02", "qty": 1}]).encode()
    new = json.dumps({"sku": "jam-03", "qty": 2}).encode()
    return _h2("api.shop.local:8080", [
        ([(":method", "GET"), (":scheme", "http"), (":path", "/api/items?limit=2"),
          ("accept", "application/json"), ("user-agent", "shop-client/1.0")], b"",
         [(":status", "200"), ("content-type", "application/json"),
          ("cache-control", "max-age=60")], items, None),
        ([(":method", "POST"), (":scheme", "http"), (":path", "/api/items"),
          ("content-type", "application/json")], new,
         [(":status", "201"), ("content-type", "application/json"),
          ("location", "/api/items/jam-03")], new, None),
    ])  # fmt: skip


def _pb_field(number: int, value: int | bytes | str) -> bytes:
    """One protobuf field: a varint, or length-delimited bytes/string."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def _grpc_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def _grpc() -> Conn:
    # shop.Inventory/GetItem(ItemRequest{sku=1, with_stock=2}) -> Item{sku=1, name=2, stock=3,
    # tags=4 (repeated), price=5 (Money{currency=1, units=2})}
    req = _pb_field(1, "tea-01") + _pb_field(2, 1)
    item = (_pb_field(1, "tea-01") + _pb_field(2, "Green tea") + _pb_field(3, 42)
            + _pb_field(4, "organic") + _pb_field(4, "loose-leaf")
            + _pb_field(5, _pb_field(1, "EUR") + _pb_field(2, 7)))  # fmt: skip
    grpc_req = [(":method", "POST"), (":scheme", "http"), (":path", "/shop.Inventory/GetItem"),
                ("content-type", "application/grpc"), ("te", "trailers"),
                ("grpc-timeout", "5S"), ("user-agent", "grpc-python/1.85.3")]  # fmt: skip
    missing = [(":method", "POST"), (":scheme", "http"), (":path", "/shop.Inventory/GetItem"),
               ("content-type", "application/grpc"), ("te", "trailers")]  # fmt: skip
    ok = [(":status", "200"), ("content-type", "application/grpc")]
    return _h2("inventory:50051", [
        (grpc_req, _grpc_frame(req), ok, _grpc_frame(item),
         [("grpc-status", "0"), ("grpc-message", "")]),
        (missing, _grpc_frame(_pb_field(1, "nope-99")), ok, b"",
         [("grpc-status", "5"), ("grpc-message", "no item nope-99")]),
    ])  # fmt: skip


def _websocket() -> Conn:
    from tests.proto.test_websocket import hand_frame

    mask = b"\x37\xfa\x21\x3d"
    close = struct.pack(">H", 1000) + b"bye"
    return [
        (0, _http1("GET /chat HTTP/1.1\nHost: chat.shop.local\nUpgrade: websocket\n"
                   "Connection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n"
                   "Sec-WebSocket-Version: 13\n")),
        (1, _http1("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n"
                   "Connection: Upgrade\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n")),
        (0, hand_frame(1, b'{"type": "join", "room": "tea"}', mask=mask)),
        (1, hand_frame(1, b'{"type": "joined", "room": "tea", "members": 3}')),
        (0, hand_frame(2, bytes(range(0, 48, 3)), mask=mask)),
        (1, hand_frame(1, b"welcome to #tea")),
        (0, hand_frame(8, close, mask=mask)),
        (1, hand_frame(8, close)),
    ]  # fmt: skip


def _tcp() -> Conn:
    return [
        (0, b"\x00\x00\x00\x15" + b"\x01HELLO v2 client=7\x00\x00"),
        (1, b"\x00\x00\x00\x0b" + b"\x02OK v2\x00\x00\x00\x00\x2a"),
        (0, b"\x00\x00\x00\x05" + b"\x03PING"),
        (1, b"\x00\x00\x00\x05" + b"\x04PONG"),
    ]


@functools.cache
def recorded() -> dict[tuple[str, int], Conn]:
    """Each connection of the capture, by server: in capture order."""
    return {WEB: _web(), GRAPHQL: _graphql(), H2: _http2(), GRPC: _grpc(), WS: _websocket(),
            TCP: _tcp()}  # fmt: skip


@functools.cache
def web_capture() -> bytes:
    """A pcap of the connections of `recorded`, ten seconds apart, numbered 1.. in that order."""
    packets: list[tuple[int, bytes]] = []
    for index, (server, conn) in enumerate(recorded().items()):
        packets += _packets(index, server, conn, T0_NS + index * CONN_NS)
    return pcap_bytes(LINKTYPE_ETHERNET, packets)


@contextmanager
def web_daemon(node: str = "fixture") -> Iterator[tuple[str, str]]:
    """(address, token) of a daemon serving `web_capture`."""
    with serve_capture(web_capture(), node, prefix="shark-tui-webtest-") as found:
        yield found
