"""The `/` filter bar: validated on every keystroke by the filter module (the daemon runs it),
coloured valid/invalid, with the error naming the column, completion and history."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static

from shark_tui.engine.filter import completions, validate
from shark_tui.widgets.messages import FilterSubmitted


class FilterBar(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "older filter", show=False, id="filter.history_back"),
        Binding("down", "history(1)", "newer filter", show=False, id="filter.history_forward"),
        Binding("tab", "complete", "complete", show=False, id="filter.complete"),
    ]

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history: list[str] = []
        self._pos = 0

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
        self.query_one("#filter-error", Static).update("" if err is None else str(err))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value
        if validate(text) is not None:
            return  # stays open: the error says what to fix
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._pos = len(self.history)
        self.post_message(FilterSubmitted(text))

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
        elif options:
            self.query_one("#filter-error", Static).update("  ".join(options[:12]))
