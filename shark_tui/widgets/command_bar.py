"""The `:` command line (k9s): ``:ns NAME``, ``:pod REGEX``, ``:target REGEX [-n NS]...``,
``:save PATH``, ``:tls``, ``:q``.

`parse`, `filter_term` and `target_args` are plain functions; the bar only reads a line,
completes command names and shows what was wrong. ``ns``/``pod`` become filter terms that the
app combines with the filter in force; ``target`` changes what the ``--kube`` daemons capture
(`shark_tui.widgets.targets`)."""

from __future__ import annotations

import re
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static

from shark_tui.widgets.messages import CommandSubmitted

__all__ = [
    "COMMANDS",
    "CommandBar",
    "CommandError",
    "filter_term",
    "parse",
    "quote",
    "target_args",
]

#: name → (argument, help); aliases map to these.
COMMANDS: dict[str, tuple[str, str]] = {
    "ns": ("NAME", 'only entries with namespace NAME at either end (ns == "NAME")'),
    "pod": ("REGEX", 'only entries with a pod matching REGEX at either end (pod ~ "REGEX")'),
    "target": (
        "REGEX [-n NS]...",
        "capture only the pods matching REGEX (.* every pod) in "
        "namespaces NS (none: all) on every --kube daemon, from now on",
    ),
    "save": ("PATH", "save the marked entries, or all shown, to PATH (as w does)"),
    "tls": ("", "TLS status: per process, whether its plaintext is visible, and why not (L)"),
    "q": ("", "quit"),
}
ALIASES = {"namespace": "ns", "po": "pod", "w": "save", "quit": "q", "q!": "q"}


class CommandError(ValueError):
    pass


def parse(text: str) -> tuple[str, str]:
    """(command, argument) of a command line (a leading ``:`` is allowed)."""
    text = text.strip().removeprefix(":").strip()
    name, _, arg = text.partition(" ")
    name = ALIASES.get(name.lower(), name.lower())
    arg = arg.strip()
    if not name:
        raise CommandError("a command: " + ", ".join(COMMANDS))
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name!r}: " + ", ".join(COMMANDS))
    needs = COMMANDS[name][0]
    if needs and not arg:
        raise CommandError(f":{name} needs {needs}")
    if not needs and arg:
        raise CommandError(f":{name} takes no argument")
    if name == "target":
        target_args(arg)  # said in the bar, not sent
    return name, arg


def target_args(arg: str) -> tuple[str, list[str]]:
    """(pod regex, namespaces) of ``:target REGEX [-n NS]...`` (the regex may be left out when
    a namespace is given: every pod of it)."""
    words = arg.split()
    pods: list[str] = []
    namespaces: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("-n", "--namespace"):
            if i + 1 == len(words):
                raise CommandError(f"{w} needs a namespace")
            namespaces.append(words[i + 1])
            i += 2
            continue
        pods.append(w)
        i += 1
    if len(pods) > 1:
        raise CommandError(f":target takes one pod regex, not {len(pods)} ({' '.join(pods)})")
    regex = pods[0] if pods else ""
    try:
        re.compile(regex)
    except re.error as exc:
        raise CommandError(f"bad pod regex {regex!r}: {exc}") from None
    return regex, namespaces


def quote(value: str) -> str:
    """A filter-language string literal for ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filter_term(name: str, arg: str) -> str:
    if name == "ns":
        return f"ns == {quote(arg)}"
    if name == "pod":
        return f"pod ~ {quote(arg)}"
    raise CommandError(f":{name} is not a filter")


class CommandBar(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "complete", show=False, id="command.complete"),
    ]

    def compose(self):  # type: ignore[no-untyped-def]
        line = Input(
            placeholder="ns default · pod api-.* · target api- -n shop · save out.pcapng · q",
            id="command-input",
        )
        line.border_title = ":"
        yield line
        yield Static("", id="command-error")

    @property
    def input(self) -> Input:
        return self.query_one("#command-input", Input)

    def open(self) -> None:
        self.display = True
        self.input.value = ""
        self.error("")
        self.input.focus()

    def error(self, text: str) -> None:
        self.query_one("#command-error", Static).update(text)
        self.input.set_class(bool(text), "-invalid")

    def on_input_changed(self, event: Input.Changed) -> None:
        self.error("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            parse(event.value)
        except CommandError as exc:
            self.error(str(exc))
            return
        self.post_message(CommandSubmitted(event.value.strip().removeprefix(":").strip()))

    def action_complete(self) -> None:
        value = self.input.value.lstrip(":")
        if " " in value:
            return
        options = [c for c in COMMANDS if c.startswith(value.lower())]
        if len(options) == 1:
            self.input.value = options[0] + (" " if COMMANDS[options[0]][0] else "")
            self.input.cursor_position = len(self.input.value)
        elif options:
            self.error("  ".join(f":{c} {COMMANDS[c][0]}".strip() for c in options))
