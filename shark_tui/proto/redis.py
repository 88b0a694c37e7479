"""Redis RESP2 and RESP3 for a passive observer: own sans-IO parser, typed values, pairing.

``RedisDissector`` follows both directions of one TCP connection. Its parser is protocol-agnostic
(RESP2 and RESP3 type bytes are understood at any time) and keeps each value's type: simple
string ``+``, error ``-``, integer ``:``, bulk ``$`` (null ``$-1``), array ``*`` (null ``*-1``),
null ``_``, boolean ``#``, double ``,``, big number ``(``, blob error ``!``, verbatim string ``=``,
map ``%``, set ``~``, attribute ``|`` (attached to the value that follows it, never a reply of its
own) and push ``>``. Clients send arrays of bulk strings, or inline commands (a line that does not
start with ``*``; split like ``sdssplitargs``, empty lines ignored as Redis does). RESP3
streamed strings and aggregates (``$?``, ``*?``) are not supported: they desynchronise.

Pairing is by order (Redis answers strictly in order; pipelining and MULTI/EXEC need nothing
more: ``+QUEUED`` pairs with each queued command, EXEC's array with EXEC). Special cases:

- SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE of N channels expect N confirmations, UNSUBSCRIBE /
  PUNSUBSCRIBE / SUNSUBSCRIBE of N channels N, and without arguments one per channel this
  connection is subscribed to (tracked from confirmations; at least one). A reply that is not a
  confirmation of the right kind ends the command early (an error reply, or a wrong count after
  joining mid-stream).
- Pushes are one-way entries: every RESP3 ``>`` value that is not an awaited confirmation, and in
  RESP2, ``message``/``pmessage``/``smessage`` arrays while subscribed (or while no command waits),
  confirmations no command waits for, and the lines after ``MONITOR``.
- ``HELLO 3`` switches the reply protocol (its own reply is already RESP3), ``HELLO 2`` and
  ``RESET`` switch back; only pushes and the ``resp`` key of responses depend on it.
- ``CLIENT REPLY OFF`` / ``SKIP`` are honoured: commands the server will not answer are emitted at
  once with ``error: null``, no response and ``no_reply: true`` in the request.

Timing: ``ts`` is the capture time of the first byte of the command; ``latency_ms`` runs to the
first byte of its (first) reply. Sizes are bytes on the wire, all replies of a multi-reply
command included, bytes lost to a gap inside a bulk included.

Caps: a bulk value keeps at most ``body_cap`` bytes (its ``size`` says how long it was, the rest
is skipped and it is marked ``truncated``); a message keeps at most ``MAX_MESSAGE_KEPT`` bulk bytes
and ``MAX_NODES`` values; an aggregate keeps ``MAX_ELEMENTS`` elements (``truncated`` then);
nesting deeper than ``MAX_DEPTH``, a line longer than ``MAX_LINE``, an inline command longer than
``MAX_INLINE``, lengths and counts above ``MAX_BULK_LEN`` / ``MAX_COUNT`` lose sync.

Loss of sync (``midstream=True``, a malformed line, a cap above, a capture gap outside a bulk
payload) makes the direction scan for a plausible start at a line start: ``*N\\r\\n$`` for the
client, a type byte followed by a valid line for the server. One ``Desynced`` event per episode,
emitted when it ends, with the bytes skipped (joining exactly at a message start emits nothing).
A gap inside a bulk payload is skipped: the value is ``truncated`` and so is the entry.

Never inventing pairings: after joining mid-stream or losing sync in the client direction, the
next command is a barrier: a reply whose first byte was captured before that command's first
byte cannot answer it and becomes a ``no_request`` entry. Losing sync in the server direction
loses an unknown number of replies: every command sent up to then is emitted without its reply
(``no_response``; the one whose reply was cut gets the part seen and ``desynced``) and the next
command is a barrier. Replies with no command waiting are ``no_request`` entries. A command
expired by ``expire`` (no reply after ``PENDING_TIMEOUT``) is emitted with ``no_response`` but
keeps its place, so a late reply (a blocking command) is discarded (``stats["late_replies"]``)
instead of shifting the pairing. At most ``MAX_PENDING`` commands wait; one more emits the oldest
and discards its reply when it comes.

Errors, in order of precedence: ``no_request``, ``no_response``, ``desynced``, ``truncated``.
Redis error replies are not errors of the entry: they are its ``status``. No exception escapes a
public method: a bug is caught, counted in ``stats["internal_errors"]`` and turns into a
``Desynced`` of that direction.
"""

from __future__ import annotations

import base64
import math
import re
from collections import deque
from typing import Any

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
    Truncated,
)

#: Default bytes kept of each bulk value (``body_cap``); the rest counts in sizes only.
DEFAULT_BODY_CAP = 64 * 1024
#: Bulk bytes kept per message (command or reply), all values together.
MAX_MESSAGE_KEPT = 1024 * 1024
#: Values kept per message; later ones are counted, not kept (their aggregate is ``truncated``).
MAX_NODES = 4096
#: Elements kept per aggregate (pairs for a map or attribute).
MAX_ELEMENTS = 1024
#: Deepest nesting of aggregates; deeper loses sync.
MAX_DEPTH = 32
#: Longest type line (simple string, error, number...), CRLF excluded.
MAX_LINE = 64 * 1024
#: Longest inline command line (Redis's PROTO_INLINE_MAX_SIZE).
MAX_INLINE = 64 * 1024
#: Largest bulk length accepted (Redis's proto-max-bulk-len tops out at 512 MB by default).
MAX_BULK_LEN = 1 << 32
#: Largest aggregate count accepted.
MAX_COUNT = 1 << 31
#: Longest line looked at while scanning for a message start.
MAX_SCAN_LINE = 4096
#: Commands waiting for replies; past it the oldest is emitted.
MAX_PENDING = 1024
#: Subscribed channels tracked per kind (for UNSUBSCRIBE without arguments).
MAX_TRACKED_CHANNELS = 10000
#: Longest ``summary`` and error ``status`` kept.
MAX_SUMMARY = 256

