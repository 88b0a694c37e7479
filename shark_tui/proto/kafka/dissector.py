"""Kafka for a passive observer: framing, request/response pairing and bodies, sans-IO.

Every Kafka message is a 4-byte big-endian size and that many bytes. A request starts with
header v0/v1 (api_key, api_version, correlation_id, client_id) or v2 (the same plus tagged
fields) for flexible versions; a response starts with header v0 (correlation_id) or v1 (plus
tagged fields) - ApiVersions responses always use v0. Responses carry no API key: requests are
remembered by correlation id (with key and version) so that their response can be decoded.
Produce with ``acks=0`` gets no response: it is emitted at once as a one-way entry.

Bodies are decoded from Apache Kafka's layouts (``schema``), records by ``records``. A version
without a layout, an API key without one, or a body that does not fit the layout still gives an
entry with the API name, version and correlation id, and ``error: "partial"``. Topic ids (Fetch
v13+ and others) are resolved to names learnt from Metadata responses on the same connection.

Caps: a message larger than ``MAX_MESSAGE_BYTES`` keeps its first ``MAX_MESSAGE_BYTES`` bytes,
the rest is skipped (its size prefix says how much) and it is decoded as far as it goes, with
error ``truncated`` and a ``Truncated`` event. A size above ``MAX_FRAME_SIZE`` is not believed.

Loss of sync: ``midstream=True`` (or a size prefix that is not believable, or a capture gap
that is not inside a message whose size is known) makes a direction scan for a message start:
a plausible size and header (known API key and version, sane client id for requests; a pending
correlation id, or a plausible chain, for responses), followed by a second such message (or by
the end of the stream). One ``Desynced`` per episode, with the bytes skipped, when it ends. A
gap inside a message whose size is known skips the rest of that message, which ends
``truncated``; the framing stays.

Timing: ``ts`` is the capture time of the first byte of the request; ``latency_ms`` runs to the
first byte of the response. Sizes are bytes on the wire including the size prefix.

Emission: a pair when its response is complete; at ``finish`` and ``expire`` requests without
response with ``no_response``; a response whose request was not seen gets ``no_request`` (its
body cannot be decoded without the API key). At most ``MAX_PENDING`` requests wait.

No exception escapes a public method: a bug is caught, counted in ``stats["internal_errors"]``
and turns into a ``Desynced`` of that direction.
"""

from __future__ import annotations

import base64
from collections import OrderedDict, deque
from typing import Any, Final

from shark_tui.proto.base import (
    CLIENT,
    DESYNCED,
    JSON,
    NO_REQUEST,
    NO_RESPONSE,
    PARTIAL,
    PENDING_TIMEOUT,
    SERVER,
    TRUNCATED,
    Desynced,
    Event,
    Exchange,
    ExchangeCompleted,
    Truncated,
)
from shark_tui.proto.kafka import schema
from shark_tui.proto.kafka.schema import Context, DecodeError, Reader

#: Bytes of one message kept for decoding; the rest is skipped and the message is truncated.
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: A size prefix above this is not a Kafka message (brokers default to ~1 MiB, max ~100 MiB).
MAX_FRAME_SIZE: Final = 256 * 1024 * 1024
#: Requests waiting for their response; past it the oldest is emitted with ``no_response``.
MAX_PENDING: Final = 1024
#: Records listed (with key, value, headers) per message; the others are counted.
MAX_RECORDS: Final = 128
#: Bytes kept while scanning for a message start; older ones are dropped (counted as skipped).
MAX_SCAN_BYTES: Final = 1024 * 1024
#: Topic ids remembered per connection (from Metadata responses).
MAX_TOPIC_IDS: Final = 10000
#: Correlation ids of acks=0 Produce requests remembered, to recognise a response sent anyway.
MAX_ONE_WAY: Final = 64
#: Default cap of each key, value, header value or bytes field.
DEFAULT_BODY_CAP: Final = 64 * 1024

