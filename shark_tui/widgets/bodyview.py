"""Body views shared by every protocol's detail view, chosen by priority (mitmproxy's habit):

1. gRPC messages (the message's ``messages``: each decoded without a schema, else its bytes),
2. GraphQL (the message's ``graphql``: each operation's query pretty-printed, its variables),
3. JSON (``*json*`` content types, or a body that starts like JSON): pretty-printed,
4. form (``application/x-www-form-urlencoded``): one field a line, decoded,
5. text, 6. hex (a binary body).

The first view that applies shows the body. One that applies but cannot read it says so
("failed to parse as JSON: ...", "failed to parse as form: ...") and the next one shows it: a
body never breaks the pane."""

from __future__ import annotations

import base64
import json
from typing import Any, Final
from urllib.parse import parse_qsl

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text

__all__ = [
    "FORM_TYPE",
    "GRPC_CODES",
    "MAX_FORM_FIELDS",
    "MAX_PRETTY_QUERY",
    "body_view",
    "cut_note",
    "form_view",
    "graphql_query_view",
    "graphql_view",
    "grpc_view",
    "json_view",
    "message_body_view",
    "protobuf_lines",
    "tcp_view",
    "websocket_view",
]

FORM_TYPE: Final = "application/x-www-form-urlencoded"
#: Fields of a form listed (the rest are counted).
MAX_FORM_FIELDS: Final = 1000
#: Longest GraphQL query pretty-printed (a longer one is shown as sent).
MAX_PRETTY_QUERY: Final = 64 * 1024
#: Bytes of a binary body shown as hex.
MAX_HEX: Final = 4096
#: gRPC status codes by number (grpc/doc/statuscodes.md).
GRPC_CODES: Final = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}  # fmt: skip


def _note(text: str) -> Text:
    return Text(text, style="yellow")


def json_view(obj: Any) -> Syntax:
    return Syntax(json.dumps(obj, indent=2, ensure_ascii=False), "json", word_wrap=True)


def hex_view(raw: bytes) -> Text:
    lines = [f"{i:08x}  {raw[i : i + 16].hex(' ')}" for i in range(0, min(len(raw), MAX_HEX), 16)]
    if len(raw) > MAX_HEX:
        lines.append(f"({len(raw) - MAX_HEX:,} more bytes: the Raw tab has them all)")
    return Text("\n".join(lines), style="cyan")


def form_view(body: str) -> Text:
    """An ``application/x-www-form-urlencoded`` body, one decoded field a line; ValueError
    when it is not one (a field without ``=``)."""
    fields = parse_qsl(body.strip(), keep_blank_values=True, strict_parsing=True)
    out = Text(f"form: {len(fields)} field{'' if len(fields) == 1 else 's'}\n", style="bold")
    for name, value in fields[:MAX_FORM_FIELDS]:
        out.append(name, style="cyan")
        out.append(f" = {value}\n")
    if len(fields) > MAX_FORM_FIELDS:
        out.append(f"({len(fields) - MAX_FORM_FIELDS:,} more fields)\n")
    out.rstrip()
    return out


def body_view(body: Any, encoding: str | None, content_type: str = "") -> RenderableType:
    """A body by priority: JSON, form, text, hex (see the module docstring)."""
    if body in (None, ""):
        return Text("(no body)", style="dim")
    if not isinstance(body, str):
        return json_view(body)
    if encoding == "base64":
        try:
            raw = base64.b64decode(body)
        except ValueError:
            return Text(body)
        return hex_view(raw)
    ctype = content_type.lower()
    failed: list[RenderableType] = []
    if "json" in ctype or body.lstrip()[:1] in ("{", "["):
        try:
            return json_view(json.loads(body))
        except ValueError as exc:
            failed.append(_note(f"failed to parse as JSON: {exc}"))
    if ctype.split(";", 1)[0].strip() == FORM_TYPE:
        try:
            return Group(*failed, form_view(body))
        except ValueError as exc:
            failed.append(_note(f"failed to parse as form: {exc}"))
    return Group(*failed, Text(body)) if failed else Text(body)