# Per-direction parser states.
_VALUE = 0  # expecting a type line (or an inline command)
_PAYLOAD = 1  # in a bulk payload
_PAYLOAD_END = 2  # expecting the CRLF after a bulk payload
_SCAN = 3  # unsynchronised

_MIDSTREAM = "joined mid-stream"

_SCALARS = {
    ord("+"): "simple",
    ord("-"): "error",
    ord(":"): "integer",
    ord("_"): "null",
    ord("#"): "boolean",
    ord(","): "double",
    ord("("): "big_number",
}
_BULKS = {ord("$"): "bulk", ord("!"): "blob_error", ord("="): "verbatim"}
_AGGREGATES = {
    ord("*"): "array",
    ord("~"): "set",
    ord("%"): "map",
    ord("|"): "attribute",
    ord(">"): "push",
}
_TYPE_BYTES = frozenset([*_SCALARS, *_BULKS, *_AGGREGATES])
_INT = re.compile(rb"[+-]?[0-9]{1,20}")
_BIG = re.compile(rb"[+-]?[0-9]+")
_LEN = re.compile(rb"-?[0-9]{1,19}")
_DOUBLE = re.compile(rb"[+-]?(?:inf|nan|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.)")
_MONITOR_LINE = re.compile(r"[0-9]+\.[0-9]+ \[")
_CLIENT_START = re.compile(rb"\*[1-9][0-9]{0,8}\r\n\$")
_CLIENT_PREFIX = re.compile(rb"\*(?:[1-9][0-9]{0,8}(?:\r\n?)?)?")

_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL_BYTES)

#: Confirmation kinds of the pub/sub commands, and the channel group each one changes.
_CONFIRM = {
    "SUBSCRIBE": "subscribe",
    "PSUBSCRIBE": "psubscribe",
    "SSUBSCRIBE": "ssubscribe",
    "UNSUBSCRIBE": "unsubscribe",
    "PUNSUBSCRIBE": "punsubscribe",
    "SUNSUBSCRIBE": "sunsubscribe",
}
_GROUP = {
    "subscribe": ("channel", True),
    "unsubscribe": ("channel", False),
    "psubscribe": ("pattern", True),
    "punsubscribe": ("pattern", False),
    "ssubscribe": ("shard", True),
    "sunsubscribe": ("shard", False),
}
_MESSAGE_KINDS = {"message": 3, "pmessage": 4, "smessage": 3}
#: Commands whose first key is not their first argument: the index of the key (or of numkeys).
_EVAL_LIKE = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})


class _Bulk:
    """A bulk-like value whose payload is being read."""

    __slots__ = ("crlf_left", "kept", "kind", "limit", "remaining", "size", "truncated")

    def __init__(self, kind: str, size: int, limit: int) -> None:
        self.kind = kind
        self.size = size
        self.limit = limit
        self.remaining = size
        self.kept = bytearray()
        self.truncated = False
        self.crlf_left = 2


class _Frame:
    """An aggregate whose elements are being read."""

    __slots__ = ("attr", "count", "dropped", "items", "kind", "limit", "remaining")

    def __init__(self, kind: str, count: int) -> None:
        self.kind = kind
        self.count = count
        self.remaining = count * 2 if kind in ("map", "attribute") else count
        self.limit = MAX_ELEMENTS * 2 if kind in ("map", "attribute") else MAX_ELEMENTS
        self.items: list[JSON] = []
        self.dropped = 0
        self.attr: list[Any] | None = None


class _Msg:
    """One command or reply being parsed."""

    __slots__ = ("argc", "attr", "desynced", "inline", "kept", "nodes", "truncated", "ts", "wire")

    def __init__(self, ts: float) -> None:
        self.ts = ts
        self.wire = 0
        self.kept = 0
        self.nodes = 0
        self.truncated = False  # bytes lost to a gap
        self.desynced = False
        self.inline = False
        self.argc = 0
        self.attr: list[Any] | None = None


class _Cmd:
    """A command waiting for (or holding) its replies."""

    __slots__ = (
        "args",
        "barrier",
        "confirm",
        "emitted",
        "expected",
        "name",
        "no_reply",
        "replies",
        "request",
        "resp",
        "resp_desynced",
        "resp_truncated",
        "resp_ts",
        "resp_wire",
        "truncated",
        "ts",
        "wire",
    )

    def __init__(self, msg: _Msg, name: str, args: list[str], request: JSON) -> None:
        self.ts = msg.ts
        self.wire = msg.wire
        self.truncated = msg.truncated
        self.name = name
        self.args = args
        self.request = request
        self.expected = 1  # replies expected; -1: one per subscribed channel (unknown yet)
        self.confirm: str | None = None  # pub/sub confirmation kind expected
        self.no_reply = False
        self.barrier = False
        self.replies: list[JSON] = []
        self.resp_ts: float | None = None
        self.resp_wire = 0
        self.resp_truncated = False
        self.resp_desynced = False
        self.resp = 2
        self.emitted = False

    def done(self) -> bool:
        return self.expected >= 0 and len(self.replies) >= self.expected

    def need(self) -> int:
        return max(1, self.expected) - len(self.replies) if self.expected else 0


