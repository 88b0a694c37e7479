"""The entry list: a virtual line view over a `RowStore` (a million rows cost what a screenful
does — never a DataTable holding every row), with a cursor, follow-live and marks (`space`;
`M` shows only the marked rows, a view over the same store), sorted by a column (`o` picks
it, `v` reverses; follow-live applies in time order only, at the newest end).

The cursor stays on its row when rows come in or the order changes (found again by a binary
search in the store), unless the list follows live."""

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

from shark_tui.widgets.messages import EntryChosen, MarksChanged, SortChanged
from shark_tui.widgets.rows import COLUMNS, Row, RowStore
from shark_tui.widgets.sort_menu import DESCENDING_FIRST, SortMenu

PROTOS = ("http", "http2", "grpc", "graphql", "websocket", "amqp", "kafka", "redis", "tcp")
TIME_FORMATS = ("absolute", "relative", "delta")
#: Redis reply types too wide for the status column (5 cells), abbreviated; the status itself
#: (the filter's ``status == "integer"``, sorting, the detail pane, ``dissect``) keeps the name.
REDIS_TYPES = {
    "simple": "str",
    "integer": "int",
    "double": "dbl",
    "boolean": "bool",
    "big_number": "big",
    "blob_error": "err",
    "verbatim": "verb",
    "attribute": "attr",
}


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
        Binding("g,home", "first", "top", show=False,
                tooltip="The first row (the oldest in time order)", id="entry_list.top"),
        Binding("G,end", "last", "bottom", show=False,
                tooltip="The last row (the newest in time order: follows)",
                id="entry_list.bottom"),
        Binding("enter", "open", "detail", tooltip="Open the entry: request, response, connection",
                id="entry_list.open"),
        Binding("F", "toggle_follow", "follow",
                tooltip="Follow new entries, or stop (sorted by another column: back to time)",
                id="entry_list.follow"),
        Binding("o", "sort", "sort",
                tooltip="Sort by a column (a key each); the same column again reverses",
                id="entry_list.sort"),
        Binding("v", "reverse", "reverse", show=False, tooltip="Reverse the sort order",
                id="entry_list.reverse"),
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
        self._anchor: Row | None = None  # the row under the cursor, found again after changes

    # -- data ------------------------------------------------------------------------------------

    def validate_follow(self, follow: bool) -> bool:
        return follow and self.store.sort_by == "time"

    def _newest(self, n: int) -> int:
        """The index of the newest row, where following keeps the cursor (time order)."""
        return 0 if self.store.descending else n - 1

    def rows_changed(self) -> None:
        n = len(self.store.shown)
        self.virtual_size = Size(self.size.width, n)
        if self.follow and n:
            self.cursor = self._newest(n)
            # after the new virtual size is laid out, or the scroll is clamped to the old one
            end = self.scroll_home if self.store.descending else self.scroll_end
            self.call_after_refresh(end, animate=False, immediate=True)
        else:
            at = self.store.index_of(self._anchor) if self._anchor is not None else None
            if at is not None and at != self.cursor:
                # the row moved (rows came in before it, or the order changed): keep it, at
                # the same place on screen
                y = self.scroll_offset.y + at - self.cursor
                self.cursor = at
                self.call_after_refresh(self.scroll_to, y=y, animate=False, immediate=True)
            elif self.cursor >= n:
                self.cursor = n - 1
            elif self.cursor < 0 and n:
                self.cursor = 0  # the first rows of a list not following: the top one
        self.refresh()

    def sort_by(self, column: str, descending: bool | None = None) -> None:
        """Sort by ``column``; ``descending`` None: the same column reverses, another starts
        in its natural direction (largest first for latency, size and status)."""
        store = self.store
        if column not in COLUMNS:
            return
        if descending is None:
            descending = (
                not store.descending if column == store.sort_by else column in DESCENDING_FIRST
            )
        store.sort(column, descending)
        self.follow = self.follow  # validated again: only in time order
        n = len(store.shown)
        if self.follow and n:
            self.cursor = self._newest(n)
        elif self._anchor is not None:
            at = store.index_of(self._anchor)
            self.cursor = at if at is not None else min(self.cursor, n - 1)
        self.virtual_size = Size(self.size.width, n)
        self.call_after_refresh(self._center)
        self.refresh()
        self.post_message(SortChanged(column, descending))

    def _center(self) -> None:
        self.scroll_to(y=max(0, self.cursor - self.size.height // 2), animate=False)

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
        toward_newest = delta < 0 if self.store.descending else delta > 0
        self.follow = self.follow and toward_newest and self.cursor == self._newest(n)
        self._keep_visible()

    def action_first(self) -> None:
        n = len(self.store.shown)
        if n:
            self.cursor = 0
            self.follow = self._newest(n) == 0  # the newest, in descending time order
            self._keep_visible()

    def action_last(self) -> None:
        n = len(self.store.shown)
        if n:
            self.cursor = n - 1
            self.follow = self._newest(n) == n - 1
            self._keep_visible()

    def action_toggle_follow(self) -> None:
        if self.follow:
            self.follow = False
            return
        if self.store.sort_by != "time":
            self.sort_by("time", False)
        self.follow = True
        n = len(self.store.shown)
        if n:
            self.cursor = self._newest(n)
            self._keep_visible()

    def action_sort(self) -> None:
        columns = [c for c in COLUMNS if c != "node" or self.show_node]

        def chosen(column: str | None) -> None:
            if column:
                self.sort_by(column)

        self.app.push_screen(SortMenu(columns, self.store.sort_by, self.store.descending), chosen)

    def action_reverse(self) -> None:
        self.sort_by(self.store.sort_by, not self.store.descending)

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
        self.follow = True  # in time order
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

    def watch_cursor(self, cursor: int) -> None:
        rows = self.store.shown
        self._anchor = rows[cursor] if 0 <= cursor < len(rows) else None
        self.refresh()

    # -- drawing ---------------------------------------------------------------------------------

    def _when(self, i: int, row: Row) -> str:
        fmt = self.time_format
        if fmt == "relative":
            first = self.store.first_ts
            return f"{row.ts - (row.ts if first is None else first):12.6f}"
        if fmt == "delta":  # to the row above (in time order, the previous entry)
            rows = self.store.shown
            prev = rows[i - 1].ts if i > 0 else row.ts
            return f"{row.ts - prev:12.6f}"
        t = time.gmtime(row.ts)
        return time.strftime("%H:%M:%S", t) + f".{int(row.ts % 1 * 1000):03d}"

    def line_text(self, i: int, row: Row) -> list[tuple[str, str]]:
        """The cells of row ``i``: (text, component class or "")."""
        lat = "-" if row.latency_ms is None else f"{row.latency_ms:.1f}ms"
        status = row.status or "-"
        bad = bool(row.error) or (status.isdigit() and int(status) >= 400)
        if row.proto == "redis":
            status = REDIS_TYPES.get(status, status)
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
