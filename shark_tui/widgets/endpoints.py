"""The endpoints view (`e`): per destination, method and path template — count, rate, error %,
p50/p99 latency — over the rows the list holds, refreshed every second while open.

A refresh costs what changed since the last one, not what the list holds: `EndpointCounter`
keeps each endpoint's count, errors and sorted times and latencies, and `sync` finds the rows
the list gained and lost since it last looked (rows come in anywhere in time order and leave
only from the oldest end, at the cap; a cleared list is a new list). Many rows at once (the
view opened over a full list, a new filter's backlog) are counted in a thread worker, over a
copy. The table's rows are updated in place, not filled again. `endpoint_stats` is the plain
computation over every row, which the counter must agree with."""

from __future__ import annotations

import heapq
import re
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import ClassVar

from rich.cells import cell_len
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from shark_tui.widgets.rows import Row, RowStore

_ID_SEGMENT = re.compile(r"/(?:\d+|[0-9a-f]{8,}|[0-9a-f-]{36})(?=/|$)", re.I)

Stat = tuple[str, str, str, int, float, float, float | None, float | None]
Key = tuple[str, str, str]

#: Endpoints shown, busiest first.
SHOWN = 500
#: Rows that came into or left the top `SHOWN` past which the table is filled again.
REFILL = 100
COLUMNS = ("destination", "method", "path", "count", "rate", "errors", "p50", "p99")
TITLES = ("DESTINATION", "METHOD", "PATH", "COUNT", "RATE/S", "ERR %", "P50 MS", "P99 MS")
#: Rows to count at once past which the counting runs in a thread, not on the UI thread.
THREAD_ROWS = 20_000
#: Path templates remembered by a counter (their summaries repeat); forgotten all at once past it.
TEMPLATE_CACHE = 100_000

_time_key = attrgetter("ts", "node", "id")  # the order of `RowStore.rows`


def template(row: Row) -> str:
    """The path template of an HTTP-like summary (ids and numbers as ``{id}``, no query);
    other protocols' summaries as they are (a Redis command's key, a gRPC method...)."""
    if row.proto in ("http", "http2", "grpc", "graphql", "websocket") and row.summary[:1] == "/":
        return _ID_SEGMENT.sub("/{id}", row.summary.partition("?")[0])
    return row.summary if row.proto not in ("redis", "kafka", "amqp") else ""