def protobuf_lines(fields: list[Any], indent: int = 0) -> list[str]:
    """Schema-less protobuf fields as ``protoc --decode_raw`` prints them: ``1: "text"``,
    ``2: 42``, nested messages in braces; bytes as base64, i32/i64 with their float reading,
    negative varints with their signed value."""
    pad = "  " * indent
    out: list[str] = []
    for f in fields:
        if not isinstance(f, dict):
            continue
        num, value = f.get("field"), f.get("value")
        enc = f.get("encoding")
        if enc == "message" and isinstance(value, list):
            out.append(f"{pad}{num} {{")
            out += protobuf_lines(value, indent + 1)
            out.append(f"{pad}}}")
            continue
        if enc == "text":
            shown = json.dumps(value, ensure_ascii=False)
        elif enc == "base64":
            shown = f"(bytes, base64) {value}"
        else:
            shown = str(value)
            extra = [f"{k} {f[k]}" for k in ("signed", "double", "float") if k in f]
            if extra:
                shown += f" ({', '.join(extra)})"
        out.append(f"{pad}{num}: {shown}")
    return out


def grpc_view(messages: list[Any]) -> RenderableType:
    """The messages of a gRPC call: each decoded without a schema (`protobuf_lines`), else its
    bytes with the reason."""
    parts: list[RenderableType] = [Text(f"gRPC messages: {len(messages)}", style="bold")]
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        head = f"#{i} {m.get('size')} bytes{' compressed' if m.get('compressed') else ''}"
        parts.append(Text(head, style="cyan"))
        if isinstance(m.get("fields"), list):
            parts.append(Text("\n".join(protobuf_lines(m["fields"], 1))))
        else:
            why = m.get("decode_error") or "not a protobuf message"
            parts.append(_note(f"failed to parse as protobuf: {why}"))
            parts.append(body_view(m.get("data"), "base64"))
    return Group(*parts)


def graphql_query_view(query: str) -> tuple[RenderableType, bool]:
    """A GraphQL query pretty-printed by graphql-core (``print_ast(parse(query))``), and True;
    or the query as sent with "failed to parse as GraphQL: why (line:column)", and False."""
    if len(query) > MAX_PRETTY_QUERY:
        note = _note(f"(shown as sent: {len(query):,} characters is too long to pretty-print)")
        return Group(note, Syntax(query, "graphql", word_wrap=True)), True
    from graphql import print_ast
    from graphql.error import GraphQLError
    from graphql.language import parse

    try:
        pretty = print_ast(parse(query, no_location=True, max_tokens=100_000))
    except GraphQLError as exc:
        where = exc.locations[0] if exc.locations else None
        why = exc.message + (f" ({where.line}:{where.column})" if where is not None else "")
    except RecursionError:
        why = "nested too deeply"
    else:
        return Syntax(pretty.rstrip("\n"), "graphql", word_wrap=True), True
    failed = Group(_note(f"failed to parse as GraphQL: {why}"),
                   Syntax(query, "graphql", word_wrap=True))  # fmt: skip
    return failed, False


def graphql_view(gql: dict[str, Any]) -> RenderableType:
    """The operations of a GraphQL request: type and name, the query pretty-printed, the
    variables as JSON; what the dissector found wrong (an operation name the document does not
    have, say) as a note."""
    ops = [op for op in gql.get("operations") or [] if isinstance(op, dict)]
    parts: list[RenderableType] = []
    if gql.get("batched"):
        parts.append(Text(f"GraphQL batch of {len(ops)} operations", style="bold"))
    for op in ops:
        name = op.get("operation_name") or op.get("first_field") or ""
        parts.append(Text(f"GraphQL {op.get('operation_type') or ''} {name}".rstrip(),
                          style="bold"))  # fmt: skip
        if op.get("persisted_query"):
            parts.append(Text(f"persisted query {op['persisted_query']}", style="cyan"))
        query = op.get("query")
        parsed = False
        if isinstance(query, str) and query:
            view, parsed = graphql_query_view(query)
            parts.append(view)
        if op.get("error") and (parsed or not query):
            parts.append(_note(f"GraphQL: {op['error']}"))
        if op.get("variables") is not None:
            parts.append(Text("variables", style="cyan"))
            parts.append(json_view(op["variables"]))
    return Group(*parts)


