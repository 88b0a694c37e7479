"""The detail pane (enter): the full entry fetched from its daemon, in tabs — Request, Response
and Connection. HTTP-like messages read as a start line, headers and a body view chosen by
priority (JSON pretty-printed, else text, else hex) that says when a body failed to parse as
what it claimed; other protocols show their objects as JSON."""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static, TabbedContent, TabPane


def _json(obj: Any) -> Syntax:
    return Syntax(json.dumps(obj, indent=2, ensure_ascii=False), "json", word_wrap=True)


def body_view(body: Any, encoding: str | None, content_type: str = "") -> RenderableType:
    """A body by priority: JSON, text, hex; a failed JSON parse is said, not hidden."""
    if body in (None, ""):
        return Text("(no body)", style="dim")
    if not isinstance(body, str):
        return _json(body)
    if encoding == "base64":
        try:
            raw = base64.b64decode(body)
        except ValueError:
            return Text(body)
        lines = [f"{i:08x}  {raw[i : i + 16].hex(' ')}" for i in range(0, min(len(raw), 4096), 16)]
        return Text("\n".join(lines), style="cyan")
    looks_json = "json" in content_type or body.lstrip()[:1] in ("{", "[")
    if looks_json:
        try:
            return _json(json.loads(body))
        except ValueError as exc:
            return Group(Text(f"failed to parse as JSON: {exc}", style="yellow"), Text(body))
    return Text(body)


def message_view(msg: Any) -> RenderableType:
    if not isinstance(msg, dict):
        return Text("(not seen)", style="dim") if msg is None else _json(msg)
    headers = msg.get("headers")
    if not isinstance(headers, list):
        return _json(msg)
    if msg.get("method"):
        start = f"{msg.get('method')} {msg.get('target') or msg.get('path') or ''} " + str(
            msg.get("version") or ""
        )
    else:
        start = f"{msg.get('version') or ''} {msg.get('status') or ''} {msg.get('reason') or ''}"
    lines = Text(start.strip() + "\n", style="bold")
    ctype = ""
    for h in headers:
        if isinstance(h, list | tuple) and len(h) == 2:
            lines.append(f"{h[0]}", style="cyan")
            lines.append(f": {h[1]}\n")
            if str(h[0]).lower() == "content-type":
                ctype = str(h[1]).lower()
    parts: list[RenderableType] = [lines]
    if msg.get("body_truncated"):
        parts.append(Text(f"(body cut at {len(msg.get('body') or '')} of "
                          f"{msg.get('body_size')} bytes)", style="yellow"))  # fmt: skip
    parts.append(body_view(msg.get("body"), msg.get("body_encoding"), ctype))
    gql = msg.get("graphql")
    if isinstance(gql, dict):
        for op in gql.get("operations") or []:
            if not isinstance(op, dict):
                continue
            name = op.get("operation_name") or op.get("first_field") or ""
            parts.append(Text(f"GraphQL {op.get('operation_type') or ''} {name}", style="bold"))
            if op.get("error"):
                parts.append(Text(f"failed to parse as GraphQL: {op['error']}", style="yellow"))
            if isinstance(op.get("query"), str):
                parts.append(Syntax(op["query"], "graphql", word_wrap=True))
            if op.get("variables") is not None:
                parts.append(_json(op["variables"]))
    messages = msg.get("messages")
    if isinstance(messages, list):
        parts.append(Text(f"gRPC messages: {len(messages)}", style="bold"))
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                continue
            head = f"#{i} {m.get('size')} bytes{' compressed' if m.get('compressed') else ''}"
            parts.append(Text(head, style="cyan"))
            if m.get("fields") is not None:
                parts.append(_json(m["fields"]))
            else:
                why = m.get("decode_error") or "not a protobuf message"
                parts.append(Text(f"failed to parse as protobuf: {why}", style="yellow"))
                parts.append(body_view(m.get("data"), "base64"))
    extra = {k: v for k, v in msg.items()
             if k not in ("headers", "body", "body_encoding", "body_truncated", "version",
                          "method", "target", "path", "status", "reason", "query", "body_size",
                          "content_encoding", "graphql", "messages")}  # fmt: skip
    if extra:
        parts.append(_json(extra))
    return Group(*parts)


class DetailScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "close", id="detail.close"),
    ]

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__()
        self.entry = entry

    def compose(self):  # type: ignore[no-untyped-def]
        e = self.entry
        head = (
            f"{e.get('id')}  {e.get('proto')}  {e.get('method') or ''} {e.get('summary') or ''}"
            f"  → {e.get('status')}  {e.get('latency_ms')} ms"
        )
        yield Static(head, id="detail-title")
        with TabbedContent(id="detail-tabs"):
            with TabPane("Request", id="tab-request"), VerticalScroll():
                yield Static(message_view(e.get("request")), classes="detail-body")
            with TabPane("Response", id="tab-response"), VerticalScroll():
                yield Static(message_view(e.get("response")), classes="detail-body")
            with TabPane("Connection", id="tab-connection"), VerticalScroll():
                keys = ("id", "src", "dst", "tls", "ts", "latency_ms", "request_size",
                        "response_size", "error")  # fmt: skip
                yield Static(_json({k: e.get(k) for k in keys}), classes="detail-body")