def _pct(sorted_values: Sequence[float], p: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def _bad(r: Row) -> bool:
    return bool(r.error) or (r.status.isdigit() and int(r.status) >= 400)


def _rank(s: Stat) -> tuple[int, str, str, str]:
    return (-s[3], s[0], s[1], s[2])


def endpoint_stats(rows: Iterable[Row]) -> list[Stat]:
    """(destination, method, template, count, rate/s, error %, p50 ms, p99 ms), busiest first:
    computed over every row (what `EndpointCounter` keeps up to date)."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dst, r.method, template(r)), []).append(r)
    out: list[Stat] = []
    for (dst, method, tmpl), rs in groups.items():
        span = max(r.ts for r in rs) - min(r.ts for r in rs)
        errors = sum(1 for r in rs if _bad(r))
        lat = sorted(r.latency_ms for r in rs if r.latency_ms is not None)
        rate = len(rs) / span if span > 0 else 0.0
        out.append((dst, method, tmpl, len(rs), rate, 100.0 * errors / len(rs),
                    _pct(lat, 0.5), _pct(lat, 0.99)))  # fmt: skip
    out.sort(key=_rank)
    return out


def _insert(values: list[float], new: list[float]) -> None:
    """Put ``new`` into the sorted list ``values``."""
    if len(new) * 16 < len(values):
        for v in new:
            insort(values, v)
    else:
        values += new
        values.sort()  # two sorted runs: timsort merges them


def _discard(values: list[float], gone: list[float]) -> None:
    """Take one copy of each of ``gone`` out of the sorted list ``values``."""
    if len(gone) * 16 < len(values):
        for v in gone:
            del values[bisect_left(values, v)]
    else:
        left = Counter(gone)
        keep = []
        for v in values:
            if left[v]:
                left[v] -= 1
            else:
                keep.append(v)
        values[:] = keep


class _Endpoint:
    __slots__ = ("errors", "lat", "n", "stat", "ts")

    def __init__(self) -> None:
        self.n = 0
        self.errors = 0
        self.ts: list[float] = []  # sorted: the span is the last minus the first
        self.lat: list[float] = []  # sorted: the percentiles are read off it
        self.stat: Stat | None = None  # computed when asked, until the next change


class EndpointCounter:
    """`endpoint_stats` of a `RowStore`'s rows, kept up to date by `sync`."""

    def __init__(self) -> None:
        self._src: list[Row] | None = None  # the store's list last seen (cleared: another)
        self._held: list[Row] = []  # the rows counted, in the store's order
        self._groups: dict[Key, _Endpoint] = {}
        self._templates: dict[tuple[str, str], str] = {}
        self._top: list[Stat] = []
        self._changed: set[Key] = set()  # endpoints changed since `top` was last computed
        self._full = True  # rank every endpoint at the next `top` (nothing ranked yet)

    def __len__(self) -> int:
        return len(self._held)

    def _key(self, r: Row) -> Key:
        k = (r.proto, r.summary)
        t = self._templates.get(k)
        if t is None:
            if len(self._templates) >= TEMPLATE_CACHE:
                self._templates.clear()
            t = self._templates[k] = template(r)
        return (r.dst, r.method, t)

    def _by_key(self, rows: Iterable[Row]) -> dict[Key, list[Row]]:
        out: dict[Key, list[Row]] = {}
        key = self._key
        for r in rows:
            k = key(r)
            got = out.get(k)
            if got is None:
                out[k] = [r]
            else:
                got.append(r)
        return out

    def _add(self, rows: Sequence[Row]) -> None:
        groups = self._groups
        for k, rs in self._by_key(rows).items():
            g = groups.get(k)
            if g is None:
                g = groups[k] = _Endpoint()
            g.n += len(rs)
            g.errors += sum(1 for r in rs if _bad(r))
            _insert(g.ts, [r.ts for r in rs])
            _insert(g.lat, [r.latency_ms for r in rs if r.latency_ms is not None])
            g.stat = None
            self._changed.add(k)

    def _remove(self, rows: Sequence[Row]) -> None:
        groups = self._groups
        for k, rs in self._by_key(rows).items():
            g = groups[k]
            self._changed.add(k)
            g.n -= len(rs)
            if not g.n:
                del groups[k]
                continue
            g.errors -= sum(1 for r in rs if _bad(r))
            _discard(g.ts, [r.ts for r in rs])
            _discard(g.lat, [r.latency_ms for r in rs if r.latency_ms is not None])
            g.stat = None

    @property
    def source(self) -> list[Row] | None:
        """The list counted (the store's `RowStore.rows` when last synced)."""
        return self._src

    def sync(self, rows: list[Row], source: list[Row] | None = None) -> bool:
        """Count ``rows`` (the store's `RowStore.rows`, in its order) from what changed since
        the last call: rows gained anywhere, rows lost at the oldest end, or — another list
        object, the store was cleared — everything again. True when anything changed.
        ``source``: the list ``rows`` is a copy of, synced with from then on."""
        held = self._held
        source = rows if source is None else source
        if source is not self._src:
            self._src = source
            if held:
                self._groups.clear()
                self._changed.clear()
                self._full = True
                held = self._held = []
        n = len(rows)
        if n == len(held) and (not n or rows[0] is held[0]):
            return False  # nothing gained: the first row is still there, so nothing lost
        cut = bisect_left(held, _time_key(rows[0]), key=_time_key) if n else len(held)
        kept = len(held) - cut
        gained = n - kept
        if not gained:
            new: Sequence[Row] = ()
        elif not kept:
            new = rows
        elif rows[kept - 1] is held[-1]:
            new = rows[kept:]  # live rows: newer than every one counted
        elif rows[gained] is held[cut]:
            new = rows[:gained]  # a newest-first backlog's next batch: older than them all
        else:  # both, or between: whatever was not counted
            counted = set(map(id, held[cut:]))
            new = [r for r in rows if id(r) not in counted]
        if cut:
            self._remove(held[:cut])
        self._add(new)
        self._held = rows[:]
        return True

    def _stat(self, k: Key, g: _Endpoint) -> Stat:
        s = g.stat
        if s is None:
            span = g.ts[-1] - g.ts[0]
            rate = g.n / span if span > 0 else 0.0
            s = g.stat = (*k, g.n, rate, 100.0 * g.errors / g.n, _pct(g.lat, 0.5),
                          _pct(g.lat, 0.99))  # fmt: skip
        return s

    def top(self, n: int = SHOWN) -> list[Stat]:
        """The ``n`` busiest endpoints, as `endpoint_stats(rows)[:n]` (the same list object
        as the last call's when nothing changed)."""
        groups = self._groups
        stat = self._stat
        changed = self._changed
        if not self._full and not changed:
            return self._top
        best: list[Stat] | None = None
        if not self._full:
            # ranked again: the last top and what changed. An endpoint outside the last top
            # that did not change still ranks below its n-th — enough when nothing in it fell
            # below that (or the last top held every endpoint)
            last = self._top
            pool = [s for s in last if s[:3] not in changed]
            pool += [stat(k, groups[k]) for k in changed if k in groups]
            best = heapq.nsmallest(n, pool, key=_rank)
            if len(last) == n and (len(best) < n or _rank(best[-1]) > _rank(last[-1])):
                best = None
        if best is None:
            best = heapq.nsmallest(n, (stat(k, g) for k, g in groups.items()), key=_rank)
        self._top = best
        self._changed = set()
        self._full = False
        return best


class EndpointsScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,e", "dismiss", "close", id="endpoints.close"),
    ]

    def __init__(self, store: RowStore) -> None:
        super().__init__()
        self.store = store
        self.counter = EndpointCounter()
        self._building = False
        self._shown: list[Stat] | None = None
        self._drawn: dict[Key, tuple[str, ...]] = {}  # the table's rows: their cells

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("endpoints: the rows shown, by destination, method and path", id="ep-title")
        yield DataTable(id="ep-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, title in zip(COLUMNS, TITLES):
            table.add_column(title, key=key)
        self.refresh_stats()
        self.set_interval(1.0, self.refresh_stats)

    def refresh_stats(self) -> None:
        if self._building:
            return
        rows = self.store.rows
        counted = len(self.counter) if rows is self.counter.source else 0
        if len(rows) - counted > THREAD_ROWS:
            # a full list to count (the view just opened, or a new filter's backlog came):
            # in a thread, over a copy (the list changes under it); what comes in meanwhile
            # is counted by the next refresh
            self._building = True
            copy = rows[:]
            self.run_worker(lambda: self._build(rows, copy), thread=True, exit_on_error=False)
            return
        self.counter.sync(rows)
        self._show()

    def _build(self, rows: list[Row], copy: list[Row]) -> None:
        counter = EndpointCounter()
        counter.sync(copy, source=rows)
        counter.top()
        self.app.call_from_thread(self._built, counter)

    def _built(self, counter: EndpointCounter) -> None:
        self._building = False
        if self.is_attached:  # not closed meanwhile
            self.counter = counter
            self.refresh_stats()

    def _show(self) -> None:
        """The table as `counter.top()`: the rows that changed are updated in place and put in
        order (filling a DataTable again measures every cell: ~100 ms for 500 rows)."""
        top = self.counter.top()
        if top is self._shown:
            return  # nothing changed: the table stays as drawn
        self._shown = top
        table = self.query_one(DataTable)
        new = {s[:3]: _cells(s) for s in top}
        drawn = self._drawn
        gone = [k for k in drawn if k not in new]
        added = [k for k in new if k not in drawn]
        if not drawn or len(gone) + len(added) > REFILL:
            table.clear()
            for k, cells in new.items():
                table.add_row(*cells, key=_row_key(k))
        else:
            for k in gone:
                table.remove_row(_row_key(k))
            for k in added:
                table.add_row(*new[k], key=_row_key(k))
            width = [table.columns[col].content_width for col in COLUMNS]
            for k, cells in new.items():
                was = drawn.get(k)
                if was is not None and was != cells:
                    for i, (col, a, b) in enumerate(zip(COLUMNS, was, cells)):
                        if a != b:
                            # widened when it no longer fits; never narrowed, which would
                            # measure the whole column again for each cell
                            wider = cell_len(b) > width[i]
                            table.update_cell(_row_key(k), col, b, update_width=wider)
            place = {cells[:3]: i for i, cells in enumerate(new.values())}
            table.sort(*COLUMNS[:3], key=lambda v: place.get(v, 0))
        self._drawn = new


def _row_key(k: Key) -> str:
    return "\0".join(k)


def _cells(s: Stat) -> tuple[str, ...]:
    dst, method, tmpl, n, rate, err, p50, p99 = s
    return (dst, method or "-", tmpl or "-", f"{n:,}", f"{rate:.1f}", f"{err:.0f}",
            "-" if p50 is None else f"{p50:.1f}", "-" if p99 is None else f"{p99:.1f}")  # fmt: skip
