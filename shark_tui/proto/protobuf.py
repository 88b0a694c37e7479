"""Schema-less protobuf decoding, for display (what ``protoc --decode_raw`` shows).

``decode(data)`` reads ``data`` as a protobuf message without its schema and returns its fields
in wire order, or None when ``data`` is not a well-formed message. Each field is a dict::

    {"field": 1, "wire_type": "varint", "value": 150}

- ``varint``: ``value`` is the raw unsigned 64-bit value (no zigzag guess); ``signed`` is added
  when that value, read as a 64-bit two's complement, is negative (an ``int32``/``int64`` -1 is
  ``value`` 18446744073709551615, ``signed`` -1).
- ``i64`` / ``i32``: ``value`` is the unsigned little-endian integer, plus ``double`` / ``float``
  (the IEEE reading; a non-finite one as the string ``"nan"``, ``"inf"`` or ``"-inf"`` so that
  the result stays JSON) and ``signed`` when the two's complement is negative. A ``float`` is
  the shortest decimal that reads back to the same 32 bits (1.1, not 1.100000023841858).
- ``len``: ``encoding`` says what ``value`` is: ``"message"`` (a nested field list, when the
  bytes parse completely as a message), ``"text"`` (a str, when they are printable UTF-8 — text
  is preferred over a nested reading, since short strings often parse as messages by chance) or
  ``"base64"`` (a str).

Groups (wire types 3 and 4, deprecated since proto2) make ``data`` "not a message": they are
rare in gRPC traffic, and rejecting them keeps random bytes from passing as messages.

Caps: nesting deeper than ``max_depth`` is shown as bytes; at most ``max_fields`` field dicts
are built in all (nested ones included). Past that, nested values are shown as bytes and the
top-level list is cut (the message is still checked to its end). Work is linear in
``len(data) * max_depth``. Never raises.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

_WIRE_NAMES = ("varint", "i64", "len", None, None, "i32")
_U64 = 1 << 64
_I64_MIN = 1 << 63
_I32_MIN = 1 << 31
_MAX_FIELD = (1 << 29) - 1
_D = struct.Struct("<d")
_F = struct.Struct("<f")
_Q = struct.Struct("<Q")
_I = struct.Struct("<I")
#: Control characters that make bytes "not text" (tab, newline, CR stay text).
_NOT_CONTROL = bytes(b for b in range(256) if (b >= 0x20 and b != 0x7F) or b in (9, 10, 13))


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def decode(
    data: bytes, *, max_depth: int = 8, max_fields: int = 1000
) -> list[dict[str, Any]] | None:
    """The fields of ``data`` read as a protobuf message, or None (see the module docstring)."""
    try:
        if not isinstance(data, bytes | bytearray | memoryview):
            return None
        view = bytes(data)
        return _message(view, 0, len(view), max(0, max_depth), _Budget(max(0, max_fields)), True)
    except Exception:  # a bug must not break the display of a message
        return None


def _message(
    data: bytes, pos: int, end: int, depth: int, budget: _Budget, top: bool
) -> list[dict[str, Any]] | None:
    """Fields of ``data[pos:end]``; None when it is not a message, or (nested) over the budget."""
    if not top and not _well_formed(data, pos, end):
        return None
    fields: list[dict[str, Any]] = []
    while pos < end:
        tag, pos = _varint(data, pos, end)
        if tag < 0:
            return None
        number = tag >> 3
        wire = tag & 7
        if number < 1 or number > _MAX_FIELD or wire > 5 or _WIRE_NAMES[wire] is None:
            return None
        keep = budget.left > 0
        if keep:
            budget.left -= 1
        elif not top:
            return None  # out of budget inside a nested value: the caller shows it as bytes
        item: dict[str, Any] | None = None
        if wire == 0:
            value, pos = _varint(data, pos, end)
            if value < 0:
                return None
            if keep:
                item = {"field": number, "wire_type": "varint", "value": value}
                if value >= _I64_MIN:
                    item["signed"] = value - _U64
        elif wire == 1:
            if end - pos < 8:
                return None
            if keep:
                (value,) = _Q.unpack_from(data, pos)
                item = {"field": number, "wire_type": "i64", "value": value}
                item["double"] = _finite(_D.unpack_from(data, pos)[0])
                if value >= _I64_MIN:
                    item["signed"] = value - _U64
            pos += 8
        elif wire == 5:
            if end - pos < 4:
                return None
            if keep:
                (value,) = _I.unpack_from(data, pos)
                item = {"field": number, "wire_type": "i32", "value": value}
                item["float"] = _float32(data[pos : pos + 4])
                if value >= _I32_MIN:
                    item["signed"] = value - (1 << 32)
            pos += 4
        else:
            size, pos = _varint(data, pos, end)
            if size < 0 or size > end - pos:
                return None
            if keep:
                item = {"field": number, "wire_type": "len"}
                item.update(_len_value(data, pos, pos + size, depth, budget))
            pos += size
        if item is not None:
            fields.append(item)
    return fields


def _len_value(data: bytes, pos: int, end: int, depth: int, budget: _Budget) -> dict[str, Any]:
    chunk = data[pos:end]
    text = _text(chunk)
    if text is not None:
        return {"encoding": "text", "value": text}
    if depth > 0 and budget.left > 0 and end > pos:
        saved = budget.left
        nested = _message(data, pos, end, depth - 1, budget, False)
        if nested:
            return {"encoding": "message", "value": nested}
        budget.left = saved
    return {"encoding": "base64", "value": base64.b64encode(chunk).decode("ascii")}


def _well_formed(data: bytes, pos: int, end: int) -> bool:
    """Whether ``data[pos:end]`` is a sequence of valid fields (a cheap scan, builds nothing).

    Stricter than the top level, to keep binary blobs from passing as nested messages: tags and
    lengths must be minimal varints, as every protobuf encoder writes them.
    """
    while pos < end:
        start = pos
        tag, pos = _varint(data, pos, end)
        if tag < 0 or (data[pos - 1] == 0 and pos - start > 1):
            return False
        number = tag >> 3
        wire = tag & 7
        if number < 1 or number > _MAX_FIELD:
            return False
        if wire == 0:
            value, pos = _varint(data, pos, end)
            if value < 0:
                return False
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            start = pos
            size, pos = _varint(data, pos, end)
            if size < 0 or (data[pos - 1] == 0 and pos - start > 1):
                return False
            pos += size
        else:
            return False
        if pos > end:
            return False
    return True


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position); value -1 when the varint is cut or longer than 64 bits."""
    result = 0
    shift = 0
    while pos < end:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >= _U64:
                return -1, pos
            return result, pos
        shift += 7
        if shift >= 70:
            return -1, pos
    return -1, pos


def _text(chunk: bytes) -> str | None:
    """``chunk`` as a str when it is printable UTF-8 (or empty); else None."""
    if chunk.translate(None, _NOT_CONTROL):
        return None
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _finite(x: float) -> float | str:
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "nan"
    return "inf" if x > 0 else "-inf"


def _float32(raw: bytes) -> float | str:
    """The shortest decimal that reads back as the float32 ``raw``."""
    x: float = _F.unpack(raw)[0]
    if not math.isfinite(x):
        return _finite(x)
    for digits in range(1, 10):
        short = float(f"{x:.{digits}g}")
        if _F.pack(short) == raw:
            return short
    return x
