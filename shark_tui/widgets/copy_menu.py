"""The copy menu (`x`): the opened entry as curl, HAR or JSON, to the clipboard (OSC 52, which
works over ssh and in tmux with `set-clipboard on`) or, when a file name is given, to a file."""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from shark_tui.widgets.formats import FORMATS, http_request, render

#: Terminals drop OSC 52 payloads past about this size; bigger texts are better saved.
CLIPBOARD_HINT = 100_000


class CopyMenu(ModalScreen[str | None]):
    """Dismissed with the format written, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "close", id="copy.close"),
        Binding("c", "copy('curl')", "as curl", id="copy.curl"),
        Binding("h", "copy('har')", "as HAR", id="copy.har"),
        Binding("j", "copy('json')", "as JSON", id="copy.json"),
    ]

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__()
        self.entry = entry
        self.http = http_request(entry) is not None

    def compose(self):  # type: ignore[no-untyped-def]
        e = self.entry
        with Vertical(id="copy-box"):
            yield Static(f"Copy entry {e.get('id')}  {e.get('proto')}  {e.get('method') or ''} "
                         f"{e.get('summary') or ''}", id="copy-title")  # fmt: skip
            options = []
            for fmt, (label, needs_http) in FORMATS.items():
                off = needs_http and not self.http
                text = f"{fmt[0]}  {label}" + ("  (HTTP entries only)" if off else "")
                options.append(Option(text, id=fmt, disabled=off))
            yield OptionList(*options, id="copy-formats")
            yield Input(placeholder="file name (empty: the clipboard, OSC 52)", id="copy-path")
            yield Static("enter or the letter copies · tab: a file name instead", id="copy-hint")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            await self.action_copy(event.option.id)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        options = self.query_one(OptionList)
        highlighted = options.highlighted_option
        await self.action_copy(highlighted.id if highlighted and highlighted.id else "json")

    async def action_copy(self, fmt: str) -> None:
        needs_http = FORMATS[fmt][1]
        if needs_http and not self.http:
            self.notify(f"{fmt}: needs an HTTP entry", severity="warning")
            return
        try:
            text = render(fmt, self.entry)
        except Exception as exc:  # said, never raised into the UI
            self.notify(f"{fmt}: {exc}", severity="error")
            return
        path = os.path.expanduser(self.query_one("#copy-path", Input).value.strip())
        if path:
            try:
                await asyncio.to_thread(_write, path, text)
            except OSError as exc:
                self.notify(f"{path}: {exc.strerror or exc}", severity="error")
                return
            self.notify(f"{FORMATS[fmt][0]} of {self.entry.get('id')} written to {path}")
        else:
            self.app.copy_to_clipboard(text)
            big = "; large for a terminal clipboard: a file is safer" if (
                len(text) > CLIPBOARD_HINT) else ""  # fmt: skip
            self.notify(f"{FORMATS[fmt][0]} of {self.entry.get('id')} copied to the "
                        f"clipboard ({len(text):,} characters{big})")  # fmt: skip
        self.dismiss(fmt)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
