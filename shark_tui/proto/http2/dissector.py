"""HTTP/2 for a passive observer: hyperframe for frames, one hpack decoder per direction.

``Http2Dissector`` follows both directions of one HTTP/2 connection (prior knowledge, TLS with
ALPN ``h2``, or the h2c upgrade from HTTP/1.1) and turns each stream into one exchange. It is
not an endpoint: it enforces no flow control, no stream-state machine and no SETTINGS limit, it
only needs to stay in step with the frames and with the HPACK state of each direction.

Frames: the client direction starts with the connection preface (skipped); every frame is split
by its 9-byte header (``hyperframe.Frame.parse_frame_header``) and, except DATA, parsed whole
(``parse_body``). DATA payloads are streamed: they are never buffered whole, only the first
``body_cap`` bytes of each message are kept (four times that for gRPC, whose messages are parsed
from them). A non-DATA frame longer than ``MAX_HEADER_BLOCK`` is skipped, not buffered.

Streams: HEADERS (plus its CONTINUATION frames, joined before decoding) opens a stream; the
client's HEADERS are the request, the server's are the response, preceded by any 1xx
(``informational``) and followed by trailers; END_STREAM ends a direction's half. A stream is
emitted once, when both halves ended, when it is reset (RST_STREAM: ``rst_stream`` in the
response, ``no_response`` when no response HEADERS came), when a GOAWAY's last-stream-id leaves it
out (``no_response``), at ``finish``, at ``expire`` (a request that ended more than
``PENDING_TIMEOUT`` seconds ago without response HEADERS: ``no_response``), or when more than
``MAX_STREAMS`` are open (the oldest goes, counted in ``stats["streams_dropped"]``). A
PUSH_PROMISE opens the promised stream: its request is the promised header block, its response
what the server sends on it. SETTINGS, PING, WINDOW_UPDATE and PRIORITY are only counted.

HPACK for an observer: each direction's header blocks go through one ``hpack.Decoder`` while
its dynamic table is known. SETTINGS_HEADER_TABLE_SIZE sent by one end limits the other end's
encoder: it becomes the ``max_allowed_table_size`` of the decoder for the other direction when
that direction acknowledges the SETTINGS; the table size itself follows the encoder's dynamic
table size updates. When a block cannot be decoded (joined mid-way, bytes lost to a gap, a block
over the cap, a malformed block) the table of that direction is unknown from then on. Blocks are
then decoded field by field: static-table entries, literals, and dynamic entries inserted since
the state became unknown (the newest entries of the table, so their indices are known) are
decoded; a reference to an older dynamic entry is left out, never guessed. The message gets
``headers_lost: true`` and the exchange ``error: "header_state_unknown"``. A block that starts
with a dynamic table size update to 0 empties the table: the state is known again from there.

Joining mid-way (``midstream=True``, or after a capture gap outside a DATA payload): the
direction scans for a plausible frame header (length at most 16384 or what SETTINGS allowed,
capped at ``MAX_SCAN_FRAME``; a known type; flags valid for that type; the stream-id and length
rules of the type; odd (client-initiated) streams only, so pushed streams are not found by a
scan; not an empty DATA without END_STREAM or an empty header frame) confirmed by chaining: the
frame headers that follow it must be plausible through all the bytes at hand (``_chain_ok``).
Skipped bytes are reported with one ``Desynced`` per episode. A gap inside a DATA payload only
truncates that body (``error: "truncated"``); streams with a message in progress in a direction
that lost sync end ``desynced``.

Timing and sizes: an exchange's ``ts`` is the capture time of the first byte of the request's
HEADERS frame (of the PUSH_PROMISE for a pushed stream); ``latency_ms`` runs to the first byte
of the final (non-1xx) response HEADERS frame, as in HTTP/1 (``Http1Dissector``).
``request_size``/``response_size`` are the bytes of the frames of that stream in that direction,
frame headers included.

Errors, in order of precedence: ``no_request``, ``no_response``, ``header_state_unknown``,
``desynced``, ``truncated``. No exception escapes a public method: a bug is caught, counted in
``stats["internal_errors"]`` and turns into a ``Desynced`` of that direction.

gRPC and GraphQL: when ``shark_tui.proto.grpc`` / ``shark_tui.proto.graphql`` are importable,
``_classify`` turns a finished exchange into ``proto="grpc"`` (``content-type``
application/grpc...) or ``proto="graphql"``; otherwise it stays ``http2``.
"""

from __future__ import annotations

import base64
import importlib
import struct
from collections import deque
from typing import Any

from hpack import Decoder
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)

from shark_tui.proto.base import (
    CLIENT,
    DESYNCED,
    HEADER_STATE_UNKNOWN,
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
from shark_tui.proto.graphql_hint import may_be_graphql
from shark_tui.proto.urls import query_pairs

#: The client connection preface (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Default bytes kept of each body (``body_cap``); the rest counts in sizes but is not kept.
DEFAULT_BODY_CAP = 64 * 1024
#: gRPC bodies keep this many times ``body_cap`` for message parsing.
GRPC_BODY_FACTOR = 4
#: Streams tracked at once; one more emits the oldest (``stats["streams_dropped"]``).
MAX_STREAMS = 1024
#: Largest header block kept (HEADERS or PUSH_PROMISE plus CONTINUATION fragments), and largest
#: non-DATA frame buffered. Past it: ``Truncated``, and that direction's HPACK state is unknown.
MAX_HEADER_BLOCK = 256 * 1024
#: Largest decoded header list of one block (hpack's ``max_header_list_size``).
MAX_DECODED_HEADERS = 1024 * 1024
#: Largest frame a scan for a frame boundary accepts (whatever SETTINGS_MAX_FRAME_SIZE says).
MAX_SCAN_FRAME = 1024 * 1024
#: Dynamic-table entries remembered while a direction's HPACK state is unknown, and their bytes.
MAX_TRACKED_ENTRIES = 4096
MAX_TRACKED_BYTES = 256 * 1024
#: Emitted stream ids remembered, so that late frames of a finished stream open nothing.
MAX_DONE_IDS = 4096
#: The largest length a 24-bit frame header can carry (2^24 - 1, RFC 9113 section 4.2).
MAX_FRAME_LENGTH = (1 << 24) - 1
#: Frame size every peer accepts before its SETTINGS say more.
DEFAULT_MAX_FRAME_SIZE = 16384

# Frame types (RFC 9113 section 6).
_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW, _CONT = range(10)
#: Flags each known type may carry.
_VALID_FLAGS = (0x09, 0x2D, 0x00, 0x00, 0x01, 0x0C, 0x01, 0x00, 0x00, 0x04)
_END_STREAM = 0x01
_END_HEADERS = 0x04
_PADDED = 0x08
_PRIORITY_FLAG = 0x20

_ERROR_NAMES = (
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
)
_SETTINGS_HEADER_TABLE_SIZE = 0x1
_SETTINGS_MAX_FRAME_SIZE = 0x5
_STATIC = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in HeaderTable.STATIC_TABLE)
_UNBOUNDED_TABLE = 1 << 32