def message_body_view(msg: dict[str, Any], content_type: str = "") -> RenderableType:
    """The body of an HTTP-like message by priority: gRPC messages, GraphQL, then the body
    itself (`body_view`)."""
    messages = msg.get("messages")
    if isinstance(messages, list):
        return grpc_view(messages)
    gql = msg.get("graphql")
    if isinstance(gql, dict) and gql.get("operations"):
        return graphql_view(gql)
    return body_view(msg.get("body"), msg.get("body_encoding"), content_type)


def _kept(msg: dict[str, Any]) -> int:
    """Bytes of a body kept (its text in UTF-8, or its base64 decoded)."""
    body = msg.get("body")
    if not isinstance(body, str):
        return 0
    if msg.get("body_encoding") == "base64":
        return len(body) * 3 // 4 - body[-2:].count("=")
    return len(body.encode("utf-8", "replace"))


def cut_note(msg: dict[str, Any], what: str = "body") -> Text | None:
    """``(body cut at 65,536 of 100,000 bytes; f: show full)`` for a body a cap or a capture
    gap cut; None for a whole one."""
    if not msg.get("body_truncated"):
        return None
    size = msg.get("body_size")
    total = f"{size:,}" if isinstance(size, int) else "?"
    return _note(f"({what} cut at {_kept(msg):,} of {total} bytes; f: show full)")


def websocket_view(msg: dict[str, Any]) -> RenderableType:
    """A WebSocket message: its kind, size and framing on one line, its payload by priority
    (JSON, text, hex); a close frame's code and reason."""
    kind = str(msg.get("opcode") or "?")
    head = [f"{kind} message"]
    size = msg.get("body_size")
    if isinstance(size, int):
        head.append(f"{size:,} byte{'' if size == 1 else 's'}")
    fragments = msg.get("fragments")
    if isinstance(fragments, int) and fragments != 1:
        head.append(f"{fragments} fragments")
    head.append("masked" if msg.get("masked") else "not masked")
    parts: list[RenderableType] = [Text(" · ".join(head), style="bold")]
    if kind == "close":
        reason = msg.get("close_reason")
        code = f"close code {msg.get('close_code')}"
        parts.append(Text(f"{code} · {reason}" if reason else code))
        return Group(*parts)
    note = cut_note(msg, "message")
    if note:
        parts.append(note)
    if msg.get("body_decode_error"):
        parts.append(_note(str(msg["body_decode_error"])))
    elif msg.get("content_encoding"):
        parts.append(_note(f"(decoded from {msg['content_encoding']} for display)"))
    parts.append(body_view(msg.get("body"), msg.get("body_encoding")))
    return Group(*parts)


def tcp_view(msg: dict[str, Any]) -> RenderableType:
    """One direction of a connection nobody could dissect: its size and its first bytes."""
    size, lost = msg.get("size"), msg.get("lost_bytes")
    head = f"{size:,} bytes" if isinstance(size, int) else "? bytes"
    if lost:
        head += f" ({lost:,} lost to the capture)"
    first = msg.get("first_bytes")
    if not first:
        return Text(head, style="bold")
    kept = _kept({"body": first, "body_encoding": msg.get("first_bytes_encoding")})
    parts: list[RenderableType] = [Text(f"{head}; the first {kept:,}:", style="bold")]
    parts.append(body_view(first, msg.get("first_bytes_encoding")))
    return Group(*parts)
