"""AMQP 0-9-1 for a passive observer: frames through pamqp, pairing per channel, sans-IO.

``AmqpDissector`` follows both directions of one TCP connection. Framing is read here (the
7-byte frame header and the frame-end octet ``0xCE``); the payload of method and content-header
frames is decoded by ``pamqp.frame.unmarshal``, so every class and method pamqp knows is
understood. Body frames are streamed (never buffered whole): their payload goes into the message
being assembled, kept up to ``body_cap`` bytes, counted in full. The protocol header
``AMQP\\x00\\x00\\x09\\x01`` is accepted (and counted) wherever a frame may start.

Messages: a method frame is a message; ``basic.publish``, ``basic.deliver``, ``basic.get-ok``
and ``basic.return`` carry content: the content header (properties, body size) and the body
frames that follow on the same channel are assembled into that message before it completes.

Pairing, per channel: a synchronous method (pamqp's ``synchronous`` and ``valid_responses``,
i.e. the spec's) waits for one of its responses from the other direction, whoever sent it:
``connection.start`` (server) pairs with ``connection.start-ok`` (client), ``queue.declare``
(client) with ``queue.declare-ok``, ``channel.close`` (either side) with ``channel.close-ok``,
``basic.get`` with ``basic.get-ok`` or ``basic.get-empty``. A synchronous method sent with
``nowait`` set expects nothing and is one-way. A ``channel.close`` (``connection.close``) ends
the requests the other side still has pending on that channel (on every channel): the one whose
method the close names (its ``class_id``/``method_id``) gets the close as its response, so a
``queue.declare`` refused with ``404 NOT_FOUND`` shows status 404; the others end with
``no_response``. The close still is an entry of its own, paired with its close-ok. Every
other method (``basic.publish``, ``basic.deliver``, ``basic.return``,
``basic.ack``/``nack``/``reject``, ``connection.blocked``...) is a one-way entry: in
``request`` when the client sent it, in ``response`` when the server did, ``error`` null. A
response with no pending request (joined mid-stream) is an entry with ``request`` null and
``error`` ``no_request``. Heartbeats are counted in ``stats``, not listed. Joined mid-stream, a
direction holds its first plausible frame until the next one confirms it; a response the other
direction sends meanwhile finds no request.

Timing: an exchange's ``ts`` is the capture time of the first byte of its request's method frame
(of the response's when there is no request); ``latency_ms`` runs from there to the first byte
of the response's method frame. Sizes are frame bytes on the wire (method, content header and
body frames; body bytes lost in a capture gap included).

Loss of sync: a direction that cannot read a frame (``midstream=True``, an unknown frame type,
a wrong frame-end octet, a method or header frame over ``MAX_FRAME_BYTES``, a capture gap
outside a body frame's payload) scans for a plausible frame: type 1, 2, 3 or 8, a size within
``MAX_SCAN_FRAME`` (0 for a heartbeat, a method id pamqp knows for a method frame), ``0xCE`` at
its end, and a second plausible frame right after it (or the protocol header). One ``Desynced``
event per episode is emitted when it ends (resynchronisation, close, finish) with the bytes
skipped; joining mid-stream exactly at a frame start skips nothing and emits nothing. Messages
whose content was being assembled in that direction end with error ``desynced``. A capture gap
inside a body frame's payload is skipped: the message ends ``truncated`` (``body_truncated``).
A frame that is framed correctly but that pamqp cannot decode is skipped and reported with a
``Desynced`` event (sync is kept; counted in ``stats["bad_frames"]``).

Emission: an exchange is emitted once: when its pair completes, when a one-way message
completes, at ``finish`` (pending requests get ``no_response``, messages cut mid-content
``truncated``), or when ``expire`` finds a request that has waited more than
``PENDING_TIMEOUT`` seconds. At most ``MAX_PENDING`` requests wait; one more emits the oldest with
``no_response`` (``stats["queue_dropped"]``). At most ``MAX_OPEN_CONTENTS`` messages per
direction are being assembled at once; one more ends the oldest as ``truncated``
(``stats["contents_dropped"]``).

Errors, in order of precedence: ``no_request``, ``no_response``, ``desynced``, ``truncated``.
No exception escapes a public method: a bug is caught, counted in ``stats["internal_errors"]``
and turns into a ``Desynced`` of that direction.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import re
import struct
from typing import Any

from pamqp import commands as _pcommands
from pamqp import frame as _pframe
from pamqp import header as _pheader
from pamqp import heartbeat as _pheartbeat
from pamqp.base import Frame as _PFrame

from shark_tui.proto.base import (
    CLIENT,
    DESYNCED,
    JSON,
    NO_REQUEST,
    NO_RESPONSE,
    PENDING_TIMEOUT,
    SERVER,
    TRUNCATED,
    Desynced,
    Event,
    Exchange,
    ExchangeCompleted,
)
from shark_tui.proto.bodies import render_body

#: Largest method or content-header frame payload that is buffered and decoded; a larger one
#: is treated as a framing error (RabbitMQ's default ``frame_max`` is 128 KiB).
MAX_FRAME_BYTES = 1024 * 1024
#: Largest frame payload that scanning accepts as plausible (it must buffer two such frames).
MAX_SCAN_FRAME = 256 * 1024
#: Requests waiting for their response, over all channels.
MAX_PENDING = 1024
#: Messages whose content is being assembled at once, per direction.
MAX_OPEN_CONTENTS = 256
#: Default bytes kept of each message body (``body_cap``); the rest counts in sizes only.
DEFAULT_BODY_CAP = 64 * 1024

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE

_FRAME_HEAD = struct.Struct(">BHI")
_METHOD_ID = struct.Struct(">I")

#: pamqp's method classes by their ``class-id << 16 | method-id``.
_METHODS: dict[int, type[_PFrame]] = dict(_pcommands.INDEX_MAPPING)
#: Methods that answer a synchronous request (by pamqp name, e.g. ``"Queue.DeclareOk"``).
_RESPONSES = frozenset(r for c in _METHODS.values() for r in c.valid_responses)
#: Methods followed by content (a content header and body frames).
_CONTENT = frozenset({"Basic.Publish", "Basic.Return", "Basic.Deliver", "Basic.GetOk"})
_CLOSES = frozenset({"Channel.Close", "Connection.Close"})
#: Arguments that make the summary, in order; the second group only when the first is empty.
_SUMMARY_KEYS = ("exchange", "source", "destination", "queue", "routing_key")
_SUMMARY_MORE = ("consumer_tag", "delivery_tag", "virtual_host")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")

# Per-direction parser states.
_FRAME = 0  # expecting a frame (or the protocol header)
_BODY = 1  # in a body frame's payload (``remaining`` bytes left)
_BODY_END = 2  # expecting the frame-end octet of a body frame
_SCAN = 3  # unsynchronised: looking for a plausible frame

_MIDSTREAM = "joined mid-stream"
#: Feeds whose capture time is remembered in one direction's buffer.
_MAX_MARKS = 64
_NAMES = ("client", "server")


def _spec_name(pamqp_name: str) -> tuple[str, str]:
    """``"Basic.GetOk"`` -> ``("basic", "get-ok")``: the spec's class and method names."""
    cls, _, meth = pamqp_name.partition(".")
    return cls.lower(), _CAMEL.sub("-", meth).lower()


