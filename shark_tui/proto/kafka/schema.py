"""Kafka API keys, versions and a schema-driven body decoder (pure; no I/O).

The message layouts come from Apache Kafka's JSON definitions (``schema_data``). ``decode``
walks a layout for one API version: fixed-width integers, (compact) strings, bytes and arrays,
uuids, nested structs, and in flexible versions the tagged-field section ending every struct.
Field names become snake_case keys; the topic/partition arrays of Produce and Fetch are named
``topics``/``partitions`` like everywhere else (see ``_RENAMES``). A ``records`` field is handed
to ``records.decode_records``.

Versions older than the oldest one Apache Kafka still defines (e.g. Produce v0-v2, Fetch v0-v3)
are decoded with the same field version ranges, which describe them too.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Final

from shark_tui.proto.bodies import render_body
from shark_tui.proto.kafka.records import decode_records
from shark_tui.proto.kafka.schema_data import API

#: Elements listed per array; the rest are parsed (to keep the framing) but not listed.
MAX_ARRAY_ITEMS: Final = 1000
#: Nesting depth of structs decoded (the schemas are far shallower).
MAX_DEPTH: Final = 16

#: API keys whose layout is not in ``schema_data`` (inter-broker, KRaft, share groups...).
_EXTRA_NAMES: Final = {
    4: "LeaderAndIsr", 5: "StopReplica", 6: "UpdateMetadata", 7: "ControlledShutdown",
    38: "CreateDelegationToken", 39: "RenewDelegationToken", 40: "ExpireDelegationToken",
    41: "DescribeDelegationToken", 52: "Vote", 53: "BeginQuorumEpoch", 54: "EndQuorumEpoch",
    56: "AlterPartition", 58: "Envelope", 59: "FetchSnapshot", 62: "BrokerRegistration",
    63: "BrokerHeartbeat", 64: "UnregisterBroker", 67: "AllocateProducerIds",
    68: "ConsumerGroupHeartbeat", 69: "ConsumerGroupDescribe", 70: "ControllerRegistration",
    71: "GetTelemetrySubscriptions", 72: "PushTelemetry", 73: "AssignReplicasToDirs",
    76: "ShareGroupHeartbeat", 77: "ShareGroupDescribe", 78: "ShareFetch", 79: "ShareAcknowledge",
    80: "AddRaftVoter", 81: "RemoveRaftVoter", 82: "UpdateRaftVoter",
}
#: API key -> name, for every key of the protocol spec.
API_NAMES: Final[dict[int, str]] = {**_EXTRA_NAMES, **{k: v[0] for k, v in API.items()}}
#: Highest version plausible for a key without a layout (framing and midstream checks).
_UNKNOWN_MAX_VERSION: Final = 20

#: Kafka field names shown under another key (all APIs): Produce's topic/partition arrays.
_RENAMES: Final = {
    "TopicData": "topics",
    "PartitionData": "partitions",
    "PartitionResponses": "partitions",
}
#: ``Responses`` is the topic array of Produce and Fetch responses.
_TOPIC_RESPONSES: Final = frozenset({0, 1})

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_snake_cache: dict[str, str] = {}


class DecodeError(Exception):
    """The bytes do not fit the layout (too short, a negative length, bad varint...)."""


def max_version(api_key: int) -> int:
    """Highest version shown with its body; later ones give ``partial`` entries."""
    spec = API.get(api_key)
    return spec[2] if spec is not None else _UNKNOWN_MAX_VERSION


def known_key(api_key: int) -> bool:
    return api_key in API_NAMES


def api_name(api_key: int) -> str:
    return API_NAMES.get(api_key, f"ApiKey{api_key}")


def is_flexible(api_key: int, version: int) -> bool | None:
    """Whether ``version`` of ``api_key`` uses compact encodings and tagged fields.

    None when the API key or version is unknown.
    """
    spec = API.get(api_key)
    if spec is None:
        return None
    return version >= spec[3]


def has_layout(api_key: int, version: int) -> bool:
    spec = API.get(api_key)
    return spec is not None and 0 <= version <= spec[2]


class Reader:
    """A cursor over one message; every read raises ``DecodeError`` past the end."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise DecodeError("message too short")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def _fixed(self, st: struct.Struct) -> Any:
        if self.pos + st.size > self.end:
            raise DecodeError("message too short")
        (value,) = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return value

    def i8(self) -> int:
        return int(self._fixed(_I8))

    def i16(self) -> int:
        return int(self._fixed(_I16))

    def u16(self) -> int:
        return int(self._fixed(_U16))

    def i32(self) -> int:
        return int(self._fixed(_I32))

    def i64(self) -> int:
        return int(self._fixed(_I64))

    def f64(self) -> float:
        return float(self._fixed(_F64))

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            if self.pos >= self.end:
                raise DecodeError("message too short")
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise DecodeError("varint too long")

    def varint(self) -> int:
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def remaining(self) -> int:
        return self.end - self.pos

    def length(self, flexible: bool, wide: bool) -> int:
        """A string/bytes/array length: -1 for null."""
        if flexible:
            n = self.uvarint() - 1
        else:
            n = self.i32() if wide else self.i16()
        if n < -1:
            raise DecodeError("negative length")
        return n

    def string(self, flexible: bool) -> str | None:
        n = self.length(flexible, wide=False)
        return None if n < 0 else self.take(n).decode("utf-8", "replace")

    def tagged(self) -> list[tuple[int, bytes]]:
        count = self.uvarint()
        if count > self.remaining():
            raise DecodeError("bad tagged field count")
        out = []
        for _ in range(count):
            tag = self.uvarint()
            out.append((tag, self.take(self.uvarint())))
        return out


