"""gRPC on top of HTTP/2 streams: recognition, message framing, status. Pure functions.

The HTTP/2 dissector hands over what it reassembled of one stream; these functions turn it
into the ``grpc`` entry keys of docs/ENTRIES.md:

- ``is_grpc(content_type)``: ``application/grpc`` and ``application/grpc+proto``, ``+json``...
  (not gRPC-Web, which has its own framing of trailers).
- ``parse_messages(body, encoding=...)``: the length-prefixed messages of one direction's body
  (a 1-byte compressed flag, a 4-byte big-endian length, the message), each decompressed with
  the stream's ``grpc-encoding`` when flagged, then decoded as a schema-less protobuf.
- ``status_from(headers)``: ``grpc-status`` and the percent-decoded ``grpc-message``.
- ``method_of(path)``: ``/pkg.Svc/Method`` -> ``pkg.Svc/Method``.

Caps: at most ``max_messages`` messages are listed (then ``truncated``); each message's
``data`` keeps at most ``cap`` bytes (then ``data_truncated: true``); decompression never
produces more than ``cap`` bytes (a message that inflates past it keeps the first ``cap`` bytes,
``fields`` null and a ``decode_error``). Nothing raises.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

from shark_tui.proto import protobuf

#: Messages listed per direction, by default; past it the list is cut (``truncated``).
MAX_MESSAGES = 64
#: Bytes kept of each message's ``data`` (after decompression), by default.
DEFAULT_CAP = 64 * 1024

_PREFIX = struct.Struct(">BI")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def is_grpc(content_type: str | None) -> bool:
    """Whether a ``content-type`` names gRPC over HTTP/2 (any ``+subtype``, no gRPC-Web)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/grpc" or media.startswith("application/grpc+")


def method_of(path: str) -> str:
    """``package.Service/Method`` from a gRPC ``:path`` (``/package.Service/Method``)."""
    path = path.split("?", 1)[0]
    return path[1:] if path.startswith("/") else path


def status_from(headers: list[list[str]]) -> tuple[int | None, str | None]:
    """(``grpc-status``, percent-decoded ``grpc-message``) of trailers (or trailers-only headers).

    A missing or non-numeric status is None, as is a missing message. The first of repeated
    fields wins.
    """
    status: int | None = None
    message: str | None = None
    seen_status = seen_message = False
    try:
        for pair in headers:
            if len(pair) < 2:
                continue
            name = pair[0].lower()
            if name == "grpc-status" and not seen_status:
                seen_status = True
                value = pair[1].strip()
                if value.isascii() and value.isdigit():
                    status = int(value)
            elif name == "grpc-message" and not seen_message:
                seen_message = True
                message = percent_decode(pair[1])
    except Exception:  # malformed input from the caller: show what was found
        pass
    return status, message


def percent_decode(value: str) -> str:
    """``grpc-message`` decoding: ``%XX`` escapes of UTF-8 bytes; a bad escape stays as it is."""
    if "%" not in value:
        return value
    raw = value.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "replace")


def parse_messages(
    data: bytes,
    *,
    encoding: str | None,
    max_messages: int = MAX_MESSAGES,
    cap: int = DEFAULT_CAP,
) -> tuple[list[dict[str, Any]], bool]:
    """(messages, truncated) of one direction's gRPC body.

    ``encoding`` is the stream's ``grpc-encoding`` (used for messages flagged compressed).
    ``truncated`` is True when the body ends inside a message (that partial message is listed,
    with ``decode_error``), when more than ``max_messages`` messages follow, or when a prefix
    is not a gRPC prefix (the rest is then not parsed).
    """
    messages: list[dict[str, Any]] = []
    try:
        raw = bytes(data)
        pos = 0
        n = len(raw)
        cap = max(0, cap)
        while pos < n:
            if len(messages) >= max(0, max_messages):
                return messages, True
            if n - pos < 5:
                return messages, True
            flag, size = _PREFIX.unpack_from(raw, pos)
            if flag > 1:
                return messages, True
            start = pos + 5
            payload = raw[start : start + size]
            if len(payload) < size:
                messages.append(_partial(payload, size, bool(flag), cap))
                return messages, True
            messages.append(_message(payload, bool(flag), encoding, cap))
            pos = start + size
        return messages, False
    except Exception:  # a bug must not hide the exchange
        return messages, True


def _partial(payload: bytes, size: int, compressed: bool, cap: int) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "size": size,
        "compressed": compressed,
        "fields": None,
        "data": base64.b64encode(payload[:cap]).decode("ascii"),
        "decode_error": f"incomplete message: {len(payload)} of {size} bytes seen",
    }
    if len(payload) > cap:
        msg["data_truncated"] = True
    return msg


def _message(payload: bytes, compressed: bool, encoding: str | None, cap: int) -> dict[str, Any]:
    error: str | None = None
    body = payload
    cut = False
    if compressed:
        coding = (encoding or "").strip().lower()
        if coding in ("", "identity"):
            if not coding:
                error = "compressed flag set without grpc-encoding"
        elif coding in ("gzip", "deflate"):
            try:
                body, cut = _inflate(payload, coding, cap)
            except zlib.error as exc:
                error = f"failed to decode {coding}: {exc}"
            else:
                if cut:
                    error = f"decompressed message larger than {cap} bytes"
        else:
            error = f"failed to decode {coding}: grpc-encoding not supported"
    if error is not None and not cut:
        fields = None
        body = payload
    elif cut:
        fields = None
    else:
        fields = protobuf.decode(body)
    msg: dict[str, Any] = {
        "size": len(payload),
        "compressed": compressed,
        "fields": fields,
        "data": base64.b64encode(body[:cap]).decode("ascii"),
    }
    if cut or len(body) > cap:
        msg["data_truncated"] = True
    if error is not None:
        msg["decode_error"] = error
    return msg


def _inflate(raw: bytes, coding: str, cap: int) -> tuple[bytes, bool]:
    """(at most ``cap`` decompressed bytes, output was cut); raises ``zlib.error``."""
    if coding == "gzip":
        wbits = [16 + zlib.MAX_WBITS]
    else:  # zlib-wrapped as meant, or raw deflate as some implementations send
        wbits = [zlib.MAX_WBITS, -zlib.MAX_WBITS]
    last: zlib.error | None = None
    for bits in wbits:
        d = zlib.decompressobj(bits)
        try:
            out = d.decompress(raw, cap) if cap else b""
        except zlib.error as exc:
            last = exc
            continue
        if d.unconsumed_tail or (not cap and raw):
            return out, True
        if not d.eof:
            last = zlib.error("incomplete stream")
            continue
        return out, False
    raise last if last is not None else zlib.error("cannot decode")
