"""The detail pane (enter): the full entry fetched from its daemon, in tabs."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.syntax import Syntax
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Static, TabbedContent, TabPane


def _pretty(obj: Any) -> Syntax:
    return Syntax(json.dumps(obj, indent=2, ensure_ascii=False), "json", word_wrap=True)


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
            with TabPane("Request", id="tab-request"):
                yield Static(_pretty(e.get("request")), classes="detail-body")
            with TabPane("Response", id="tab-response"):
                yield Static(_pretty(e.get("response")), classes="detail-body")
            with TabPane("Connection", id="tab-connection"):
                conn = {k: e.get(k) for k in ("src", "dst", "tls", "ts", "error")}
                yield Static(_pretty(conn), classes="detail-body")
