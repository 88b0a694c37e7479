"""HTTP/1.0 and HTTP/1.1 for a passive observer: own framing, sans-IO, lenient like a sniffer.

``Http1Dissector`` follows both directions of one TCP connection and pairs requests with
responses by order (pipelining included). It accepts what real peers send rather than what a
strict server would: bare ``\\n`` line endings, obs-fold, header names of any case (kept as sent),
repeated headers (kept in order), leading blank lines between messages.

Framing (RFC 9112 section 6): a response to HEAD, a 1xx, 204 and 304 have no body; then
``Transfer-Encoding: chunked`` (chunk extensions ignored, trailers kept); then
``Content-Length``; otherwise a response is delimited by the close of the server's direction
(HTTP/1.0 without ``Content-Length`` included) and a request has no body. 1xx responses other
than 101 do not complete an exchange: they are listed in the response's ``informational``.
``101 Switching Protocols`` and a 2xx answer to ``CONNECT`` complete the exchange and stop HTTP
parsing on both directions: ``upgraded`` names the new protocol (the ``Upgrade`` header, or
``"CONNECT"`` for a tunnel) and ``take_upgrade_bytes()`` hands over what followed. While a request
that asks for an upgrade (``Upgrade`` header, or ``CONNECT``) waits for its answer, later client
bytes are held (at most ``MAX_UPGRADE_BUFFER``), since they may already be the new protocol.

Timing: an exchange's ``ts`` is the capture time of the first byte of its request (of the
response when the request was not seen); ``latency_ms`` runs from the first byte of the request
to the first byte of the final (non-1xx) response, as Wireshark's ``http.time`` and Kubeshark do.
Sizes are L7 bytes on the wire: start line, headers, body and its chunk framing (bytes lost in a
capture gap inside a body included); a response's size includes its 1xx responses.

Loss of sync: a direction that cannot find a message start (``midstream=True``, a malformed
start line, a header block over ``MAX_HEADER_BYTES``, a capture gap outside a body...) scans for
the next line that looks like a request line (client) or a status line (server) and skips
everything before it. One ``Desynced`` event per such episode is emitted when it ends (at the
resynchronisation, at close or at finish) with the bytes skipped; joining mid-stream exactly at
a message start skips nothing and emits nothing. A message cut by the loss of sync ends with
error ``desynced``; a body that lost bytes to a gap but kept its framing ends ``truncated``.
A request lost entirely (a gap before it) cannot be detected: later responses then pair with
the following requests.

Emission: an exchange is emitted once, when both halves are complete, when the connection
ends (``finish``: a missing response gives ``no_response``, a message cut mid-body
``truncated``, a close-delimited body completes normally) or when ``expire`` finds a complete
request that has waited more than ``PENDING_TIMEOUT`` seconds without any response byte: it is
emitted with ``no_response`` and dropped from the queue, so later responses pair with the
following requests. A request still being sent is never expired. At most ``MAX_PENDING`` requests
wait for responses: one more emits the oldest unanswered one with ``no_response`` (counted in
``stats["queue_dropped"]``).

Errors, in order of precedence: ``no_request``, ``no_response``, ``desynced``, ``truncated``.
No exception escapes a public method: a bug is caught, counted in ``stats["internal_errors"]``
and turns into a ``Desynced`` of that direction.
"""

from __future__ import annotations

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
from shark_tui.proto.bodies import render_body

try:  # the header blocks in C (shark_tui/proto/_http1.c); `_headers` here is the reference
    from shark_tui.proto._http1 import header_block as _header_block
except ImportError:  # pragma: no cover - an install without a compiler
    _header_block = None  # type: ignore[assignment]
from shark_tui.proto.graphql_hint import may_be_graphql
from shark_tui.proto.urls import query_pairs

#: Largest header block (start line, headers, blank line), and trailer block, that is parsed.
#: A larger one is reported with ``Truncated`` and the direction resynchronises.
MAX_HEADER_BYTES = 64 * 1024
#: Longest start line; also the longest line kept while scanning for a message start.
MAX_START_LINE = 8 * 1024
#: Longest chunk-size line (size and extensions).
MAX_CHUNK_LINE = 4 * 1024
#: Requests waiting for their response; past it the oldest unanswered one is emitted.
MAX_PENDING = 1024
#: Bytes kept per direction after an upgrade (or while an upgrade is being asked for).
MAX_UPGRADE_BUFFER = 64 * 1024
#: Default bytes kept of each body (``body_cap``); the rest counts in sizes but is not kept.
DEFAULT_BODY_CAP = 64 * 1024
#: Chunk sizes above this are nonsense and treated as a framing error.
_MAX_CHUNK_SIZE = 1 << 62

