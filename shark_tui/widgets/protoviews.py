"""Native views of Redis, Kafka and AMQP entries for the detail pane (Request / Response tabs).

What a user of redis-cli, kcat or Wireshark expects to read:

- Redis: the command as typed at the redis-cli prompt (``10.1.0.6:6379> SET "k" "v"``, every
  argument quoted and escaped like redis-cli's ``sdscatrepr``, binary bytes as ``\\xHH``;
  printable non-ASCII characters are kept as they are), and the reply typed as redis-cli prints
  it: ``OK``, ``(integer) 3``, ``(nil)``, ``"text"``, ``(error) ...``, arrays numbered
  ``1) ...`` with nested ones indented, RESP3 maps ``1# "k" => "v"``, sets ``1~ ...``,
  ``(double)``, ``(true)``, ``(big number)``, ``(verbatim txt)``, ``(attributes) 1| ...``.
  Pipelined commands are entries of their own, each with its own reply; the replies of a
  SUBSCRIBE are listed one by one.
- Kafka: the API name, version, correlation id and client id; then the body's fields, topics
  and partitions as headings, error codes with their names, and the records of Produce and
  Fetch one by one (offset, time, key, headers, value with JSON pretty-printed).
- AMQP: the method (``Basic.Publish``, channel, who sent it) and its arguments, reply codes
  named; the content header's properties (delivery mode and timestamp spelled out, the headers
  table); the body through the same view as HTTP bodies (JSON, text, hex).

Missing halves, cut values, decode errors and malformed objects give a note in the pane,
never an exception: a view that fails shows the object as JSON with "failed to render as X".
No colours here: the roles (``heading``, ``key``, ``type``, ``error``, ``note``) get their
styles from the detail screen's component classes (TCSS); without them text is plain.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from pamqp.commands import INDEX_MAPPING as _AMQP_METHODS
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.style import Style
from rich.text import Text

from shark_tui.proto.kafka.errors import error_name
from shark_tui.widgets.bodyview import body_view, json_view

__all__ = ["PROTOS", "ROLES", "Palette", "proto_view", "redis_quote", "redis_reply"]

#: Protocols with a native view.
PROTOS = frozenset({"redis", "kafka", "amqp"})
#: Style roles a palette may give (the detail screen maps them to ``detail--<role>``).
ROLES = ("heading", "key", "type", "error", "note")

Palette = Mapping[str, Style]
_PLAIN: dict[str, Style] = {
    "heading": Style(bold=True),
    "key": Style.null(),
    "type": Style(dim=True),
    "error": Style(bold=True),
    "note": Style(italic=True),
}


def proto_view(entry: dict[str, Any], side: str, palette: Palette | None = None
               ) -> RenderableType | None:  # fmt: skip
    """The Request (``side="request"``) or Response tab of a Redis, Kafka or AMQP entry; None
    for the other protocols (their messages have their own view)."""
    proto = entry.get("proto")
    if proto not in PROTOS:
        return None
    pal = {**_PLAIN, **(palette or {})}
    view = _VIEWS[str(proto)]
    try:
        return view(entry, side, pal)
    except Exception as exc:  # a malformed entry: say so and show what there is
        msg = entry.get(side)
        return Group(
            Text(f"failed to render as {proto}: {type(exc).__name__}: {exc}", style=pal["note"]),
            json_view(msg),
        )


# -- building blocks -----------------------------------------------------------------------------


class _Out:
    """Lines of styled text and indented blocks (JSON, bodies), in order."""

    def __init__(self, pal: Palette) -> None:
        self.pal = pal
        self.parts: list[RenderableType] = []
        self.text = Text()

    def line(self, indent: int, *segments: tuple[str, str | None] | Text) -> None:
        t = self.text
        if t:
            t.append("\n")
        t.append("  " * indent)
        for seg in segments:
            if isinstance(seg, Text):
                t.append_text(seg)
            else:
                t.append(seg[0], style=self.pal[seg[1]] if seg[1] else None)

    def note(self, indent: int, message: str) -> None:
        self.line(indent, (message, "note"))

    def block(self, indent: int, renderable: RenderableType) -> None:
        self._flush()
        self.parts.append(Padding(renderable, (0, 0, 0, 2 * indent)) if indent else renderable)

    def _flush(self) -> None:
        if self.text:
            self.parts.append(self.text)
            self.text = Text()

    def render(self) -> RenderableType:
        self._flush()
        return Group(*self.parts)


def _missing(entry: dict[str, Any], side: str, one_way: str | None) -> str:
    """Why ``entry[side]`` is null, in words."""
    error = entry.get("error")
    if side == "request":
        if error == "no_request":
            return ("(request not seen: the capture holds the answer only; it joined the "
                    "connection after the request was sent, or lost it)")  # fmt: skip
        return one_way or "(request not seen)"
    if error == "no_response":
        return ("(no response seen: the connection ended, the reply was lost to the capture, "
                "or none came within 60 s)")  # fmt: skip
    return one_way or "(response not seen)"


_ENTRY_ERRORS = {
    "truncated": "bytes of this exchange were lost to the capture or cut by a cap: what is "
    "shown is what was kept",
    "desynced": "the dissector lost the framing in this exchange: what is shown is what was "
    "read before that",
    "partial": "the body could not be decoded in full (no layout for this version, or it did "
    "not fit): what could be read is shown",
    "header_state_unknown": "joined mid-connection: header state unknown",
}


def _entry_note(out: _Out, entry: dict[str, Any]) -> None:
    error = entry.get("error")
    if error in _ENTRY_ERRORS:
        out.note(0, f"{error}: {_ENTRY_ERRORS[str(error)]}")


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _body_bytes(body: dict[str, Any]) -> bytes | None:
    """The kept bytes of a body object (text or base64), None when it is not one."""
    raw = body.get("body")
    if not isinstance(raw, str):
        return None
    if body.get("body_encoding") == "base64":
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None
    return raw.encode("utf-8")


def _cut_note(body: dict[str, Any]) -> str | None:
    """``(cut: 64 of 1,000 bytes kept)`` for a body object cut by a cap or a gap."""
    if not body.get("body_truncated"):
        return None
    kept = _body_bytes(body)
    size = body.get("body_size")
    total = f"{size:,}" if _is_int(size) else "?"
    return f"(cut: {len(kept or b''):,} of {total} bytes kept)"


def _body_block(out: _Out, indent: int, body: dict[str, Any], content_type: str = "") -> None:
    """A body object (text/base64) through the HTTP body view, with its notes."""
    note = _cut_note(body)
    if note:
        out.note(indent, note)
    if body.get("body_decode_error"):
        out.note(indent, str(body["body_decode_error"]))
    elif body.get("content_encoding"):
        out.note(indent, f"(decoded from {body['content_encoding']} for display)")
    out.block(indent, body_view(body.get("body"), body.get("body_encoding"), content_type))


# -- Redis ---------------------------------------------------------------------------------------

_ESC = {0x5C: "\\\\", 0x22: '\\"', 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x07: "\\a",
        0x08: "\\b"}  # fmt: skip


def redis_quote(value: str | bytes) -> str:
    """A string as redis-cli quotes it (``sdscatrepr``): ``"a \\"b\\"\\n\\x00"``. Text keeps
    its printable non-ASCII characters; bytes that are not printable ASCII become ``\\xHH``."""
    out = ['"']
    if isinstance(value, bytes):
        for b in value:
            if b in _ESC:
                out.append(_ESC[b])
            elif 0x20 <= b < 0x7F:
                out.append(chr(b))
            else:
                out.append(f"\\x{b:02x}")
    else:
        for ch in value:
            o = ord(ch)
            if o in _ESC:
                out.append(_ESC[o])
            elif ch.isprintable():
                out.append(ch)
            else:
                out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    out.append('"')
    return "".join(out)


def _redis_string(node: dict[str, Any]) -> str:
    value = node.get("value")
    if node.get("encoding") == "base64" and isinstance(value, str):
        try:
            return redis_quote(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return redis_quote(value)
    return redis_quote(value if isinstance(value, str) else str(value))


def _kept_size(node: dict[str, Any]) -> int:
    value = node.get("value")
    if not isinstance(value, str):
        return 0
    if node.get("encoding") == "base64":
        try:
            return len(base64.b64decode(value))
        except (binascii.Error, ValueError):
            return 0
    return len(value.encode("utf-8"))


_AGG_MARK = {"array": ")", "push": ")", "set": "~", "map": "#", "attribute": "|"}
_EMPTY = {"array": "(empty array)", "push": "(empty push)", "set": "(empty set)",
          "map": "(empty hash)", "attribute": "(no attributes)"}  # fmt: skip


def redis_reply(node: Any, pal: Palette | None = None, col: int = 0) -> Text:
    """A typed RESP value as redis-cli prints it; lines after the first start at column
    ``col`` (nested aggregates line up under their parent's first element)."""
    p = {**_PLAIN, **(pal or {})}
    out = Text()
    if not isinstance(node, dict):
        out.append(f"(unreadable value) {node!r}", style=p["note"])
        return out
    attrs = node.get("attributes")
    if isinstance(attrs, list) and attrs:
        label = "(attributes) "
        out.append(label, style=p["type"])
        out.append_text(_redis_aggregate(attrs, "attribute", col + len(label), p))
        out.append("\n" + " " * col)
    kind = node.get("type")
    value = node.get("value")
    if kind in _AGG_MARK:
        items = value if isinstance(value, list) else []
        if items:
            out.append_text(_redis_aggregate(items, str(kind), col, p))
        else:
            out.append(_EMPTY[str(kind)], style=p["type"])
        count = node.get("count")
        if node.get("truncated"):
            more = (count - len(items)) if _is_int(count) else None
            what = f"{more:,} more" if more else "more"
            out.append(f"\n{' ' * col}… {what} not kept (at most 1,024 per aggregate)",
                       style=p["note"])  # fmt: skip
        return out
    if kind == "simple":
        out.append(str(value))
    elif kind in ("error", "blob_error"):
        text = _redis_string(node)[1:-1] if kind == "blob_error" else str(value)
        out.append(f"(error) {text}", style=p["error"])
    elif kind == "integer":
        out.append("(integer) ", style=p["type"])
        out.append(str(value))
    elif kind == "double":
        out.append("(double) ", style=p["type"])
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
            out.append(str(int(value)))
        else:
            out.append(str(value))
    elif kind == "boolean":
        out.append("(true)" if value else "(false)", style=p["type"])
    elif kind == "null":
        out.append("(nil)", style=p["type"])
    elif kind == "big_number":
        out.append("(big number) ", style=p["type"])
        out.append(str(value))
    elif kind == "verbatim":
        label = f"(verbatim {node.get('format') or '?'}) "
        out.append(label, style=p["type"])
        text = value if isinstance(value, str) else _redis_string(node)
        out.append(text.replace("\n", "\n" + " " * (col + len(label))))
    elif kind == "bulk":
        out.append(_redis_string(node))
    else:
        out.append(f"({kind}) ", style=p["type"])
        out.append(json.dumps(value, ensure_ascii=False))
    if node.get("truncated") and kind in ("bulk", "verbatim", "blob_error"):
        size = node.get("size")
        total = f"{size:,}" if _is_int(size) else "?"
        out.append(f" … (cut: {_kept_size(node):,} of {total} bytes kept)", style=p["note"])
    return out


def _redis_aggregate(items: list[Any], kind: str, col: int, pal: Palette) -> Text:
    out = Text()
    mark = _AGG_MARK[kind]
    width = len(str(len(items)))
    child = col + width + 2
    for i, item in enumerate(items):
        if i:
            out.append("\n" + " " * col)
        out.append(f"{i + 1:>{width}}{mark} ", style=pal["type"])
        if kind in ("map", "attribute"):
            pair = item if isinstance(item, list) and len(item) == 2 else [item, None]
            key = redis_reply(pair[0], pal, child)
            out.append_text(key)
            out.append(" => ", style=pal["type"])
            last = key.plain.rsplit("\n", 1)[-1]
            # the value's later lines line up after "=>" (its first line sits there)
            at = (child if "\n" not in key.plain else 0) + len(last) + 4
            out.append_text(redis_reply(pair[1], pal, at))
        else:
            out.append_text(redis_reply(item, pal, child))
    return out


def _redis(entry: dict[str, Any], side: str, pal: Palette) -> RenderableType:
    out = _Out(pal)
    _entry_note(out, entry)
    msg = entry.get(side)
    if side == "request":
        if not isinstance(msg, dict):
            push = isinstance(entry.get("response"), dict) and entry["response"].get("push")
            why = "(none: a push the server sent on its own, see Response)" if push else None
            out.note(0, _missing(entry, side, why))
            return out.render()
        _redis_command(out, entry, msg)
        return out.render()
    if not isinstance(msg, dict):
        req = entry.get("request")
        why = None
        if isinstance(req, dict) and req.get("no_reply"):
            why = "(none: the client told the server not to reply, CLIENT REPLY OFF / SKIP)"
        out.note(0, _missing(entry, side, why))
        return out.render()
    resp = msg.get("resp")
    replies = msg.get("replies")
    values = [msg.get("reply"), *(replies if isinstance(replies, list) else [])]
    if any(_redis_resp3(v) for v in values):
        resp = 3  # the bytes say so, whatever the connection's state was taken to be
    version = f"RESP{resp}" if _is_int(resp) else "RESP"
    if msg.get("push"):
        out.line(0, (f"{version} push", "heading"),
                 (" (sent by the server on its own, not a reply)", "type"))  # fmt: skip
    elif isinstance(replies, list) and len(replies) > 1:
        out.line(0, (f"{version} replies: {len(replies)}", "heading"),
                 (" (one confirmation per channel)", "type"))  # fmt: skip
        for i, r in enumerate(replies):
            out.line(0, (f"reply {i + 1}", "key"))
            out.line(0, redis_reply(r, pal))
        return out.render()
    else:
        out.line(0, (f"{version} reply", "heading"))
    if "reply" not in msg:
        out.note(0, "(no reply value in this entry)")
        return out.render()
    reply = msg.get("reply")
    if _redis_cut(reply):
        out.note(0, "(values cut by the capture cap or lost to a gap are marked …: the rest of "
                    "them is not stored)")  # fmt: skip
    out.line(0, redis_reply(reply, pal))
    return out.render()


_RESP3_TYPES = frozenset({"map", "set", "push", "attribute", "double", "boolean", "big_number",
                          "verbatim", "blob_error"})  # fmt: skip


def _redis_resp3(node: Any, depth: int = 0) -> bool:
    """Whether a value is (or holds) one only RESP3 has."""
    if not isinstance(node, dict) or depth > 40:
        return False
    if (
        node.get("type") in _RESP3_TYPES
        or node.get("attributes")
        or (node.get("type") == "null" and "resp2" not in node)
    ):
        return True
    value = node.get("value")
    for item in value if isinstance(value, list) else []:
        pair = item if isinstance(item, list) else [item]
        if any(_redis_resp3(x, depth + 1) for x in pair):
            return True
    return False


def _redis_cut(node: Any, depth: int = 0) -> bool:
    """Whether a value or one inside it was cut."""
    if not isinstance(node, dict) or depth > 40:
        return False
    if node.get("truncated"):
        return True
    value = node.get("value")
    items = value if isinstance(value, list) else []
    for item in items:
        pair = item if isinstance(item, list) else [item]
        if any(_redis_cut(x, depth + 1) for x in pair):
            return True
    return False


def _redis_command(out: _Out, entry: dict[str, Any], req: dict[str, Any]) -> None:
    args = req.get("args")
    if not isinstance(args, list) or not args:
        out.note(0, "(no command: the request holds no arguments)")
        return
    b64 = set(req.get("args_base64") or ())
    cut = set(req.get("args_truncated") or ())
    dst = entry.get("dst") or {}
    host = dst.get("ip") or "redis"
    host = f"[{host}]" if ":" in str(host) else host
    prompt = f"{host}:{dst.get('port')}> " if dst.get("port") else "redis> "
    words: list[tuple[str, str | None]] = [(prompt, "type")]
    for i, arg in enumerate(args):
        if i == 0 and i not in b64:
            words.append((str(arg), "heading"))
            continue
        if i in b64:
            try:
                shown = redis_quote(base64.b64decode(str(arg), validate=True))
            except (binascii.Error, ValueError):
                shown = redis_quote(str(arg))
        else:
            shown = redis_quote(str(arg))
        words.append((" " + shown, None))
        if i in cut:
            words.append(("…", "note"))
    if cut:
        which = ", ".join(str(i) for i in sorted(cut))
        plural = "s" if len(cut) > 1 else ""
        out.note(0, f"(argument{plural} {which} cut by the capture cap or a gap: shown in part, "
                    "marked …)")  # fmt: skip
    out.line(0, *words)
    dropped = req.get("args_dropped")
    if _is_int(dropped) and dropped:
        out.note(0, f"({dropped:,} more arguments not kept: at most 1,024 per command)")
    details = [f"{len(args)} argument{'s' if len(args) != 1 else ''}"]
    details.append("inline command" if req.get("inline") else "RESP array of bulk strings")
    out.line(0, (", ".join(details), "type"))
    if req.get("no_reply"):
        out.note(0, "(the server was told not to reply: CLIENT REPLY OFF / SKIP)")


# -- Kafka ---------------------------------------------------------------------------------------

_KAFKA_HEAD = ("api_key", "api_version", "correlation_id", "client_id")
_ACKS = {-1: "all in-sync replicas", 0: "none: no response", 1: "the leader"}
_ISOLATION = {0: "read_uncommitted", 1: "read_committed"}


def _kafka(entry: dict[str, Any], side: str, pal: Palette) -> RenderableType:
    out = _Out(pal)
    _entry_note(out, entry)
    msg = entry.get(side)
    if not isinstance(msg, dict):
        req = entry.get("request")
        why = None
        if side == "response" and isinstance(req, dict) and req.get("acks") == 0:
            why = "(none: Produce with acks=0 gets no response)"
        out.note(0, _missing(entry, side, why))
        return out.render()
    api = entry.get("method") or (f"ApiKey{msg['api_key']}" if "api_key" in msg else None)
    head: list[tuple[str, str | None]] = []
    if api is None:
        head.append(("response to an unseen request", "heading"))
    else:
        version = msg.get("api_version")
        head.append((f"{api} v{version} {side}" if version is not None else f"{api} {side}",
                     "heading"))  # fmt: skip
    head += [("  correlation id ", "key"), (str(msg.get("correlation_id")), None)]
    if side == "request":
        head += [("  client id ", "key"), (_kafka_str(msg.get("client_id")), None)]
    out.line(0, *head)
    if api is None:
        out.note(0, "(its API and version are unknown, so its body cannot be decoded)")
    if msg.get("decode_error"):
        out.note(0, f"failed to parse as {api} v{msg.get('api_version')}: {msg['decode_error']}")
    if msg.get("body_truncated"):
        out.note(0, "(the message was cut by a cap, a capture gap or the end of the stream)")
    body = {k: v for k, v in msg.items()
            if k not in (*_KAFKA_HEAD, "decode_error", "body_truncated")}  # fmt: skip
    _kafka_fields(out, 1, body)
    return out.render()


def _kafka_str(value: Any) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _is_body(v: Any) -> bool:
    return isinstance(v, dict) and "body" in v and "body_encoding" in v


def _is_records(v: Any) -> bool:
    return isinstance(v, dict) and isinstance(v.get("batches"), list)


def _kafka_scalar(key: str, value: Any) -> tuple[str, str | None]:
    if key.endswith("error_code") and _is_int(value):
        return (f"{value} {error_name(value)}", "error") if value else ("0", None)
    if key == "acks" and value in _ACKS:
        return (f"{value} ({_ACKS[value]})", None)
    if key == "isolation_level" and value in _ISOLATION:
        return (f"{value} ({_ISOLATION[value]})", None)
    if isinstance(value, str):
        return (json.dumps(value, ensure_ascii=False), None)
    if isinstance(value, bool):
        return ("true" if value else "false", None)
    if value is None:
        return ("null", "type")
    return (str(value), None)


def _item_title(key: str, item: dict[str, Any], i: int) -> tuple[str, str | None]:
    """The heading of one element of a list of structs, and the field it names."""
    if key in ("topics", "responses", "topic_data"):
        for k in ("name", "topic", "topic_name"):
            if isinstance(item.get(k), str) and item[k]:
                return f"topic {json.dumps(item[k], ensure_ascii=False)}", k
        if item.get("topic_id"):
            return f"topic id {item['topic_id']}", None
        return f"topic [{i}]", None
    if key == "partitions":
        for k in ("index", "partition", "partition_index"):
            if _is_int(item.get(k)):
                return f"partition {item[k]}", k
        return f"partition [{i}]", None
    return f"{key} [{i}]", None


def _compound(v: Any) -> bool:
    return isinstance(v, (dict, list)) and bool(v)


def _kafka_fields(out: _Out, indent: int, obj: dict[str, Any]) -> None:
    """Scalar fields first (aligned), then structs, lists and records."""
    width = max((len(k) for k, v in obj.items() if not _compound(v)), default=0)
    for k, v in obj.items():
        if _compound(v):
            continue
        role: str | None
        if isinstance(v, (dict, list)):
            text, role = ("{}" if isinstance(v, dict) else "[]"), "type"
        else:
            text, role = _kafka_scalar(k, v)
        out.line(indent, (k.ljust(width), "key"), ("  ", None), (text, role))
    for k, v in obj.items():
        if not _compound(v):
            continue
        if _is_records(v):
            _kafka_records(out, indent, v)
        elif _is_body(v):
            out.line(indent, (k, "key"))
            _body_block(out, indent + 1, v)
        elif isinstance(v, dict):
            out.line(indent, (k, "key"))
            _kafka_fields(out, indent + 1, v)
        else:
            _kafka_list(out, indent, k, v)


def _kafka_list(out: _Out, indent: int, key: str, items: list[Any]) -> None:
    if not any(isinstance(x, (dict, list)) for x in items):
        shown = ", ".join(_kafka_scalar(key, x)[0] for x in items)
        out.line(indent, (key, "key"), ("  ", None), (f"[{shown}]", None))
        return
    for i, item in enumerate(items):
        if isinstance(item, dict) and set(item) == {"items_not_listed"}:
            out.note(indent, f"({item['items_not_listed']} more {key} not listed)")
        elif isinstance(item, dict):
            title, used = _item_title(key, item, i)
            out.line(indent, (title, "heading"))
            _kafka_fields(out, indent + 1, {k: v for k, v in item.items() if k != used})
        else:
            out.line(indent, (f"{key} [{i}]", "key"), ("  ", None),
                     (json.dumps(item, ensure_ascii=False), None))  # fmt: skip


def _kafka_time(ms: Any) -> str:
    if not _is_int(ms) or ms < 0:
        return "no timestamp" if ms is None else f"timestamp {ms}"
    return f"{_utc(ms / 1000)}.{ms % 1000:03d} UTC"


def _kafka_records(out: _Out, indent: int, rec: dict[str, Any]) -> None:
    batches = [b for b in rec.get("batches") or [] if isinstance(b, dict)]
    count = rec.get("record_count")
    size = rec.get("size")
    head = f"records: {count if _is_int(count) else '?'} in {len(batches)} batch"
    head += "es" if len(batches) != 1 else ""
    if _is_int(size):
        head += f" ({size:,} bytes)"
    out.line(indent, (head, "heading"))
    if rec.get("error"):
        out.note(indent + 1, f"failed to parse the records: {rec['error']}")
    for bi, batch in enumerate(batches):
        bits = [
            f"batch {bi + 1}",
            f"base offset {batch.get('base_offset')}",
            f"{batch.get('record_count')} records",
            f"compression {batch.get('compression')}",
        ]
        if batch.get("timestamp_type"):
            bits.append(f"{str(batch['timestamp_type']).replace('_', ' ')} time")
        if batch.get("magic") is not None and batch.get("magic") != 2:
            bits.append(f"message set v{batch['magic']}")
        if _is_int(batch.get("producer_id")) and batch["producer_id"] >= 0:
            bits.append(f"producer {batch['producer_id']} epoch {batch.get('producer_epoch')}"
                        f" seq {batch.get('base_sequence')}")  # fmt: skip
        if batch.get("transactional"):
            bits.append("transactional")
        if batch.get("control"):
            bits.append("control")
        out.line(indent + 1, (" · ".join(bits), "type"))
        if batch.get("error"):
            out.note(indent + 1, f"failed to parse this batch: {batch['error']}")
        for r in batch.get("records") or []:
            if isinstance(r, dict):
                _kafka_record(out, indent + 1, r)
    if rec.get("batches_not_listed"):
        out.note(indent + 1, f"({rec['batches_not_listed']:,} more batches not listed)")
    if rec.get("records_truncated"):
        listed = sum(len(b.get("records") or []) for b in batches)
        out.note(indent + 1, f"(only {listed} records listed: at most 128 per message)")
    if rec.get("incomplete"):
        why = "usual in Fetch: the broker fills the size asked, the client asks again from there"
        out.note(indent + 1, f"(the last batch is cut short: {why})")


def _kafka_key(body: Any) -> tuple[str, str | None]:
    """A key or header value on one line: quoted text, hex bytes, or null."""
    if body is None:
        return ("null", "type")
    if not isinstance(body, dict):
        return (json.dumps(body, ensure_ascii=False), None)
    if body.get("body_encoding") == "base64":
        raw = _body_bytes(body)
        shown = raw.hex(" ") if raw is not None else str(body.get("body"))
        text = f"hex {shown}"
    else:
        text = json.dumps(body.get("body") or "", ensure_ascii=False)
    note = _cut_note(body)
    return (f"{text} {note}" if note else text, None)


def _kafka_record(out: _Out, indent: int, r: dict[str, Any]) -> None:
    out.line(indent, (f"offset {r.get('offset')}", "heading"), ("  ", None),
             (_kafka_time(r.get("timestamp")), "type"))  # fmt: skip
    out.line(indent + 1, ("key     ", "key"), _kafka_key(r.get("key")))
    headers = r.get("headers") or []
    for i, h in enumerate(headers):
        if isinstance(h, list) and len(h) == 2:
            label = "headers " if i == 0 else "        "
            out.line(indent + 1, (label, "key"), (f"{h[0]} = ", None), _kafka_key(h[1]))
    value = r.get("value")
    if value is None:
        out.line(indent + 1, ("value   ", "key"), ("null (a tombstone)", "type"))
    elif _is_body(value):
        size = value.get("body_size")
        out.line(indent + 1, ("value   ", "key"),
                 (f"{size:,} bytes" if _is_int(size) else "", "type"))  # fmt: skip
        _body_block(out, indent + 2, value)
    else:
        out.line(indent + 1, ("value   ", "key"), (json.dumps(value, ensure_ascii=False), None))


# -- AMQP ----------------------------------------------------------------------------------------

_REPLY_CODES = {
    200: "REPLY_SUCCESS", 311: "CONTENT_TOO_LARGE", 312: "NO_ROUTE", 313: "NO_CONSUMERS",
    320: "CONNECTION_FORCED", 402: "INVALID_PATH", 403: "ACCESS_REFUSED", 404: "NOT_FOUND",
    405: "RESOURCE_LOCKED", 406: "PRECONDITION_FAILED", 501: "FRAME_ERROR", 502: "SYNTAX_ERROR",
    503: "COMMAND_INVALID", 504: "CHANNEL_ERROR", 505: "UNEXPECTED_FRAME",
    506: "RESOURCE_ERROR", 530: "NOT_ALLOWED", 540: "NOT_IMPLEMENTED", 541: "INTERNAL_ERROR",
}  # fmt: skip
_CLASSES = {10: "Connection", 20: "Channel", 40: "Exchange", 50: "Queue", 60: "Basic",
            85: "Confirm", 90: "Tx"}  # fmt: skip
_DELIVERY = {1: "transient", 2: "persistent"}
#: Properties in the spec's order.
_PROPERTIES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
               "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
               "user_id", "app_id", "cluster_id")  # fmt: skip


