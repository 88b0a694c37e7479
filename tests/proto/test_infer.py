"""Protocol inference from first bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shark_tui.proto.base import CLIENT, SERVER
from shark_tui.proto.infer import HTTP2_PREFACE, UNKNOWN_ROLE, guess


@pytest.mark.parametrize(
    ("data", "proto", "role"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "http", CLIENT),
        (b"POST /api/v1/x?y=1 HTTP/1.0\r\n", "http", CLIENT),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "http", SERVER),
        (b"HTTP/1.0 404 Not Found\r\n", "http", SERVER),
        (HTTP2_PREFACE + b"\0\0\0\x04\0\0\0\0\0", "http2", CLIENT),
        (b"\0\0\x06\x04\0\0\0\0\0\0\x03\0\0\0\x64", "http2", SERVER),
        (b"AMQP\0\0\x09\x01", "amqp", CLIENT),
        (b"\x01\0\0\0\0\x01\x00\0\x0a\0\x0a\0\x09", "amqp", SERVER),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", "redis", CLIENT),
        (b"+OK\r\n", "redis", SERVER),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "tls", CLIENT),
        (struct.pack(">iHHih", 30, 18, 3, 1, 9) + b"rdkafka-1" + b"\0" * 8, "kafka", CLIENT),
    ],
)
def test_first_bytes_name_the_protocol_and_the_sender(data: bytes, proto: str, role: int) -> None:
    g = guess(data)
    assert g is not None and (g.proto, g.role) == (proto, role)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GE",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x00\x01\x02\x03\x04\x05",
        b"hello world\n",
        b"GETX / HTTP/1.1\r\n",
    ],
)
def test_unknown_bytes_are_not_guessed(data: bytes) -> None:
    assert guess(data) is None


@given(st.binary(max_size=64))
def test_guess_never_raises(data: bytes) -> None:
    g = guess(data)
    assert g is None or g.role in (CLIENT, SERVER)


def _headers_frame(block: bytes, stream: int = 1, flags: int = 0x4) -> bytes:
    return len(block).to_bytes(3, "big") + bytes([1, flags]) + stream.to_bytes(4, "big") + block


@pytest.mark.parametrize(
    ("block", "role"),
    [
        (b"\x82\x86\x84\x41\x01a", CLIENT),  # :method GET, :scheme http, :path /, :authority
        (b"\x88\x5f\x0a", SERVER),  # :status 200 (static 8), then a literal
        (b"\x48\x03204", SERVER),  # literal with the indexed name :status (8)
        (b"\x20\x82", UNKNOWN_ROLE),  # a table size update first: no look past it
        (b"\xbe", UNKNOWN_ROLE),  # a dynamic-table index: says nothing
    ],
)
def test_http2_frames_mid_connection_tell_their_sender(block: bytes, role: int) -> None:
    data = _headers_frame(block) + _headers_frame(block, stream=3)
    g = guess(data)
    assert g is not None and g.proto == "http2" and g.role == role
