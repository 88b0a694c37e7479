"""The entry list: a virtual line view over a `RowStore` (a million rows cost what a screenful
does — never a DataTable holding every row), with a cursor, follow-live and marks (`space`;
`M` shows only the marked rows, a view over the same store)."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from shark_tui.widgets.messages import EntryChosen, MarksChanged
from shark_tui.widgets.rows import Row, RowStore

PROTOS = ("http", "http2", "grpc", "graphql", "websocket", "amqp", "kafka", "redis", "tcp")
TIME_FORMATS = ("absolute", "relative", "delta")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n}B"
    if n < 1 << 20:
        return f"{n / 1024:.1f}K"
    return f"{n / (1 << 20):.1f}M"


class EntryList(ScrollView, can_focus=True):
    """See the module docstring. Rows come from ``store``; call `rows_changed` after adding."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "entry-list--cursor",
        "entry-list--error",
        "entry-list--dim",
        "entry-list--marked",
        "entry-list--marked-row",
        *(f"entry-list--proto-{p}" for p in PROTOS),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "move(1)", "down", show=False, id="entry_list.down"),
        Binding("k,up", "move(-1)", "up", show=False, id="entry_list.up"),
        Binding("pagedown", "move(20)", "page down", show=False, id="entry_list.page_down"),
        Binding("pageup", "move(-20)", "page up", show=False, id="entry_list.page_up"),
        Binding("g,home", "first", "top", show=False, tooltip="The oldest entry",
                id="entry_list.top"),
        Binding("G,end", "last", "bottom", show=False, tooltip="The newest entry (follows)",
                id="entry_list.bottom"),
        Binding("enter", "open", "detail", tooltip="Open the entry: request, response, connection",
                id="entry_list.open"),
        Binding("F", "toggle_follow", "follow", tooltip="Follow new entries, or stop",
                id="entry_list.follow"),
        Binding("t", "time_format", "time", show=False,
                tooltip="Time as absolute, relative to the first, or delta",
                id="entry_list.time"),
        Binding("space", "mark", "mark", tooltip="Mark or unmark the entry",
                id="entry_list.mark"),
        Binding("M", "only_marked", "only marked", show=False,
                tooltip="Show only the marked entries, or all", id="entry_list.only_marked"),
    ]  # fmt: skip

    cursor: reactive[int] = reactive(-1, always_update=True)
    follow: reactive[bool] = reactive(True)
    time_format: reactive[str] = reactive("absolute")

    def __init__(self, store: RowStore, *, show_node: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.show_node = show_node

    # -- data ------------------------------------------------------------------------------------

    def rows_changed(self) -> None:
        n = len(self.store.shown)
        self.virtual_size = Size(self.size.width, n)
        if self.follow and n:
            self.cursor = n - 1
            # after the new virtual size is laid out, or the scroll is clamped to the old one
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)
        elif self.cursor >= n:
            self.cursor = n - 1
        self.refresh()

    @property
    def selected(self) -> Row | None:
        rows = self.store.shown
        return rows[self.cursor] if 0 <= self.cursor < len(rows) else None

    # -- actions ---------------------------------------------------------------------------------

    def action_move(self, delta: int) -> None:
        n = len(self.store.shown)
        if not n:
            return
        self.cursor = min(n - 1, max(0, (self.cursor if self.cursor >= 0 else n - 1) + delta))
        self.follow = self.cursor == n - 1 and delta > 0 and self.follow
        if delta < 0:
            self.follow = False
        self._keep_visible()

    def action_first(self) -> None:
        if self.store.shown:
            self.follow = False
            self.cursor = 0
            self._keep_visible()

    def action_last(self) -> None:
        if self.store.shown:
            self.follow = True
            self.cursor = len(self.store.shown) - 1
            self._keep_visible()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.action_last()

    def action_time_format(self) -> None:
        i = TIME_FORMATS.index(self.time_format)
        self.time_format = TIME_FORMATS[(i + 1) % len(TIME_FORMATS)]
        self.refresh()

    def action_mark(self) -> None:
        row = self.selected
        if row is None:
            return
        self.store.toggle_mark(row)
        if self.store.only_marked:  # an unmarked row leaves this view
            self.rows_changed()
        self.refresh()
        self.post_message(MarksChanged(len(self.store.marked)))

    def action_only_marked(self) -> None:
        self.store.only_marked = not self.store.only_marked
        self.follow = True
        self.rows_changed()
        self.post_message(MarksChanged(len(self.store.marked)))

    def action_open(self) -> None:
        row = self.selected
        if row is not None:
            self.post_message(EntryChosen(row))

    def _keep_visible(self) -> None:
        top = self.scroll_offset.y
        h = self.size.height
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + h:
            self.scroll_to(y=self.cursor - h + 1, animate=False)
        self.refresh()

    def watch_cursor(self) -> None:
        self.refresh()

    # -- drawing ---------------------------------------------------------------------------------

    def _when(self, i: int, row: Row) -> str:
        fmt = self.time_format
        rows = self.store.shown
        if fmt == "relative" and rows:
            return f"{row.ts - rows[0].ts:12.6f}"
        if fmt == "delta":
            prev = rows[i - 1].ts if i > 0 else row.ts
            return f"{row.ts - prev:12.6f}"
        t = time.gmtime(row.ts)
        return time.strftime("%H:%M:%S", t) + f".{int(row.ts % 1 * 1000):03d}"

    def line_text(self, i: int, row: Row) -> list[tuple[str, str]]:
        """The cells of row ``i``: (text, component class or "")."""
        lat = "-" if row.latency_ms is None else f"{row.latency_ms:.1f}ms"
        status = row.status or "-"
        bad = bool(row.error) or (status.isdigit() and int(status) >= 400)
        cells = [
            ("● " if self.store.is_marked(row) else "  ", "entry-list--marked"),
            (f"{self._when(i, row):<12} ", "entry-list--dim"),
        ]
        if self.show_node:
            cells.append((f"{row.node[:12]:<12} ", "entry-list--dim"))
        cells += [
            (f"{row.src[:24]:>24} → {row.dst[:24]:<24} ", ""),
            (f"{row.proto:<7} ", f"entry-list--proto-{row.proto}" if row.proto in PROTOS else ""),
            (f"{row.method[:8]:<8} ", ""),
            (f"{status[:5]:>5} ", "entry-list--error" if bad else ""),
            (f"{lat:>9} ", "entry-list--dim"),
            (f"{_size(row.request_size):>6}/{_size(row.response_size):<6} ", "entry-list--dim"),
            ("🔒 " if row.tls else "  ", ""),
            (row.summary + (f"  [{row.error}]" if row.error else ""), ""),
        ]
        return cells

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        i = self.scroll_offset.y + y
        rows = self.store.shown
        if i >= len(rows):
            return Strip.blank(width, self.rich_style)
        base = self.rich_style
        # marked and cursor rows change the background only: cells keep their colours
        over = Style()
        if self.store.marked and self.store.is_marked(rows[i]):
            over += self._background("entry-list--marked-row")
        if i == self.cursor:
            over += self._background("entry-list--cursor")
        base += over
        segments = []
        for text, cls in self.line_text(i, rows[i]):
            style: Style = base + self.get_component_rich_style(cls) + over if cls else base
            segments.append(Segment(text, style))
        return Strip(segments).crop_extend(0, width, base)

    def _background(self, cls: str) -> Style:
        s = self.get_component_rich_style(cls)
        return Style(bgcolor=s.bgcolor, bold=s.bold, underline=s.underline)