_SYNC = 0
_SCAN = 1
_SKIP = 2
_MIN_REQUEST = 10  # api_key, api_version, correlation_id, client_id length
_MIN_RESPONSE = 4
_MAX_API_KEY = 1000  # in sync, an api key or version above this is not Kafka
_PRODUCE = 0
_METADATA = 3
_API_VERSIONS = 18


class _Side:
    __slots__ = ("buf", "episode", "lost", "need", "scan_reason", "skip", "start_ts", "state")

    def __init__(self, midstream: bool) -> None:
        self.buf = bytearray()
        self.state = _SCAN if midstream else _SYNC
        self.scan_reason = "joined mid-stream" if midstream else ""
        self.episode = 0  # bytes skipped in the current scan episode
        self.skip = 0  # bytes still to drop of a message kept in part
        self.need = 0  # wire size of that message
        self.lost = False  # that message lost bytes to a gap
        self.start_ts = 0.0


class _Pending:
    __slots__ = ("api_key", "api_version", "correlation_id", "error", "request", "size", "ts")

    def __init__(self, api_key: int, api_version: int, correlation_id: int) -> None:
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id
        self.request: JSON = {}
        self.size = 0
        self.error: str | None = None
        self.ts = 0.0


class KafkaDissector:
    """One TCP connection of the Kafka protocol, both directions."""

    def __init__(
        self,
        *,
        midstream: bool = False,
        body_cap: int = DEFAULT_BODY_CAP,
        topic_ids: dict[str, str] | None = None,
    ) -> None:
        self.body_cap = max(0, body_cap)
        self._sides = (_Side(midstream), _Side(midstream))
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        # Topic id -> name, learnt from Metadata responses; pass one dict to the dissectors of
        # every connection of a capture to resolve ids across connections.
        self._topic_ids: dict[str, str] = {} if topic_ids is None else topic_ids
        #: Per direction: the kept prefix of a message being skipped, and its start time.
        self._kept: dict[int, tuple[bytes, float]] = {}
        #: Scan episodes that ended, reported before the next message.
        self._pending_desync: list[tuple[int, str, int]] = []
        #: Correlation ids of recent one-way (acks=0) Produce requests.
        self._one_way: deque[int] = deque(maxlen=MAX_ONE_WAY)
        self.stats: dict[str, int] = {
            "requests": 0,
            "responses": 0,
            "exchanges": 0,
            "one_way": 0,
            "partial": 0,
            "trailing_zero_bytes": 0,
            "no_request": 0,
            "truncated_messages": 0,
            "desyncs": 0,
            "skipped_bytes": 0,
            "gap_bytes": 0,
            "queue_dropped": 0,
            "expired": 0,
            "unexpected_responses": 0,
            "internal_errors": 0,
        }

    # -- the Dissector interface -------------------------------------------------------------

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        out: list[Event] = []
        side = self._sides[direction & 1]
        try:
            if not side.buf:
                side.start_ts = ts
            side.buf += data
            self._run(direction & 1, ts, out, final=False)
        except Exception as exc:
            self._internal_error(direction & 1, exc, out)
        return out

    def gap(self, direction: int, size: int, ts: float) -> list[Event]:
        out: list[Event] = []
        try:
            self._gap(direction & 1, max(0, size), ts, out)
        except Exception as exc:
            self._internal_error(direction & 1, exc, out)
        return out

    def close(self, direction: int, ts: float) -> list[Event]:
        out: list[Event] = []
        try:
            self._close(direction & 1, ts, out)
        except Exception as exc:
            self._internal_error(direction & 1, exc, out)
        return out

    def finish(self, ts: float) -> list[Event]:
        out: list[Event] = []
        for d in (CLIENT, SERVER):
            try:
                self._close(d, ts, out)
            except Exception as exc:
                self._internal_error(d, exc, out)
        try:
            while self._pending:
                _, p = self._pending.popitem(last=False)
                self._emit(p, None, None, 0, ts, out)
        except Exception as exc:
            self._pending.clear()
            self._internal_error(CLIENT, exc, out)
        return out

    def expire(self, now: float) -> list[Event]:
        out: list[Event] = []
        try:
            for cid in [c for c, p in self._pending.items() if now - p.ts > PENDING_TIMEOUT]:
                p = self._pending.pop(cid)
                self.stats["expired"] += 1
                self._emit(p, None, None, 0, now, out)
        except Exception as exc:
            self._internal_error(CLIENT, exc, out)
        return out

    def oldest_pending(self) -> float | None:
        times = [p.ts for p in self._pending.values()]
        side = self._sides[CLIENT]
        if side.buf and side.state != _SCAN:
            times.append(side.start_ts)
        return min(times) if times else None

    def buffered(self) -> int:
        return len(self._sides[0].buf) + len(self._sides[1].buf)

    def pending(self) -> int:
        return len(self._pending)

    # -- framing -----------------------------------------------------------------------------

    def _run(self, d: int, ts: float, out: list[Event], *, final: bool) -> None:
        side = self._sides[d]
        buf = side.buf
        while True:
            if side.state == _SKIP:
                if len(buf) <= side.skip:
                    side.skip -= len(buf)
                    del buf[:]
                    if side.skip:
                        return
                else:
                    del buf[: side.skip]
                    side.skip = 0
                self._skipped_message_done(d, ts, out)
                side.start_ts = ts
                continue
            if side.state == _SCAN:
                found = self._scan(d, final)
                if found < 0:
                    return
                continue
            if len(buf) < 4:
                return
            size = int.from_bytes(buf[:4], "big", signed=True)
            if size < (_MIN_REQUEST if d == CLIENT else _MIN_RESPONSE) or size > MAX_FRAME_SIZE:
                self._desync(d, f"implausible message size {size}", out)
                continue
            if d == CLIENT and len(buf) >= 8 and not self._plausible_request(buf, 0, size):
                self._desync(d, "not a Kafka request header", out)
                continue
            total = 4 + size
            if len(buf) >= total:
                msg = bytes(buf[:total])
                del buf[:total]
                self._message(d, msg, total, side.start_ts, ts, False, out)
                side.start_ts = ts
                continue
            if len(buf) >= MAX_MESSAGE_BYTES + 4:
                # Too big to keep: decode the prefix once the rest has gone by.
                side.state = _SKIP
                side.need = total
                side.skip = total - len(buf)
                side.lost = False
                dropped = side.skip
                self.stats["truncated_messages"] += 1
                out.append(Truncated(direction=d, what="message", dropped=dropped))
                self._kept[d] = (bytes(buf[: 4 + MAX_MESSAGE_BYTES]), side.start_ts)
                del buf[:]
                continue
            return

    def _skipped_message_done(self, d: int, ts: float, out: list[Event]) -> None:
        side = self._sides[d]
        kept = self._kept.pop(d, None)
        side.state = _SYNC
        if kept is not None:
            self._message(d, kept[0], side.need, kept[1], ts, True, out)

    def _plausible_request(self, buf: bytearray | bytes, pos: int, size: int) -> bool:
        key = int.from_bytes(buf[pos + 4 : pos + 6], "big", signed=True)
        ver = int.from_bytes(buf[pos + 6 : pos + 8], "big", signed=True)
        return 0 <= key < _MAX_API_KEY and 0 <= ver < _MAX_API_KEY

    def _candidate(self, d: int, buf: bytearray, pos: int) -> int:
        """Wire size of a plausible message at ``pos`` (complete in ``buf``), else -1."""
        if pos + 12 > len(buf):
            return -1
        size = int.from_bytes(buf[pos : pos + 4], "big", signed=True)
        if size < (_MIN_REQUEST if d == CLIENT else _MIN_RESPONSE) or size > MAX_FRAME_SIZE:
            return -1
        if pos + 4 + size > len(buf):
            return -1
        if d == CLIENT:
            key = int.from_bytes(buf[pos + 4 : pos + 6], "big", signed=True)
            ver = int.from_bytes(buf[pos + 6 : pos + 8], "big", signed=True)
            if not (schema.known_key(key) and 0 <= ver <= schema.max_version(key)):
                return -1
            cid = int.from_bytes(buf[pos + 8 : pos + 12], "big", signed=True)
            if cid < 0:
                return -1
            n = int.from_bytes(buf[pos + 12 : pos + 14], "big", signed=True)
            if n < -1 or 10 + max(n, 0) > size:
                return -1
        else:
            cid = int.from_bytes(buf[pos + 4 : pos + 8], "big", signed=True)
            if cid < 0:
                return -1
        return 4 + size

    def _scan(self, d: int, final: bool) -> int:
        """Drop bytes up to a plausible message start; -1 when none is (yet) found."""
        side = self._sides[d]
        buf = side.buf
        pos = 0
        limit = len(buf) - 12
        while pos <= limit:
            n = self._candidate(d, buf, pos)
            if n > 0:
                nxt = pos + n
                m = self._candidate(d, buf, nxt)
                if m > 0:
                    ok = self._chained(d, buf, pos, nxt)
                else:
                    ok = final and nxt == len(buf) and self._known_cid(d, buf, pos)
                if ok:
                    self._resync(d, pos)
                    return pos
            pos += 1
        keep = 4 + MAX_MESSAGE_BYTES
        if len(buf) > MAX_SCAN_BYTES and len(buf) > keep:
            drop = len(buf) - keep
            del buf[:drop]
            side.episode += drop
            self.stats["skipped_bytes"] += drop
        if final:
            side.episode += len(buf)
            self.stats["skipped_bytes"] += len(buf)
            del buf[:]
        return -1

    def _known_cid(self, d: int, buf: bytearray, pos: int) -> bool:
        """A response answers a request seen; a request always qualifies here."""
        if d == CLIENT or not self._pending:
            return True
        return int.from_bytes(buf[pos + 4 : pos + 8], "big", signed=True) in self._pending

    def _chained(self, d: int, buf: bytearray, a: int, b: int) -> bool:
        """Two messages in a row: correlation ids rise (responses: both answer requests seen)."""
        off = 8 if d == CLIENT else 4
        ca = int.from_bytes(buf[a + off : a + off + 4], "big", signed=True)
        cb = int.from_bytes(buf[b + off : b + off + 4], "big", signed=True)
        if not ca < cb <= ca + 1024:
            return False
        return self._known_cid(d, buf, a) and self._known_cid(d, buf, b)

    def _resync(self, d: int, pos: int) -> None:
        side = self._sides[d]
        del side.buf[:pos]
        side.episode += pos
        self.stats["skipped_bytes"] += pos
        side.state = _SYNC
        self._pending_desync.append((d, side.scan_reason, side.episode))
        side.episode = 0

    def _flush_desyncs(self, out: list[Event]) -> None:
        for d, reason, skipped in self._pending_desync:
            if skipped:
                self.stats["desyncs"] += 1
                out.append(Desynced(direction=d, reason=reason, skipped=skipped))
        self._pending_desync = []

    def _desync(self, d: int, reason: str, out: list[Event]) -> None:
        side = self._sides[d]
        side.state = _SCAN
        side.scan_reason = reason
        side.episode = 0

    def _gap(self, d: int, size: int, ts: float, out: list[Event]) -> None:
        side = self._sides[d]
        self.stats["gap_bytes"] += size
        if size == 0:
            return
        if side.state == _SKIP:
            if size <= side.skip:
                side.skip -= size
                side.lost = True
                if side.skip == 0:
                    self._skipped_message_done(d, ts, out)
                return
            size -= side.skip
            side.skip = 0
            side.lost = True
            self._skipped_message_done(d, ts, out)
        elif side.state == _SYNC and len(side.buf) >= 4:
            total = 4 + int.from_bytes(side.buf[:4], "big", signed=True)
            missing = total - len(side.buf)
            if missing > 0 and total <= MAX_FRAME_SIZE + 4:
                kept = bytes(side.buf[: 4 + MAX_MESSAGE_BYTES])
                self._kept[d] = (kept, side.start_ts)
                del side.buf[:]
                side.need = total
                side.lost = True
                side.state = _SKIP
                self.stats["truncated_messages"] += 1
                if size < missing:
                    side.skip = missing - size
                    return
                size -= missing
                side.skip = 0
                self._skipped_message_done(d, ts, out)
                if size == 0:
                    return
        # The framing is lost: what is buffered cannot be placed any more.
        dropped = len(side.buf)
        self.stats["skipped_bytes"] += dropped
        self.stats["desyncs"] += 1
        out.append(Desynced(direction=d, reason="capture gap", skipped=dropped))
        del side.buf[:]
        side.state = _SCAN
        side.scan_reason = "capture gap"
        side.episode = 0

    def _close(self, d: int, ts: float, out: list[Event]) -> None:
        side = self._sides[d]
        if side.state == _SCAN:
            self._scan(d, True)
            if side.state == _SYNC:
                self._run(d, ts, out, final=True)
                self._flush_desyncs(out)
        if side.state == _SCAN:
            side.episode += len(side.buf)
            self.stats["skipped_bytes"] += len(side.buf)
            del side.buf[:]
            if side.episode:
                self.stats["desyncs"] += 1
                out.append(Desynced(direction=d, reason=side.scan_reason, skipped=side.episode))
            side.episode = 0
            return
        if side.state == _SKIP:
            side.lost = True
            self._skipped_message_done(d, ts, out)
        elif side.buf:
            # A message cut by the end of the stream.
            if len(side.buf) >= 12:
                self.stats["truncated_messages"] += 1
                msg = bytes(side.buf)
                need = 4 + int.from_bytes(msg[:4], "big", signed=True)
                side.lost = True
                self._message(d, msg, need, side.start_ts, ts, True, out)
            else:
                self.stats["skipped_bytes"] += len(side.buf)
            del side.buf[:]

    def _internal_error(self, d: int, exc: Exception, out: list[Event]) -> None:
        self.stats["internal_errors"] += 1
        self.stats["desyncs"] += 1
        side = self._sides[d]
        skipped = len(side.buf)
        self.stats["skipped_bytes"] += skipped
        side.buf = bytearray()
        side.state = _SCAN
        side.scan_reason = "internal error"
        side.episode = 0
        self._kept.pop(d, None)
        out.append(
            Desynced(direction=d, reason=f"internal error: {type(exc).__name__}", skipped=skipped)
        )

    # -- messages ----------------------------------------------------------------------------

    def _message(
        self, d: int, msg: bytes, wire: int, ts: float, now: float, cut: bool, out: list[Event]
    ) -> None:
        self._flush_desyncs(out)
        if len(msg) < (4 + _MIN_REQUEST if d == CLIENT else 4 + _MIN_RESPONSE):
            # Not even a header survived (a gap right after the size prefix).
            self.stats["skipped_bytes"] += len(msg)
            out.append(Truncated(direction=d, what="message header", dropped=wire - len(msg)))
            return
        if d == CLIENT:
            self._request(msg, wire, ts, cut, out)
        else:
            self._response(msg, wire, ts, cut, out)

    def _ctx(self, cut: bool) -> Context:
        return Context(body_cap=self.body_cap, max_records=MAX_RECORDS, truncated=cut)

    def _request(self, msg: bytes, wire: int, ts: float, cut: bool, out: list[Event]) -> None:
        self.stats["requests"] += 1
        r = Reader(msg, 4)
        key, ver, cid = r.i16(), r.i16(), r.i32()
        p = _Pending(key, ver, cid)
        p.ts = ts
        p.size = wire
        req: JSON = {"api_key": key, "api_version": ver, "correlation_id": cid, "client_id": None}
        p.request = req
        error: str | None = TRUNCATED if cut else None
        try:
            req["client_id"] = r.string(False)
            flexible = schema.is_flexible(key, ver)
            if flexible:
                r.tagged()
            if schema.has_layout(key, ver):
                req.update(schema.decode(key, ver, False, r, self._ctx(cut)))
                if r.remaining() and not cut:
                    raise DecodeError(f"{r.remaining()} bytes left over")
                self._resolve(req)
            elif not cut:
                error = PARTIAL
        except DecodeError as exc:
            if not cut:
                error = PARTIAL
            req["decode_error"] = str(exc)
        p.error = error
        if error == PARTIAL:
            self.stats["partial"] += 1
        if key == _PRODUCE and req.get("acks") == 0:
            self.stats["one_way"] += 1
            self._one_way.append(cid)
            self._emit(p, None, None, 0, ts, out)
            return
        old = self._pending.pop(cid, None)
        if old is not None:
            self._emit(old, None, None, 0, ts, out)
        self._pending[cid] = p
        if len(self._pending) > MAX_PENDING:
            _, first = self._pending.popitem(last=False)
            self.stats["queue_dropped"] += 1
            self._emit(first, None, None, 0, ts, out)

    def _response(self, msg: bytes, wire: int, ts: float, cut: bool, out: list[Event]) -> None:
        self.stats["responses"] += 1
        r = Reader(msg, 4)
        cid = r.i32()
        resp: JSON = {"correlation_id": cid}
        p = self._pending.pop(cid, None)
        if p is None and cid in self._one_way:
            # Some brokers (Tansu) answer Produce with acks=0 anyway: the entry is out already.
            self.stats["unexpected_responses"] += 1
            return
        if p is None:
            self.stats["no_request"] += 1
            ex = Exchange(
                proto="kafka", ts=ts, method=None, summary="", status=None,
                response_size=wire, response=resp, error=NO_REQUEST,
            )
            self.stats["exchanges"] += 1
            out.append(ExchangeCompleted(exchange=ex))
            return
        error: str | None = TRUNCATED if cut else None
        key, ver = p.api_key, p.api_version
        if (
            key == _API_VERSIONS
            and ver > 0
            and r.end - r.pos >= 2
            and int.from_bytes(r.data[r.pos : r.pos + 2], "big") == _UNSUPPORTED_VERSION
        ):
            # A broker that does not know the request's version answers in the v0 layout
            # (the client then retries with a version from that list).
            ver = 0
            unsupported = True
        else:
            unsupported = False
        resp = {"api_key": key, "api_version": ver, "correlation_id": cid}
        try:
            if key != _API_VERSIONS and schema.is_flexible(key, ver):
                r.tagged()
            if schema.has_layout(key, ver):
                resp.update(schema.decode(key, ver, True, r, self._ctx(cut)))
                left = r.remaining()
                if left and not cut:
                    if left <= 2 and not any(r.data[r.pos : r.end]):
                        # An extra empty tagged-field section (librdkafka's mock cluster ends
                        # Metadata v13 with one): nothing is lost.
                        self.stats["trailing_zero_bytes"] += 1
                    else:
                        raise DecodeError(f"{left} bytes left over")
                self._resolve(resp)
                if key == _METADATA:
                    self._learn_topic_ids(resp)
            elif not cut:
                error = PARTIAL
        except DecodeError as exc:
            if unsupported:
                # The error code is what the client acts on; brokers differ in the list after
                # it (librdkafka's mock cluster writes a layout of its own).
                resp["error_code"] = _UNSUPPORTED_VERSION
            elif not cut:
                error = PARTIAL
            resp["decode_error"] = str(exc)
        self._emit(p, resp, error, wire, ts, out)

    def _learn_topic_ids(self, resp: JSON) -> None:
        for t in resp.get("topics") or ():
            if (
                isinstance(t, dict)
                and t.get("topic_id")
                and t.get("name")
                and (len(self._topic_ids) < MAX_TOPIC_IDS or t["topic_id"] in self._topic_ids)
            ):
                self._topic_ids[t["topic_id"]] = t["name"]

    def _resolve(self, obj: Any) -> None:
        """Topic ids become readable: ``topic_id`` as Kafka prints it, ``topic`` when known."""
        if isinstance(obj, dict):
            tid = obj.get("topic_id")
            if isinstance(tid, str) and len(tid) == 32:
                obj["topic_id"] = _uuid_text(tid)
                name = self._topic_ids.get(obj["topic_id"])
                if name is not None and not obj.get("topic") and not obj.get("name"):
                    obj["topic"] = name
            for v in obj.values():
                if isinstance(v, (dict, list)):
                    self._resolve(v)
        elif isinstance(obj, list):
            for v in obj:
                if isinstance(v, (dict, list)):
                    self._resolve(v)

    def _emit(
        self,
        p: _Pending,
        resp: JSON | None,
        resp_error: str | None,
        resp_size: int,
        resp_ts: float,
        out: list[Event],
    ) -> None:
        req = p.request
        one_way = resp is None and p.api_key == _PRODUCE and req.get("acks") == 0
        errors = [p.error, resp_error]
        if resp is None and not one_way:
            errors.insert(0, NO_RESPONSE)
        error = next(
            (e for e in (NO_RESPONSE, DESYNCED, TRUNCATED, PARTIAL) if e in errors), None
        )
        topics = _topics(req) or (_topics(resp) if resp is not None else [])
        ex = Exchange(
            proto="kafka",
            ts=p.ts,
            method=schema.api_name(p.api_key),
            summary=", ".join(topics),
            status=_status(resp) if resp is not None else None,
            latency_ms=max(0.0, (resp_ts - p.ts) * 1000.0) if resp is not None else None,
            request_size=p.size,
            response_size=resp_size if resp is not None else None,
            request=req,
            response=resp,
            error=error,
        )
        self.stats["exchanges"] += 1
        out.append(ExchangeCompleted(exchange=ex))