def _jsonable(value: Any) -> Any:
    """A decoded AMQP field value as JSON-ready data."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


class _Msg:
    """One method (and its content, when it has one) seen in one direction."""

    __slots__ = (
        "args",
        "body",
        "body_size",
        "channel",
        "cls",
        "declared",
        "desynced",
        "direction",
        "has_content",
        "header_seen",
        "index",
        "meth",
        "name",
        "nowait",
        "properties",
        "size",
        "sync",
        "truncated",
        "ts",
        "valid",
    )

    def __init__(self, direction: int, channel: int, method: _PFrame, ts: float, size: int) -> None:
        self.direction = direction
        self.channel = channel
        self.name: str = method.name
        self.index: int = method.index
        self.cls, self.meth = _spec_name(self.name)
        self.args: JSON = {k: _jsonable(v) for k, v in method}
        self.sync = bool(method.synchronous) and bool(method.valid_responses)
        self.valid = frozenset(method.valid_responses)
        self.nowait = bool(self.args.get("nowait", False))
        self.ts = ts
        self.size = size
        self.has_content = self.name in _CONTENT
        self.header_seen = False
        self.properties: JSON = {}
        self.declared = 0
        self.body = bytearray()
        self.body_size = 0
        self.truncated = False
        self.desynced = False


class _Side:
    """The parser state of one direction."""

    __slots__ = (
        "body_msg",
        "buf",
        "contents",
        "direction",
        "episode",
        "marks",
        "remaining",
        "skipped",
        "state",
    )

    def __init__(self, direction: int, midstream: bool) -> None:
        self.direction = direction
        self.buf = bytearray()
        #: ``(offset in buf, capture time)`` of the feeds buf holds, at most ``_MAX_MARKS``.
        self.marks: list[tuple[int, float]] = []
        self.state = _SCAN if midstream else _FRAME
        self.remaining = 0  # body payload bytes left (state _BODY)
        self.body_msg: _Msg | None = None  # the message the current body frame feeds
        #: Messages whose content is being assembled, by channel (insertion order = age).
        self.contents: dict[int, _Msg] = {}
        self.episode: str | None = _MIDSTREAM if midstream else None
        self.skipped = 0


class AmqpDissector:
    """Sans-IO AMQP 0-9-1 dissector of one TCP connection (see the module docstring)."""

    def __init__(self, *, midstream: bool = False, body_cap: int = DEFAULT_BODY_CAP) -> None:
        self.body_cap = max(0, body_cap)
        #: Counters; never reset.
        self.stats: dict[str, int] = {
            "frames": 0,
            "method_frames": 0,
            "header_frames": 0,
            "body_frames": 0,
            "heartbeats": 0,
            "protocol_headers": 0,
            "messages": 0,
            "exchanges": 0,
            "desyncs": 0,
            "skipped_bytes": 0,
            "gap_bytes": 0,
            "bad_frames": 0,
            "orphan_frames": 0,
            "truncated_frames": 0,
            "truncated_bodies": 0,
            "queue_dropped": 0,
            "contents_dropped": 0,
            "expired": 0,
            "internal_errors": 0,
        }
        self._sides = (_Side(CLIENT, midstream), _Side(SERVER, midstream))
        #: Synchronous requests waiting for a response, oldest first.
        self._pending: list[_Msg] = []

    # -- the Dissector interface -------------------------------------------------------------

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER) or not data:
            return out
        side = self._sides[direction]
        try:
            base = len(side.buf)
            marks = side.marks
            if not base:
                marks.clear()
            if not marks or marks[-1][1] != ts:
                if len(marks) >= _MAX_MARKS:
                    marks.pop()  # a trickle of tiny feeds: the later bytes share a time
                marks.append((base, ts))
            side.buf += data
            self._run(side, ts, base, out)
        except Exception as exc:  # last line of defence: a bug must not stop the capture
            self._internal_error(side, exc, out)
        return out

    def gap(self, direction: int, size: int, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER) or size <= 0:
            return out
        side = self._sides[direction]
        try:
            self.stats["gap_bytes"] += size
            self._gap(side, size, out)
        except Exception as exc:
            self._internal_error(side, exc, out)
        return out

    def close(self, direction: int, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER):
            return out
        side = self._sides[direction]
        try:
            self._close(side, out)
        except Exception as exc:
            self._internal_error(side, exc, out)
        return out

    def finish(self, ts: float) -> list[Event]:
        out: list[Event] = []
        client, server = self._sides
        try:
            self._close(client, out)
            self._close(server, out)
            pending, self._pending = self._pending, []
            for req in pending:
                self._emit(req, None, out)
        except Exception as exc:
            self._internal_error(server, exc, out)
            self._pending.clear()
        return out

    def expire(self, now: float) -> list[Event]:
        out: list[Event] = []
        if not self._pending or self._pending[0].ts >= now - PENDING_TIMEOUT:
            return out
        try:
            limit = now - PENDING_TIMEOUT
            stale = [m for m in self._pending if m.ts < limit]
            self._pending = [m for m in self._pending if m.ts >= limit]
            for req in stale:
                self.stats["expired"] += 1
                self._emit(req, None, out)
        except Exception as exc:
            self._internal_error(self._sides[CLIENT], exc, out)
        return out

    def oldest_pending(self) -> float | None:
        times = [m.ts for m in self._pending[:1]]
        for side in self._sides:
            times.extend(m.ts for m in side.contents.values())
            if side.body_msg is not None:
                times.append(side.body_msg.ts)
            if side.state == _FRAME and side.buf:
                times.append(side.marks[0][1] if side.marks else 0.0)
        return min(times) if times else None

    def buffered(self) -> int:
        """Bytes held in both directions' frame buffers (not counting kept bodies)."""
        return len(self._sides[0].buf) + len(self._sides[1].buf)

    def pending(self) -> int:
        """Requests waiting for their response."""
        return len(self._pending)

    # -- framing -------------------------------------------------------------------------------

    def _run(self, side: _Side, ts: float, base: int, out: list[Event]) -> None:
        """Parse what ``side.buf`` holds; bytes from ``base`` on arrived at ``ts``."""
        buf = side.buf
        n = len(buf)
        pos = 0
        while pos < n:
            st = side.state
            if st == _BODY:
                take = min(side.remaining, n - pos)
                msg = side.body_msg
                if msg is not None:
                    room = self.body_cap - len(msg.body)
                    if room > 0:
                        msg.body += buf[pos : pos + min(take, room)]
                    msg.body_size += take
                    msg.size += take
                pos += take
                side.remaining -= take
                if not side.remaining:
                    side.state = _BODY_END
            elif st == _BODY_END:
                if buf[pos] != FRAME_END:
                    side.body_msg = None
                    self._desync(side, "bad frame end", out)
                    continue
                pos += 1
                msg, side.body_msg = side.body_msg, None
                side.state = _FRAME
                if msg is not None:
                    msg.size += 1
                    if msg.body_size >= msg.declared:
                        self._content_done(side, msg, out)
            elif st == _FRAME:
                used = self._frame(side, buf, pos, _ts_at(side.marks, pos, ts), out)
                if used < 0:
                    continue  # lost sync: state is now _SCAN
                if used == 0:
                    break  # incomplete
                pos += used
            else:  # _SCAN
                found = self._scan(buf, pos)
                if found < 0:  # wait for more bytes from -found - 1 on
                    keep = -found - 1
                    side.skipped += keep - pos
                    pos = keep
                    break
                side.skipped += found - pos
                pos = found
                self._resync(side, out)
        if pos:
            del buf[:pos]
            marks = side.marks
            kept = [(0, _ts_at(marks, pos, ts))]
            kept.extend((off - pos, t) for off, t in marks if off > pos)
            side.marks = kept

    def _frame(self, side: _Side, buf: bytearray, pos: int, ts: float, out: list[Event]) -> int:
        """Read one frame at ``pos``: bytes used, 0 when incomplete, -1 after a desync."""
        n = len(buf)
        if buf[pos] == 0x41:  # "A": the protocol header
            have = bytes(buf[pos : pos + 8])
            if PROTOCOL_HEADER.startswith(have) or (len(have) == 8 and have[:4] == b"AMQP"):
                if len(have) < 8:
                    return 0
                self.stats["protocol_headers"] += 1
                return 8
            self._desync(side, "unknown frame type", out)
            return -1
        if n - pos < 7:
            return 0
        ftype, channel, size = _FRAME_HEAD.unpack_from(buf, pos)
        if ftype not in (FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT):
            self._desync(side, f"unknown frame type {ftype}", out)
            return -1
        if ftype == FRAME_BODY:
            self.stats["frames"] += 1
            self.stats["body_frames"] += 1
            msg = side.contents.get(channel)
            if msg is None or not msg.header_seen:
                self.stats["orphan_frames"] += 1
                msg = None
            else:
                msg.size += 7
            side.body_msg = msg
            side.remaining = size
            side.state = _BODY if size else _BODY_END
            return 7
        if size > MAX_FRAME_BYTES:
            self._desync(side, "frame too large", out)
            return -1
        total: int = 8 + size
        if n - pos < total:
            return 0
        if buf[pos + total - 1] != FRAME_END:
            self._desync(side, "bad frame end", out)
            return -1
        self.stats["frames"] += 1
        try:
            _, _, value = _pframe.unmarshal(bytes(buf[pos : pos + total]))
        except Exception as exc:
            self.stats["bad_frames"] += 1
            out.append(
                Desynced(
                    direction=side.direction,
                    reason=f"undecodable frame: {type(exc).__name__}: {exc}",
                    skipped=total,
                )
            )
            if ftype in (FRAME_METHOD, FRAME_HEADER):
                self._cut_content(side, channel, out)
            return total
        if isinstance(value, _pheartbeat.Heartbeat):
            self.stats["heartbeats"] += 1
        elif isinstance(value, _pheader.ContentHeader):
            self.stats["header_frames"] += 1
            self._content_header(side, channel, value, total, out)
        elif isinstance(value, _PFrame):
            self.stats["method_frames"] += 1
            self._method(side, channel, value, ts, total, out)
        else:  # a protocol header cannot start with a frame type; anything else is odd
            self.stats["bad_frames"] += 1
        return total

    def _scan(self, buf: bytearray, pos: int) -> int:
        """Where a plausible frame starts at or after ``pos``; ``-p - 1`` to wait at ``p``."""
        n = len(buf)
        p = pos
        while p < n:
            verdict = self._plausible(buf, p)
            if verdict > 0:
                second = self._plausible(buf, p + verdict)
                if second > 0:
                    return p
                if second == 0:
                    return -p - 1
            elif verdict == 0:
                return -p - 1
            p += 1
        return -n - 1

    @staticmethod
    def _plausible(buf: bytearray, p: int) -> int:
        """Length of a plausible frame at ``p``; 0 when more bytes are needed; -1 when not."""
        n = len(buf)
        if p >= n:
            return 0
        first = buf[p]
        if first == 0x41:
            have = bytes(buf[p : p + 8])
            if not PROTOCOL_HEADER.startswith(have):
                return -1
            return 8 if len(have) == 8 else 0
        if first not in (FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT):
            return -1
        if n - p < 7:
            return 0
        ftype, channel, size = _FRAME_HEAD.unpack_from(buf, p)
        if ftype == FRAME_HEARTBEAT:
            if size or channel:
                return -1
        elif size > MAX_SCAN_FRAME:
            return -1
        elif ftype == FRAME_METHOD:
            if size < 4:
                return -1
            if n - p < 11:
                return 0
            if _METHOD_ID.unpack_from(buf, p + 7)[0] not in _METHODS:
                return -1
        elif ftype == FRAME_HEADER and size < 14:
            return -1
        if n - p < size + 8:
            return 0
        return size + 8 if buf[p + 7 + size] == FRAME_END else -1

    # -- loss of sync ----------------------------------------------------------------------------

    def _desync(self, side: _Side, reason: str, out: list[Event]) -> None:
        """Lose sync in ``side``: end the messages it was assembling and scan from here."""
        self._cut_all(side, out, desynced=True)
        if side.episode is None:
            side.episode = reason
            side.skipped = 0
        side.state = _SCAN
        side.remaining = 0

    def _resync(self, side: _Side, out: list[Event]) -> None:
        """``side`` found a frame start: end its desync episode."""
        side.state = _FRAME
        self._end_episode(side, out)

    def _end_episode(self, side: _Side, out: list[Event]) -> None:
        reason = side.episode
        if reason is None:
            return
        skipped = side.skipped
        side.episode = None
        side.skipped = 0
        if reason == _MIDSTREAM and not skipped:
            return
        self.stats["desyncs"] += 1
        self.stats["skipped_bytes"] += skipped
        out.append(Desynced(direction=side.direction, reason=reason, skipped=skipped))

    def _gap(self, side: _Side, size: int, out: list[Event]) -> None:
        if side.state == _BODY:
            take = min(size, side.remaining)
            msg = side.body_msg
            if msg is not None:
                msg.truncated = True
                msg.body_size += take
                msg.size += take
            side.remaining -= take
            size -= take
            if not side.remaining:
                side.state = _BODY_END
            if not size:
                return
        # Anything else: what is buffered cannot be joined to what follows the gap.
        side.body_msg = None
        if side.state != _SCAN:
            self._desync(side, "capture gap", out)
        side.skipped += len(side.buf) + size
        side.buf.clear()

    def _close(self, side: _Side, out: list[Event]) -> None:
        """``side`` ended: a partial frame is lost, content being assembled is cut."""
        if side.state == _SCAN:
            side.skipped += len(side.buf)
            side.buf.clear()
            side.state = _FRAME
            self._end_episode(side, out)
        elif side.buf or side.state != _FRAME:
            self.stats["truncated_frames"] += 1
            msg = side.body_msg
            if msg is not None:
                msg.truncated = True
            elif side.buf or side.state == _BODY:  # a frame that is lost, not just cut
                lost = len(side.buf) + (side.remaining if side.state == _BODY else 0)
                self.stats["desyncs"] += 1
                out.append(
                    Desynced(direction=side.direction, reason="ended mid-frame", skipped=lost)
                )
            side.body_msg = None
            side.buf.clear()
            side.state = _FRAME
            side.remaining = 0
        self._cut_all(side, out, desynced=False)

    def _cut_all(self, side: _Side, out: list[Event], *, desynced: bool) -> None:
        """End every message ``side`` was assembling (``desynced`` or ``truncated``)."""
        if side.body_msg is not None and side.body_msg.channel not in side.contents:
            side.body_msg = None
        for channel in list(side.contents):
            msg = side.contents[channel]
            if desynced:
                msg.desynced = True
            self._cut_content(side, channel, out)
        side.body_msg = None

    def _cut_content(self, side: _Side, channel: int, out: list[Event]) -> None:
        """The content of ``channel`` in ``side`` stops here: complete its message as cut."""
        msg = side.contents.get(channel)
        if msg is None:
            return
        msg.truncated = True
        if side.body_msg is msg:
            side.body_msg = None
        self._content_done(side, msg, out)

    def _internal_error(self, side: _Side, exc: Exception, out: list[Event]) -> None:
        self.stats["internal_errors"] += 1
        self.stats["desyncs"] += 1
        out.append(
            Desynced(
                direction=side.direction,
                reason=f"internal error: {type(exc).__name__}: {exc}",
                skipped=len(side.buf),
            )
        )
        side.buf.clear()
        side.body_msg = None
        side.contents.clear()
        side.state = _SCAN
        side.remaining = 0
        side.episode = None
        side.skipped = 0

    # -- messages ------------------------------------------------------------------------------

    def _method(
        self, side: _Side, channel: int, method: _PFrame, ts: float, size: int, out: list[Event]
    ) -> None:
        # A method on a channel whose content is incomplete ends that content.
        self._cut_content(side, channel, out)
        msg = _Msg(side.direction, channel, method, ts, size)
        if not msg.has_content:
            self._complete(msg, out)
            return
        contents = side.contents
        if len(contents) >= MAX_OPEN_CONTENTS:
            self.stats["contents_dropped"] += 1
            self._cut_content(side, next(iter(contents)), out)
        contents[channel] = msg

    def _content_header(
        self, side: _Side, channel: int, value: _pheader.ContentHeader, size: int, out: list[Event]
    ) -> None:
        msg = side.contents.get(channel)
        if msg is None or msg.header_seen:
            self.stats["orphan_frames"] += 1
            if msg is not None:
                self._cut_content(side, channel, out)
            return
        msg.header_seen = True
        msg.size += size
        msg.declared = int(value.body_size)
        props = value.properties
        # pamqp leaves unset properties None (and ``cluster_id`` ""): keep what was sent.
        msg.properties = {
            k: _jsonable(v)
            for k, v in (props if props is not None else ())
            if v is not None and not (k == "cluster_id" and v == "")
        }
        if msg.declared == 0:
            self._content_done(side, msg, out)

    def _content_done(self, side: _Side, msg: _Msg, out: list[Event]) -> None:
        if side.contents.get(msg.channel) is msg:
            del side.contents[msg.channel]
        if msg.body_size < msg.declared:
            msg.truncated = True
        if msg.truncated:
            self.stats["truncated_bodies"] += 1
        self._complete(msg, out)

    def _complete(self, msg: _Msg, out: list[Event]) -> None:
        """``msg`` is whole (or as whole as it will get): pair it or emit it."""
        self.stats["messages"] += 1
        name = msg.name
        pending = self._pending
        if name in _RESPONSES:
            for i, req in enumerate(pending):
                if (
                    req.channel == msg.channel
                    and req.direction != msg.direction
                    and name in req.valid
                ):
                    del pending[i]
                    self._emit(req, msg, out)
                    return
            self._emit(None, msg, out)
            return
        if name in _CLOSES:
            everything = name == "Connection.Close"
            answered = [
                r
                for r in pending
                if r.direction != msg.direction
                and r.name not in _CLOSES
                and (everything or r.channel == msg.channel)
            ]
            if answered:
                self._pending = pending = [r for r in pending if r not in answered]
                cause = (_int(msg.args.get("class_id")) << 16) | _int(msg.args.get("method_id"))
                for req in answered:
                    # The close names the method it refuses; the others never get an answer.
                    self._emit(req, msg if req.index == cause else None, out)
        if msg.sync and not msg.nowait:
            if len(pending) >= MAX_PENDING:
                self.stats["queue_dropped"] += 1
                self._emit(pending.pop(0), None, out)
            pending.append(msg)
            return
        self._emit(msg, None, out, one_way=True)

    # -- entries ---------------------------------------------------------------------------------

    def _object(self, msg: _Msg) -> JSON:
        obj: JSON = {
            "channel": msg.channel,
            "class": msg.cls,
            "method": msg.meth,
            "sender": _NAMES[msg.direction],
            "arguments": msg.args,
        }
        if msg.has_content:
            obj["properties"] = msg.properties
            coding = msg.properties.get("content_encoding")
            cut = msg.truncated or len(msg.body) < msg.body_size
            obj.update(
                render_body(
                    bytes(msg.body),
                    content_encoding=coding if isinstance(coding, str) else None,
                    cap=self.body_cap,
                    truncated=cut,
                )
            )
            obj["body_size"] = msg.body_size
        return obj

    def _emit(
        self, req: _Msg | None, resp: _Msg | None, out: list[Event], *, one_way: bool = False
    ) -> None:
        first = req if req is not None else resp
        assert first is not None
        if one_way and first.direction == SERVER:
            req, resp = None, first
        exchange = Exchange(proto="amqp", ts=first.ts, method=f"{first.cls}.{first.meth}")
        exchange.summary = _summary(req, resp)
        exchange.status = _status(req, resp)
        if req is not None:
            exchange.request = self._object(req)
            exchange.request_size = req.size
        if resp is not None:
            exchange.response = self._object(resp)
            exchange.response_size = resp.size
            if req is not None:
                exchange.latency_ms = max(0.0, (resp.ts - req.ts) * 1000.0)
        msgs = [m for m in (req, resp) if m is not None]
        if not one_way and req is None:
            exchange.error = NO_REQUEST
        elif not one_way and resp is None:
            exchange.error = NO_RESPONSE
        elif any(m.desynced for m in msgs):
            exchange.error = DESYNCED
        elif any(m.truncated for m in msgs):
            exchange.error = TRUNCATED
        self.stats["exchanges"] += 1
        out.append(ExchangeCompleted(exchange=exchange))