# Per-direction parser states.
_HEAD = 0  # expecting a start line and headers
_BODY = 1  # in a Content-Length body (``remaining`` bytes left)
_CHUNK_SIZE = 2  # expecting a chunk-size line
_CHUNK_DATA = 3  # in chunk data (``remaining`` bytes left)
_CHUNK_END = 4  # expecting the CRLF after chunk data
_TRAILERS = 5  # after the last chunk: trailers, then a blank line
_CLOSE_BODY = 6  # in a body delimited by the close of the direction
_SCAN = 7  # unsynchronised: looking for a message start
_PAUSED = 8  # client: waiting for the answer to an upgrade request
_UPGRADED = 9  # no longer HTTP/1

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") +([^ \r\n][^\r\n]*?) +(HTTP/1\.[0-9])[ \t]*\r?")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[0-9]) +([0-9]{3})(?:[ \t]+([^\r\n]*?))?[ \t]*\r?")
# What scanning accepts as a message start: a whole request line that begins a line (or has a
# common method), a whole status line anywhere. Bounded (``MAX_START_LINE``), so that what is
# found does not depend on where the stream was cut.
_METHODS = rb"(?:GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE) "
_SCAN_REQUEST = rb"([A-Z][A-Z0-9_-]{2,19}) [^ \r\n]{1,8000} HTTP/1\.[01]\r?\n"
_SCAN_STATUS = rb"(HTTP/1\.[01] [0-9]{3}(?:[ \t][^\r\n]{0,1000})?\r?\n)"
_SCAN_AT = (re.compile(_SCAN_REQUEST), re.compile(_SCAN_STATUS))
_SCAN_FOR = (
    re.compile(rb"(?:\n|(?=" + _METHODS + rb"))" + _SCAN_REQUEST),
    re.compile(_SCAN_STATUS),
)
_END_OF_HEAD = re.compile(rb"\n\r?\n")

_MIDSTREAM = "joined mid-stream"

# Headers the framing and the entry look at, by lower-case name.
_INTERESTING = frozenset(
    {"content-length", "transfer-encoding", "connection", "upgrade", "content-encoding", "host"}
)


class _Message:
    """One request or response being parsed (or parsed)."""

    __slots__ = (
        "body",
        "body_size",
        "cap_hit",
        "content_encoding",
        "desynced",
        "headers",
        "host",
        "method",
        "reason",
        "status",
        "target",
        "trailers",
        "truncated",
        "ts",
        "upgrade",
        "version",
        "wire",
    )

    def __init__(self, ts: float, version: str, headers: list[list[str]], wire: int) -> None:
        self.ts = ts
        self.version = version
        self.headers = headers
        self.wire = wire
        self.method = ""
        self.target = ""
        self.status = 0
        self.reason = ""
        self.host: str | None = None
        self.content_encoding: str | None = None
        self.upgrade: str | None = None
        self.body = bytearray()
        self.body_size = 0
        self.cap_hit = False
        self.truncated = False
        self.desynced = False
        self.trailers: list[list[str]] | None = None


class _Pair:
    """A request and what answered it."""

    __slots__ = ("answered", "emitted", "info", "req", "req_done", "resp", "resp_done")

    def __init__(self, req: _Message | None) -> None:
        self.req = req
        self.resp: _Message | None = None
        self.info: list[_Message] = []
        self.req_done = req is None
        self.answered = False  # the final response's head was seen
        self.resp_done = False
        self.emitted = False


class _Side:
    """The parser state of one direction."""

    __slots__ = (
        "advance",
        "at_line_start",
        "buf",
        "direction",
        "episode",
        "head_scan",
        "held_dropped",
        "marks",
        "msg",
        "pair",
        "remaining",
        "res_ts",
        "skipped",
        "state",
    )

    def __init__(self, direction: int, midstream: bool) -> None:
        self.direction = direction
        self.buf = bytearray()
        self.state = _SCAN if midstream else _HEAD
        self.remaining = 0
        self.msg: _Message | None = None
        self.pair: _Pair | None = None
        self.res_ts = 0.0  # capture time of buf[0]
        #: (offset in buf, capture time) where each feed still in buf began: a message that
        #: starts at an offset gets the time of the feed that brought that byte.
        self.marks: list[tuple[int, float]] = []
        self.head_scan = 0  # where to resume looking for the end of the head, from buf[0]
        self.at_line_start = True
        self.episode: str | None = _MIDSTREAM if midstream else None  # reason of a desync
        self.skipped = 0  # bytes skipped in the current desync episode
        self.held_dropped = 0  # bytes dropped past MAX_UPGRADE_BUFFER
        self.advance = False  # the byte at buf[0] was just rejected as a message start


