"""The save dialog (`w`): a path (default ``shark-tui-<time>.pcapng``), what will be saved,
and the progress of the save while the app's worker runs the daemons' Export."""

from __future__ import annotations

import os
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from shark_tui.widgets.messages import SaveRequested
from shark_tui.widgets.saver import Selection, path_for, path_problem


class SaveScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "close", id="save.close"),
    ]

    def __init__(self, selection: Selection, default_path: str, nodes: list[str]) -> None:
        super().__init__()
        self.selection = selection
        self.default_path = default_path
        self.nodes = nodes
        self._confirm = ""
        self.saving = False

    def compose(self):  # type: ignore[no-untyped-def]
        with Vertical(id="save-box"):
            yield Static("Save as a capture file", id="save-title")
            yield Static(self._what(), id="save-what")
            yield Input(value=self.default_path, id="save-path")
            yield Static(self._hint(self.default_path), id="save-hint")
            yield Static("", id="save-status")

    def _what(self) -> str:
        n = len(self.nodes)
        src = "the daemon" if n == 1 else f"{n} daemons"
        return f"{self.selection.describe()}, exported by {src}"

    def _hint(self, path: str) -> str:
        fmt = "classic pcap (one link type)" if path.endswith(".pcap") else "pcapng"
        if len(self.nodes) > 1:
            names = ", ".join(path_for(path, node, True) for node in self.nodes[:3])
            more = ", …" if len(self.nodes) > 3 else ""
            return f"{fmt}; several daemons: one file per node ({names}{more})"
        return f"{fmt}; a name ending in .pcap gives classic pcap"

    @property
    def input(self) -> Input:
        return self.query_one("#save-path", Input)

    def on_mount(self) -> None:
        self.input.focus()  # the whole name is selected: typing replaces it

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#save-hint", Static).update(self._hint(event.value.strip()))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.saving:
            return
        path = os.path.expanduser(event.value.strip())
        problem = path_problem(path)
        if problem:
            self.status(problem, error=True)
            return
        targets = [path_for(path, node, len(self.nodes) > 1) for node in self.nodes]
        if any(os.path.exists(t) for t in targets) and self._confirm != path:
            self._confirm = path
            self.status("the file exists: enter again to overwrite it", error=True)
            return
        self.saving = True
        self.input.disabled = True
        self.status("saving…")
        self.post_message(SaveRequested(path, self.selection))

    # -- called by the app's save worker (attributes flow down) ----------------------------------

    def status(self, text: str, *, error: bool = False) -> None:
        widget = self.query_one("#save-status", Static)
        widget.set_class(error, "-error")
        widget.update(text)

    def finished(self, text: str, ok: bool) -> None:
        if ok:
            self.dismiss()
            return
        self.saving = False
        self.input.disabled = False
        self.input.focus()
        self.status(text, error=True)
