"""The Textual app: wires the daemon links, the list, the filter bar and the detail pane.

It never captures or dissects: every row comes from a daemon over the socket protocol (an
embedded one for ``shark-tui`` on this host and ``shark-tui open FILE``)."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from math import ceil
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Static

from shark_tui.engine.client import ClientError
from shark_tui.engine.filter import validate
from shark_tui.widgets.command_bar import CommandBar, CommandError, filter_term, parse, target_args
from shark_tui.widgets.commands import ActionCommands
from shark_tui.widgets.copy_menu import CopyMenu
from shark_tui.widgets.detail import DetailScreen
from shark_tui.widgets.endpoints import EndpointsScreen
from shark_tui.widgets.entry_list import EntryList
from shark_tui.widgets.filter_bar import FilterBar
from shark_tui.widgets.help import Groups, HelpScreen, bindings_of, describe, keys_of
from shark_tui.widgets.key_footer import KeyFooter
from shark_tui.widgets.keymap import config_path, load_keymap
from shark_tui.widgets.link import DaemonLink
from shark_tui.widgets.messages import (
    CaughtUp,
    CommandSubmitted,
    EntriesArrived,
    EntryChosen,
    FilterSubmitted,
    LinkChanged,
    MarksChanged,
    SaveRequested,
    SortChanged,
    StatsArrived,
)
from shark_tui.widgets.pod_picker import PodPicker
from shark_tui.widgets.rows import Row, RowStore
from shark_tui.widgets.save_dialog import SaveScreen
from shark_tui.widgets.saver import Selection, default_name, path_problem, save
from shark_tui.widgets.sort_menu import SortMenu, arrow
from shark_tui.widgets.status_header import StatusHeader
from shark_tui.widgets.targets import retarget
from shark_tui.widgets.themes import THEMES, configured_theme, variable_defaults
from shark_tui.widgets.tls_status import TlsStatusScreen

#: Protocols toggled by keys 1–8 (DESIGN.md's order) and the filter macro of each.
#: Rows added between two `gc.freeze` calls. Rows are named tuples (which the collector never
#: untracks): a full collection over 200,000 of them took 35–95 ms, often in the middle of a
#: filter keystroke's first screen. Rows hold no references to other objects, so freezing them
#: loses nothing; they are still freed by reference counting when the list lets them go.
FREEZE_ROWS = 50_000

TOGGLES = ("http", "http2", "grpc", "graphql", "amqp", "kafka", "redis", "tcp")


class SharkApp(App[None]):
    CSS_PATH = "widgets/app.tcss"
    TITLE = "shark-tui"
    COMMANDS = App.COMMANDS | {ActionCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit", tooltip="Quit shark-tui", id="app.quit"),
        # ctrl+c quits, as in k9s and mitmproxy (`shark-tui tap` then leaves the cluster as it
        # found it), from a text field or a dialog too: a priority binding of its own (q is typed
        # into a text field and closes a dialog), in place of Textual's ctrl+c ("press q to
        # quit", or the copy of a selection)
        Binding("ctrl+c", "quit", "quit", show=False, priority=True,
                tooltip="Quit shark-tui, from a text field or a dialog too",
                id="app.quit_anywhere"),
        Binding("question_mark", "help", "help", tooltip="Every key, command and filter term",
                id="app.help"),
        Binding("slash", "filter", "filter", tooltip="Type a filter (the daemon runs it)",
                id="app.filter"),
        Binding("colon", "command", "command", show=False,
                tooltip="Command line: :ns NAME, :pod REGEX, :target REGEX, :save PATH, :tls, :q",
                id="app.command"),
        Binding("escape", "escape", "close / clear filter", show=False,
                tooltip="Close the filter or command line; on the bare list clear the filter",
                id="app.escape"),
        Binding("C", "clear", "clear",
                tooltip="Clear the list and the marks (the daemons keep their store; what was "
                        "cleared does not come back, not with another filter either)",
                id="app.clear"),
        Binding("P", "pause", "pause",
                tooltip="Pause capture on every daemon (packets are counted, not stored), or "
                        "resume it", id="app.pause"),
        Binding("w", "save", "save", tooltip="Save the marked entries (or all shown) as pcapng",
                id="app.save"),
        Binding("x", "copy_entry", "copy", tooltip="Copy the entry as curl, HAR or JSON",
                id="app.copy"),
        Binding("p", "pods", "pods", tooltip="Pick a pod or address to filter by",
                id="app.pods"),
        Binding("e", "endpoints", "endpoints",
                tooltip="Per destination, method and path: count, rate, errors, latency",
                id="app.endpoints"),
        Binding("L", "tls_status", "TLS status", show=False,
                tooltip="TLS status: per process, plaintext visible or why not",
                id="app.tls_status"),
        *(
            Binding(str(i + 1), f"toggle_proto('{p}')", f"toggle {p}", show=False,
                    tooltip=f"Show {p} entries (with the other toggled protocols)",
                    id=f"app.toggle_{p}")
            for i, p in enumerate(TOGGLES)
        ),
    ]  # fmt: skip

    def __init__(self, links: list[tuple[str, str]], *, clock: Any = time.time) -> None:
        super().__init__()
        self.store = RowStore(twins=len(links) > 1)  # one call seen by two daemons: one row
        self.links = [DaemonLink(self, address, token) for address, token in links]
        self.filter_text = ""
        self.toggled: set[str] = set()
        self.clock = clock
        self.keymap_file = config_path()
        self.user_keymap, self.keymap_problems = load_keymap(
            self.keymap_file, {b.id for _, bs in self.binding_groups() for b in bs if b.id}
        )
        for theme in THEMES:
            self.register_theme(theme)
        theme_name, problem = configured_theme(self.keymap_file, self.available_themes)
        if theme_name:
            self.theme = theme_name
        self.keymap_problems += [problem] if problem else []
        self._clash_said: set[str] = set()
        self._down_said: set[str] = set()  # nodes whose going away was said (once, not per retry)
        self._unfrozen = 0  # rows added since the last `gc.freeze`

    def get_theme_variable_defaults(self) -> dict[str, str]:
        """Our TCSS variables (protocol colours…) under themes that do not set them."""
        dark = self.current_theme.dark
        return {**super().get_theme_variable_defaults(), **variable_defaults(dark)}

    def compose(self) -> ComposeResult:
        # kept by reference: `query_one` on the app searches the topmost screen, which is a
        # dialog while one is open, and rows and stats keep arriving then
        self.header = StatusHeader(id="header")
        self.entries = EntryList(self.store, show_node=len(self.links) > 1, id="entries")
        self.filter_bar = FilterBar(id="filter-bar")
        self.command_bar = CommandBar(id="command-bar")
        yield self.header
        yield Static(self._columns(), id="columns")
        yield self.entries
        yield self.filter_bar
        yield self.command_bar
        self.footer = KeyFooter()
        yield self.footer

    def _columns(self) -> str:
        """The titles over the list, the sorted column's with its direction."""
        store = self.store

        def t(column: str, title: str) -> str:
            return title + arrow(store.descending) if column == store.sort_by else title

        node = f"{t('node', 'NODE'):<12} " if len(self.links) > 1 else ""
        return (
            f"  {t('time', 'TIME'):<12} {node}{t('source', 'SOURCE'):>24} → "
            f"{t('destination', 'DESTINATION'):<24} {t('proto', 'PROTO'):<7} "
            f"{t('method', 'METHOD'):<8} {t('status', 'STATUS'):>5} {t('latency', 'LATENCY'):>9} "
            f"{t('size', 'SIZES'):<13}   {t('summary', 'SUMMARY')}"
        )

    def on_mount(self) -> None:
        if self.user_keymap:
            self.set_keymap(self.user_keymap)
        for problem in self.keymap_problems:
            self.notify(problem, severity="warning", timeout=10)
        self.filter_bar.display = False
        self.command_bar.display = False
        for link in self.links:
            self.run_worker(link.run(), group="links", exit_on_error=False)
        self.set_interval(0.1, self._tick)
        self._header()

    @property
    def entry_list(self) -> EntryList:
        return self.entries

    # -- rows ------------------------------------------------------------------------------------

    def on_entries_arrived(self, msg: EntriesArrived) -> None:
        empty = not len(self.store)
        self.store.add(msg.rows)
        if empty:
            self._settle()  # the first rows after a filter change: on screen now, not at the tick

    def on_caught_up(self, msg: CaughtUp) -> None:
        self.store.resumed(msg.node)
        self._settle()

    def _settle(self) -> None:
        before = len(self.store)
        if self.store.settle():
            self._unfrozen += max(0, len(self.store) - before)
            self.entry_list.rows_changed()
            self._header()
        elif any(link.retry_at is not None for link in self.links):
            self._header()  # the countdown to the next attempt
        if self._unfrozen >= FREEZE_ROWS:
            self._unfrozen = 0
            gc.collect(1)  # the young garbage first: what is frozen is never collected
            gc.freeze()

    def _tick(self) -> None:
        self._settle()
        self.store.reap()  # a cleared list's rows, a slice at a time

    def on_link_changed(self, msg: LinkChanged) -> None:
        if msg.up:
            self._down_said.discard(msg.node)
            if msg.resume:  # its backlog comes again: rows held are not doubled
                self.store.resume(msg.node)
        else:
            self.header.forget(msg.node)
            if msg.node not in self._down_said:  # said once, not at every retry
                self._down_said.add(msg.node)
                self.notify(f"{msg.node}: {msg.error or 'disconnected'}", severity="warning",
                            timeout=4)  # fmt: skip
        self._header()

    def on_sort_changed(self, msg: SortChanged) -> None:
        self.query_one("#columns", Static).update(self._columns())
        self._header()

    def on_stats_arrived(self, msg: StatsArrived) -> None:
        self.header.feed(msg.node, msg.stats, msg.at)
        self._header()

    def _header(self) -> None:
        now = time.monotonic()
        waits = [link.retry_at - now for link in self.links if link.retry_at is not None]
        self.header.show(
            up=sum(1 for link in self.links if link.up),
            total=len(self.links),
            entries=len(self.store),
            marked=len(self.store.marked),
            only_marked=self.store.only_marked,
            follow=self.entry_list.follow,
            filter=self.effective_filter(),
            sort=f"{self.store.sort_by} {arrow(self.store.descending)}",
            retry_in=max(0, ceil(min(waits))) if waits else None,
            twice=self.store.duplicates,
        )

    # -- filtering -------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.command_bar.display = False
        bar = self.filter_bar
        bar.display = True
        bar.input.value = self.filter_text
        bar.input.focus()

    def action_escape(self) -> None:
        """esc: the topmost of the bars closes; on the bare list the filter is cleared
        (dialogs close themselves: each binds esc)."""
        bars = [bar for bar in (self.command_bar, self.filter_bar) if bar.display]
        if bars:
            bars[0].display = False
            self.entry_list.focus()
        elif self.filter_text or self.toggled:
            self.toggled.clear()
            self._apply("")

    def on_filter_submitted(self, msg: FilterSubmitted) -> None:
        self.filter_bar.display = False
        self.entry_list.focus()
        self.toggled.clear()
        self._apply(msg.text)

    def action_toggle_proto(self, proto: str) -> None:
        self.toggled ^= {proto}
        self._apply(self.filter_text)

    def effective_filter(self) -> str:
        """What the daemon is asked: the toggled protocols and the typed filter, both."""
        if not self.toggled:
            return self.filter_text
        protos = " or ".join(p for p in TOGGLES if p in self.toggled)
        return f"({protos})" + (f" and ({self.filter_text})" if self.filter_text else "")

    def _apply(self, text: str) -> None:
        self.footer.hold()  # the new filter's first rows are drawn before the footer
        self.filter_text = text
        self.store.clear()
        self.entry_list.follow = True
        self.entry_list.rows_changed()
        for link in self.links:
            link.set_filter(self.effective_filter())
        self._header()

    def action_clear(self) -> None:
        """Empty the list, not the daemons' stores: what was shown does not come back (after
        a reconnect, or with another filter: the links ask for newer entries only)."""
        self.store.clear()
        self.store.clear_marks()
        for link in self.links:
            link.clear()
        self.entry_list.rows_changed()
        self._header()

    # -- capture ---------------------------------------------------------------------------------

    def action_pause(self) -> None:
        """Pause capture on every connected daemon that captures, or resume it when all of
        them are paused (daemons serving a file are left alone; with nothing but those, they
        are asked, and say why not)."""
        links = [link for link in self.links if link.up]
        if not links:
            self.notify("not connected: nothing to pause", severity="warning")
            return
        stats = self.header.stats
        capturing = [link for link in links if "capturing" in stats.get(link.node, {})]
        paused = not capturing or not all(stats[link.node].get("paused") for link in capturing)
        for link in capturing or links:
            self.run_worker(self._pause(link, paused), group="pause", exit_on_error=False)

    async def _pause(self, link: DaemonLink, paused: bool) -> None:
        try:
            await link.pause(paused)
        except ClientError as exc:
            self.notify(f"{link.node}: {exc}", severity="warning")

    # -- detail ----------------------------------------------------------------------------------

    def on_entry_chosen(self, msg: EntryChosen) -> None:
        link = next((link for link in self.links if link.node == msg.row.node), None)
        row_id = msg.row.id

        def detail(entry: dict[str, Any]) -> Screen[Any]:
            async def raw() -> tuple[list[tuple[int, bytes]], int]:
                if link is None:
                    return [], 0
                return await link.get_stream(row_id)

            async def full(max_body: int) -> dict[str, Any]:
                if link is None:
                    raise ClientError(f"{msg.row.node}: not connected")
                return await link.get_entry(row_id, max_body=max_body)

            return DetailScreen(entry, raw, full)

        self.run_worker(
            self._open(msg.row, detail), group="entry", exclusive=True, exit_on_error=False
        )

    def action_copy_entry(self) -> None:
        row = self.entry_list.selected
        if row is not None:
            self.run_worker(
                self._open(row, CopyMenu), group="entry", exclusive=True, exit_on_error=False
            )

    async def _open(self, row: Row, screen: Callable[[dict[str, Any]], Screen[Any]]) -> None:
        """Fetch ``row``'s full entry from its daemon (GetEntry), then show ``screen`` on it."""
        link = next((link for link in self.links if link.node == row.node), None)
        if link is None:
            return
        try:
            entry = await link.get_entry(row.id)
        except Exception as exc:  # shown, never raised into the UI
            self.notify(f"{row.id}: {exc}", severity="error")
            return
        self.push_screen(screen(entry))

    # -- marks and saving ------------------------------------------------------------------------

    def on_marks_changed(self, msg: MarksChanged) -> None:
        self._header()

    def selection(self) -> Selection:
        """What `w` saves, fixed now: the marked entries, else all matching the filter."""
        if self.store.marked:
            return Selection(self.effective_filter(), self.store.marked_ids())
        until: dict[str, float] = {}
        for row in reversed(self.store.rows):  # the newest row of each node
            until.setdefault(row.node, row.ts)
            if len(until) == len(self.links):
                break
        return Selection(self.effective_filter(), until=until, shown=len(self.store))

    def action_save(self) -> None:
        if not self.store.marked and (self.store.only_marked or not len(self.store)):
            self.notify("nothing to save: no entry is marked or shown", severity="warning")
            return
        nodes = [link.node for link in self.links]
        self.push_screen(SaveScreen(self.selection(), default_name(self.clock()), nodes))

    def on_save_requested(self, msg: SaveRequested) -> None:
        dialog = self.screen if isinstance(self.screen, SaveScreen) else None
        self.save_to(msg.path, msg.selection, dialog)

    def save_to(self, path: str, sel: Selection, dialog: SaveScreen | None = None) -> None:
        """Export ``sel`` to ``path`` in a worker; progress in ``dialog`` when it is open,
        the outcome as a notification."""
        self.run_worker(self._save(path, sel, dialog), group="save", exit_on_error=False)

    async def _save(self, path: str, sel: Selection, dialog: SaveScreen | None) -> None:
        def progress(node: str, n: int) -> None:
            if dialog is not None and dialog.is_attached:
                dialog.status(f"saving… {node}: {n / 1024:,.0f} KiB received")

        try:
            results = await save(self.links, sel, path, progress)
        except Exception as exc:  # save() reports per node; this is a last guard
            results = []
            self.notify(f"save failed: {exc}", severity="error")
        failed = [r for r in results if r.error]
        for r in results:
            self.notify(r.describe(), severity="error" if r.error else "information",
                        timeout=8)  # fmt: skip
        if not results:
            self.notify("nothing to save", severity="warning")
        if dialog is not None and dialog.is_attached:
            text = "; ".join(r.describe() for r in failed) or "nothing to save"
            dialog.finished(text, ok=bool(results) and not failed)

    # -- help and commands -----------------------------------------------------------------------

    def binding_groups(self) -> Groups:
        """Every binding, by the widget or screen that has it (help, palette, keymap check)."""
        widgets: list[tuple[str, Any]] = [
            ("main", SharkApp), ("entry list", EntryList), ("filter bar (/)", FilterBar),
            ("command line (:)", CommandBar), ("detail (enter)", DetailScreen),
            ("save dialog (w)", SaveScreen), ("copy menu (x)", CopyMenu),
            ("pod picker (p)", PodPicker), ("sort menu (o)", SortMenu), ("help (?)", HelpScreen),
        ]  # fmt: skip
        return [(title, bindings_of(cls.BINDINGS)) for title, cls in widgets]

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.binding_groups(), self._keymap, self.key_display))

    def key_display(self, key: str) -> str:
        return self.get_key_display(Binding(key, ""))

    def handle_bindings_clash(self, clashed_bindings: set[Binding], node: Any) -> None:
        """A key the keymap gave to one binding was another's: said once, not per key."""
        for b in clashed_bindings:
            if b.id and b.id not in self._clash_said:
                self._clash_said.add(b.id)
                self.notify(f"{self.keymap_file}: {b.key!r} now belongs to another binding; "
                            f"{b.id} lost it", severity="warning", timeout=10)  # fmt: skip

    def palette_actions(self) -> list[tuple[str, str, str, Any]]:
        """The command palette's commands: the main screen's bindings (title, help with the
        key, action, the node it runs on)."""
        out = []
        for (_, bindings), namespace in zip(self.binding_groups()[:2], (self, self.entry_list)):
            for b in bindings:
                if b.id == "app.escape":
                    continue
                keys = " ".join(self.key_display(k) for k in keys_of(b, self._keymap))
                title = describe(b)
                out.append((title[:1].upper() + title[1:], f"{keys} · {b.id}", b.action,
                            namespace))  # fmt: skip
        return out

    def action_command(self) -> None:
        self.filter_bar.display = False
        self.command_bar.open()

    def on_command_submitted(self, msg: CommandSubmitted) -> None:
        try:
            self.run_command(msg.text)
        except CommandError as exc:
            self.command_bar.error(str(exc))
            return
        self.command_bar.display = False
        self.entry_list.focus()

    def run_command(self, text: str) -> None:
        """A `:` command; CommandError says what was wrong."""
        name, arg = parse(text)
        if name == "q":
            self.exit()
        elif name == "save":
            path = os.path.expanduser(arg)
            problem = path_problem(path)
            if problem:
                raise CommandError(problem)
            self.save_to(path, self.selection())
        elif name == "tls":
            self.action_tls_status()
        elif name == "target":
            self.run_worker(self._retarget(*target_args(arg)), group="targets",
                            exit_on_error=False)  # fmt: skip
        else:
            self.add_filter(filter_term(name, arg), error=CommandError)

    async def _retarget(self, pods: str, namespaces: list[str]) -> None:
        """`:target`: every --kube daemon captures these pods from now on; each says so (or
        why not) in a notice."""
        for text, ok in await retarget(self.links, self.header.stats, pods, namespaces):
            self.notify(text, severity="information" if ok else "warning", timeout=6)

    def action_endpoints(self) -> None:
        self.push_screen(EndpointsScreen(self.store))

    def action_tls_status(self) -> None:
        self.push_screen(TlsStatusScreen(self.links))

    def action_pods(self) -> None:
        def chosen(term: str | None) -> None:
            if term:
                try:
                    self.add_filter(term)
                except ValueError as exc:
                    self.notify(str(exc), severity="error")

        self.push_screen(PodPicker(self.store.seen), chosen)

    def add_filter(self, term: str, error: type[Exception] = ValueError) -> None:
        """Narrow the typed filter by ``term`` (toggles stay)."""
        text = f"({self.filter_text}) and {term}" if self.filter_text.strip() else term
        problem = validate(text)
        if problem is not None:
            raise error(str(problem))
        self._apply(text)
