"""WebSocket (RFC 6455) for a passive observer: the frames after an HTTP/1.1 ``101``. Sans-IO.

``WebSocketDissector`` follows both directions of an upgraded connection; the engine feeds it
what followed the ``101 Switching Protocols`` (``Http1Dissector.take_upgrade_bytes()``, then
the rest). It emits one ``Exchange`` per message (docs/ENTRIES.md, ``proto="websocket"``): the
client's in ``request``, the server's in ``response``, the other half None.

Framing: FIN, RSV1, opcode, MASK, 7/16/64-bit lengths, masking key; client frames are masked
and are unmasked (the ``masked`` key says what was seen, not what the RFC expects). A message
is a text or binary frame and its continuation frames up to FIN; control frames (close, ping,
pong) may come between the fragments. Close frames are messages of their own (``close_code``,
``close_reason``); ping and pong are only counted in ``stats``. A continuation without a
message start (the start was not seen) is emitted with opcode ``continuation``. A data frame
that begins while a fragmented message is unfinished ends that message (error ``truncated``).

Bodies: at most ``body_cap`` payload bytes of each message are kept (unmasked); ``body_size``
counts them all, ``request_size``/``response_size`` count frame bytes on the wire (headers
included, interleaved control frames excluded). A message whose first frame has RSV1 set is
``permessage-deflate`` (RFC 7692): it is inflated for display, with the ``00 00 ff ff`` tail
put back, through one inflater per direction kept across messages (the default context
takeover), falling back to a fresh inflater (``no_context_takeover``); when both fail, the raw
bytes are shown with ``body_decode_error``. Inflated output is capped at ``body_cap`` too;
``content_encoding`` is then ``"permessage-deflate"``.

Loss of sync: WebSocket has no resynchronisation points, so a direction that loses the framing
stops: a reserved opcode, a length over ``MAX_FRAME`` (or with the top bit set), a control
frame over 125 bytes, a capture gap that is not inside a payload. One ``Desynced`` event is
emitted; the message in progress is emitted with error ``desynced`` (``truncated`` when a gap
caused it); every later byte of that direction is only counted (``stats["skipped_bytes"]``).
A gap inside a payload is skipped: that message ends ``body_truncated`` with error
``truncated`` and keeps only the bytes before the gap (its body stays a true prefix).

Buffers: a frame header (at most 14 bytes) and a control payload (at most 125 bytes) per
direction, plus each message's kept body. ``expire`` emits nothing (a message is emitted when
its last frame ends; nothing waits for the other direction). No exception escapes a public
method: a bug is counted in ``stats["internal_errors"]`` and desyncs that direction.
"""

from __future__ import annotations

import zlib
from typing import Any

from shark_tui.proto.base import (
    CLIENT,
    DESYNCED,
    JSON,
    SERVER,
    TRUNCATED,
    Desynced,
    Event,
    Exchange,
    ExchangeCompleted,
)
from shark_tui.proto.bodies import render_body

#: Largest frame payload accepted; a longer 64-bit length means the framing is lost.
MAX_FRAME = 1 << 30
#: Default bytes kept of each message (``body_cap``).
DEFAULT_BODY_CAP = 64 * 1024
#: Longest control frame payload (RFC 6455 section 5.5).
MAX_CONTROL = 125
#: Characters of a text message shown in ``summary``.
SUMMARY_CHARS = 200

_CONTINUATION = 0
_TEXT = 1
_BINARY = 2
_CLOSE = 8
_PING = 9
_PONG = 10
_NAMES = {_CONTINUATION: "continuation", _TEXT: "text", _BINARY: "binary", _CLOSE: "close"}
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_DEFLATE = "permessage-deflate"