def _summary(req: _Msg | None, resp: _Msg | None) -> str:
    """``exchange=logs routing_key=info``, ``queue=q``, a close's reply text..."""
    sources = [m.args for m in (req, resp) if m is not None]

    def pick(keys: tuple[str, ...]) -> list[str]:
        parts = []
        for key in keys:
            values = [a[key] for a in sources if key in a]
            if not values:
                continue
            value = next((v for v in values if v not in ("", None)), values[0])
            if isinstance(value, str):
                text = value if value else '""'
            else:
                text = str(value).lower() if isinstance(value, bool) else str(value)
            parts.append(f"{'vhost' if key == 'virtual_host' else key}={text}")
        return parts

    parts = pick(_SUMMARY_KEYS) or pick(_SUMMARY_MORE)
    for args in sources:
        text = args.get("reply_text")
        if isinstance(text, str) and text:
            parts.append(text)
            break
    return " ".join(parts)


def _ts_at(marks: list[tuple[int, float]], pos: int, default: float) -> float:
    """Capture time of the byte at ``pos`` of a buffer with these ``marks``."""
    found = default
    for off, t in marks:
        if off > pos:
            break
        found = t
    return found


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _status(req: _Msg | None, resp: _Msg | None) -> int | None:
    """The reply code of the exchange: the response's, else the request's, else None."""
    for m in (resp, req):
        if m is not None:
            code = m.args.get("reply_code")
            if isinstance(code, int) and not isinstance(code, bool):
                return code
    return None
