"""The sort menu (`o`): one key per column (k9s habit); the column sorted now is marked with its
direction, and choosing it again reverses it. Dismissed with the column chosen, or None."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

#: column → (key in the menu, what it sorts by)
SORT_KEYS: dict[str, tuple[str, str]] = {
    "time": ("t", "time of the first message"),
    "node": ("n", "node (the daemon it came from)"),
    "source": ("s", "source (pod or address)"),
    "destination": ("d", "destination (pod or address)"),
    "proto": ("p", "protocol"),
    "method": ("m", "method"),
    "status": ("c", "status code"),
    "latency": ("l", "latency"),
    "size": ("b", "bytes, request and response"),
    "summary": ("u", "summary (path, topic, key)"),
}

#: Columns sorted largest first when chosen (the slowest call, the biggest, the errors).
DESCENDING_FIRST = frozenset({"latency", "size", "status"})


def arrow(descending: bool) -> str:
    return "▼" if descending else "▲"


class SortMenu(ModalScreen[str | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "close", id="sort.close"),
        *(
            Binding(key, f"choose('{col}')", f"by {col}", tooltip=f"Sort by {text}; again: reverse",
                    id=f"sort.{col}")
            for col, (key, text) in SORT_KEYS.items()
        ),
    ]  # fmt: skip

    def __init__(self, columns: list[str], current: str, descending: bool) -> None:
        super().__init__()
        self.columns = columns
        self.current = current
        self.descending = descending

    def compose(self):  # type: ignore[no-untyped-def]
        with Vertical(id="sort-box"):
            yield Static("Sort the list by", id="sort-title")
            options = []
            for col in self.columns:
                key, text = SORT_KEYS[col]
                now = ""
                if col == self.current:
                    now = f"  {arrow(self.descending)} now (again: reverse)"
                options.append(Option(f"{key}  {text}{now}", id=col))
            yield OptionList(*options, id="sort-columns")
            yield Static("the letter or enter sorts · esc closes", id="sort-hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.columns:
            options.highlighted = self.columns.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.action_choose(event.option.id)

    def action_choose(self, column: str) -> None:
        if column in self.columns:
            self.dismiss(column)