class _Message:
    """A data message (one frame or several fragments) being assembled."""

    __slots__ = (
        "body",
        "body_size",
        "cap_hit",
        "compressed",
        "fin",
        "fragments",
        "holed",
        "masked",
        "opcode",
        "truncated",
        "ts",
        "wire",
    )

    def __init__(self, opcode: int, ts: float, masked: bool, compressed: bool) -> None:
        self.opcode = opcode
        self.ts = ts
        self.masked = masked
        self.compressed = compressed
        self.fin = False
        self.fragments = 0
        self.body = bytearray()
        self.body_size = 0
        self.wire = 0
        self.cap_hit = False
        self.truncated = False  # bytes lost to a gap, or the message was cut
        self.holed = False  # bytes lost to a gap: nothing more is kept


class _Side:
    """The framing state of one direction."""

    __slots__ = (
        "ctrl",
        "ctrl_lost",
        "direction",
        "fin",
        "frame_size",
        "frame_ts",
        "frame_wire",
        "hdr",
        "hdr_ts",
        "inflater",
        "is_ctrl",
        "mask",
        "mask_pos",
        "masked",
        "msg",
        "opcode",
        "remaining",
        "stopped",
    )

    def __init__(self, direction: int) -> None:
        self.direction = direction
        self.stopped = False  # framing lost (or direction closed): bytes are only counted
        self.hdr = bytearray()  # the frame header being read (at most 14 bytes)
        self.hdr_ts = 0.0
        self.remaining = -1  # payload bytes left in the current frame; -1: reading a header
        self.opcode = 0
        self.fin = False
        self.masked = False
        self.mask = b""
        self.mask_pos = 0
        self.is_ctrl = False
        self.frame_ts = 0.0
        self.frame_wire = 0
        self.frame_size = 0
        self.ctrl = bytearray()  # the control frame payload being read (at most 125 bytes)
        self.ctrl_lost = False
        self.msg: _Message | None = None
        self.inflater: Any = None  # zlib decompress object carrying the deflate context