class _Side:
    """The parser state of one direction."""

    __slots__ = (
        "at_line_start",
        "buf",
        "bulk",
        "direction",
        "episode",
        "msg",
        "res_ts",
        "skipped",
        "stack",
        "state",
    )

    def __init__(self, direction: int, midstream: bool) -> None:
        self.direction = direction
        self.buf = bytearray()
        self.res_ts = 0.0  # capture time of buf[0]
        self.state = _SCAN if midstream else _VALUE
        self.stack: list[_Frame] = []
        self.bulk: _Bulk | None = None
        self.msg: _Msg | None = None
        self.at_line_start = True
        self.episode: str | None = _MIDSTREAM if midstream else None
        self.skipped = 0


class RedisDissector:
    """Sans-IO Redis (RESP2/RESP3) dissector of one TCP connection (see the module docstring)."""

    def __init__(
        self, *, midstream: bool = False, body_cap: int = DEFAULT_BODY_CAP, resp: int = 2
    ) -> None:
        self.body_cap = max(0, body_cap)
        #: The RESP version replies are in (2 until ``HELLO 3`` is answered; ``resp`` when
        #: dissection starts after the connection's ``HELLO``, from a checkpoint).
        self.resp = resp
        #: Counters; never reset.
        self.stats: dict[str, int] = {
            "commands": 0,
            "inline_commands": 0,
            "replies": 0,
            "pushes": 0,
            "exchanges": 0,
            "no_request": 0,
            "desyncs": 0,
            "skipped_bytes": 0,
            "gap_bytes": 0,
            "cut_messages": 0,
            "dropped_elements": 0,
            "line_overflows": 0,
            "queue_dropped": 0,
            "expired": 0,
            "late_replies": 0,
            "lost_replies": 0,
            "ignored_commands": 0,
            "internal_errors": 0,
        }
        self._sides = (_Side(CLIENT, midstream), _Side(SERVER, midstream))
        self._queue: deque[_Cmd] = deque()
        self._next_barrier = midstream
        self._discard = 0  # replies still to come for commands dropped from the queue
        self._reply_off = False
        self._skip_next = False
        self._monitoring = False
        self._subscribed = False
        self._channels: dict[str, set[str]] = {"channel": set(), "pattern": set(), "shard": set()}

    # -- the Dissector interface -------------------------------------------------------------

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER) or not data:
            return out
        side = self._sides[direction]
        try:
            base = len(side.buf)
            if not base:
                side.res_ts = ts
            side.buf += data
            self._run(side, ts, base, out)
        except Exception as exc:  # last line of defence: a bug must not stop the capture
            self._internal_error(side, exc, ts, out)
        return out

    def gap(self, direction: int, size: int, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER) or size <= 0:
            return out
        side = self._sides[direction]
        try:
            self.stats["gap_bytes"] += size
            self._gap(side, size, ts, out)
        except Exception as exc:
            self._internal_error(side, exc, ts, out)
        return out

    def close(self, direction: int, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER):
            return out
        side = self._sides[direction]
        try:
            self._close(side, ts, out)
        except Exception as exc:
            self._internal_error(side, exc, ts, out)
        return out

    def finish(self, ts: float) -> list[Event]:
        out: list[Event] = []
        client, server = self._sides
        try:
            self._close(server, ts, out)
            self._close(client, ts, out)
            while self._queue:
                self._emit(self._queue.popleft(), out)
        except Exception as exc:
            self._internal_error(server, exc, ts, out)
            self._queue.clear()
        return out

    def expire(self, now: float) -> list[Event]:
        out: list[Event] = []
        limit = now - PENDING_TIMEOUT
        try:
            for cmd in self._queue:
                if cmd.ts >= limit:
                    break
                if not cmd.emitted and not cmd.replies:
                    self.stats["expired"] += 1
                    self._emit(cmd, out)
        except Exception as exc:
            self._internal_error(self._sides[SERVER], exc, now, out)
        return out

    def oldest_pending(self) -> float | None:
        first = next((cmd.ts for cmd in self._queue if not cmd.emitted), None)
        times = [] if first is None else [first]
        for side in self._sides:
            if side.msg is not None:
                times.append(side.msg.ts)
        return min(times) if times else None

    @property
    def pending(self) -> int:
        """Commands waiting in the pairing queue (expired ones included)."""
        return len(self._queue)

    # -- the parser ------------------------------------------------------------------------------

    def _run(self, side: _Side, ts: float, base: int, out: list[Event]) -> None:
        """Parse what ``side.buf`` holds; bytes from ``base`` on arrived at ``ts``."""
        buf = side.buf
        n = len(buf)
        pos = 0
        is_client = side.direction == CLIENT
        while pos < n:
            st = side.state
            if st == _PAYLOAD:
                b = side.bulk
                msg = side.msg
                assert b is not None and msg is not None
                take = min(b.remaining, n - pos)
                room = b.limit - len(b.kept)
                if room > 0:
                    b.kept += buf[pos : pos + min(room, take)]
                b.remaining -= take
                msg.wire += take
                pos += take
                if not b.remaining:
                    side.state = _PAYLOAD_END
            elif st == _PAYLOAD_END:
                b = side.bulk
                msg = side.msg
                assert b is not None and msg is not None
                want = 13 if b.crlf_left == 2 else 10
                if buf[pos] != want:
                    self._desync(side, "no CRLF after bulk payload", ts, out)
                    continue
                pos += 1
                msg.wire += 1
                b.crlf_left -= 1
                if not b.crlf_left:
                    side.bulk = None
                    side.state = _VALUE
                    self._value_done(side, _bulk_node(b), ts, out)
            elif st == _VALUE:
                msg = side.msg
                if msg is None:
                    msg = side.msg = _Msg(side.res_ts if pos < base else ts)
                c = buf[pos]
                if is_client and not side.stack and c != 42:  # not "*": inline command
                    nl = buf.find(b"\n", pos, pos + MAX_INLINE + 1)
                    if nl < 0:
                        if n - pos > MAX_INLINE:
                            self._overflow(side, "inline command", MAX_INLINE, out)
                            self._desync(side, "inline command too long", ts, out)
                            continue
                        break
                    msg.wire += nl + 1 - pos
                    line = bytes(buf[pos:nl])
                    pos = nl + 1
                    side.msg = None
                    self._inline(msg, line, out)
                    continue
                nl = buf.find(b"\n", pos, pos + MAX_LINE + 3)
                if nl < 0:
                    if n - pos > MAX_LINE + 2:
                        self._overflow(side, "line", MAX_LINE, out)
                        self._desync(side, "line too long", ts, out)
                        continue
                    break
                if nl == pos or buf[nl - 1] != 13:
                    self._desync(side, "bad line end", ts, out)
                    continue
                line = bytes(buf[pos + 1 : nl - 1])
                if not self._line(side, msg, c, line, nl + 1 - pos, ts, out):
                    continue  # desynced at pos
                pos = nl + 1
                b = side.bulk
                if b is not None:
                    # Fast path: the whole payload and its CRLF are here already (the usual
                    # case): take them at once instead of through _PAYLOAD/_PAYLOAD_END.
                    end = pos + b.remaining
                    if end + 2 <= n and buf[end] == 13 and buf[end + 1] == 10:
                        if b.limit:
                            b.kept += buf[pos : pos + min(b.limit, b.remaining)]
                        msg.wire += b.remaining + 2
                        b.remaining = 0
                        b.crlf_left = 0
                        pos = end + 2
                        side.bulk = None
                        side.state = _VALUE
                        self._value_done(side, _bulk_node(b), ts, out)
            else:  # _SCAN
                pos = self._scan(side, pos, out)
                if side.state == _SCAN:
                    break
        if pos:
            if pos >= base:
                side.res_ts = ts
            del buf[:pos]

    def _line(
        self, side: _Side, msg: _Msg, c: int, line: bytes, size: int, ts: float, out: list[Event]
    ) -> bool:
        """Handle one type line (CRLF stripped, ``size`` bytes on the wire).

        Returns False when it lost sync (the line is then not consumed).
        """
        kind = _SCALARS.get(c)
        if kind is not None:
            node = _scalar(kind, line)
            if node is None:
                self._desync(side, f"bad {kind} line", ts, out)
                return False
            msg.wire += size
            self._value_done(side, node, ts, out)
            return True
        kind = _BULKS.get(c)
        if kind is not None:
            if _LEN.fullmatch(line) is None:
                self._desync(side, f"bad {kind} length", ts, out)
                return False
            length = int(line)
            if length == -1 and kind == "bulk":
                msg.wire += size
                self._value_done(side, {"type": "null", "value": None, "resp2": "bulk"}, ts, out)
                return True
            if length < 0 or length > MAX_BULK_LEN:
                self._desync(side, f"bad {kind} length", ts, out)
                return False
            msg.wire += size
            limit = max(0, min(self.body_cap, MAX_MESSAGE_KEPT - msg.kept))
            if msg.nodes >= MAX_NODES:
                limit = 0
            msg.kept += min(limit, length)
            side.bulk = _Bulk(kind, length, limit)
            side.state = _PAYLOAD if length else _PAYLOAD_END
            return True
        kind = _AGGREGATES.get(c)
        if kind is not None:
            if _LEN.fullmatch(line) is None:
                self._desync(side, f"bad {kind} count", ts, out)
                return False
            count = int(line)
            if count == -1 and kind == "array":
                msg.wire += size
                self._value_done(side, {"type": "null", "value": None, "resp2": "array"}, ts, out)
                return True
            if count < 0 or count > MAX_COUNT:
                self._desync(side, f"bad {kind} count", ts, out)
                return False
            if len(side.stack) >= MAX_DEPTH:
                self._overflow(side, "nesting", MAX_DEPTH, out)
                self._desync(side, "nesting too deep", ts, out)
                return False
            msg.wire += size
            if not side.stack and side.direction == CLIENT:
                msg.argc = count
                if count == 0:  # Redis ignores an empty multibulk
                    side.msg = None
                    self.stats["ignored_commands"] += 1
                    return True
            frame = _Frame(kind, count)
            if count == 0:
                self._value_done(side, _frame_node(frame), ts, out)
                return True
            side.stack.append(frame)
            return True
        self._desync(side, "bad type byte", ts, out)
        return False

    def _value_done(self, side: _Side, node: JSON, ts: float, out: list[Event]) -> None:
        """A value is complete: attach it to its aggregate, or end the message."""
        msg = side.msg
        assert msg is not None
        stack = side.stack
        while True:
            if node["type"] == "attribute":
                if stack:
                    stack[-1].attr = node["value"]
                else:
                    msg.attr = node["value"]
                return
            if stack:
                frame = stack[-1]
                if frame.attr is not None:
                    node["attributes"] = frame.attr
                    frame.attr = None
                if len(frame.items) < frame.limit and msg.nodes < MAX_NODES:
                    frame.items.append(node)
                    msg.nodes += 1
                else:
                    frame.dropped += 1
                    self.stats["dropped_elements"] += 1
                frame.remaining -= 1
                if frame.remaining:
                    return
                stack.pop()
                node = _frame_node(frame)
                continue
            if msg.attr is not None:
                node["attributes"] = msg.attr
            side.msg = None
            if side.direction == CLIENT:
                self._command(msg, node, out)
            else:
                self._reply(msg, node, out)
            return

    def _scan(self, side: _Side, pos: int, out: list[Event]) -> int:
        """Look for a plausible message start from ``pos``; returns the new position."""
        buf = side.buf
        n = len(buf)
        start = pos
        while True:
            if not side.at_line_start:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    pos = n
                    break
                pos = nl + 1
                side.at_line_start = True
            if pos >= n:
                break
            verdict = self._plausible(side, pos)
            if verdict is None:
                break
            if verdict:
                side.skipped += pos - start
                self.stats["skipped_bytes"] += pos - start
                self._end_episode(side, out)
                side.state = _VALUE
                return pos
            side.at_line_start = False
        side.skipped += pos - start
        self.stats["skipped_bytes"] += pos - start
        return pos

    def _plausible(self, side: _Side, pos: int) -> bool | None:
        """Does a message start at ``pos``? None: the bytes so far cannot tell."""
        buf = side.buf
        n = len(buf)
        if side.direction == CLIENT:
            if buf[pos] != 42:
                return False
            if _CLIENT_START.match(buf, pos, min(n, pos + 14)) is not None:
                return True
            if n - pos < 14 and _CLIENT_PREFIX.fullmatch(buf, pos, n) is not None:
                return None
            return False
        c = buf[pos]
        if c not in _TYPE_BYTES:
            return False
        nl = buf.find(b"\n", pos, pos + MAX_SCAN_LINE + 1)
        if nl < 0:
            return None if n - pos <= MAX_SCAN_LINE else False
        if nl == pos or buf[nl - 1] != 13:
            return False
        line = bytes(buf[pos + 1 : nl - 1])
        kind = _SCALARS.get(c)
        if kind is not None:
            return _scalar(kind, line) is not None
        if _LEN.fullmatch(line) is None:
            return False
        size = int(line)
        if c in _BULKS:
            return (size == -1 and c == 36) or 0 <= size <= MAX_BULK_LEN
        return (size == -1 and c == 42) or 0 <= size <= MAX_COUNT

    def _overflow(self, side: _Side, what: str, cap: int, out: list[Event]) -> None:
        self.stats["line_overflows"] += 1
        out.append(Truncated(direction=side.direction, what=what, dropped=cap))

    def _desync(self, side: _Side, reason: str, ts: float, out: list[Event]) -> None:
        """Lose sync in ``side`` (at a position not yet consumed): abandon its message, scan."""
        msg = side.msg
        side.msg = None
        if side.episode is None:
            side.episode = reason
        if msg is not None:
            side.skipped += msg.wire
            self.stats["skipped_bytes"] += msg.wire
        partial = self._partial(side)
        side.state = _SCAN
        side.at_line_start = False
        if side.direction == CLIENT:
            self._next_barrier = True
        else:
            self._server_lost(msg, partial, ts, out)

    def _partial(self, side: _Side) -> JSON | None:
        """Close what was being parsed (marked ``truncated``) and return its root, if any."""
        node: JSON | None = None
        b = side.bulk
        side.bulk = None
        if b is not None:
            b.truncated = True
            node = _bulk_node(b)
        stack = side.stack
        while stack:
            frame = stack.pop()
            if node is not None and len(frame.items) < frame.limit:
                frame.items.append(node)
            node = _frame_node(frame)
            node["truncated"] = True
        return node

    def _server_lost(
        self, msg: _Msg | None, partial: JSON | None, ts: float, out: list[Event]
    ) -> None:
        """Replies were lost: emit what was sent up to ``ts``; the next command is a barrier."""
        queue = self._queue
        self._discard = 0
        if queue and msg is not None and partial is not None:
            cmd = queue[0]
            cmd.replies.append(partial)
            cmd.resp_desynced = True
            cmd.resp_wire += msg.wire
            if cmd.resp_ts is None:
                cmd.resp_ts = msg.ts
        while queue and queue[0].ts <= ts:
            cmd = queue.popleft()
            if not cmd.done():
                self.stats["lost_replies"] += 1
            self._emit(cmd, out)
        if queue:
            queue[0].barrier = True
        else:
            self._next_barrier = True

    def _end_episode(self, side: _Side, out: list[Event]) -> None:
        reason = side.episode
        if reason is not None and (reason != _MIDSTREAM or side.skipped):
            self.stats["desyncs"] += 1
            out.append(Desynced(direction=side.direction, reason=reason, skipped=side.skipped))
        side.episode = None
        side.skipped = 0

    def _gap(self, side: _Side, size: int, ts: float, out: list[Event]) -> None:
        b = side.bulk
        msg = side.msg
        if b is not None and msg is not None and side.state in (_PAYLOAD, _PAYLOAD_END):
            if side.state == _PAYLOAD:
                take = min(size, b.remaining)
                b.remaining -= take
                b.truncated = True
                msg.truncated = True
                msg.wire += take
                size -= take
                if not b.remaining:
                    side.state = _PAYLOAD_END
            if size and side.state == _PAYLOAD_END and size <= b.crlf_left:
                msg.truncated = True
                msg.wire += size
                b.crlf_left -= size
                size = 0
                if not b.crlf_left:
                    side.bulk = None
                    side.state = _VALUE
                    self._value_done(side, _bulk_node(b), ts, out)
            if not size:
                return
        # Lost bytes outside a bulk payload: the framing is gone.
        if side.buf:
            side.skipped += len(side.buf)
            self.stats["skipped_bytes"] += len(side.buf)
            side.buf.clear()
        if side.state != _SCAN:
            self._desync(side, "capture gap", ts, out)
        # The gap may well end at a message start (whole segments lost): try there first.
        side.at_line_start = True

    def _close(self, side: _Side, ts: float, out: list[Event]) -> None:
        msg = side.msg
        side.msg = None
        if side.buf:
            if msg is not None:
                msg.wire += len(side.buf)
            else:
                side.skipped += len(side.buf)
                self.stats["skipped_bytes"] += len(side.buf)
            side.buf.clear()
        partial = self._partial(side)
        if msg is not None and partial is not None:
            msg.truncated = True
            self.stats["cut_messages"] += 1
            if side.direction == CLIENT:
                self._command(msg, partial, out, cut=True)
            else:
                self._reply(msg, partial, out)
        elif msg is not None and msg.wire:
            side.skipped += msg.wire
            self.stats["skipped_bytes"] += msg.wire
            side.episode = side.episode or "closed inside a message"
        self._end_episode(side, out)
        if side.state == _SCAN:
            side.at_line_start = True
        side.state = _VALUE

    def _internal_error(self, side: _Side, exc: Exception, ts: float, out: list[Event]) -> None:
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
        side.msg = None
        side.stack.clear()
        side.bulk = None
        side.episode = None
        side.skipped = 0
        side.at_line_start = False
        side.state = _SCAN
        if side.direction == CLIENT:
            self._next_barrier = True
        else:
            try:
                self._server_lost(None, None, ts, out)
            except Exception:  # the queue itself is broken: give up on it
                self._queue.clear()
                self._next_barrier = True

    # -- commands --------------------------------------------------------------------------------

    def _inline(self, msg: _Msg, line: bytes, out: list[Event]) -> None:
        words = _split_inline(line.rstrip(b"\r"))
        if not words:
            self.stats["ignored_commands"] += 1
            return
        msg.inline = True
        msg.argc = len(words)
        items: list[JSON] = []
        for w in words[:MAX_ELEMENTS]:
            b = _Bulk("bulk", len(w), min(self.body_cap, len(w)))
            b.kept += w[: b.limit]
            items.append(_bulk_node(b))
        node: JSON = {"type": "array", "value": items, "count": len(words)}
        self.stats["inline_commands"] += 1
        self._command(msg, node, out)

    def _command(self, msg: _Msg, node: JSON, out: list[Event], cut: bool = False) -> None:
        """A whole command (``node``: its array) arrived from the client."""
        self.stats["commands"] += 1
        items = node.get("value")
        if not isinstance(items, list):
            items = [node]
        args: list[str] = []
        b64: list[int] = []
        cut_args: list[int] = []
        for i, item in enumerate(items):
            args.append(_arg_text(item))
            if item.get("encoding") == "base64":
                b64.append(i)
            if item.get("truncated"):
                cut_args.append(i)
        request: JSON = {"args": args, "inline": msg.inline}
        if b64:
            request["args_base64"] = b64
        if cut_args:
            request["args_truncated"] = cut_args
        argc = msg.argc or len(items)
        if argc > len(args):
            request["args_dropped"] = argc - len(args)
        name = args[0].upper() if args and 0 not in b64 else (args[0] if args else "")
        cmd = _Cmd(msg, name, args, request)
        if cut:
            cmd.truncated = True
            cmd.expected = 0  # never executed: no reply will come
        else:
            self._reply_mode(cmd, args)
            confirm = _CONFIRM.get(name)
            if confirm is not None and not cmd.no_reply:
                cmd.confirm = confirm
                if argc > 1:
                    cmd.expected = argc - 1
                elif confirm.endswith("unsubscribe"):
                    cmd.expected = -1
        if self._next_barrier:
            cmd.barrier = True
            self._next_barrier = False
        queue = self._queue
        if len(queue) >= MAX_PENDING:
            victim = queue.popleft()
            self.stats["queue_dropped"] += 1
            self._discard += victim.need()
            self._emit(victim, out)
        queue.append(cmd)
        self._drain(out)

    def _reply_mode(self, cmd: _Cmd, args: list[str]) -> None:
        """CLIENT REPLY ON/OFF/SKIP, RESET: does the server answer ``cmd``?"""
        no_reply = self._reply_off or self._skip_next
        self._skip_next = False
        if cmd.name == "CLIENT" and len(args) >= 3 and args[1].upper() == "REPLY":
            mode = args[2].upper()
            if mode == "OFF":
                self._reply_off = True
                no_reply = True
            elif mode == "ON":
                self._reply_off = False
                no_reply = False
            elif mode == "SKIP":
                no_reply = True
                self._skip_next = not self._reply_off
        elif cmd.name == "RESET":
            self._reply_off = False
            no_reply = False
        if no_reply:
            cmd.no_reply = True
            cmd.expected = 0
            cmd.request["no_reply"] = True

    # -- replies ---------------------------------------------------------------------------------

    def _reply(self, msg: _Msg, node: JSON, out: list[Event]) -> None:
        """A whole value arrived from the server."""
        self.stats["replies"] += 1
        queue = self._queue
        kind = _push_kind(node)
        while True:
            cmd = queue[0] if queue else None
            if self._is_push(node, kind, cmd):
                self._push(msg, node, kind, out)
                return
            if self._discard:
                self._discard -= 1
                self.stats["late_replies"] += 1
                return
            if cmd is None or (cmd.barrier and msg.ts < cmd.ts):
                self._no_request(msg, node, out)
                return
            cmd.barrier = False
            if cmd.confirm is not None:
                if kind == cmd.confirm and node["type"] in ("array", "push"):
                    if cmd.expected == -1:
                        group = _GROUP[kind][0]
                        cmd.expected = max(1, len(self._channels[group]))
                    self._track(node, kind)
                elif cmd.replies:
                    cmd.expected = len(cmd.replies)  # not a confirmation: the command is over
                    self._drain(out)
                    continue
                else:
                    cmd.expected = 1
            break
        if cmd.emitted:
            self.stats["late_replies"] += 1
        cmd.replies.append(node)
        cmd.resp_wire += msg.wire
        cmd.resp_truncated = cmd.resp_truncated or msg.truncated
        if cmd.resp_ts is None:
            cmd.resp_ts = msg.ts
        if len(cmd.replies) == 1 and node["type"] not in ("error", "blob_error"):
            self._effects(cmd)
        cmd.resp = self.resp
        self._drain(out)

    def _is_push(self, node: JSON, kind: str | None, cmd: _Cmd | None) -> bool:
        t = node["type"]
        awaited = cmd is not None and cmd.confirm is not None and cmd.confirm == kind
        if t == "push":
            return not awaited
        if t == "array" and kind is not None and self.resp == 2:
            if kind in _MESSAGE_KINDS:
                return self._subscribed or cmd is None
            if kind in _GROUP and self._subscribed and not awaited:
                return True  # a confirmation nothing waits for (e.g. a slot migration)
        if t == "simple" and self._monitoring:
            return cmd is None or _MONITOR_LINE.match(node["value"]) is not None
        return False

    def _effects(self, cmd: _Cmd) -> None:
        """What an answered command changes in the connection."""
        name = cmd.name
        if name == "HELLO":
            if len(cmd.args) >= 2 and cmd.args[1] in ("2", "3"):
                self.resp = int(cmd.args[1])
        elif name == "RESET":
            self.resp = 2
            self._monitoring = False
            self._subscribed = False
            for chans in self._channels.values():
                chans.clear()
        elif name == "MONITOR":
            self._monitoring = True

    def _track(self, node: JSON, kind: str) -> None:
        """Follow subscriptions from a confirmation ``[kind, channel, count]``."""
        items = node["value"]
        group, add = _GROUP[kind]
        chans = self._channels[group]
        if len(items) >= 2:
            channel = items[1]
            if channel.get("type") in ("bulk", "simple"):
                name = str(channel.get("value"))
                if add:
                    if len(chans) < MAX_TRACKED_CHANNELS:
                        chans.add(name)
                else:
                    chans.discard(name)
        count = items[2].get("value") if len(items) >= 3 else None
        self._subscribed = any(self._channels.values()) or (isinstance(count, int) and count > 0)

    def _push(self, msg: _Msg, node: JSON, kind: str | None, out: list[Event]) -> None:
        self.stats["pushes"] += 1
        if kind in _GROUP:
            self._track(node, kind)
        items = node.get("value")
        summary = ""
        if node["type"] == "simple":
            method = "monitor"
            summary = str(node["value"])[:MAX_SUMMARY]
        else:
            method = kind or node["type"]
            if isinstance(items, list) and len(items) >= 2:
                chan = items[2] if kind == "pmessage" and len(items) >= 3 else items[1]
                if chan.get("type") in ("array", "set") and chan["value"]:
                    chan = chan["value"][0]  # invalidate: the first key
                summary = _summary_of(chan)
        response: JSON = {"reply": node, "resp": self.resp, "push": True}
        ex = Exchange(
            proto="redis",
            ts=msg.ts,
            method=method,
            summary=summary,
            status=_status(node),
            response_size=msg.wire,
            response=response,
            error=TRUNCATED if msg.truncated else None,
        )
        self.stats["exchanges"] += 1
        out.append(ExchangeCompleted(exchange=ex))

    def _no_request(self, msg: _Msg, node: JSON, out: list[Event]) -> None:
        self.stats["no_request"] += 1
        ex = Exchange(
            proto="redis",
            ts=msg.ts,
            method=None,
            summary="",
            status=_status(node),
            response_size=msg.wire,
            response={"reply": node, "resp": self.resp},
            error=NO_REQUEST,
        )
        self.stats["exchanges"] += 1
        out.append(ExchangeCompleted(exchange=ex))

    def _drain(self, out: list[Event]) -> None:
        queue = self._queue
        while queue and queue[0].done():
            self._emit(queue.popleft(), out)

    def _emit(self, cmd: _Cmd, out: list[Event]) -> None:
        if cmd.emitted:
            return
        cmd.emitted = True
        replies = cmd.replies
        if not replies and not cmd.no_reply:
            error: str | None = NO_RESPONSE
        elif cmd.resp_desynced:
            error = DESYNCED
        elif cmd.truncated or cmd.resp_truncated:
            error = TRUNCATED
        else:
            error = None
        ex = Exchange(
            proto="redis",
            ts=cmd.ts,
            method=cmd.name or None,
            summary=_first_key(cmd.name, cmd.args),
            request_size=cmd.wire,
            request=cmd.request,
            error=error,
        )
        if replies:
            first = replies[0]
            response: JSON = {"reply": first, "resp": cmd.resp}
            if cmd.confirm is not None:
                response["replies"] = list(replies)
            ex.response = response
            ex.status = _status(first)
            ex.response_size = cmd.resp_wire
            if cmd.resp_ts is not None:
                ex.latency_ms = (cmd.resp_ts - cmd.ts) * 1000.0
        self.stats["exchanges"] += 1
        out.append(ExchangeCompleted(exchange=ex))


