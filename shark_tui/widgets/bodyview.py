"""Body views shared by every protocol's detail view: by priority JSON (pretty-printed), text,
hex, with a parse failure said rather than hidden ("failed to parse as JSON: ...")."""

from __future__ import annotations

import base64
import json
from typing import Any

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text

__all__ = ["body_view", "json_view"]


def json_view(obj: Any) -> Syntax:
    return Syntax(json.dumps(obj, indent=2, ensure_ascii=False), "json", word_wrap=True)


def body_view(body: Any, encoding: str | None, content_type: str = "") -> RenderableType:
    """A body by priority: JSON, text, hex; a failed JSON parse is said, not hidden."""
    if body in (None, ""):
        return Text("(no body)", style="dim")
    if not isinstance(body, str):
        return json_view(body)
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
            return json_view(json.loads(body))
        except ValueError as exc:
            return Group(Text(f"failed to parse as JSON: {exc}", style="yellow"), Text(body))
    return Text(body)