class WebSocketDissector:
    """Sans-IO WebSocket dissector of one upgraded connection (see the module docstring)."""

    def __init__(
        self,
        *,
        body_cap: int = DEFAULT_BODY_CAP,
        path: str | None = None,
        host: str | None = None,
    ) -> None:
        self.body_cap = max(0, body_cap)
        self.path = path
        self.host = host
        #: Counters; never reset.
        self.stats: dict[str, int] = {
            "frames": 0,
            "messages": 0,
            "text": 0,
            "binary": 0,
            "close": 0,
            "ping": 0,
            "pong": 0,
            "fragmented": 0,
            "orphan_continuations": 0,
            "interrupted_messages": 0,
            "deflated": 0,
            "deflate_errors": 0,
            "capped_bodies": 0,
            "truncated_messages": 0,
            "desyncs": 0,
            "skipped_bytes": 0,
            "gap_bytes": 0,
            "internal_errors": 0,
        }
        self._sides = (_Side(CLIENT), _Side(SERVER))

    # -- the Dissector interface -------------------------------------------------------------

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        out: list[Event] = []
        if direction not in (CLIENT, SERVER) or not data:
            return out
        side = self._sides[direction]
        try:
            if side.stopped:
                self.stats["skipped_bytes"] += len(data)
                return out
            self._feed(side, data, ts, out)
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
            if side.stopped:
                return out
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
        for side in self._sides:
            try:
                self._close(side, out)
            except Exception as exc:
                self._internal_error(side, exc, out)
        return out

    def expire(self, now: float) -> list[Event]:
        return []

    def oldest_pending(self) -> float | None:
        times: list[float] = []
        for side in self._sides:
            if side.stopped:
                continue
            if side.msg is not None:
                times.append(side.msg.ts)
            if side.remaining >= 0 and side.is_ctrl and side.opcode == _CLOSE:
                times.append(side.frame_ts)
            elif side.hdr:
                times.append(side.hdr_ts)
        return min(times) if times else None

    # -- framing ---------------------------------------------------------------------------------

    def _feed(self, side: _Side, data: bytes, ts: float, out: list[Event]) -> None:
        pos = 0
        n = len(data)
        hdr = side.hdr
        while pos < n:
            if side.remaining < 0:
                if not hdr:
                    side.hdr_ts = ts
                need = _header_size(hdr)
                while len(hdr) < need and pos < n:
                    take = min(need - len(hdr), n - pos)
                    hdr += data[pos : pos + take]
                    pos += take
                    need = _header_size(hdr)
                if len(hdr) < need:
                    return
                if not self._start_frame(side, out):
                    self.stats["skipped_bytes"] += n - pos
                    return
                continue
            take = min(side.remaining, n - pos)
            self._payload(side, data, pos, take)
            pos += take
            side.remaining -= take
            if not side.remaining:
                self._end_frame(side, out)

    def _start_frame(self, side: _Side, out: list[Event]) -> bool:
        """Act on a complete frame header in ``side.hdr``; False when the framing is lost."""
        hdr = side.hdr
        b0 = hdr[0]
        b1 = hdr[1]
        opcode = b0 & 0x0F
        size = b1 & 0x7F
        at = 2
        if size == 126:
            size = int.from_bytes(hdr[2:4], "big")
            at = 4
        elif size == 127:
            size = int.from_bytes(hdr[2:10], "big")
            at = 10
        if opcode not in _NAMES and opcode not in (_PING, _PONG):
            self._desync(side, f"reserved opcode {opcode}", len(hdr), DESYNCED, out)
            return False
        if size > MAX_FRAME:
            self._desync(side, f"frame length {size} over {MAX_FRAME}", len(hdr), DESYNCED, out)
            return False
        is_ctrl = opcode >= 8
        if is_ctrl and size > MAX_CONTROL:
            self._desync(side, f"control frame of {size} bytes", len(hdr), DESYNCED, out)
            return False
        masked = bool(b1 & 0x80)
        self.stats["frames"] += 1
        side.opcode = opcode
        side.fin = bool(b0 & 0x80)
        side.masked = masked
        side.mask = bytes(hdr[at : at + 4]) if masked else b""
        side.mask_pos = 0
        side.is_ctrl = is_ctrl
        side.frame_ts = side.hdr_ts
        side.frame_wire = len(hdr) + size
        side.frame_size = size
        wire = len(hdr)
        hdr.clear()
        if is_ctrl:
            side.ctrl.clear()
            side.ctrl_lost = False
        else:
            msg = side.msg
            if opcode != _CONTINUATION:
                if msg is not None:  # a new message before the last one's FIN
                    self.stats["interrupted_messages"] += 1
                    msg.truncated = True
                    self._emit_message(side, msg, TRUNCATED, out)
                msg = _Message(opcode, side.frame_ts, masked, bool(b0 & 0x40))
                side.msg = msg
            elif msg is None:  # its start was not seen
                self.stats["orphan_continuations"] += 1
                msg = _Message(opcode, side.frame_ts, masked, False)
                msg.truncated = True
                side.msg = msg
            msg.fragments += 1
            msg.fin = side.fin
            msg.wire += wire
        side.remaining = size
        if not size:
            self._end_frame(side, out)
        return True

    def _payload(self, side: _Side, data: bytes, pos: int, take: int) -> None:
        if side.is_ctrl:
            if not side.ctrl_lost:  # after a gap the kept payload stays a true prefix
                side.ctrl += data[pos : pos + take]  # at most MAX_CONTROL bytes in all
            return
        msg = side.msg
        if msg is None:  # not reachable: a data frame always has a message
            return
        msg.body_size += take
        msg.wire += take
        room = self.body_cap - len(msg.body)
        if msg.holed:
            room = 0  # after a gap the kept body stays a true prefix
        if room > 0:
            keep = min(room, take)
            chunk = data[pos : pos + keep]
            msg.body += _unmask(chunk, side.mask, side.mask_pos) if side.masked else chunk
        if take > max(room, 0):
            msg.cap_hit = True
        side.mask_pos += take

    def _end_frame(self, side: _Side, out: list[Event]) -> None:
        side.remaining = -1
        if side.is_ctrl:
            payload = bytes(side.ctrl)
            side.ctrl.clear()
            if side.masked:
                payload = _unmask(payload, side.mask, 0)
            if side.opcode == _PING:
                self.stats["ping"] += 1
            elif side.opcode == _PONG:
                self.stats["pong"] += 1
            else:
                self._emit_close(side, payload, side.ctrl_lost, out)
            return
        msg = side.msg
        if msg is not None and side.fin:
            side.msg = None
            self._emit_message(side, msg, TRUNCATED if msg.truncated else None, out)

    def _gap(self, side: _Side, size: int, out: list[Event]) -> None:
        if side.remaining > 0:
            take = min(size, side.remaining)
            side.remaining -= take
            size -= take
            if side.is_ctrl:
                side.ctrl_lost = True
            elif side.msg is not None:
                msg = side.msg
                msg.truncated = msg.holed = True
                msg.body_size += take
                msg.wire += take
                side.mask_pos += take
            if not side.remaining:
                self._end_frame(side, out)
            if not size:
                return
        # Bytes lost outside a payload: the framing is gone.
        self._desync(side, "capture gap", len(side.hdr), TRUNCATED, out)

    def _close(self, side: _Side, out: list[Event]) -> None:
        if side.stopped:
            return
        if side.remaining > 0 and side.is_ctrl and side.opcode == _CLOSE:
            self._emit_close(side, _unmask_opt(side, bytes(side.ctrl)), True, out)
        side.remaining = -1
        msg = side.msg
        side.msg = None
        if msg is not None:
            msg.truncated = True
            self._emit_message(side, msg, TRUNCATED, out)
        if side.hdr:
            self.stats["skipped_bytes"] += len(side.hdr)
            self.stats["desyncs"] += 1
            out.append(
                Desynced(
                    direction=side.direction,
                    reason="closed inside a frame header",
                    skipped=len(side.hdr),
                )
            )
            side.hdr.clear()
        side.stopped = True

    def _desync(self, side: _Side, reason: str, skipped: int, error: str, out: list[Event]) -> None:
        """Stop parsing ``side``: emit its message in progress with ``error`` and a Desynced."""
        self.stats["desyncs"] += 1
        self.stats["skipped_bytes"] += skipped
        msg = side.msg
        side.msg = None
        if side.remaining > 0 and side.is_ctrl and side.opcode == _CLOSE:
            self._emit_close(side, _unmask_opt(side, bytes(side.ctrl)), True, out)
        if msg is not None:
            msg.truncated = True
            self._emit_message(side, msg, error, out)
        out.append(Desynced(direction=side.direction, reason=reason, skipped=skipped))
        side.hdr.clear()
        side.ctrl.clear()
        side.remaining = -1
        side.stopped = True
        side.inflater = None

    def _internal_error(self, side: _Side, exc: Exception, out: list[Event]) -> None:
        self.stats["internal_errors"] += 1
        self.stats["desyncs"] += 1
        out.append(
            Desynced(
                direction=side.direction,
                reason=f"internal error: {type(exc).__name__}: {exc}",
                skipped=len(side.hdr),
            )
        )
        side.hdr.clear()
        side.ctrl.clear()
        side.msg = None
        side.remaining = -1
        side.stopped = True
        side.inflater = None

    # -- output ----------------------------------------------------------------------------------

    def _exchange(
        self, side: _Side, ts: float, obj: JSON, wire: int, error: str | None
    ) -> Exchange:
        ex = Exchange(
            proto="websocket",
            ts=ts,
            method=obj["opcode"],
            error=error,
            extra={"path": self.path, "host": self.host},
        )
        if side.direction == CLIENT:
            ex.request = obj
            ex.request_size = wire
        else:
            ex.response = obj
            ex.response_size = wire
        return ex

    def _emit_message(
        self, side: _Side, msg: _Message, error: str | None, out: list[Event]
    ) -> None:
        stats = self.stats
        stats["messages"] += 1
        if msg.opcode == _TEXT:
            stats["text"] += 1
        elif msg.opcode == _BINARY:
            stats["binary"] += 1
        if msg.fragments > 1:
            stats["fragmented"] += 1
        if msg.cap_hit:
            stats["capped_bodies"] += 1
        if error is not None:
            stats["truncated_messages"] += 1
        obj: JSON = {
            "opcode": _NAMES[msg.opcode],
            "fin": msg.fin,
            "masked": msg.masked,
            "fragments": msg.fragments,
        }
        obj.update(self._body(side, msg))
        obj["body_size"] = msg.body_size
        ex = self._exchange(side, msg.ts, obj, msg.wire, error)
        if msg.opcode != _BINARY and obj["body_encoding"] == "text":
            ex.summary = obj["body"][:SUMMARY_CHARS]
        else:
            ex.summary = f"{msg.body_size} bytes"
        out.append(ExchangeCompleted(exchange=ex))

    def _body(self, side: _Side, msg: _Message) -> JSON:
        raw = bytes(msg.body)
        cut = msg.cap_hit or msg.truncated
        cap = self.body_cap
        if not msg.compressed:
            return render_body(raw, cap=cap, truncated=cut)
        self.stats["deflated"] += 1
        inflated, out_cut, error = self._inflate(side, raw, complete=not cut)
        if inflated is None:
            self.stats["deflate_errors"] += 1
            body = render_body(raw, cap=cap, truncated=cut)
            body["body_decode_error"] = f"failed to decode {_DEFLATE}: {error}"
            return body
        body = render_body(inflated, cap=cap, truncated=cut or out_cut)
        body["content_encoding"] = _DEFLATE
        return body

    def _inflate(
        self, side: _Side, raw: bytes, *, complete: bool
    ) -> tuple[bytes | None, bool, str]:
        """(inflated bytes or None, output cut at the cap, error) of one compressed message."""
        cap = self.body_cap
        if cap <= 0:
            side.inflater = None
            return b"", True, ""
        data = raw + _DEFLATE_TAIL if complete else raw
        error = ""
        candidates = [side.inflater, None] if side.inflater is not None else [None]
        for kept in candidates:
            inflater = kept if kept is not None else zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                result: bytes = inflater.decompress(data, cap)
            except zlib.error as exc:
                error = str(exc)
                continue
            cut = bool(inflater.unconsumed_tail)
            # The context carries on only past a whole message inflated to its end.
            side.inflater = inflater if complete and not cut and not inflater.eof else None
            return result, cut, ""
        side.inflater = None
        return None, False, error

    def _emit_close(self, side: _Side, payload: bytes, lost: bool, out: list[Event]) -> None:
        """Emit the close frame of ``side`` (``lost``: not all of its payload was seen)."""
        seen = side.frame_size - max(side.remaining, 0)
        self.stats["close"] += 1
        self.stats["messages"] += 1
        code: int | None = None
        reason: str | None = None
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            reason = payload[2:].decode("utf-8", "replace")
        obj: JSON = {"opcode": "close", "fin": side.fin, "masked": side.masked, "fragments": 1}
        obj.update(render_body(payload, cap=MAX_CONTROL, truncated=lost))
        obj["body_size"] = seen
        obj["close_code"] = code
        obj["close_reason"] = reason
        if lost:
            self.stats["truncated_messages"] += 1
        wire = side.frame_wire - side.frame_size + seen
        ex = self._exchange(side, side.frame_ts, obj, wire, TRUNCATED if lost else None)
        ex.status = code
        words = ["close"]
        if code is not None:
            words.append(str(code))
        if reason:
            words.append(reason)
        ex.summary = " ".join(words)
        out.append(ExchangeCompleted(exchange=ex))


def _header_size(hdr: bytearray) -> int:
    """Bytes of the frame header that starts ``hdr`` (2 until its second byte is known)."""
    if len(hdr) < 2:
        return 2
    b1 = hdr[1]
    size = b1 & 0x7F
    return 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if b1 & 0x80 else 0)


def _unmask(data: bytes, mask: bytes, offset: int) -> bytes:
    """``data`` XOR the masking key, ``data[0]`` being payload byte ``offset``."""
    n = len(data)
    if not n or len(mask) != 4:
        return bytes(data)
    shift = offset & 3
    key = mask[shift:] + mask[:shift]
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def _unmask_opt(side: _Side, payload: bytes) -> bytes:
    return _unmask(payload, side.mask, 0) if side.masked else payload
