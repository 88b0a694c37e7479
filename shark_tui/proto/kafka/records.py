"""Kafka record data: record batches (magic 2) and the older message sets (magic 0 and 1).

``decode_records`` turns the bytes of a ``records`` field into::

    {"batches": [batch, ...], "record_count": int, *optional* "records_truncated": True,
     *optional* "incomplete": True, *optional* "error": str}

``incomplete`` marks a trailing batch that is cut short: brokers do that in Fetch responses
(the client asks again from its offset), and a capture cap or gap does it too. Compressed
batches (gzip, snappy - raw or xerial-framed -, lz4 frame, zstd) are decompressed with zlib and
cramjam, never past ``MAX_DECOMPRESSED`` bytes. At most ``Context.max_records`` records per
message are listed with their keys, values and headers (rendered like bodies, each capped at
``body_cap``); the others are counted.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Any, Final

import cramjam

from shark_tui.proto.bodies import render_body

if TYPE_CHECKING:
    from shark_tui.proto.kafka.schema import Context

#: Largest decompressed size of one batch (or wrapper message) that is decoded.
MAX_DECOMPRESSED: Final = 4 * 1024 * 1024
#: Batches listed per records field; the rest are counted in ``batches_not_listed``.
MAX_BATCHES: Final = 256

COMPRESSION: Final = ("none", "gzip", "snappy", "lz4", "zstd")
_XERIAL = b"\x82SNAPPY\x00"
_V2_HEAD = struct.Struct(">qiibIhiqqqhi")  # base offset .. record count (61 bytes)
_MSG_HEAD = struct.Struct(">qiIbb")  # offset, size, crc, magic, attributes


class RecordsError(Exception):
    pass


def decode_records(data: bytes, ctx: Context, *, cut: bool) -> dict[str, Any]:
    """The record data ``data`` (``cut``: bytes past it were not kept)."""
    out: dict[str, Any] = {"batches": [], "record_count": 0}
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 17:
            out["incomplete"] = True
            break
        size = int.from_bytes(data[pos + 8 : pos + 12], "big", signed=True)
        magic = data[pos + 16]
        if size < 0 or magic > 2:
            out["error"] = f"bad batch header at byte {pos}"
            break
        end = pos + 12 + size
        if end > n:
            out["incomplete"] = True
            break
        try:
            batch = _batch_v2(data, pos, end, ctx) if magic == 2 else _message(data, pos, end, ctx)
        except (RecordsError, IndexError, struct.error, ValueError) as exc:
            batch = {"magic": magic, "error": str(exc) or type(exc).__name__}
        out["record_count"] += batch.get("record_count", 0)
        if len(out["batches"]) < MAX_BATCHES:
            out["batches"].append(batch)
        else:
            out["batches_not_listed"] = out.get("batches_not_listed", 0) + 1
        pos = end
    if ctx.records_left <= 0 and out["record_count"]:
        listed = sum(len(b.get("records", ())) for b in out["batches"])
        if listed < out["record_count"]:
            out["records_truncated"] = True
    if cut:
        out["incomplete"] = True
    return out


def _body(raw: bytes | None, cap: int) -> dict[str, Any] | None:
    if raw is None:
        return None
    body = render_body(raw[:cap], cap=cap, truncated=len(raw) > cap)
    body["body_size"] = len(raw)
    return body


def _batch_v2(data: bytes, pos: int, end: int, ctx: Context) -> dict[str, Any]:
    if end - pos < _V2_HEAD.size:
        raise RecordsError("record batch header cut")
    (base_offset, length, leader_epoch, magic, _crc, attrs, last_delta, first_ts, max_ts,
     producer_id, producer_epoch, base_seq) = _V2_HEAD.unpack_from(data, pos)
    count = int.from_bytes(data[pos + 57 : pos + 61], "big", signed=True)
    codec = attrs & 7
    batch: dict[str, Any] = {
        "magic": magic,
        "base_offset": base_offset,
        "batch_length": length,
        "partition_leader_epoch": leader_epoch,
        "attributes": attrs,
        "compression": COMPRESSION[codec] if codec < 5 else f"unknown({codec})",
        "timestamp_type": "log_append" if attrs & 8 else "create",
        "transactional": bool(attrs & 16),
        "control": bool(attrs & 32),
        "last_offset_delta": last_delta,
        "base_timestamp": first_ts,
        "max_timestamp": max_ts,
        "producer_id": producer_id,
        "producer_epoch": producer_epoch,
        "base_sequence": base_seq,
        "record_count": max(count, 0),
        "records": [],
    }
    payload = data[pos + 61 : end]
    if codec:
        payload = _decompress(codec, payload)
    from shark_tui.proto.kafka.schema import DecodeError, Reader

    r = Reader(payload)
    records = batch["records"]
    try:
        for _ in range(max(count, 0)):
            if ctx.records_left <= 0:
                break
            records.append(_record_v2(r, base_offset, first_ts, ctx))
            ctx.records_left -= 1
    except DecodeError as exc:
        batch["error"] = f"bad record: {exc}"
    return batch


def _record_v2(r: Any, base_offset: int, first_ts: int, ctx: Context) -> dict[str, Any]:
    length = r.varint()
    end = r.pos + length
    if length < 0 or end > r.end:
        raise RecordsError("record longer than batch")
    r.i8()  # attributes, unused
    ts = first_ts + r.varint()
    offset = base_offset + r.varint()
    klen = r.varint()
    key = r.take(klen) if klen >= 0 else None
    vlen = r.varint()
    value = r.take(vlen) if vlen >= 0 else None
    headers = []
    for _ in range(r.varint()):
        hk = r.take(r.varint()).decode("utf-8", "replace")
        hlen = r.varint()
        hv = r.take(hlen) if hlen >= 0 else None
        headers.append([hk, _body(hv, ctx.body_cap)])
    r.pos = end
    return {
        "offset": offset,
        "timestamp": ts,
        "key": _body(key, ctx.body_cap),
        "value": _body(value, ctx.body_cap),
        "headers": headers,
    }


def _message(data: bytes, pos: int, end: int, ctx: Context, depth: int = 0) -> dict[str, Any]:
    """One message (magic 0/1) of a message set; a compressed wrapper lists its inner ones."""
    offset, _size, _crc, magic, attrs = _MSG_HEAD.unpack_from(data, pos)
    p = pos + _MSG_HEAD.size
    ts = None
    if magic == 1:
        ts = int.from_bytes(data[p : p + 8], "big", signed=True)
        p += 8
    key, p = _bytes32(data, p, end)
    value, p = _bytes32(data, p, end)
    codec = attrs & 7
    batch: dict[str, Any] = {
        "magic": magic,
        "base_offset": offset,
        "attributes": attrs,
        "compression": COMPRESSION[codec] if codec < 5 else f"unknown({codec})",
        "record_count": 0,
        "records": [],
    }
    if magic == 1:
        batch["timestamp_type"] = "log_append" if attrs & 8 else "create"
    if codec == 0:
        batch["record_count"] = 1
        if ctx.records_left > 0:
            ctx.records_left -= 1
            batch["records"].append({
                "offset": offset, "timestamp": ts, "key": _body(key, ctx.body_cap),
                "value": _body(value, ctx.body_cap), "headers": [],
            })
        return batch
    if value is None or depth > 0:
        raise RecordsError("bad compressed message")
    inner = _decompress(codec, value)
    q = 0
    while q + 12 <= len(inner):
        isize = int.from_bytes(inner[q + 8 : q + 12], "big", signed=True)
        qend = q + 12 + isize
        if isize < 14 or qend > len(inner):
            batch["error"] = "bad inner message"
            break
        sub = _message(inner, q, qend, ctx, depth + 1)
        batch["record_count"] += sub["record_count"]
        batch["records"].extend(sub["records"])
        q = qend
    if magic == 1 and batch["records"] and offset >= 0:
        # v1 wrappers carry the offset of their last inner message; inner offsets are relative.
        delta = offset - batch["records"][-1]["offset"]
        for rec in batch["records"]:
            rec["offset"] += delta
    return batch


def _bytes32(data: bytes, p: int, end: int) -> tuple[bytes | None, int]:
    if p + 4 > end:
        raise RecordsError("message cut")
    n = int.from_bytes(data[p : p + 4], "big", signed=True)
    if n < 0:
        return None, p + 4
    if p + 4 + n > end:
        raise RecordsError("message cut")
    return data[p + 4 : p + 4 + n], p + 4 + n


def _decompress(codec: int, data: bytes) -> bytes:
    try:
        if codec == 1:
            d = zlib.decompressobj(47)  # gzip or zlib header
            out = d.decompress(data, MAX_DECOMPRESSED)
            if d.unconsumed_tail:
                raise RecordsError(f"decompressed size over {MAX_DECOMPRESSED}")
            return out
        if codec == 2:
            if data.startswith(_XERIAL):
                parts = []
                p, total = 16, 0
                while p + 4 <= len(data):
                    n = int.from_bytes(data[p : p + 4], "big")
                    block = data[p + 4 : p + 4 + n]
                    total += _snappy_len(block)
                    if total > MAX_DECOMPRESSED:
                        raise RecordsError(f"decompressed size over {MAX_DECOMPRESSED}")
                    parts.append(bytes(cramjam.snappy.decompress_raw(block)))
                    p += 4 + n
                return b"".join(parts)
            _snappy_len(data)
            return bytes(cramjam.snappy.decompress_raw(data))
        if codec in (3, 4):
            buf = bytearray(MAX_DECOMPRESSED)
            mod = cramjam.lz4 if codec == 3 else cramjam.zstd
            n = mod.decompress_into(data, buf)
            return bytes(buf[:n])
    except RecordsError:
        raise
    except Exception as exc:
        raise RecordsError(f"failed to decompress {COMPRESSION[codec]}: {exc}") from None
    raise RecordsError(f"unknown compression {codec}")


def _snappy_len(block: bytes) -> int:
    n = int(cramjam.snappy.decompress_raw_len(block))
    if n > MAX_DECOMPRESSED:
        raise RecordsError(f"decompressed size over {MAX_DECOMPRESSED}")
    return n
