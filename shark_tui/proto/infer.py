"""Protocol inference from the first bytes of a direction, never from ports alone.

``guess(data)`` looks at the start of one direction's first payload and says which protocol it
is and whether the bytes were sent by the client (a request) or the server (a reply). Ports are
hints the engine may use only when the bytes of both directions say nothing.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from shark_tui.proto.base import CLIENT, SERVER
from shark_tui.proto.http2.dissector import looks_like_http2_frames

#: Every protocol name an entry can carry, in the TUI's toggle order (keys 1–8).
PROTOCOLS = ("http", "http2", "grpc", "graphql", "amqp", "kafka", "redis", "tcp")
#: Names ``--decode PORT=PROTO`` accepts (grpc/graphql are recognised on top of HTTP).
DECODABLE = ("http", "http2", "amqp", "kafka", "redis", "tcp")


#: A guess that cannot tell which end sent the bytes (HTTP/2 frames met mid-connection).
UNKNOWN_ROLE = -1


class Guess(NamedTuple):
    proto: str
    #: CLIENT when these bytes are a request (their sender is the client), SERVER for a reply,
    #: UNKNOWN_ROLE when the bytes do not say.
    role: int
    #: How sure: 2 = a magic string or a full request line, 1 = plausible.
    strength: int


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_AMQP_HEADER = b"AMQP"
_HTTP_METHODS = frozenset(
    b"GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH PROPFIND PROPPATCH MKCOL COPY MOVE "
    b"LOCK UNLOCK REPORT SEARCH PURGE".split()
)
_REQUEST_LINE = re.compile(rb"([A-Z]{3,10}) (\S{1,8192}) HTTP/1\.[01]\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9][ \r\n]")
_RESP_ARRAY = re.compile(rb"\*[1-9][0-9]{0,6}\r\n\$[0-9]{1,9}\r\n")
_RESP_REPLY_TYPES = frozenset(b"+-:$*%_,#=(!|~>")
_KAFKA_HEAD = struct.Struct(">iHHih")
#: Highest Kafka API key we consider plausible (the protocol defines ~75 today).
_KAFKA_MAX_API_KEY = 100


def guess(data: bytes) -> Guess | None:
    """What protocol ``data`` (the start of one direction) is, or None when it cannot tell."""
    if len(data) < 4:
        return None
    head = data[:4]
    if data.startswith(HTTP2_PREFACE[: min(len(data), len(HTTP2_PREFACE))]) and len(data) >= 16:
        return Guess("http2", CLIENT, 2)
    if head == _AMQP_HEADER:
        return Guess("amqp", CLIENT, 2)
    if head == b"HTTP" and _STATUS_LINE.match(data):
        return Guess("http", SERVER, 2)
    space = data.find(b" ", 0, 12)
    if space > 0 and data[:space] in _HTTP_METHODS:
        strength = 2 if _REQUEST_LINE.match(data) else 1
        return Guess("http", CLIENT, strength)
    if data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04:
        if len(data) > 5 and data[5] == 1:
            return Guess("tls", CLIENT, 2)
        return Guess("tls", SERVER, 1)
    if _RESP_ARRAY.match(data):
        return Guess("redis", CLIENT, 2)
    if _looks_like_http2_settings(data):
        return Guess("http2", SERVER, 1)
    if _looks_like_amqp_frame(data):
        return Guess("amqp", SERVER, 1)
    if _looks_like_kafka_request(data):
        return Guess("kafka", CLIENT, 1)
    if data[0] in _RESP_REPLY_TYPES and data.find(b"\r\n", 1, 512) > 0 and data.endswith(b"\r\n"):
        return Guess("redis", SERVER, 1)
    if looks_like_http2_frames(data):
        return Guess("http2", _http2_role(data), 1)
    return None


def _http2_role(data: bytes) -> int:
    """Who sent these HTTP/2 frames, from the first HEADERS block among them.

    A request block starts with a pseudo-header field whose name is in the HPACK static table
    at :authority, :method, :path or :scheme (indices 1–7); a response block with :status
    (8–14). An indexed field or a literal with an indexed name tells which, whatever the
    dynamic table holds.
    """
    pos = 0
    for _ in range(8):
        if pos + 9 > len(data):
            break
        length = int.from_bytes(data[pos : pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        block = pos + 9
        if ftype == 1:  # HEADERS
            if flags & 0x08:  # PADDED
                block += 1
            if flags & 0x20:  # PRIORITY
                block += 5
            if block >= len(data) or block >= pos + 9 + length:
                break
            first = data[block]
            if first & 0x80:
                index = first & 0x7F
            elif first & 0x40:
                index = first & 0x3F
            elif first & 0x20:  # a dynamic table size update comes first: look no further
                break
            else:
                index = first & 0x0F
            if 1 <= index <= 7:
                return CLIENT
            if 8 <= index <= 14:
                return SERVER
            break
        pos = block + length
    return UNKNOWN_ROLE


def _looks_like_kafka_request(data: bytes) -> bool:
    if len(data) < 14:
        return False
    size, api_key, api_version, _corr, client_len = _KAFKA_HEAD.unpack_from(data)
    if not 10 <= size <= 100 * 1024 * 1024 or api_key > _KAFKA_MAX_API_KEY or api_version > 30:
        return False
    if client_len < -1 or client_len > 512 or 14 + max(client_len, 0) > size + 4:
        return False
    if client_len > 0:
        client_id = data[14 : 14 + client_len]
        if len(client_id) == client_len and not all(32 <= b < 127 for b in client_id):
            return False
    return True


def _looks_like_amqp_frame(data: bytes) -> bool:
    # A server's first frame: METHOD (1), channel 0, connection.start (class 10, method 10).
    start = b"\0\x0a\0\x0a"
    return len(data) >= 11 and data[0] == 1 and data[1:3] == b"\0\0" and data[7:11] == start


def _looks_like_http2_settings(data: bytes) -> bool:
    # A server's first frame is SETTINGS (type 4) on stream 0 with a length multiple of 6.
    if len(data) < 9:
        return False
    length = int.from_bytes(data[:3], "big")
    return data[3] == 4 and data[5:9] == b"\0\0\0\0" and length % 6 == 0 and length <= 16384


#: Well-known ports, consulted only when the bytes of both directions said nothing.
PORT_HINTS = {80: "http", 8080: "http", 6379: "redis", 5672: "amqp", 9092: "kafka"}
