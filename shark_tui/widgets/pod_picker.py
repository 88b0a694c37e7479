"""The pod picker (`p`): fuzzy search over the pods and addresses seen in the list's rows
(both ends, across filter changes); choosing one narrows the filter to that pod in its
namespace — ``((src.pod == "X" and src.ns == "NS") or (dst.pod == "X" and dst.ns == "NS"))``,
since pods of one name may run in several namespaces (``pod == "X"`` when the namespace is not
known) — or to ``ip == "X"``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, NamedTuple

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.fuzzy import FuzzySearch
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from shark_tui.widgets.command_bar import quote

#: Options listed at once (the search narrows them).
SHOWN = 200


class Candidate(NamedTuple):
    kind: str  # "pod" or "ip"
    name: str  # what is matched and shown
    ns: str
    term: str  # the filter term choosing it gives


def candidates(seen: Iterable[str]) -> list[Candidate]:
    """Pods (from ``ns/pod`` endpoints) and addresses (``ip:port``, ``[v6]:port``) in
    ``seen``, each once: pods first, then addresses, by name."""
    pods: dict[tuple[str, str], Candidate] = {}
    ips: dict[str, Candidate] = {}
    for ep in seen:
        if not ep or ep == "?":
            continue
        if ep.startswith("["):  # [v6]:port
            ip = ep[1:].partition("]")[0]
            ips.setdefault(ip, Candidate("ip", ip, "", f"ip == {quote(ip)}"))
        elif "/" in ep:  # ns/pod
            ns, _, pod = ep.partition("/")
            pods.setdefault((pod, ns), Candidate("pod", pod, ns, pod_term(pod, ns)))
        elif ":" in ep:  # ip:port
            ip = ep.rpartition(":")[0]
            ips.setdefault(ip, Candidate("ip", ip, "", f"ip == {quote(ip)}"))
        else:  # a pod without a namespace
            pods.setdefault((ep, ""), Candidate("pod", ep, "", pod_term(ep, "")))
    return sorted(pods.values(), key=lambda c: (c.name, c.ns)) + sorted(
        ips.values(), key=lambda c: _ip_key(c.name)
    )


def pod_term(pod: str, ns: str) -> str:
    """The filter term for pod ``pod`` of namespace ``ns`` at either end (the namespace pinned
    at the same end as the name; parenthesised, so it can be and-ed to any filter)."""
    if not ns:
        return f"pod == {quote(pod)}"
    p, n = quote(pod), quote(ns)
    return f"((src.pod == {p} and src.ns == {n}) or (dst.pod == {p} and dst.ns == {n}))"


def _ip_key(ip: str) -> tuple[int, ...] | tuple[int, str]:
    parts = ip.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return (1 << 30, ip)


def _fg(s: Style) -> Style:
    """A component style without its background (the option list's own shows through)."""
    return Style(color=s.color, bold=s.bold, italic=s.italic, underline=s.underline)


class PodPicker(ModalScreen[str | None]):
    """Dismissed with the chosen candidate's filter term, or None."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"pod-picker--match", "pod-picker--ns"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "close", id="picker.close"),
        Binding("down", "move(1)", "next", show=False, id="picker.down"),
        Binding("up", "move(-1)", "previous", show=False, id="picker.up"),
    ]

    def __init__(self, seen: Iterable[str]) -> None:
        super().__init__()
        self.all = candidates(seen)
        self.shown: list[Candidate] = []

    def compose(self):  # type: ignore[no-untyped-def]
        with Vertical(id="picker-box"):
            yield Static(f"Pods and addresses seen ({len(self.all):,})", id="picker-title")
            yield Input(placeholder="fuzzy search: letters in order", id="picker-input")
            yield OptionList(id="picker-options")

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self.search("")

    def on_input_changed(self, event: Input.Changed) -> None:
        self.search(event.value)

    def search(self, query: str) -> None:
        """List the candidates matching ``query``, best first."""
        query = query.strip()
        options = self.query_one(OptionList)
        style = _fg(self.get_component_rich_style("pod-picker--match"))
        ns_style = _fg(self.get_component_rich_style("pod-picker--ns"))
        found: list[tuple[float, int, Candidate, tuple[int, ...]]] = []
        if query:
            fuzzy = FuzzySearch()
            for i, c in enumerate(self.all):
                score, where = fuzzy.match(query, c.name)
                if score > 0:
                    found.append((score, i, c, tuple(where)))
            found.sort(key=lambda f: (-f[0], f[1]))
        else:
            found = [(0.0, i, c, ()) for i, c in enumerate(self.all[:SHOWN])]
        found = found[:SHOWN]
        self.shown = [f[2] for f in found]
        items = []
        for _, _, c, where in found:
            name = Text(c.name)
            for pos in where:
                name.stylize(style, pos, pos + 1)
            label = Text(f"{c.kind:<4} ") + name
            if c.ns:
                label.append(f"  {c.ns}", style=ns_style)
            items.append(Option(label))
        options.clear_options()
        options.add_options(items)
        if items:
            options.highlighted = 0

    def action_move(self, step: int) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            now = options.highlighted or 0
            options.highlighted = max(0, min(options.option_count - 1, now + step))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._choose(self.query_one(OptionList).highlighted)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose(event.option_index)

    def _choose(self, index: int | None) -> None:
        if index is not None and 0 <= index < len(self.shown):
            self.dismiss(self.shown[index].term)