# -- values --------------------------------------------------------------------------------------


def _scalar(kind: str, line: bytes) -> JSON | None:
    """The typed value of a scalar line, or None when the line is not valid for its type."""
    if kind == "simple" or kind == "error":
        return {"type": kind, "value": line.decode("utf-8", "replace")}
    if kind == "integer":
        if _INT.fullmatch(line) is None:
            return None
        return {"type": kind, "value": int(line)}
    if kind == "null":
        return {"type": "null", "value": None} if not line else None
    if kind == "boolean":
        if line == b"t":
            return {"type": kind, "value": True}
        if line == b"f":
            return {"type": kind, "value": False}
        return None
    if kind == "double":
        if len(line) > 400 or _DOUBLE.fullmatch(line) is None:
            return None
        value = float(line)
        return {"type": kind, "value": value if math.isfinite(value) else line.decode("ascii")}
    if _BIG.fullmatch(line) is None:  # big_number
        return None
    return {"type": kind, "value": line.decode("ascii")}


def _as_text(data: bytes, cut: bool) -> str | None:
    """``data`` as text (UTF-8, no control bytes but tab, LF, CR, FF), else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not (cut and exc.end == len(data) and exc.reason == "unexpected end of data"):
            return None
        data = data[: exc.start]
        text = data.decode("utf-8")
    if data.translate(None, _NOT_CONTROL):
        return None
    return text


def _bulk_node(b: _Bulk) -> JSON:
    raw = bytes(b.kept)
    truncated = b.truncated or len(raw) < b.size
    node: JSON = {"type": b.kind}
    if b.kind == "verbatim" and len(raw) >= 4 and raw[3:4] == b":":
        node["format"] = raw[:3].decode("latin-1")
        raw = raw[4:]
    text = _as_text(raw, truncated)
    if text is None:
        node["value"] = base64.b64encode(raw).decode("ascii")
        node["encoding"] = "base64"
    else:
        node["value"] = text
    node["size"] = b.size
    if truncated:
        node["truncated"] = True
    return node


def _frame_node(frame: _Frame) -> JSON:
    items = frame.items
    value: list[Any]
    if frame.kind in ("map", "attribute"):
        value = [items[i : i + 2] for i in range(0, len(items), 2)]
    else:
        value = items
    node: JSON = {"type": frame.kind, "value": value, "count": frame.count}
    if frame.dropped:
        node["truncated"] = True
    return node


def _push_kind(node: JSON) -> str | None:
    """The lower-cased first element of an array or push (``message``, ``subscribe``...)."""
    if node["type"] not in ("array", "push"):
        return None
    items = node["value"]
    if not items or items[0].get("type") not in ("bulk", "simple"):
        return None
    return str(items[0]["value"]).lower()


def _status(node: JSON) -> str:
    t = node["type"]
    if t == "simple" and node["value"] == "OK":
        return "OK"
    if t == "error" or (t == "blob_error" and node.get("encoding") != "base64"):
        return str(node["value"])[:MAX_SUMMARY]
    return str(t)


def _arg_text(item: JSON) -> str:
    value = item.get("value")
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return ""


def _summary_of(node: JSON) -> str:
    value = node.get("value")
    return value[:MAX_SUMMARY] if isinstance(value, str) else _arg_text(node)[:MAX_SUMMARY]


def _first_key(name: str, args: list[str]) -> str:
    """The entry's summary: the first key (the first argument for most commands)."""
    if name in _EVAL_LIKE:
        if len(args) >= 4 and args[2].isdigit() and int(args[2]) > 0:
            return args[3][:MAX_SUMMARY]
        return ""
    return args[1][:MAX_SUMMARY] if len(args) >= 2 else ""