def _amqp_name(cls: Any, method: Any) -> str:
    def cap(s: Any) -> str:
        return "-".join(part[:1].upper() + part[1:] for part in str(s).split("-"))

    return f"{cap(cls)}.{cap(method)}"


def _method_name(class_id: Any, method_id: Any) -> str | None:
    if not (_is_int(class_id) and _is_int(method_id)):
        return None
    found = _AMQP_METHODS.get((class_id << 16) | method_id)
    name = getattr(found, "name", None)
    return name if isinstance(name, str) else None


def _amqp_value(key: str, value: Any, args: dict[str, Any]) -> tuple[str, str | None]:
    if key == "reply_code" and _is_int(value):
        code = _REPLY_CODES.get(value, "")
        return (f"{value} {code}".strip(), "error" if value >= 300 else None)
    if key == "class_id" and _is_int(value) and value in _CLASSES:
        return (f"{value} ({_CLASSES[value]})", None)
    if key == "method_id" and _is_int(value):
        name = _method_name(args.get("class_id"), value)
        return (f"{value} ({name})" if name else str(value), None)
    if key == "delivery_mode" and value in _DELIVERY:
        return (f"{value} ({_DELIVERY[value]})", None)
    if key == "timestamp" and _is_int(value):
        return (f"{value} ({_utc(value)} UTC)", None)
    if key == "expiration" and isinstance(value, str) and value.isdigit():
        return (f"{value} ms", None)
    if key == "exchange" and value == "":
        return ('"" (the default exchange)', None)
    if isinstance(value, dict) and set(value) == {"base64"}:
        try:
            return ("hex " + base64.b64decode(str(value["base64"])).hex(" "), None)
        except (binascii.Error, ValueError):
            return (str(value["base64"]), None)
    if isinstance(value, str):
        if value == "" or value != value.strip() or not value.isprintable():
            return (json.dumps(value, ensure_ascii=False), None)
        return (value, None)
    if isinstance(value, bool):
        return ("true" if value else "false", None)
    if value is None:
        return ("null", "type")
    if isinstance(value, list):
        return (json.dumps(value, ensure_ascii=False), None)
    return (str(value), None)