def snake(name: str) -> str:
    key = _snake_cache.get(name)
    if key is None:
        key = _RENAMES.get(name) or _SNAKE.sub("_", name).lower()
        _snake_cache[name] = key
    return key


class Context:
    """What one decode needs: caps and the records' rendering budget."""

    __slots__ = ("body_cap", "max_records", "records_left", "truncated")

    def __init__(self, *, body_cap: int, max_records: int, truncated: bool) -> None:
        self.body_cap = body_cap
        self.max_records = max_records
        self.records_left = max_records
        #: The message was cut (a cap or a gap): a short read is expected, not an error.
        self.truncated = truncated


def decode(
    api_key: int, version: int, response: bool, r: Reader, ctx: Context
) -> dict[str, Any]:
    """The body of ``api_key``/``version`` at ``r`` as a JSON-ready dict.

    Raises ``DecodeError`` when the bytes do not fit; on a cut message (``ctx.truncated``) the
    fields decoded before the cut are returned with ``"body_truncated": True``.
    """
    spec = API[api_key]
    fields = spec[5] if response else spec[4]
    out: dict[str, Any] = {}
    flexible = version >= spec[3]
    top = api_key in _TOPIC_RESPONSES and response
    try:
        _struct(fields, version, flexible, r, ctx, out, 0, top)
    except DecodeError:
        if not ctx.truncated:
            raise
        out["body_truncated"] = True
    return out


def _struct(
    fields: tuple[Any, ...],
    version: int,
    flexible: bool,
    r: Reader,
    ctx: Context,
    out: dict[str, Any],
    depth: int,
    top: bool = False,
) -> None:
    if depth > MAX_DEPTH:
        raise DecodeError("nesting too deep")
    tagged: dict[int, tuple[Any, ...]] = {}
    for f in fields:
        if not f[2] <= version <= f[3]:
            continue
        if f[6] >= 0:
            if flexible:
                tagged[f[6]] = f
            continue
        key = "topics" if top and f[0] == "Responses" else snake(f[0])
        out[key] = None  # a cut message shows where it was cut
        out[key] = _value(f, version, flexible, r, ctx, depth)
    if flexible:
        for tag, raw in r.tagged():
            f = tagged.get(tag)
            if f is None:
                out.setdefault("unknown_tagged_fields", []).append(tag)
                continue
            sub = Reader(raw)
            out[snake(f[0])] = _value(f, version, True, sub, ctx, depth)


def _value(
    f: tuple[Any, ...], version: int, flexible: bool, r: Reader, ctx: Context, depth: int
) -> Any:
    kind: str = f[1]
    if kind.startswith("[]"):
        n = r.length(flexible, wide=True)
        if n < 0:
            return None
        if n > r.remaining():
            raise DecodeError("array longer than message")
        items: list[Any] = []
        elem = kind[2:]
        for i in range(n):
            if elem == "struct":
                item: Any = {}
                if i < MAX_ARRAY_ITEMS:
                    items.append(item)
                _struct(f[7], version, flexible, r, ctx, item, depth + 1)
            else:
                item = _scalar(elem, flexible, r, ctx)
                if i < MAX_ARRAY_ITEMS:
                    items.append(item)
        if n > MAX_ARRAY_ITEMS:
            items.append({"items_not_listed": n - MAX_ARRAY_ITEMS})
        return items
    if kind == "struct":
        if f[4] <= version <= f[5] and r.i8() < 0:
            return None
        item = {}
        _struct(f[7], version, flexible, r, ctx, item, depth + 1)
        return item
    return _scalar(kind, flexible, r, ctx)


def _scalar(kind: str, flexible: bool, r: Reader, ctx: Context) -> Any:
    if kind == "int32":
        return r.i32()
    if kind == "int16":
        return r.i16()
    if kind == "int64":
        return r.i64()
    if kind == "int8":
        return r.i8()
    if kind == "string":
        return r.string(flexible)
    if kind == "bool":
        return r.i8() != 0
    if kind == "uuid":
        return r.take(16).hex()
    if kind == "uint16":
        return r.u16()
    if kind == "float64":
        return r.f64()
    if kind == "records":
        n = r.length(flexible, wide=True)
        if n < 0:
            return None
        avail = min(n, r.remaining())
        if avail < n and not ctx.truncated:
            raise DecodeError("records longer than message")
        data = r.take(avail)
        out = decode_records(data, ctx, cut=avail < n)
        out["size"] = n
        return out
    if kind == "bytes":
        n = r.length(flexible, wide=True)
        if n < 0:
            return None
        raw = r.take(n)
        body = render_body(raw[: ctx.body_cap], cap=ctx.body_cap, truncated=n > ctx.body_cap)
        body["body_size"] = n
        return body
    raise DecodeError(f"unknown field type {kind}")