def _split_inline(line: bytes) -> list[bytes]:
    """Split an inline command like Redis's ``sdssplitargs`` (quotes and escapes, leniently)."""
    out: list[bytes] = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\v\f":
            i += 1
        if i >= n:
            return out
        cur = bytearray()
        quote = 0
        while i < n:
            c = line[i]
            if quote == 34:  # "..."
                if c == 92 and i + 1 < n:  # backslash
                    nxt = line[i + 1]
                    if nxt == 120 and i + 3 < n and _is_hex(line[i + 2 : i + 4]):  # \xHH
                        cur.append(int(line[i + 2 : i + 4], 16))
                        i += 4
                        continue
                    cur.append(_ESCAPES.get(nxt, nxt))
                    i += 2
                    continue
                if c == 34:
                    quote = 0
                    i += 1
                    if i < n and line[i] not in b" \t\r\n\v\f":
                        break
                    continue
                cur.append(c)
            elif quote == 39:  # '...'
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    cur.append(39)
                    i += 2
                    continue
                if c == 39:
                    quote = 0
                    i += 1
                    if i < n and line[i] not in b" \t\r\n\v\f":
                        break
                    continue
                cur.append(c)
            elif c in b" \t\r\n\v\f":
                break
            elif c in (34, 39) and not cur:
                quote = c
            else:
                cur.append(c)
            i += 1
        out.append(bytes(cur))


_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


__all__ = ["DEFAULT_BODY_CAP", "RedisDissector"]