def _amqp_table(out: _Out, indent: int, table: dict[str, Any], order: tuple[str, ...] = ()
                ) -> None:  # fmt: skip
    keys = [k for k in order if k in table] + [k for k in table if k not in order]
    plain = [k for k in keys if not (isinstance(table[k], dict) and table[k]
                                     and set(table[k]) != {"base64"})]  # fmt: skip
    width = max((len(k) for k in plain), default=0)
    for k in keys:
        v = table[k]
        if isinstance(v, dict) and v and set(v) != {"base64"}:
            out.line(indent, (k, "key"))
            _amqp_table(out, indent + 1, v)
        elif isinstance(v, dict):
            out.line(indent, (k.ljust(width), "key"), ("  ", None), ("{}", "type"))
        else:
            out.line(indent, (k.ljust(width), "key"), ("  ", None), _amqp_value(k, v, table))


def _amqp(entry: dict[str, Any], side: str, pal: Palette) -> RenderableType:
    out = _Out(pal)
    _entry_note(out, entry)
    msg = entry.get(side)
    if not isinstance(msg, dict):
        other = entry.get("response" if side == "request" else "request")
        why = None
        if isinstance(other, dict) and entry.get("error") is None:
            sender = other.get("sender") or ("server" if side == "request" else "client")
            what = _amqp_name(other.get("class"), other.get("method"))
            see = "Response" if side == "request" else "Request"
            why = f"(none: {what} is one-way, sent by the {sender}; see {see})"
        out.note(0, _missing(entry, side, why))
        return out.render()
    sender = msg.get("sender")
    arrow = {"client": "client → server", "server": "server → client"}.get(str(sender), "")
    out.line(0, (_amqp_name(msg.get("class"), msg.get("method")), "heading"),
             ("  channel ", "key"), (str(msg.get("channel")), None),
             (f"  {arrow}" if arrow else "", "type"))  # fmt: skip
    args = msg.get("arguments")
    if isinstance(args, dict):
        shown = {k: v for k, v in args.items() if not (k == "ticket" and v == 0)}
        if shown:
            _amqp_table(out, 1, shown)
        else:
            out.line(1, ("(no arguments)", "type"))
    props = msg.get("properties")
    has_content = isinstance(props, dict) or "body" in msg
    if not has_content:
        return out.render()
    out.line(0, ("Properties", "heading"))
    if isinstance(props, dict) and props:
        _amqp_table(out, 1, props, _PROPERTIES)
    else:
        out.line(1, ("(none sent)", "type"))
    size = msg.get("body_size")
    ctype = props.get("content_type") if isinstance(props, dict) else None
    title = "Body"
    if _is_int(size):
        title += f"  {size:,} bytes"
    out.line(0, (title, "heading"))
    body = {k: msg.get(k) for k in ("body", "body_encoding", "body_truncated", "body_size",
                                    "content_encoding", "body_decode_error")}  # fmt: skip
    if body["body"] in (None, "") and not body["body_truncated"]:
        out.line(1, ("(empty body)", "type"))
    else:
        _body_block(out, 0, body, str(ctype or "").lower())
    return out.render()


_VIEWS: dict[str, Callable[[dict[str, Any], str, Palette], RenderableType]] = {
    "redis": _redis,
    "kafka": _kafka,
    "amqp": _amqp,
}