class Http1Dissector:
    """Sans-IO HTTP/1.x dissector of one TCP connection (see the module docstring)."""

    def __init__(self, *, midstream: bool = False, body_cap: int = DEFAULT_BODY_CAP) -> None:
        self.body_cap = max(0, body_cap)
        #: The protocol the connection switched to (``Upgrade`` value, or ``"CONNECT"``).
        self.upgraded: str | None = None
        #: The request that asked for the upgrade (method, path, headers, ts, size, host).
        self.upgrade_request: dict[str, Any] | None = None
        #: Counters; never reset.
        self.stats: dict[str, int] = {
            "requests": 0,
            "responses": 0,
            "informational": 0,
            "messages": 0,
            "exchanges": 0,
            "desyncs": 0,
            "skipped_bytes": 0,
            "gap_bytes": 0,
            "truncated_messages": 0,
            "truncated_bodies": 0,
            "header_overflows": 0,
            "bad_header_lines": 0,
            "queue_dropped": 0,
            "expired": 0,
            "upgrade_dropped": 0,
            "internal_errors": 0,
        }
        self._sides = (_Side(CLIENT, midstream), _Side(SERVER, midstream))
        self._queue: deque[_Pair] = deque()
        self._paused_for: _Pair | None = None  # the upgrade request a paused client waits on

    # -- the Dissector interface -------------------------------------------------------------

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER) or not data:
            return out
        side = self._sides[direction]
        try:
            buf = side.buf
            if side.state == _UPGRADED:
                self._hold(side, data, out)
                return out
            base = len(buf)
            if not base:
                side.res_ts = ts
                side.marks = [(0, ts)]
                st = side.state
                if st == _CLOSE_BODY or (
                    st in (_BODY, _CHUNK_DATA) and side.remaining > len(data)
                ):  # all of it is body, as `_run` would find: kept without the buffer
                    msg = side.msg
                    assert msg is not None
                    self._keep(msg, data, 0, len(data))
                    if st != _CLOSE_BODY:
                        side.remaining -= len(data)
                    return out
            elif len(side.marks) < _MAX_MARKS:
                side.marks.append((base, ts))
            buf += data
            resume = self._run(side, ts, base, out)
            if resume:
                self._resume(self._sides[CLIENT], out)
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
            if client.state == _PAUSED:
                self._resume(client, out)
            self._close(server, out)
            self._close(client, out)
            server.pair = None  # an unanswered 1xx without a request: nothing to show
            queue = self._queue
            while queue:
                pair = queue.popleft()
                if pair.req is not None and not pair.req_done:
                    pair.req.truncated = True
                self._emit(pair, out)
        except Exception as exc:
            self._internal_error(server, exc, out)
            self._queue.clear()
        return out

    def expire(self, now: float) -> list[Event]:
        out: list[Event] = []
        queue = self._queue
        if not queue:
            return out
        limit = now - PENDING_TIMEOUT
        head = queue[0].req
        if head is not None and head.ts >= limit:
            return out
        stale = [
            p
            for p in queue
            if p.req is not None
            and p.req.ts < limit
            and p.req_done
            and not p.answered
            and not p.info
        ]
        for pair in stale:
            queue.remove(pair)
            self.stats["expired"] += 1
            self._emit(pair, out)
            if pair is self._paused_for:
                self._resume(self._sides[CLIENT], out)
        return out

    def oldest_pending(self) -> float | None:
        times: list[float] = []
        if self._queue:
            first = self._queue[0].req
            if first is not None:
                times.append(first.ts)
        for side in self._sides:
            if side.msg is not None:
                times.append(side.msg.ts)
            elif side.state == _HEAD and side.buf:
                times.append(side.res_ts)
            pair = side.pair
            if pair is not None and pair.req is None and pair.info:
                times.append(pair.info[0].ts)
        return min(times) if times else None

    # -- upgrade hand-over ---------------------------------------------------------------------

    def take_upgrade_bytes(self) -> tuple[bytes, bytes]:
        """(client, server) bytes that followed the upgrade and were not parsed, then forgets them.

        Empty before an upgrade. Bytes fed later are held again, at most ``MAX_UPGRADE_BUFFER``
        per direction; the rest is counted in ``stats["upgrade_dropped"]``.
        """
        if self.upgraded is None:
            return b"", b""
        client, server = self._sides
        taken = bytes(client.buf), bytes(server.buf)
        client.buf.clear()
        server.buf.clear()
        return taken

    def buffered(self) -> int:
        """Bytes held in both directions' buffers (not counting kept bodies)."""
        return len(self._sides[0].buf) + len(self._sides[1].buf)

    def pending(self) -> int:
        """Requests waiting in the pairing queue."""
        return len(self._queue)

    # -- the parser ------------------------------------------------------------------------------

    def _run(self, side: _Side, ts: float, base: int, out: list[Event]) -> bool:
        """Parse what ``side.buf`` holds; bytes from ``base`` on arrived at ``ts``.

        Returns True when a paused client direction must be resumed.
        """
        buf = side.buf
        n = len(buf)
        pos = 0
        resume = False
        is_client = side.direction == CLIENT
        while pos < n:
            st = side.state
            if st in (_BODY, _CHUNK_DATA):
                take = side.remaining
                if take > n - pos:
                    take = n - pos
                msg = side.msg
                assert msg is not None
                self._keep(msg, buf, pos, take)
                pos += take
                side.remaining -= take
                if not side.remaining:
                    if st == _BODY:
                        self._end_message(side, out)
                    else:
                        side.state = _CHUNK_END
            elif st == _HEAD:
                while pos < n and (buf[pos] == 13 or buf[pos] == 10):
                    pos += 1
                if pos >= n:
                    break
                nl = buf.find(b"\n", pos, pos + MAX_START_LINE + 1)
                if nl < 0:
                    if n - pos > MAX_START_LINE:
                        self._desync(side, "start line too long", out)
                        continue
                    break
                line = (_REQUEST_LINE if is_client else _STATUS_LINE).fullmatch(buf, pos, nl)
                if line is None:
                    self._desync(side, "bad start line", out)
                    continue
                start = nl if nl > pos + side.head_scan else pos + side.head_scan
                end = _END_OF_HEAD.search(buf, start, pos + MAX_HEADER_BYTES)
                if end is None:
                    if n - pos >= MAX_HEADER_BYTES:
                        self.stats["header_overflows"] += 1
                        out.append(
                            Truncated(
                                direction=side.direction,
                                what="header block",
                                dropped=MAX_HEADER_BYTES,
                            )
                        )
                        self._desync(side, "header block too large", out)
                        continue
                    side.head_scan = max(0, n - pos - 2)
                    break
                side.head_scan = 0
                head_ts = _time_at(side.marks, pos) if pos < base else ts
                e = end.start()
                got = _header_block(buf, nl + 1, e) if _header_block is not None else None
                headers, found = got if got is not None else self._headers(bytes(buf[nl + 1 : e]))
                wire = end.end() - pos
                pos = end.end()
                if is_client:
                    self._start_request(side, line.groups(), headers, found, head_ts, wire, out)
                else:
                    resume = (
                        self._start_response(
                            side, line.groups(), headers, found, head_ts, wire, out
                        )
                        or resume
                    )
            elif st == _CHUNK_SIZE:
                nl = buf.find(b"\n", pos, pos + MAX_CHUNK_LINE + 1)
                if nl < 0:
                    if n - pos > MAX_CHUNK_LINE:
                        self._desync(side, "chunk-size line too long", out)
                        continue
                    break
                semi = buf.find(b";", pos, nl)
                digits = buf[pos : semi if semi >= 0 else nl].strip()
                try:
                    size = int(digits, 16)
                except ValueError:
                    size = -1
                if size < 0 or size > _MAX_CHUNK_SIZE or b"_" in digits:
                    self._desync(side, "bad chunk size", out)
                    continue
                msg = side.msg
                assert msg is not None
                msg.wire += nl + 1 - pos
                pos = nl + 1
                if size:
                    side.remaining = size
                    side.state = _CHUNK_DATA
                else:
                    side.state = _TRAILERS
            elif st == _CHUNK_END:
                c = buf[pos]
                if c == 10:
                    step = 1
                elif c == 13 and pos + 1 < n and buf[pos + 1] == 10:
                    step = 2
                elif c == 13 and pos + 1 >= n:
                    break
                else:
                    self._desync(side, "no line end after chunk data", out)
                    continue
                msg = side.msg
                assert msg is not None
                msg.wire += step
                pos += step
                side.state = _CHUNK_SIZE
            elif st == _TRAILERS:
                msg = side.msg
                assert msg is not None
                c = buf[pos]
                if c == 10 or c == 13:
                    if c == 13:
                        if pos + 1 >= n:
                            break
                        if buf[pos + 1] != 10:
                            self._desync(side, "bad trailer line", out)
                            continue
                        step = 2
                    else:
                        step = 1
                    msg.wire += step
                    pos += step
                    self._end_message(side, out)
                    continue
                start = pos + side.head_scan
                end = _END_OF_HEAD.search(buf, start, pos + MAX_HEADER_BYTES)
                if end is None:
                    if n - pos >= MAX_HEADER_BYTES:
                        self.stats["header_overflows"] += 1
                        out.append(
                            Truncated(
                                direction=side.direction,
                                what="trailer block",
                                dropped=MAX_HEADER_BYTES,
                            )
                        )
                        self._desync(side, "trailer block too large", out)
                        continue
                    side.head_scan = max(0, n - pos - 2)
                    break
                side.head_scan = 0
                msg.trailers = self._headers(bytes(buf[pos : end.start()]))[0]
                msg.wire += end.end() - pos
                pos = end.end()
                self._end_message(side, out)
            elif st == _CLOSE_BODY:
                msg = side.msg
                assert msg is not None
                self._keep(msg, buf, pos, n - pos)
                pos = n
            elif st == _SCAN:
                pos = self._scan(side, pos, out)
                if side.state == _SCAN:
                    break
            else:  # _PAUSED, _UPGRADED: keep the bytes for later
                break
        if pos:
            if pos >= base:
                side.res_ts = ts
                side.marks = [(0, ts)]
            else:
                side.marks = _trim_marks(side.marks, pos)
                side.res_ts = side.marks[0][1]
            del buf[:pos]
        if side.state == _PAUSED or side.state == _UPGRADED:
            self._cap_held(side, out)
        return resume

    def _scan(self, side: _Side, pos: int, out: list[Event]) -> int:
        """Look for a message start from ``pos``; returns the new position."""
        buf = side.buf
        n = len(buf)
        found = -1
        if side.at_line_start:
            nl = buf.find(b"\n", pos, pos + MAX_START_LINE + 1)
            if nl < 0 and n - pos <= MAX_START_LINE:
                return pos  # the first line is not complete yet
            if nl >= 0 and _SCAN_AT[side.direction].match(buf, pos) is not None:
                found = pos
            else:
                side.at_line_start = False
        if found < 0:
            m = _SCAN_FOR[side.direction].search(buf, pos + 1 if side.advance else pos)
            if m is None:
                # Only a start in the last line, or in the last MAX_START_LINE bytes, may
                # still complete with the next bytes.
                keep = max(buf.rfind(b"\n", pos), n - MAX_START_LINE, pos + side.advance)
                side.advance = False
                side.skipped += keep - pos
                self.stats["skipped_bytes"] += keep - pos
                return keep
            found = m.start(1)
        side.advance = False
        side.skipped += found - pos
        self.stats["skipped_bytes"] += found - pos
        self._end_episode(side, out)
        side.state = _HEAD
        side.head_scan = 0
        return found

    def _end_episode(self, side: _Side, out: list[Event]) -> None:
        reason = side.episode
        if reason is not None and (reason != _MIDSTREAM or side.skipped):
            self.stats["desyncs"] += 1
            out.append(Desynced(direction=side.direction, reason=reason, skipped=side.skipped))
        side.episode = None
        side.skipped = 0

    def _desync(self, side: _Side, reason: str, out: list[Event]) -> None:
        """Lose sync in ``side``: end its message (``desynced``) and scan from where it is."""
        msg = side.msg
        if msg is not None:
            msg.desynced = True
            self._end_message(side, out)
        if side.episode is None:
            side.episode = reason
        side.state = _SCAN
        side.at_line_start = False
        side.head_scan = 0
        side.advance = True

    def _keep(self, msg: _Message, buf: bytes | bytearray, pos: int, take: int) -> None:
        body = msg.body
        room = self.body_cap - len(body)
        if room >= take:
            body += buf[pos : pos + take]
        else:
            if room > 0:
                body += buf[pos : pos + room]
            if not msg.cap_hit:
                msg.cap_hit = True
                self.stats["truncated_bodies"] += 1
        msg.body_size += take
        msg.wire += take

    def _headers(self, block: bytes) -> tuple[list[list[str]], dict[str, str]]:
        """Header lines (no start line, no blank line) -> ([[name, value]...], interesting)."""
        if not block:
            return [], {}
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            text = block.decode("latin-1")
        headers: list[list[str]] = []
        found: dict[str, str] = {}
        for line in text.split("\n"):
            name, sep, value = line.partition(":")
            if not sep or not name or name[0] == " " or name[0] == "\t":
                return self._headers_slow(text)  # obs-fold or a bad line: rare
            name = name.rstrip(" \t")
            value = value.strip(" \t\r")
            headers.append([name, value])
            low = name.lower()
            if low in _INTERESTING:
                _note(found, low, value)
        return headers, found

    def _headers_slow(self, text: str) -> tuple[list[list[str]], dict[str, str]]:
        headers: list[list[str]] = []
        for line in text.split("\n"):
            if not line.strip("\r"):
                continue
            if line[0] == " " or line[0] == "\t":  # obs-fold
                if headers:
                    folded = line.strip(" \t\r")
                    headers[-1][1] = f"{headers[-1][1]} {folded}".strip()
                else:
                    self.stats["bad_header_lines"] += 1
                continue
            name, sep, value = line.partition(":")
            name = name.rstrip(" \t")
            if not sep or not name:
                self.stats["bad_header_lines"] += 1
                continue
            headers.append([name, value.strip(" \t\r")])
        found: dict[str, str] = {}
        for name, value in headers:
            low = name.lower()
            if low in _INTERESTING:
                _note(found, low, value)
        return headers, found

    def _start_request(
        self,
        side: _Side,
        line: tuple[Any, ...],
        headers: list[list[str]],
        found: dict[str, str],
        ts: float,
        wire: int,
        out: list[Event],
        *,
        partial: bool = False,
    ) -> None:
        method, target, version = line
        msg = _Message(ts, version.decode("ascii"), headers, wire)
        msg.truncated = partial
        msg.method = method.decode("ascii")
        msg.target = _text(target)
        msg.host = found.get("host")
        msg.content_encoding = found.get("content-encoding")
        msg.upgrade = found.get("upgrade")
        self.stats["requests"] += 1
        self.stats["messages"] += 1
        pair = _Pair(msg)
        self._enqueue(pair, out)
        side.pair = pair
        side.msg = msg
        if partial:
            self._end_message(side, out)
            return
        te = found.get("transfer-encoding")
        if te is not None and "chunked" in te.lower():
            side.state = _CHUNK_SIZE
            return
        length = _content_length(found.get("content-length"))
        if length:
            side.remaining = length
            side.state = _BODY
            return
        self._end_message(side, out)

    def _start_response(
        self,
        side: _Side,
        line: tuple[Any, ...],
        headers: list[list[str]],
        found: dict[str, str],
        ts: float,
        wire: int,
        out: list[Event],
        *,
        partial: bool = False,
    ) -> bool:
        """Begin a response; returns True when a paused client must resume."""
        version, status_b, reason = line
        msg = _Message(ts, version.decode("ascii"), headers, wire)
        msg.truncated = partial
        status = int(status_b)
        msg.status = status
        msg.reason = _text(reason) if reason else ""
        msg.content_encoding = found.get("content-encoding")
        msg.upgrade = found.get("upgrade")
        self.stats["responses"] += 1
        self.stats["messages"] += 1
        pair = side.pair
        if pair is None:
            pair = self._next_unanswered()
            if pair is None:
                pair = _Pair(None)
        side.pair = pair
        req = pair.req
        if 100 <= status < 200 and status != 101:
            self.stats["informational"] += 1
            pair.info.append(msg)
            return False
        pair.resp = msg
        pair.answered = True
        side.msg = msg
        if partial:
            self._end_message(side, out)
            return self._sides[CLIENT].state == _PAUSED and self._paused_for is pair
        connect = req is not None and req.method == "CONNECT"
        if status == 101 and req is not None and req.upgrade is None:
            # A server may only switch protocols when the client asked (RFC 9110 15.2.2): this
            # 101 is damage (or a broken server). Keep parsing HTTP, and say so.
            self.stats["desyncs"] += 1
            out.append(
                Desynced(direction=side.direction, reason="101 without an Upgrade request")
            )
        elif status == 101 or (connect and 200 <= status < 300):
            self._upgrade(side, pair, msg, connect, out)
            return False
        resume = self._sides[CLIENT].state == _PAUSED and self._paused_for is pair
        if (req is not None and req.method == "HEAD") or status in (101, 204, 304):
            self._end_message(side, out)
            return resume
        te = found.get("transfer-encoding")
        if te is not None:
            if te.lower().replace(" ", "").endswith("chunked"):
                side.state = _CHUNK_SIZE
            else:
                side.state = _CLOSE_BODY
            return resume
        length = _content_length(found.get("content-length"))
        if length is None:
            side.state = _CLOSE_BODY
        elif length:
            side.remaining = length
            side.state = _BODY
        else:
            self._end_message(side, out)
        return resume

    def _upgrade(
        self, side: _Side, pair: _Pair, msg: _Message, connect: bool, out: list[Event]
    ) -> None:
        req = pair.req
        if req is not None:
            self.upgrade_request = {
                "method": req.method,
                "path": req.target,
                "headers": req.headers,
                "ts": req.ts,
                "size": req.wire,
                "host": req.host,
            }
        self.upgraded = (
            "CONNECT"
            if connect
            else msg.upgrade or (req.upgrade if req is not None else None) or "unknown"
        )
        client = self._sides[CLIENT]
        if req is not None and not pair.req_done:
            req.truncated = True
            pair.req_done = True
        if client.pair is pair:
            client.msg = None
            client.pair = None
        if client.state == _SCAN:
            self._end_episode(client, out)
        client.state = _UPGRADED
        self._cap_held(client, out)
        side.msg = None
        side.pair = None
        side.state = _UPGRADED
        pair.resp_done = True
        if req is None:
            self._emit(pair, out)
        else:
            self._drain(out)

    def _end_message(self, side: _Side, out: list[Event]) -> None:
        msg = side.msg
        pair = side.pair
        side.msg = None
        side.head_scan = 0
        side.state = _HEAD
        if msg is not None and (msg.truncated or msg.desynced):
            self.stats["truncated_messages"] += 1
        if pair is None:
            return
        if side.direction == CLIENT:
            side.pair = None
            pair.req_done = True
            req = pair.req
            if (
                req is not None
                and not pair.answered
                and (req.upgrade is not None or req.method == "CONNECT")
            ):
                side.state = _PAUSED
                self._paused_for = pair
            self._drain(out)
            return
        side.pair = None
        pair.resp_done = True
        if pair.req is None:
            self._emit(pair, out)
        else:
            self._drain(out)

    def _next_unanswered(self) -> _Pair | None:
        for pair in self._queue:
            if not pair.answered:
                return pair
        return None

    def _enqueue(self, pair: _Pair, out: list[Event]) -> None:
        queue = self._queue
        if len(queue) >= MAX_PENDING:
            victim = next(
                (p for p in queue if p.req_done and not p.answered and not p.info), queue[0]
            )
            queue.remove(victim)
            self.stats["queue_dropped"] += 1
            self._emit(victim, out)
        queue.append(pair)

    def _drain(self, out: list[Event]) -> None:
        queue = self._queue
        while queue:
            pair = queue[0]
            if not (pair.req_done and pair.resp_done):
                return
            queue.popleft()
            self._emit(pair, out)

    def _resume(self, client: _Side, out: list[Event]) -> None:
        """The upgrade a paused client asked for did not happen: parse what it held."""
        self._paused_for = None
        if client.state != _PAUSED:
            return
        client.state = _HEAD
        dropped = client.held_dropped
        client.held_dropped = 0
        if client.buf:
            self._run(client, client.res_ts, len(client.buf), out)
        if dropped:
            self._gap(client, dropped, out)

    def _hold(self, side: _Side, data: bytes, out: list[Event]) -> None:
        room = MAX_UPGRADE_BUFFER - len(side.buf)
        if room >= len(data):
            side.buf += data
            return
        if room > 0:
            side.buf += data[:room]
        self.stats["upgrade_dropped"] += len(data) - max(room, 0)

    def _cap_held(self, side: _Side, out: list[Event]) -> None:
        over = len(side.buf) - MAX_UPGRADE_BUFFER
        if over > 0:
            del side.buf[MAX_UPGRADE_BUFFER:]
            self.stats["upgrade_dropped"] += over
            if side.state == _PAUSED:
                if not side.held_dropped:
                    out.append(Truncated(direction=side.direction, what="held bytes", dropped=over))
                side.held_dropped += over

    def _partial_head(self, side: _Side, out: list[Event]) -> None:
        """A head cut by a gap or a close: keep its start line and complete header lines.

        The message is emitted as ``truncated`` (a snaplen-cut first packet still shows its
        status); its body framing is unknown, so the direction then resynchronises.
        """
        buf = side.buf
        n = len(buf)
        pos = 0
        while pos < n and (buf[pos] == 13 or buf[pos] == 10):
            pos += 1
        nl = buf.find(b"\n", pos, pos + MAX_START_LINE + 1)
        if nl < 0:
            return
        is_client = side.direction == CLIENT
        line = (_REQUEST_LINE if is_client else _STATUS_LINE).fullmatch(buf, pos, nl)
        if line is None:
            return
        last = buf.rfind(b"\n", nl + 1, pos + MAX_HEADER_BYTES)
        headers, found = self._headers(bytes(buf[nl + 1 : last]) if last > nl else b"")
        wire = n - pos
        side.head_scan = 0
        self.stats["truncated_messages"] += 1
        if is_client:
            self._start_request(
                side, line.groups(), headers, found, side.res_ts, wire, out, partial=True
            )
        else:
            if self._start_response(
                side, line.groups(), headers, found, side.res_ts, wire, out, partial=True
            ):
                self._resume(self._sides[CLIENT], out)
        buf.clear()

    def _gap(self, side: _Side, size: int, out: list[Event]) -> None:
        st = side.state
        msg = side.msg
        if st == _UPGRADED:
            self.stats["upgrade_dropped"] += size
            return
        if msg is not None and (st in (_BODY, _CHUNK_DATA, _CLOSE_BODY)):
            take = size if st == _CLOSE_BODY else min(size, side.remaining)
            msg.truncated = True
            msg.body_size += take
            msg.wire += take
            size -= take
            if st != _CLOSE_BODY:
                side.remaining -= take
                if not side.remaining:
                    if st == _BODY:
                        self._end_message(side, out)
                    else:
                        side.state = _CHUNK_END
            if not size:
                return
        # Lost bytes outside a body: the framing is gone.
        if st == _HEAD and side.buf:
            self._partial_head(side, out)
        if side.buf:
            self.stats["skipped_bytes"] += len(side.buf)
            side.skipped += len(side.buf)
            side.buf.clear()
        if side.state == _PAUSED:
            side.held_dropped = 0
            side.state = _HEAD
        if side.state != _SCAN:
            self._desync(side, "capture gap", out)
        side.at_line_start = False
        side.advance = False

    def _close(self, side: _Side, out: list[Event]) -> None:
        st = side.state
        if st in (_UPGRADED, _PAUSED):
            return
        if st == _CLOSE_BODY:
            self._end_message(side, out)
        elif side.msg is not None:
            side.msg.truncated = True
            self._end_message(side, out)
        elif side.buf and st == _HEAD:
            self._partial_head(side, out)
            if side.buf:
                side.episode = side.episode or "closed inside a message head"
        if side.buf:
            self.stats["skipped_bytes"] += len(side.buf)
            side.skipped += len(side.buf)
            side.buf.clear()
        self._end_episode(side, out)
        side.state = _HEAD
        side.at_line_start = True
        side.advance = False

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
        side.msg = None
        side.pair = None
        side.episode = None
        side.skipped = 0
        side.head_scan = 0
        side.at_line_start = False
        side.advance = False
        if side.state != _UPGRADED:
            side.state = _SCAN

    # -- output ----------------------------------------------------------------------------------

    def _emit(self, pair: _Pair, out: list[Event]) -> None:
        if pair.emitted:
            return
        pair.emitted = True
        req = pair.req
        resp = pair.resp
        cap = self.body_cap
        if req is None:
            error: str | None = NO_REQUEST
        elif resp is None:
            error = NO_RESPONSE
        elif req.desynced or resp.desynced:
            error = DESYNCED
        elif req.truncated or resp.truncated:
            error = TRUNCATED
        else:
            error = None
        if req is not None:
            ex = Exchange(
                proto="http",
                ts=req.ts,
                method=req.method,
                summary=req.target,
                request_size=req.wire,
                request=_request_json(req, cap),
                error=error,
                extra={"host": req.host},
            )
        elif resp is not None:
            ex = Exchange(proto="http", ts=resp.ts, error=error, extra={"host": None})
        else:
            return
        if resp is not None:
            ex.status = resp.status
            ex.response_size = resp.wire + sum(m.wire for m in pair.info)
            ex.response = _response_json(resp, pair.info, cap)
            if req is not None:
                ex.latency_ms = (resp.ts - req.ts) * 1000.0
        if req is not None and ex.request is not None and _maybe_graphql(req, ex.request):
            _as_graphql(ex, req)
        self.stats["exchanges"] += 1
        out.append(ExchangeCompleted(exchange=ex))


