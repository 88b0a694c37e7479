"""The help screen (`?`), generated: every binding of every widget with its key as the user's
keymap has it, its description and the id to rebind it by; the `:` commands; the filter
language from the filter module's own help."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from shark_tui.engine.filter import HELP as FILTER_HELP
from shark_tui.widgets.command_bar import COMMANDS

#: (group title, the bindings of that widget or screen)
Groups = list[tuple[str, list[Binding]]]


def bindings_of(bindings: Iterable[BindingType]) -> list[Binding]:
    return [b for b in bindings if isinstance(b, Binding)]


def keys_of(binding: Binding, keymap: Mapping[str, str]) -> list[str]:
    """The keys that trigger ``binding`` now (the keymap's, when it rebinds the id)."""
    keys = keymap.get(binding.id, binding.key) if binding.id else binding.key
    return [k.strip() for k in keys.split(",") if k.strip()]


def describe(binding: Binding) -> str:
    """The binding's longer text when it has one (its tooltip), else its footer text."""
    return binding.tooltip or binding.description or binding.action.replace("_", " ")


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "close", id="help.close"),
    ]

    def __init__(self, groups: Groups, keymap: Mapping[str, str],
                 key_display: Callable[[str], str]) -> None:  # fmt: skip
        super().__init__()
        self.groups = groups
        self.keymap = keymap
        self.key_display = key_display

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(group, keys, description, id) for every binding: what the screen shows."""
        out = []
        for title, bindings in self.groups:
            for b in bindings:
                keys = " ".join(self.key_display(k) for k in keys_of(b, self.keymap))
                out.append((title, keys, describe(b), b.id or ""))
        return out

    def compose(self):  # type: ignore[no-untyped-def]
        rows = self.rows()
        with VerticalScroll(id="help-box"):
            yield Static("shark-tui keys · rebind by id in $XDG_CONFIG_HOME/shark-tui/keys.toml"
                         " (id = \"key\") · esc closes", id="help-title")  # fmt: skip
            for title, _ in self.groups:
                table = _table()
                for group, keys, text, bid in rows:
                    if group == title:
                        table.add_row(keys, text, Text(bid, style="dim"))
                yield Static(title, classes="help-group")
                yield Static(table, classes="help-keys")
            yield Static("commands (:)", classes="help-group")
            table = _table(wrap_first=True)  # a command's arguments may not fit on one line
            for name, (arg, text) in COMMANDS.items():
                table.add_row(f":{name} {arg}".strip(), text, "")
            yield Static(table, classes="help-keys")
            yield Static("filter language (/)", classes="help-group")
            table = _table()
            for term, text in FILTER_HELP:
                table.add_row(term, text, "")
            yield Static(table, classes="help-keys")


def _table(wrap_first: bool = False) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False, expand=False)
    table.add_column(width=16, no_wrap=not wrap_first, style="bold")
    table.add_column(width=56)
    table.add_column(no_wrap=True)
    return table