#: Kafka's error code UNSUPPORTED_VERSION.
_UNSUPPORTED_VERSION = 35


def _uuid_text(hexid: str) -> str:
    """Kafka prints a Uuid as URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(bytes.fromhex(hexid)).decode("ascii").rstrip("=")


def _topics(obj: JSON | None) -> list[str]:
    """Topic names of a request/response body, in order, once each."""
    found: list[str] = []
    if obj is None:
        return found

    def walk(node: Any, depth: int) -> None:
        if depth > 8 or not isinstance(node, dict):
            return
        for k, v in node.items():
            if k in ("topics", "topic_names") and isinstance(v, list):
                for t in v:
                    if isinstance(t, str):
                        name: Any = t
                    elif isinstance(t, dict):
                        name = t.get("name") or t.get("topic") or t.get("topic_name")
                    else:
                        continue
                    if isinstance(name, str) and name and name not in found:
                        found.append(name)
            elif isinstance(v, list):
                for item in v:
                    walk(item, depth + 1)
            elif isinstance(v, dict):
                walk(v, depth + 1)

    walk(obj, 0)
    return found


def _status(resp: JSON) -> int:
    top = resp.get("error_code")
    if isinstance(top, int) and top:
        return top

    def first(node: Any, depth: int) -> int:
        if depth > 10:
            return 0
        if isinstance(node, dict):
            code = node.get("error_code")
            if isinstance(code, int) and code:
                return code
            for v in node.values():
                if isinstance(v, (dict, list)):
                    c = first(v, depth + 1)
                    if c:
                        return c
        elif isinstance(node, list):
            for v in node:
                c = first(v, depth + 1)
                if c:
                    return c
        return 0

    return first(resp, 0)
