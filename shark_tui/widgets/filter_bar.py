"""The `/` filter bar: validated on every keystroke by the filter module (the daemon runs it),
coloured valid/invalid, with the error naming the column, completion and history.

The history (`up`/`down`) outlives the app: loaded from the state file at start (`history`
module), written back whole when a filter is sent — a few hundred short lines, synchronously,
and re-read first so that two apps running at once both keep theirs. A file that cannot be read
is said once and left alone: the history then lives for this run only."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static

from shark_tui.engine.filter import completions, validate
from shark_tui.widgets.history import history_path, load_history, remember, save_history
from shark_tui.widgets.messages import FilterSubmitted


class FilterBar(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "older filter", show=False, id="filter.history_back"),
        Binding("down", "history(1)", "newer filter", show=False, id="filter.history_forward"),
        Binding("tab", "complete", "complete", show=False, id="filter.complete"),
    ]

    def __init__(self, id: str | None = None, history_file: str | None = None) -> None:
        super().__init__(id=id)
        self.history: list[str] = []
        self._pos = 0
        self.history_file = history_path() if history_file is None else history_file
        self._keep = True  # False: the file could not be read or written; not tried again

    def on_mount(self) -> None:
        self.history, problem = load_history(self.history_file)
        self._pos = len(self.history)
        if problem:
            self._keep = False
            self.notify(problem, severity="warning", timeout=8)

    def compose(self):  # type: ignore[no-untyped-def]
        yield Input(placeholder="http and status >= 500 · pod ~ api · ...", id="filter-input")
        yield Static("", id="filter-error")

    @property
    def input(self) -> Input:
        return self.query_one("#filter-input", Input)

    def on_input_changed(self, event: Input.Changed) -> None:
        err = validate(event.value)
        self.input.set_class(err is not None, "-invalid")
        self.input.set_class(err is None and bool(event.value.strip()), "-valid")
        line = self.query_one("#filter-error", Static)
        line.update("" if err is None else str(err))
        line.remove_class("-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value
        if validate(text) is not None:
            return  # stays open: the error says what to fix
        if text.strip():
            self.history = remember(self.history, text)
            self._save(text)
        self._pos = len(self.history)
        self.post_message(FilterSubmitted(text))

    def _save(self, text: str) -> None:
        if not self._keep:
            return
        on_disk, problem = load_history(self.history_file)  # another app's filters kept too
        problem = problem or save_history(self.history_file, remember(on_disk, text))
        if problem:
            self._keep = False
            self.notify(problem, severity="warning", timeout=8)

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self._pos = min(len(self.history), max(0, self._pos + step))
        self.input.value = self.history[self._pos] if self._pos < len(self.history) else ""
        self.input.cursor_position = len(self.input.value)

    def action_complete(self) -> None:
        value = self.input.value
        head, _, word = value.rpartition(" ")
        options = completions(word)
        if len(options) == 1:
            self.input.value = (head + " " if head else "") + options[0]
            self.input.cursor_position = len(self.input.value)
        elif options:  # listed on the error line, as a hint
            line = self.query_one("#filter-error", Static)
            line.update("  ".join(options[:12]))
            line.add_class("-hint")