#: Feeds remembered per buffered direction (more only while a head spans that many segments).
_MAX_MARKS = 64


def _time_at(marks: list[tuple[int, float]], pos: int) -> float:
    """Capture time of the feed that brought the byte at ``pos``."""
    for offset, ts in reversed(marks):
        if offset <= pos:
            return ts
    return marks[0][1] if marks else 0.0


def _trim_marks(marks: list[tuple[int, float]], pos: int) -> list[tuple[int, float]]:
    """``marks`` after the first ``pos`` bytes of the buffer were consumed."""
    kept = [(offset - pos, ts) for offset, ts in marks if offset > pos]
    return [(0, _time_at(marks, pos)), *kept]


def _content_type(headers: list[list[str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "content-type":
            return value
    return None


def _maybe_graphql(req: _Message, request: JSON) -> bool:
    return may_be_graphql(
        req.method,
        request.get("path"),
        request.get("query") or (),
        _content_type(req.headers),
        req.body,
    )


def _as_graphql(ex: Exchange, req: _Message) -> None:
    from shark_tui.proto import graphql  # graphql-core is imported only when it may be needed

    assert ex.request is not None
    g = graphql.recognize(
        req.method,
        str(ex.request.get("path", "")),
        list(ex.request.get("query") or []),
        _content_type(req.headers),
        bytes(req.body),
    )
    if g is None:
        return
    ex.proto = "graphql"
    ex.request["graphql"] = g
    method, summary = graphql.entry_fields(g)
    ex.method = method
    ex.summary = summary


def _note(found: dict[str, str], low: str, value: str) -> None:
    """Remember an interesting header: the first Host, the others joined with commas."""
    if low not in found:
        found[low] = value
    elif low != "host":
        found[low] = f"{found[low]}, {value}"


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _content_length(value: str | None) -> int | None:
    """The first Content-Length value, or None when absent or not a number."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    if not first.isdigit() or not first.isascii():
        return None
    return int(first)


def _split_target(target: str) -> tuple[str, list[list[str]]]:
    """(path without query, percent-decoded query pairs) of a request target."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
    elif "://" in target:  # absolute-form (to a proxy)
        rest = target.split("://", 1)[1].partition("#")[0]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        path, _, query = rest[cut:].partition("?")
        path = path or "/"
    else:  # authority-form (CONNECT) or asterisk-form (OPTIONS *)
        return target, []
    return path, query_pairs(query) if query else []


def _body_json(msg: _Message, cap: int) -> JSON:
    body = render_body(
        bytes(msg.body),
        content_encoding=msg.content_encoding,
        cap=cap,
        truncated=msg.cap_hit or msg.truncated or msg.desynced,
    )
    body["body_size"] = msg.body_size
    if msg.trailers is not None:
        body["trailers"] = msg.trailers
    return body


def _request_json(msg: _Message, cap: int) -> JSON:
    path, query = _split_target(msg.target)
    out: JSON = {
        "version": msg.version,
        "method": msg.method,
        "target": msg.target,
        "path": path,
        "query": query,
        "headers": msg.headers,
    }
    out.update(_body_json(msg, cap))
    return out


def _response_json(msg: _Message, info: list[_Message], cap: int) -> JSON:
    out: JSON = {
        "version": msg.version,
        "status": msg.status,
        "reason": msg.reason,
        "headers": msg.headers,
    }
    out.update(_body_json(msg, cap))
    if info:
        out["informational"] = [
            {"version": m.version, "status": m.status, "reason": m.reason, "headers": m.headers}
            for m in info
        ]
    return out