# Per-direction states.
_PREFACE_STATE = 0  # expecting the client preface
_FRAME = 1  # expecting a frame header
_IN_DATA = 2  # in a DATA payload (``remaining`` data bytes, then ``pad`` padding bytes)
_SKIP = 3  # skipping ``remaining`` payload bytes of a frame not kept
_SCAN = 4  # unsynchronised: looking for a frame boundary

_MIDSTREAM = "joined mid-stream"
_U24 = struct.Struct(">BH")


def _optional(name: str) -> Any:
    """The module ``name``, or None while it does not exist (another part of the tree)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_GRPC: Any = _optional("shark_tui.proto.grpc")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _ts_at(marks: list[tuple[int, float]], pos: int) -> float:
    """Capture time of the buffered byte at ``pos``."""
    found = marks[0][1] if marks else 0.0
    for offset, ts in marks:
        if offset > pos:
            break
        found = ts
    return found


def _error_name(code: int) -> str:
    return _ERROR_NAMES[code] if 0 <= code < len(_ERROR_NAMES) else f"0x{code:x}"


# -- frame plausibility (scanning, inference) ------------------------------------------------------


def _plausible(buf: bytes | bytearray, pos: int, direction: int | None, max_len: int) -> int:
    """Length of the frame whose 9-byte header is at ``pos`` if it looks real, else -1."""
    typ = buf[pos + 3]
    if typ > _CONT:
        return -1
    flags = buf[pos + 4]
    if flags & ~_VALID_FLAGS[typ]:
        return -1
    length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
    if length > max_len:
        return -1
    if buf[pos + 5] & 0x80:  # the reserved bit
        return -1
    sid = int.from_bytes(buf[pos + 5 : pos + 9], "big")
    if typ in (_SETTINGS, _PING, _GOAWAY):
        if sid:
            return -1
        if typ == _SETTINGS:
            ok = length % 6 == 0 and not (flags & 1 and length)
        elif typ == _PING:
            ok = length == 8
        else:
            ok = length >= 8
        return length if ok else -1
    # Server push (even streams) is rare and long deprecated by browsers: a scan insists on
    # client-initiated (odd) streams, which keeps zero-filled payloads from looking like frames.
    if typ == _WINDOW:
        return length if length == 4 and (not sid or sid & 1) else -1
    if not sid & 1:
        return -1
    if typ == _PRIORITY:
        return length if length == 5 else -1
    if typ == _RST:
        return length if length == 4 else -1
    need = (1 if flags & _PADDED else 0) + (5 if typ == _HEADERS and flags & _PRIORITY_FLAG else 0)
    if typ == _PUSH:
        if direction == CLIENT:
            return -1
        need += 4
    return length if length >= need else -1


#: Frame headers a scan wants in a row (the candidate and those after it) before it trusts a
#: boundary whose chain runs into bytes not yet received; past ``_CHAIN_MAX`` it stops checking.
_CHAIN = 3
_CHAIN_MAX = 64


def _chain_ok(
    buf: bytes | bytearray, pos: int, direction: int | None, max_len: int, final: bool
) -> int:
    """At ``pos``: 1 = a frame boundary, 0 = not one, -1 = cannot tell yet (more bytes needed).

    From the candidate, frame headers are followed through all the bytes at hand: every one
    must be plausible. The chain may end exactly at the end of the bytes after two frames (one
    at ``final``), or run into bytes not received yet once ``_CHAIN`` headers (two at
    ``final``) agreed. A lone frame that happens to end the bytes is not trusted: one false
    header in a payload would be enough for that.
    """
    n = len(buf)
    at = pos
    for depth in range(_CHAIN_MAX):
        if at == n and (depth >= 2 or (final and depth)):
            return 1
        if n - at < 9:
            if depth >= _CHAIN or (final and depth >= 2):
                return 1
            return 0 if final else -1
        length = _plausible(buf, at, direction, max_len)
        if length < 0 or (depth == 0 and not length and _empty_is_odd(buf, at)):
            return 0
        at += 9 + length
        if at > n:
            if depth + 1 >= _CHAIN or (final and depth >= 1):
                return 1
            return 0 if final else -1
    return 1


def _empty_is_odd(buf: bytes | bytearray, pos: int) -> bool:
    """An empty frame that real peers (almost) never send: no scan starts on it."""
    typ = buf[pos + 3]
    if typ == _DATA:
        return not buf[pos + 4] & _END_STREAM
    return typ in (_HEADERS, _CONT, _PUSH)


def looks_like_http2_frames(data: bytes) -> bool:
    """True when ``data`` starts with the client preface, or with at least two chained plausible
    HTTP/2 frame headers (a connection joined mid-way, cut at a frame boundary)."""
    if data.startswith(PREFACE):
        return True
    n = len(data)
    if n < 18:
        return False
    length = _plausible(data, 0, None, DEFAULT_MAX_FRAME_SIZE)
    if length < 0 or 9 + length + 9 > n:
        return False
    return _plausible(data, 9 + length, None, DEFAULT_MAX_FRAME_SIZE) >= 0


# -- HPACK state of one direction ------------------------------------------------------------------


class _HeaderState:
    """The HPACK decoding state of the header blocks one direction sends (module docstring)."""

    __slots__ = ("decoder", "max_allowed", "tracked", "tracked_bytes")

    def __init__(self, known: bool) -> None:
        #: The decoder's ``max_allowed_table_size`` (None: SETTINGS not seen, do not enforce).
        self.max_allowed: int | None = HeaderTable.DEFAULT_SIZE if known else None
        self.decoder: Decoder | None = self._fresh() if known else None
        # Entries inserted since the state became unknown, newest first (None: name unknown).
        self.tracked: deque[tuple[str, str] | None] = deque()
        self.tracked_bytes = 0

    @property
    def known(self) -> bool:
        return self.decoder is not None

    def _fresh(self) -> Decoder:
        decoder = Decoder(max_header_list_size=MAX_DECODED_HEADERS)
        decoder.max_allowed_table_size = (
            self.max_allowed if self.max_allowed is not None else _UNBOUNDED_TABLE
        )
        return decoder

    def set_max_allowed(self, size: int) -> None:
        self.max_allowed = size
        if self.decoder is not None:
            self.decoder.max_allowed_table_size = size

    def lose(self) -> None:
        """The table is unknown from now on."""
        self.decoder = None
        self.tracked.clear()
        self.tracked_bytes = 0

    def decode(self, block: bytes) -> tuple[list[list[str]], bool]:
        """(decoded fields, some were left out)."""
        decoded = self._full(block)
        if decoded is not None:
            return decoded, False
        if block and block[0] & 0xE0 == 0x20 and _starts_with_table_reset(block):
            # The encoder emptied its table: the state is known again from here. One try: a
            # block that still fails leaves the state unknown (no retry loop).
            self.decoder = self._fresh()
            self.tracked.clear()
            self.tracked_bytes = 0
            decoded = self._full(block)
            if decoded is not None:
                return decoded, False
        return self._partial(block)

    def _full(self, block: bytes) -> list[list[str]] | None:
        """The block through the hpack decoder while the table is known, else None."""
        decoder = self.decoder
        if decoder is None:
            return None
        try:
            pairs = decoder.decode(block, raw=True)
        except Exception:
            self.lose()
            return None
        return [[_text(bytes(n)), _text(bytes(v))] for n, v in pairs]

    def _entry(self, index: int) -> tuple[str, str] | None:
        if index <= 0:
            raise ValueError("index 0")
        if index <= len(_STATIC):
            return _STATIC[index - 1]
        i = index - len(_STATIC) - 1
        return self.tracked[i] if i < len(self.tracked) else None

    def _insert(self, entry: tuple[str, str] | None) -> None:
        tracked = self.tracked
        tracked.appendleft(entry)
        if entry is not None:
            self.tracked_bytes += len(entry[0]) + len(entry[1])
        while tracked and (
            len(tracked) > MAX_TRACKED_ENTRIES or self.tracked_bytes > MAX_TRACKED_BYTES
        ):
            old = tracked.pop()
            if old is not None:
                self.tracked_bytes -= len(old[0]) + len(old[1])

    def _partial(self, block: bytes) -> tuple[list[list[str]], bool]:
        """Decode what does not depend on the unknown part of the dynamic table."""
        headers: list[list[str]] = []
        lost = False
        mv = memoryview(block)
        n = len(block)
        pos = 0
        inserted: list[tuple[str, str] | None] = []
        try:
            while pos < n:
                b = block[pos]
                if b & 0x80:  # indexed field
                    index, used = _integer(mv, pos, 7)
                    pos += used
                    entry = self._entry(index)
                    if entry is None:
                        lost = True
                    else:
                        headers.append([entry[0], entry[1]])
                    continue
                if b & 0xE0 == 0x20:  # dynamic table size update
                    _, used = _integer(mv, pos, 5)
                    pos += used
                    continue
                prefix = 6 if b & 0x40 else 4
                index, used = _integer(mv, pos, prefix)
                pos += used
                name: str | None
                if index:
                    entry = self._entry(index)
                    name = entry[0] if entry is not None else None
                else:
                    raw, pos = _string(mv, pos)
                    name = _text(raw)
                raw, pos = _string(mv, pos)
                value = _text(raw)
                if name is None:
                    lost = True
                else:
                    headers.append([name, value])
                if prefix == 6:
                    entry = (name, value) if name is not None else None
                    self._insert(entry)
                    inserted.append(entry)
        except Exception:
            # A malformed block: nothing of it is trusted, and what it inserted is unknown.
            self.tracked.clear()
            self.tracked_bytes = 0
            return [], True
        return headers, lost


def _integer(mv: memoryview, pos: int, prefix: int) -> tuple[int, int]:
    """An HPACK integer at ``pos`` with a ``prefix``-bit prefix: (value, bytes used)."""
    mask = (1 << prefix) - 1
    value = mv[pos] & mask
    if value < mask:
        return value, 1
    shift = 0
    i = pos + 1
    while True:
        if i >= len(mv) or shift > 28:
            raise ValueError("bad integer")
        byte = mv[i]
        value += (byte & 0x7F) << shift
        shift += 7
        i += 1
        if not byte & 0x80:
            return value, i - pos


def _string(mv: memoryview, pos: int) -> tuple[bytes, int]:
    """An HPACK string literal at ``pos``: (bytes, position after it)."""
    huffman = mv[pos] & 0x80
    length, used = _integer(mv, pos, 7)
    start = pos + used
    end = start + length
    if end > len(mv):
        raise ValueError("truncated string")
    raw = mv[start:end].tobytes()
    return (decode_huffman(raw) if huffman else raw), end


def _starts_with_table_reset(block: bytes) -> bool:
    """The block starts with dynamic table size updates, one of them to 0 (the table empties)."""
    mv = memoryview(block)
    pos = 0
    while pos < len(block) and block[pos] & 0xE0 == 0x20:
        try:
            size, used = _integer(mv, pos, 5)
        except ValueError:
            return False
        if size == 0:
            return True
        pos += used
    return False


# -- streams ---------------------------------------------------------------------------------------


class _Msg:
    """One direction of a stream: a request, a response, or a 1xx."""

    __slots__ = (
        "body",
        "body_size",
        "cap_hit",
        "content_encoding",
        "content_type",
        "desynced",
        "done",
        "end_ts",
        "headers",
        "keep_cap",
        "lost",
        "pseudo",
        "trailers",
        "trailers_lost",
        "truncated",
        "ts",
    )

    def __init__(self, ts: float, headers: list[list[str]], lost: bool, keep_cap: int) -> None:
        self.ts = ts
        self.end_ts = ts
        self.headers = headers
        self.lost = lost
        self.pseudo: dict[str, str] = {}
        self.content_type: str | None = None
        self.content_encoding: str | None = None
        for name, value in headers:
            if name.startswith(":"):
                self.pseudo.setdefault(name, value)
            elif name == "content-type" and self.content_type is None:
                self.content_type = value
            elif name == "content-encoding" and self.content_encoding is None:
                self.content_encoding = value
        self.keep_cap = keep_cap
        if _GRPC is not None and self.content_type is not None:
            try:
                if _GRPC.is_grpc(self.content_type):
                    self.keep_cap = keep_cap * GRPC_BODY_FACTOR
            except Exception:
                pass
        self.body = bytearray()
        self.body_size = 0
        self.cap_hit = False
        self.truncated = False
        self.desynced = False
        self.done = False
        self.trailers: list[list[str]] | None = None
        self.trailers_lost = False

    @property
    def status(self) -> int | None:
        value = self.pseudo.get(":status")
        if value is not None and value.isdigit() and value.isascii() and len(value) == 3:
            return int(value)
        return None


class _Stream:
    __slots__ = (
        "emitted",
        "info",
        "pushed",
        "req",
        "req_version",
        "resp",
        "rst",
        "sid",
        "ts",
        "wire",
    )

    def __init__(self, sid: int, ts: float) -> None:
        self.sid = sid
        self.ts = ts
        self.req: _Msg | None = None
        self.resp: _Msg | None = None
        self.info: list[_Msg] = []
        self.rst: str | None = None
        self.pushed = False
        self.emitted = False
        self.req_version = "HTTP/2"
        self.wire = [0, 0]


class _Block:
    """A header block being joined from HEADERS/PUSH_PROMISE and CONTINUATION frames."""

    __slots__ = (
        "end_stream",
        "fragments",
        "frame_sid",
        "overflow",
        "pushed",
        "target",
        "ts",
        "wire",
    )

    def __init__(self, frame_sid: int, target: int, ts: float, pushed: bool, end_stream: bool):
        #: The stream id its frames carry (the associated stream for a PUSH_PROMISE).
        self.frame_sid = frame_sid
        #: The stream it belongs to (the promised stream for a PUSH_PROMISE).
        self.target = target
        self.ts = ts
        self.pushed = pushed
        self.end_stream = end_stream
        self.fragments = bytearray()
        self.overflow = False
        self.wire = 0


class _Side:
    """The parser state of one direction."""

    __slots__ = (
        "block",
        "buf",
        "data_end",
        "data_msg",
        "direction",
        "episode",
        "hpack",
        "marks",
        "max_frame",
        "pad",
        "pending_settings",
        "remaining",
        "scan_pos",
        "skipped",
        "state",
    )

    def __init__(self, direction: int, midstream: bool) -> None:
        self.direction = direction
        self.buf = bytearray()
        if midstream:
            self.state = _SCAN
        else:
            self.state = _PREFACE_STATE if direction == CLIENT else _FRAME
        #: (offset in ``buf``, capture time) of each feed whose bytes ``buf`` holds, in order.
        self.marks: list[tuple[int, float]] = []
        self.remaining = 0
        self.pad = 0
        self.data_msg: _Msg | None = None
        self.data_end: tuple[_Stream, bool] | None = None
        self.block: _Block | None = None
        self.hpack = _HeaderState(known=not midstream)
        #: Largest frame this direction may send (the other end's SETTINGS_MAX_FRAME_SIZE).
        self.max_frame = DEFAULT_MAX_FRAME_SIZE
        #: HEADER_TABLE_SIZE values of SETTINGS this direction sent, not yet acknowledged
        #: (None: a SETTINGS without it).
        self.pending_settings: deque[int | None] = deque(maxlen=64)
        self.episode: str | None = _MIDSTREAM if midstream else None
        self.skipped = 0
        self.scan_pos = 0


class Http2Dissector:
    """Sans-IO HTTP/2 dissector of one TCP connection (see the module docstring).

    ``upgrade``: the HTTP/1.1 request that was answered ``101 Switching Protocols`` to h2c
    (``{"method", "path", "headers", "ts", "size"}``): it is stream 1, already sent, and its
    response comes as HTTP/2; its ``HTTP2-Settings`` header counts as the client's SETTINGS.
    """

    def __init__(
        self,
        *,
        midstream: bool = False,
        body_cap: int = DEFAULT_BODY_CAP,
        upgrade: dict[str, Any] | None = None,
    ) -> None:
        self.body_cap = max(0, body_cap)
        #: Counters; never reset.
        self.stats: dict[str, int] = {
            "frames": 0,
            "data_frames": 0,
            "headers_frames": 0,
            "continuation_frames": 0,
            "settings": 0,
            "ping": 0,
            "window_update": 0,
            "priority": 0,
            "rst_stream": 0,
            "goaway": 0,
            "push_promise": 0,
            "unknown_frames": 0,
            "oversized_frames": 0,
            "late_frames": 0,
            "exchanges": 0,
            "header_blocks": 0,
            "header_blocks_lost": 0,
            "header_overflows": 0,
            "truncated_bodies": 0,
            "streams_dropped": 0,
            "expired": 0,
            "desyncs": 0,
            "skipped_bytes": 0,
            "gap_bytes": 0,
            "bad_frames": 0,
            "classify_errors": 0,
            "internal_errors": 0,
        }
        self._sides = (_Side(CLIENT, midstream), _Side(SERVER, midstream))
        self._streams: dict[int, _Stream] = {}
        self._done_ids: deque[int] = deque()
        self._done_set: set[int] = set()
        if upgrade is not None:
            try:
                self._upgrade(upgrade)
            except Exception:
                self.stats["internal_errors"] += 1

    # -- the Dissector interface -------------------------------------------------------------

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER) or not data:
            return out
        side = self._sides[direction]
        try:
            base = len(side.buf)
            side.marks.append((base, ts))
            side.buf += data
            self._run(side, ts, base, False, out)
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
            self._gap(side, size, ts, out)
        except Exception as exc:
            self._internal_error(side, exc, out)
        return out

    def close(self, direction: int, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER):
            return out
        side = self._sides[direction]
        try:
            self._close(side, ts, out)
        except Exception as exc:
            self._internal_error(side, exc, out)
        return out

    def finish(self, ts: float) -> list[Event]:
        out: list[Event] = []
        try:
            for side in self._sides:
                self._close(side, ts, out)
            for st in list(self._streams.values()):
                for msg in (st.req, st.resp):
                    if msg is not None and not msg.done:
                        msg.truncated = True
                self._emit(st, out)
        except Exception as exc:
            self._internal_error(self._sides[SERVER], exc, out)
            self._streams.clear()
        return out

    def expire(self, now: float) -> list[Event]:
        out: list[Event] = []
        try:
            limit = now - PENDING_TIMEOUT
            stale = [
                st
                for st in self._streams.values()
                if st.resp is None
                and not st.info
                and st.req is not None
                and st.req.done
                and st.req.end_ts < limit
            ]
            for st in stale:
                self.stats["expired"] += 1
                self._emit(st, out)
        except Exception as exc:
            self._internal_error(self._sides[SERVER], exc, out)
        return out

    def oldest_pending(self) -> float | None:
        times = [st.ts for st in self._streams.values()]
        for side in self._sides:
            if side.block is not None:
                times.append(side.block.ts)
        return min(times) if times else None

    # -- parsing -------------------------------------------------------------------------------

    def _run(self, side: _Side, ts: float, base: int, final: bool, out: list[Event]) -> None:
        """Parse what ``side.buf`` holds; bytes from ``base`` on arrived at ``ts``."""
        buf = side.buf
        n = len(buf)
        pos = 0
        while pos < n:
            st = side.state
            if st == _IN_DATA:
                if side.remaining:
                    take = min(side.remaining, n - pos)
                    msg = side.data_msg
                    if msg is not None:
                        self._keep(msg, buf, pos, take)
                    side.remaining -= take
                    pos += take
                if not side.remaining and side.pad:
                    take = min(side.pad, n - pos)
                    side.pad -= take
                    pos += take
                if not side.remaining and not side.pad:
                    self._end_data(side, ts, out)
            elif st == _SKIP:
                take = min(side.remaining, n - pos)
                side.remaining -= take
                pos += take
                if not side.remaining:
                    side.state = _FRAME
            elif st == _FRAME:
                if n - pos < 9:
                    break
                frame_ts = ts if pos >= base else _ts_at(side.marks, pos)
                used = self._frame(side, buf, pos, frame_ts, out)
                if used < 0:
                    break
                pos += used
            elif st == _PREFACE_STATE:
                have = min(n - pos, len(PREFACE))
                if buf[pos : pos + have] != PREFACE[:have]:
                    self._desync(side, "no connection preface", out)
                    continue
                if have < len(PREFACE):
                    break
                pos += len(PREFACE)
                side.state = _FRAME
            else:  # _SCAN
                pos = self._scan(side, pos, final, out)
                if side.state == _SCAN:
                    break
        if pos:
            del buf[:pos]
            side.scan_pos = max(0, side.scan_pos - pos)
            marks = side.marks
            keep = 0
            while keep + 1 < len(marks) and marks[keep + 1][0] <= pos:
                keep += 1
            side.marks = [(max(0, o - pos), t) for o, t in marks[keep:]] if buf else []
        elif not buf:
            side.marks.clear()

    def _scan(self, side: _Side, pos: int, final: bool, out: list[Event]) -> int:
        """Look for a frame boundary from ``pos``; returns the new position."""
        buf = side.buf
        n = len(buf)
        max_len = min(side.max_frame, MAX_SCAN_FRAME)
        d = side.direction
        i = max(pos, side.scan_pos)
        while i < n:
            verdict = _chain_ok(buf, i, d, max_len, final)
            if verdict > 0:
                side.skipped += i - pos
                self.stats["skipped_bytes"] += i - pos
                side.scan_pos = 0
                self._end_episode(side, out)
                side.state = _FRAME
                return i
            if verdict < 0:
                break
            i += 1
        # Keep from the first position that may still turn out to be a boundary.
        side.scan_pos = 0
        side.skipped += i - pos
        self.stats["skipped_bytes"] += i - pos
        return i

    def _frame(self, side: _Side, buf: bytearray, pos: int, ts: float, out: list[Event]) -> int:
        """Handle the frame at ``pos``: bytes used, or -1 when more bytes are needed."""
        n = len(buf)
        head = bytes(buf[pos : pos + 9])
        try:
            frame, length = Frame.parse_frame_header(memoryview(head))
        except Exception as exc:
            self.stats["bad_frames"] += 1
            self._desync(side, f"bad frame header: {exc}", out, pos)
            return 0
        typ = head[3]
        flags = head[4]
        sid = frame.stream_id
        self.stats["frames"] += 1
        if typ == _DATA:
            padded = flags & _PADDED
            if padded and length:
                if n - pos < 10:
                    self.stats["frames"] -= 1
                    return -1
                pad = buf[pos + 9]
            else:
                pad = 0
            if padded and pad >= length:
                self.stats["bad_frames"] += 1
                self._desync(side, "DATA padding longer than the frame", out, pos)
                return 0
            self.stats["data_frames"] += 1
            self._interrupt_block(side, sid, out)
            st = self._stream_for(sid, ts, out)
            msg: _Msg | None = None
            if st is not None:
                st.wire[side.direction] += 9 + length
                msg = self._message_for_data(st, side.direction, ts)
            side.data_msg = msg
            side.data_end = (st, bool(flags & _END_STREAM)) if st is not None else None
            side.remaining = length - (1 if padded else 0) - pad
            side.pad = pad
            side.state = _IN_DATA
            if not side.remaining and not pad:
                self._end_data(side, ts, out)
            return 10 if padded else 9
        if length > MAX_HEADER_BLOCK:
            side.remaining = length
            side.state = _SKIP
            self.stats["oversized_frames"] += 1
            if typ in (_HEADERS, _PUSH, _CONT):
                self._header_overflow(side, sid, ts, length, flags, typ, out)
            return 9
        if n - pos < 9 + length:
            self.stats["frames"] -= 1
            return -1
        try:
            frame.parse_body(memoryview(bytes(buf[pos + 9 : pos + 9 + length])))
        except Exception as exc:
            self.stats["bad_frames"] += 1
            self._desync(side, f"bad {type(frame).__name__}: {exc}", out, pos)
            return 0
        wire = 9 + length
        if isinstance(frame, ContinuationFrame):
            self.stats["continuation_frames"] += 1
            self._continuation(side, frame, ts, wire, out)
            return wire
        self._interrupt_block(side, sid, out)
        if isinstance(frame, HeadersFrame):
            self.stats["headers_frames"] += 1
            block = _Block(sid, sid, ts, False, "END_STREAM" in frame.flags)
            self._start_block(side, block, frame.data, wire, "END_HEADERS" in frame.flags, out)
        elif isinstance(frame, PushPromiseFrame):
            self.stats["push_promise"] += 1
            block = _Block(sid, frame.promised_stream_id, ts, True, False)
            self._start_block(side, block, frame.data, wire, "END_HEADERS" in frame.flags, out)
        elif isinstance(frame, RstStreamFrame):
            self.stats["rst_stream"] += 1
            st = self._streams.get(sid)
            if st is not None:
                st.wire[side.direction] += wire
                st.rst = _error_name(frame.error_code)
                self._emit(st, out)
        elif isinstance(frame, SettingsFrame):
            self.stats["settings"] += 1
            self._settings(side, frame, out)
        elif isinstance(frame, GoAwayFrame):
            self.stats["goaway"] += 1
            self._goaway(side, frame.last_stream_id, out)
        else:
            if typ == _PING:
                self.stats["ping"] += 1
            elif typ == _WINDOW:
                self.stats["window_update"] += 1
            elif typ == _PRIORITY:
                self.stats["priority"] += 1
            else:
                self.stats["unknown_frames"] += 1
            if sid:
                st = self._streams.get(sid)
                if st is not None:
                    st.wire[side.direction] += wire
        return wire

    # -- header blocks ---------------------------------------------------------------------------

    def _start_block(
        self, side: _Side, block: _Block, data: bytes, wire: int, end: bool, out: list[Event]
    ) -> None:
        block.wire = wire
        block.fragments += data
        if end:
            self._block_done(side, block, out)
        else:
            side.block = block

    def _continuation(
        self, side: _Side, frame: ContinuationFrame, ts: float, wire: int, out: list[Event]
    ) -> None:
        block = side.block
        if block is None or frame.stream_id != block.frame_sid:
            # Its HEADERS was not seen (or another block is pending): the fragment is lost.
            if block is not None:
                self._interrupt_block(side, -1, out)
            self.stats["late_frames"] += 1
            side.hpack.lose()
            return
        block.wire += wire
        if not block.overflow:
            size = len(block.fragments) + len(frame.data)
            if size > MAX_HEADER_BLOCK:
                self._block_overflow(side, block, size, out)
            else:
                block.fragments += frame.data
        if "END_HEADERS" in frame.flags:
            side.block = None
            self._block_done(side, block, out)

    def _interrupt_block(self, side: _Side, sid: int, out: list[Event]) -> None:
        """A frame other than its CONTINUATION arrived while a header block was pending."""
        block = side.block
        if block is None:
            return
        side.block = None
        block.overflow = True  # never decoded: its contents are lost
        self._block_done(side, block, out)

    def _block_overflow(self, side: _Side, block: _Block, size: int, out: list[Event]) -> None:
        block.overflow = True
        block.fragments = bytearray()
        self.stats["header_overflows"] += 1
        out.append(Truncated(direction=side.direction, what="header block", dropped=size))

    def _header_overflow(
        self, side: _Side, sid: int, ts: float, length: int, flags: int, typ: int, out: list[Event]
    ) -> None:
        """A header frame too large to buffer: skipped, and its block is lost."""
        if typ == _CONT:
            block = side.block
            if block is None or block.frame_sid != sid:
                self._interrupt_block(side, sid, out)
                side.hpack.lose()
                return
        else:
            self._interrupt_block(side, sid, out)
            if typ == _PUSH:  # the promised stream id is in the skipped payload
                self.stats["header_overflows"] += 1
                out.append(Truncated(direction=side.direction, what="header block", dropped=length))
                side.hpack.lose()
                return
            block = _Block(sid, sid, ts, False, bool(flags & _END_STREAM))
        block.wire += 9 + length
        if not block.overflow:
            self._block_overflow(side, block, len(block.fragments) + length, out)
        if flags & _END_HEADERS:
            side.block = None
            self._block_done(side, block, out)
        else:
            side.block = block

    def _block_done(self, side: _Side, block: _Block, out: list[Event]) -> None:
        self.stats["header_blocks"] += 1
        if block.overflow:
            side.hpack.lose()
            headers: list[list[str]] = []
            lost = True
        else:
            headers, lost = side.hpack.decode(bytes(block.fragments))
        if lost:
            self.stats["header_blocks_lost"] += 1
        d = side.direction
        st = self._stream_for(block.target, block.ts, out)
        if st is None:
            return
        if block.pushed:
            if d != SERVER or st.req is not None:
                self.stats["late_frames"] += 1
                return
            st.pushed = True
            st.wire[CLIENT] += block.wire  # a pushed stream's "request" is the PUSH_PROMISE
            req = _Msg(block.ts, headers, lost, self.body_cap)
            req.done = True
            st.req = req
            return
        st.wire[d] += block.wire
        # A complete block without the pseudo-header that starts a message is a trailer block
        # whose message head was not seen (lost to a gap, or sent before the capture began).
        if d == CLIENT:
            msg = st.req
            if msg is None and not lost and not _has(headers, ":method"):
                msg = st.req = _Msg(block.ts, [], True, self.body_cap)
                _add_trailers(msg, headers, lost)
            elif msg is None:
                msg = st.req = _Msg(block.ts, headers, lost, self.body_cap)
            else:
                _add_trailers(msg, headers, lost)
        else:
            msg = st.resp
            if msg is None and not lost and not _has(headers, ":status"):
                msg = st.resp = _Msg(block.ts, [], True, self.body_cap)
                _add_trailers(msg, headers, lost)
            elif msg is None:
                msg = _Msg(block.ts, headers, lost, self.body_cap)
                status = msg.status
                if status is not None and 100 <= status < 200 and not block.end_stream:
                    st.info.append(msg)
                    return
                st.resp = msg
            else:
                _add_trailers(msg, headers, lost)
        if block.end_stream:
            self._end_msg(st, msg, block.ts, out)

    # -- streams ---------------------------------------------------------------------------------

    def _stream_for(self, sid: int, ts: float, out: list[Event]) -> _Stream | None:
        """The stream ``sid``, opened if new; None for a stream already emitted."""
        st = self._streams.get(sid)
        if st is not None:
            return st
        if sid in self._done_set or sid <= 0:
            self.stats["late_frames"] += 1
            return None
        streams = self._streams
        while len(streams) >= MAX_STREAMS:
            self.stats["streams_dropped"] += 1
            self._emit(next(iter(streams.values())), out)
        st = streams[sid] = _Stream(sid, ts)
        return st

    def _message_for_data(self, st: _Stream, direction: int, ts: float) -> _Msg | None:
        if direction == CLIENT:
            if st.pushed:
                return None
            if st.req is None:  # its HEADERS were not seen
                st.req = _Msg(ts, [], True, self.body_cap)
            return st.req
        if st.resp is None:
            st.resp = _Msg(ts, [], True, self.body_cap)
        return st.resp

    def _keep(self, msg: _Msg, buf: bytearray, pos: int, take: int) -> None:
        body = msg.body
        room = msg.keep_cap - len(body)
        if room >= take:
            body += buf[pos : pos + take]
        else:
            if room > 0:
                body += buf[pos : pos + room]
            if not msg.cap_hit:
                msg.cap_hit = True
                self.stats["truncated_bodies"] += 1
        msg.body_size += take

    def _end_data(self, side: _Side, ts: float, out: list[Event]) -> None:
        side.state = _FRAME
        msg = side.data_msg
        end = side.data_end
        side.data_msg = None
        side.data_end = None
        if msg is not None and end is not None and end[1]:
            self._end_msg(end[0], msg, ts, out)

    def _end_msg(self, st: _Stream, msg: _Msg, ts: float, out: list[Event]) -> None:
        if msg.done:
            return
        msg.done = True
        msg.end_ts = ts
        if st.emitted:
            return
        req = st.req
        resp = st.resp
        if req is None:
            client = self._sides[CLIENT]
            if client.state == _SCAN and client.buf:
                # The client's bytes are not in sync yet (joined mid-way): its HEADERS for this
                # stream may be among them. Wait; finish() or expire() emit it if not.
                return
        if (req is None or req.done) and resp is not None and resp.done:
            self._emit(st, out)

    def _settings(self, side: _Side, frame: SettingsFrame, out: list[Event]) -> None:
        other = self._sides[1 - side.direction]
        if "ACK" in frame.flags:
            # ``side`` acknowledges the other end's SETTINGS: its encoder now obeys them.
            if other.pending_settings:
                size = other.pending_settings.popleft()
                if size is not None:
                    side.hpack.set_max_allowed(size)
            return
        settings = frame.settings
        side.pending_settings.append(settings.get(_SETTINGS_HEADER_TABLE_SIZE))
        max_frame = settings.get(_SETTINGS_MAX_FRAME_SIZE)
        if max_frame is not None and DEFAULT_MAX_FRAME_SIZE <= max_frame <= MAX_FRAME_LENGTH:
            other.max_frame = max_frame

    def _goaway(self, side: _Side, last: int, out: list[Event]) -> None:
        """Streams the sender of GOAWAY will not process (initiated by the other end)."""
        parity = 1 if side.direction == SERVER else 0
        for st in [s for s in self._streams.values() if s.sid & 1 == parity and s.sid > last]:
            self._emit(st, out)

    # -- loss of sync, gaps, close ---------------------------------------------------------------

    def _desync(self, side: _Side, reason: str, out: list[Event], at: int = -1) -> None:
        """Lose sync in ``side``: what was in flight there is damaged; scan for a boundary."""
        self._interrupt_block(side, -1, out)
        side.hpack.lose()
        d = side.direction
        for st in self._streams.values():
            msg = st.req if d == CLIENT else st.resp
            if msg is not None and not msg.done:
                msg.desynced = True
        if side.data_msg is not None:
            side.data_msg.desynced = True
        side.data_msg = None
        side.data_end = None
        if side.episode is None:
            side.episode = reason
        side.state = _SCAN
        side.scan_pos = at + 1 if at >= 0 else 0

    def _end_episode(self, side: _Side, out: list[Event]) -> None:
        reason = side.episode
        if reason is not None and (reason != _MIDSTREAM or side.skipped):
            self.stats["desyncs"] += 1
            out.append(Desynced(direction=side.direction, reason=reason, skipped=side.skipped))
        side.episode = None
        side.skipped = 0

    def _gap(self, side: _Side, size: int, ts: float, out: list[Event]) -> None:
        st = side.state
        if st == _IN_DATA:
            take = min(size, side.remaining)
            msg = side.data_msg
            if msg is not None and take:
                if not msg.truncated:
                    self.stats["truncated_bodies"] += 1
                msg.truncated = True
                msg.body_size += take
            side.remaining -= take
            size -= take
            if not side.remaining:
                ptake = min(size, side.pad)
                side.pad -= ptake
                size -= ptake
                if not side.pad:
                    self._end_data(side, ts, out)
            if not size:
                return
        elif st == _SKIP:
            take = min(size, side.remaining)
            side.remaining -= take
            size -= take
            if not side.remaining:
                side.state = _FRAME
            if not size:
                return
        # Lost bytes outside a DATA payload: the framing and the header state are gone.
        if side.buf:
            self.stats["skipped_bytes"] += len(side.buf)
            side.skipped += len(side.buf)
            side.buf.clear()
            side.marks.clear()
        if side.state != _SCAN:
            self._desync(side, "capture gap", out)
        else:
            self._interrupt_block(side, -1, out)
            side.hpack.lose()
        side.scan_pos = 0

    def _close(self, side: _Side, ts: float, out: list[Event]) -> None:
        if side.state == _SCAN and side.buf:
            self._run(side, ts, len(side.buf), True, out)
        self._interrupt_block(side, -1, out)
        if side.buf:
            if side.state != _SCAN and side.episode is None:
                side.episode = "closed inside a frame"
            self.stats["skipped_bytes"] += len(side.buf)
            side.skipped += len(side.buf)
            side.buf.clear()
            side.marks.clear()
        self._end_episode(side, out)
        d = side.direction
        for st in list(self._streams.values()):
            msg = st.req if d == CLIENT else st.resp
            if msg is not None and not msg.done:
                msg.truncated = True
                self._end_msg(st, msg, ts, out)
        side.data_msg = None
        side.data_end = None
        side.remaining = side.pad = 0
        if side.state != _SCAN:
            side.state = _FRAME
        side.scan_pos = 0

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
        side.marks.clear()
        side.block = None
        side.data_msg = None
        side.data_end = None
        side.hpack.lose()
        side.episode = None
        side.skipped = 0
        side.scan_pos = 0
        side.state = _SCAN

    # -- the h2c upgrade -------------------------------------------------------------------------

    def _upgrade(self, req: dict[str, Any]) -> None:
        ts = float(req.get("ts") or 0.0)
        headers = [[str(h[0]), str(h[1])] for h in req.get("headers") or [] if len(h) == 2]
        found = {n.lower(): v for n, v in reversed(headers)}
        msg = _Msg(ts, headers, False, self.body_cap)
        msg.pseudo = {
            ":method": str(req.get("method") or "GET"),
            ":path": str(req.get("path") or "/"),
            ":scheme": "http",
        }
        if "host" in found:
            msg.pseudo[":authority"] = found["host"]
        msg.content_type = found.get("content-type")
        msg.content_encoding = found.get("content-encoding")
        msg.done = True
        st = _Stream(1, ts)
        st.req_version = "HTTP/1.1"
        st.req = msg
        st.wire[CLIENT] = int(req.get("size") or 0)
        self._streams[1] = st
        encoded = found.get("http2-settings")
        if encoded:
            raw = base64.urlsafe_b64decode(encoded.strip() + "=" * (-len(encoded.strip()) % 4))
            server = self._sides[SERVER]
            for i in range(0, len(raw) - 5, 6):
                ident = int.from_bytes(raw[i : i + 2], "big")
                value = int.from_bytes(raw[i + 2 : i + 6], "big")
                if ident == _SETTINGS_HEADER_TABLE_SIZE:
                    server.hpack.set_max_allowed(value)
                elif (
                    ident == _SETTINGS_MAX_FRAME_SIZE
                    and DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_LENGTH
                ):
                    server.max_frame = value

    # -- output ----------------------------------------------------------------------------------

    def _emit(self, st: _Stream, out: list[Event]) -> None:
        if st.emitted:
            return
        st.emitted = True
        self._streams.pop(st.sid, None)
        done = self._done_ids
        done.append(st.sid)
        self._done_set.add(st.sid)
        if len(done) > MAX_DONE_IDS:
            self._done_set.discard(done.popleft())
        req = st.req
        resp = st.resp
        cap = self.body_cap
        if req is None:
            error: str | None = NO_REQUEST
        elif resp is None:
            error = NO_RESPONSE
        elif req.lost or req.trailers_lost or resp.lost or resp.trailers_lost:
            error = HEADER_STATE_UNKNOWN
        elif req.desynced or resp.desynced:
            error = DESYNCED
        elif req.truncated or resp.truncated:
            error = TRUNCATED
        else:
            error = None
        first = req or resp or (st.info[0] if st.info else None)
        ex = Exchange(proto="http2", ts=first.ts if first is not None else st.ts, error=error)
        host: str | None = None
        if req is not None:
            ex.method = req.pseudo.get(":method")
            ex.summary = req.pseudo.get(":path")  # None when it was lost, never guessed
            ex.request_size = st.wire[CLIENT]
            ex.request = _request_json(st, req, cap)
            host = ex.request["authority"]
        if resp is not None or st.info or st.rst is not None:
            ex.response_size = st.wire[SERVER]
            ex.response = _response_json(resp, st, cap)
            if resp is not None:
                ex.status = resp.status
                if req is not None:
                    ex.latency_ms = (resp.ts - req.ts) * 1000.0
        ex.extra = {"host": host, "stream_id": st.sid}
        try:
            _classify(
                ex,
                bytes(req.body) if req is not None else b"",
                bytes(resp.body) if resp is not None else b"",
                req.headers if req is not None else None,
                resp.headers if resp is not None else None,
                resp.trailers if resp is not None else None,
            )
        except Exception:
            self.stats["classify_errors"] += 1
        self.stats["exchanges"] += 1
        out.append(ExchangeCompleted(exchange=ex))


def _has(headers: list[list[str]], name: str) -> bool:
    return any(n == name for n, _ in headers)


def _add_trailers(msg: _Msg, headers: list[list[str]], lost: bool) -> None:
    if msg.trailers is None:
        msg.trailers = headers
    else:
        msg.trailers.extend(headers)
    msg.trailers_lost = msg.trailers_lost or lost


def _header(headers: list[list[str]] | None, name: str) -> str | None:
    for n, v in headers or ():
        if n.lower() == name:
            return v
    return None


def _classify(
    ex: Exchange,
    req_body: bytes,
    resp_body: bytes,
    req_headers: list[list[str]] | None,
    resp_headers: list[list[str]] | None,
    trailers: list[list[str]] | None,
) -> None:
    """Turn a finished HTTP/2 exchange into gRPC or GraphQL when it is one (in place)."""
    content_type = _header(req_headers, "content-type") or _header(resp_headers, "content-type")
    if _GRPC is not None and _GRPC.is_grpc(content_type):
        ex.proto = "grpc"
        path = ex.summary
        ex.method = None if path is None else path[1:] if path.startswith("/") else path
        if ex.request is not None:
            messages, cut = _GRPC.parse_messages(
                req_body, encoding=_header(req_headers, "grpc-encoding")
            )
            ex.request["messages"] = messages
            if cut:
                ex.request["messages_truncated"] = True
        if ex.response is not None:
            messages, cut = _GRPC.parse_messages(
                resp_body, encoding=_header(resp_headers, "grpc-encoding")
            )
            ex.response["messages"] = messages
            if cut:
                ex.response["messages_truncated"] = True
            status, message = _GRPC.status_from(trailers or [])
            if status is None and message is None:
                status, message = _GRPC.status_from(resp_headers or [])
            ex.response["grpc_status"] = status
            ex.response["grpc_message"] = message
            ex.status = status
        else:
            ex.status = None
        return
    req = ex.request
    if req is not None and may_be_graphql(
        req.get("method"),
        req.get("path"),
        req.get("query") or (),
        _header(req_headers, "content-type"),
        req_body,
    ):
        from shark_tui.proto import graphql  # graphql-core is imported only when needed

        g = graphql.recognize(
            req.get("method") or "",
            req.get("path") or "",
            req.get("query") or [],
            _header(req_headers, "content-type"),
            req_body,
        )
        if g is not None:
            ex.proto = "graphql"
            req["graphql"] = g
            ex.method, ex.summary = graphql.entry_fields(g)


def _split_path(target: str) -> tuple[str, list[list[str]]]:
    """(path without query, percent-decoded query pairs) of a ``:path``."""
    path, _, query = target.partition("?")
    return path, query_pairs(query) if query else []


def _body_json(msg: _Msg, cap: int) -> JSON:
    kept = bytes(msg.body[:cap]) if len(msg.body) > cap else bytes(msg.body)
    body = render_body(
        kept,
        content_encoding=msg.content_encoding,
        cap=cap,
        truncated=msg.cap_hit or msg.truncated or msg.desynced or len(msg.body) > cap,
    )
    body["body_size"] = msg.body_size
    if msg.trailers is not None:
        body["trailers"] = msg.trailers
    return body


def _request_json(st: _Stream, msg: _Msg, cap: int) -> JSON:
    p = msg.pseudo
    raw_path = p.get(":path")
    path, query = _split_path(raw_path) if raw_path is not None else (None, [])
    authority = p.get(":authority")
    if authority is None:
        authority = _header(msg.headers, "host")
    out: JSON = {
        "version": st.req_version,
        "stream_id": st.sid,
        "method": p.get(":method"),
        "path": path,
        "query": query,
        "authority": authority,
        "scheme": p.get(":scheme"),
        "headers": msg.headers,
    }
    out.update(_body_json(msg, cap))
    if msg.lost or msg.trailers_lost:
        out["headers_lost"] = True
    return out


def _response_json(msg: _Msg | None, st: _Stream, cap: int) -> JSON:
    out: JSON
    if msg is not None:
        out = {"version": "HTTP/2", "status": msg.status, "headers": msg.headers}
        out.update(_body_json(msg, cap))
        if msg.lost or msg.trailers_lost:
            out["headers_lost"] = True
    else:  # reset (or only 1xx) before the response headers
        out = {"version": "HTTP/2", "status": None, "headers": []}
        out.update(render_body(b"", cap=cap))
        out["body_size"] = 0
    if st.info:
        out["informational"] = [
            {"status": m.status, "headers": m.headers} | ({"headers_lost": True} if m.lost else {})
            for m in st.info
        ]
    if st.rst is not None:
        out["rst_stream"] = st.rst
    return out
