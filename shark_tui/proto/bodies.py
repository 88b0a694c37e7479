"""Body rendering shared by the protocols: what a message body looks like in an entry.

``render_body`` turns the kept bytes of a body into the entry's body keys (DESIGN.md):
``body`` (str), ``body_encoding`` (``"text"`` or ``"base64"``), ``body_truncated`` (bool) and
``content_encoding`` (the coding that was undone for display, else None). When the sender
compressed the body (``Content-Encoding: gzip``, ``x-gzip`` or ``deflate``, zlib-wrapped or raw),
it is decompressed for display, never past ``cap`` bytes of output; when that fails the raw bytes
are shown and ``body_decode_error`` says why ("failed to decode gzip: ...").

Text means: valid UTF-8 without control characters other than tab, newline, carriage return and
form feed. Anything else is base64. A body cut by a cap may end inside a UTF-8 sequence: that
partial character is dropped rather than turning the whole body into base64.

Pure functions; zlib is the only dependency (no I/O).
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

#: Content codings decoded for display, by their lower-case name.
DECODABLE_CODINGS = frozenset({"gzip", "x-gzip", "deflate"})

_IDENTITY = frozenset({"", "identity"})
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
#: ``data.translate(None, _NOT_CONTROL)`` keeps only the control bytes (a C loop, no regex).
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL_BYTES)


def render_body(
    raw: bytes,
    *,
    content_encoding: str | None = None,
    cap: int = 65536,
    truncated: bool = False,
) -> dict[str, Any]:
    """The entry keys for a body whose kept bytes are ``raw``.

    ``truncated`` says ``raw`` is not the whole body (a cap or a capture gap cut it); it is
    reported as ``body_truncated``, as is a decompressed output cut at ``cap``.
    """
    if not raw:
        return {
            "body": "",
            "body_encoding": "text",
            "body_truncated": truncated,
            "content_encoding": None,
        }
    data = raw
    decoded_as: str | None = None
    error: str | None = None
    if content_encoding is not None:
        coding = content_encoding.strip().lower()
        if coding in DECODABLE_CODINGS:
            try:
                out, cut, complete = _inflate(raw, coding, cap)
            except zlib.error as exc:
                error = f"failed to decode {coding}: {exc}"
            else:
                data = out
                decoded_as = coding
                if cut:
                    truncated = True
                elif not complete and not truncated:
                    error = f"failed to decode {coding}: incomplete stream"
        elif coding not in _IDENTITY:
            error = f"failed to decode {coding}: content coding not supported"
    text = _as_text(data, truncated)
    result: dict[str, Any] = {
        "body": text if text is not None else base64.b64encode(data).decode("ascii"),
        "body_encoding": "text" if text is not None else "base64",
        "body_truncated": truncated,
        "content_encoding": decoded_as,
    }
    if error is not None:
        result["body_decode_error"] = error
    return result


def _inflate(raw: bytes, coding: str, cap: int) -> tuple[bytes, bool, bool]:
    """Decompress ``raw``: (output of at most ``cap`` bytes, output was cut, stream ended)."""
    if cap <= 0:
        return b"", True, False
    if coding == "deflate":
        # "deflate" is meant to be zlib-wrapped; some servers send raw deflate.
        try:
            return _decompress(zlib.decompressobj(zlib.MAX_WBITS), raw, cap)
        except zlib.error:
            return _decompress(zlib.decompressobj(-zlib.MAX_WBITS), raw, cap)
    return _decompress(zlib.decompressobj(16 + zlib.MAX_WBITS), raw, cap)


def _decompress(d: Any, raw: bytes, cap: int) -> tuple[bytes, bool, bool]:
    out: bytes = d.decompress(raw, cap)
    return out, bool(d.unconsumed_tail), bool(d.eof)


def _as_text(data: bytes, truncated: bool) -> str | None:
    """``data`` as text, or None when it is not text (see the module docstring)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut inside the last character of a truncated body is not binary.
        if not (truncated and exc.end == len(data) and exc.reason == "unexpected end of data"):
            return None
        data = data[: exc.start]
        text = data.decode("utf-8")
    if data.translate(None, _NOT_CONTROL):
        return None
    return text
