"""The list's rows: one compact tuple per entry summary, kept in time order, capped.

No Textual here: the model is plain Python so it can be tested and measured on its own. A row
holds only what the list shows and sorts by; the full entry is fetched from its daemon when
the user opens it.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any, NamedTuple, overload

__all__ = [
    "COLUMNS",
    "MAX_ROWS",
    "MAX_SEEN",
    "Row",
    "RowStore",
    "endpoint",
    "row_of",
]

MAX_ROWS = 1_000_000
#: Distinct endpoints remembered for the pod picker (client ports make most of them unique).
MAX_SEEN = 100_000
#: Rows of a cleared list freed per `RowStore.reap` (a few milliseconds' work).
REAP_ROWS = 20_000


class Row(NamedTuple):
    ts: float
    node: str
    id: str
    proto: str
    method: str
    summary: str
    status: str
    latency_ms: float | None
    request_size: int | None
    response_size: int | None
    tls: bool
    error: str
    src: str
    dst: str


_intern = sys.intern


def endpoint(e: dict[str, Any] | None) -> str:
    """``ns/pod`` when the daemon knows the pod, else ``ip:port`` (``[v6]:port``)."""
    if not e:
        return "?"
    pod = e.get("pod")
    if pod:
        ns = e.get("ns")
        return _intern(f"{ns}/{pod}" if ns else str(pod))
    ip = str(e.get("ip", "?"))
    return _intern(f"[{ip}]:{e.get('port')}" if ":" in ip else f"{ip}:{e.get('port')}")


def row_of(node: str, e: dict[str, Any]) -> Row:
    status = e.get("status")
    return Row(
        ts=float(e.get("ts") or 0.0),
        node=node,
        id=str(e.get("id", "")),
        proto=_intern(str(e.get("proto") or "?")),
        method=_intern(str(e.get("method") or "")),
        summary=str(e.get("summary") or ""),
        status="" if status is None else _intern(str(status)),
        latency_ms=e.get("latency_ms"),
        request_size=e.get("request_size"),
        response_size=e.get("response_size"),
        tls=bool(e.get("tls")),
        error=str(e.get("error") or ""),
        src=endpoint(e.get("src")),
        dst=endpoint(e.get("dst")),
    )


_src = attrgetter("src")
_dst = attrgetter("dst")


def _status(r: Row) -> tuple[int, int, str]:
    """Numeric statuses in numeric order, then words (``OK``, a Redis type), then none."""
    s = r.status
    if s.isdigit():
        return (0, int(s), "")
    return (1, 0, s) if s else (2, 0, "")


def _latency(r: Row) -> float:
    return -1.0 if r.latency_ms is None else r.latency_ms


def _size(r: Row) -> int:
    return (r.request_size or 0) + (r.response_size or 0)


#: The columns the list sorts by (`o`): name → the value compared. Rows with the same value stay
#: in time order (the sorts are stable over rows held in time order).
COLUMNS: dict[str, Callable[[Row], Any]] = {
    "time": lambda r: (r.ts, r.node, r.id),
    "node": attrgetter("node"),
    "source": _src,
    "destination": _dst,
    "proto": attrgetter("proto"),
    "method": attrgetter("method"),
    "status": _status,
    "latency": _latency,
    "size": _size,
    "summary": attrgetter("summary"),
}


class Reversed(Sequence[Row]):
    """A list seen from its end (a descending sort drawn from an ascending list, so rows are
    inserted and removed in one order only)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> Row: ...
    @overload
    def __getitem__(self, i: slice) -> list[Row]: ...
    def __getitem__(self, i: int | slice) -> Row | list[Row]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self._rows)))]
        n = len(self._rows)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self._rows[n - 1 - i]

    def __iter__(self) -> Iterator[Row]:
        return reversed(self._rows)


class RowStore:
    """Rows in (ts, node, id) order. `add` is cheap; `settle` merges what was added (the
    backlog arrives newest first, live rows oldest first) and applies the cap.

    Marks are kept by (node, id), so a row marked before a filter change is marked again when
    it comes back. `shown` is what the list draws: every row, or with `only_marked` the marked
    ones among them (a view kept up to date, never a second subscription), in the order of
    `sort` — time by default; by another column a sorted copy is made once (a stable sort of
    rows held in time order) and then kept up to date: new rows are inserted where they belong
    and rows dropped by the cap removed, each by a binary search, so a live list stays sorted
    without sorting it again. A descending order is the ascending list read from its end.
    `seen` holds the endpoints (``ns/pod`` or ``ip:port``) of every row that came in, across
    filter changes, for the pod picker.

    `resume(node)` … `resumed(node)` bracket the backlog a daemon sends again after a
    reconnect: rows of that node already held are not added a second time."""

    def __init__(self, cap: int = MAX_ROWS) -> None:
        self.cap = cap
        self.rows: list[Row] = []
        self._pending: list[Row] = []
        self.dropped = 0
        self.marked: dict[tuple[str, str], Row] = {}
        self._only_marked = False
        self._view: list[Row] | None = None  # the marked rows among `rows`, when asked for
        self.seen: set[str] = set()
        self.sort_by = "time"
        self.descending = False
        # the rows of `_base()` ascending by (sort column, ts, node, id), when not by time
        self._sorted: list[Row] | None = None
        self._known: dict[str, dict[str, float]] = {}  # node -> {id: ts} while it resumes
        #: the rows of cleared lists, freed by `reap` a slice at a time: freeing 200,000 rows
        #: at once takes ~40 ms, on the keystroke that asked for another filter
        self._dead: list[list[Row]] = []

    def __len__(self) -> int:
        return len(self.rows)

    # -- marks -----------------------------------------------------------------------------------

    @property
    def only_marked(self) -> bool:
        return self._only_marked

    @only_marked.setter
    def only_marked(self, value: bool) -> None:
        self._only_marked = value
        self._view = None
        self._sorted = None

    def _base(self) -> list[Row]:
        """The rows shown, in time order."""
        if not self._only_marked:
            return self.rows
        if self._view is None:
            m = self.marked
            self._view = [r for r in self.rows if (r.node, r.id) in m] if m else []
        return self._view

    @property
    def shown(self) -> Sequence[Row]:
        base = self._base()
        if self.sort_by != "time":
            if self._sorted is None:
                self._sorted = sorted(base, key=COLUMNS[self.sort_by])
            base = self._sorted
        return Reversed(base) if self.descending else base

    @property
    def first_ts(self) -> float | None:
        """The time of the oldest row shown (relative times count from it)."""
        base = self._base()
        return base[0].ts if base else None

    def is_marked(self, row: Row) -> bool:
        return (row.node, row.id) in self.marked

    def toggle_mark(self, row: Row) -> bool:
        """Mark or unmark ``row``; True when it is now marked."""
        k = (row.node, row.id)
        now = k not in self.marked
        if now:
            self.marked[k] = row
        else:
            del self.marked[k]
        view = self._view
        if view is not None:
            i = bisect_left(view, _key(row), key=_key)
            if now and (i == len(view) or view[i] != row):
                view.insert(i, row)
            elif not now and i < len(view) and view[i] == row:
                del view[i]
            if self._only_marked:
                self._sorted = None  # a few marked rows: sorted again when next drawn
        return now

    def clear_marks(self) -> None:
        self.marked.clear()
        self._view = None
        if self._only_marked:
            self._sorted = None

    def marked_ids(self) -> dict[str, list[str]]:
        """The marked entries' ids per node, in time order."""
        out: dict[str, list[str]] = {}
        for r in sorted(self.marked.values(), key=_key):
            out.setdefault(r.node, []).append(r.id)
        return out

    # -- sorting ---------------------------------------------------------------------------------

    def sort(self, column: str, descending: bool = False) -> None:
        """Show the rows ordered by ``column`` (one of `COLUMNS`), rows of equal value in time
        order (reversed too when ``descending``)."""
        if column not in COLUMNS:
            raise ValueError(f"no column {column!r} to sort by")
        if column != self.sort_by:
            self._sorted = None
        self.sort_by = column
        self.descending = descending

    def _order(self) -> Callable[[Row], Any]:
        """The total order of `_sorted`: the column, then time (ids are unique per node)."""
        col = COLUMNS[self.sort_by]
        return lambda r: (col(r), r.ts, r.node, r.id)

    def index_of(self, row: Row) -> int | None:
        """Where ``row`` is in `shown` (a binary search), or None when it is not there."""
        seq = self._base()
        key: Callable[[Row], Any] = _key
        if self.sort_by != "time":
            self.shown  # noqa: B018 - builds the sorted copy
            assert self._sorted is not None
            seq, key = self._sorted, self._order()
        i = bisect_left(seq, key(row), key=key)
        if i == len(seq) or (seq[i].node, seq[i].id) != (row.node, row.id):
            return None
        return len(seq) - 1 - i if self.descending else i

    def _sorted_insert(self, new: list[Row]) -> None:
        s = self._sorted
        if s is None:
            return
        if len(new) > max(1000, len(s) // 100):
            self._sorted = None  # cheaper to sort again (when next drawn) than to insert each
            return
        order = self._order()
        for r in new:
            s.insert(bisect_left(s, order(r), key=order), r)

    def _sorted_remove(self, gone: list[Row]) -> None:
        s = self._sorted
        if s is None:
            return
        if len(gone) > max(1000, len(s) // 100):
            self._sorted = None
            return
        order = self._order()
        for r in gone:
            i = bisect_left(s, order(r), key=order)
            if i < len(s) and s[i] is r:
                del s[i]

    # -- rows ------------------------------------------------------------------------------------

    def add(self, rows: list[Row]) -> None:
        known = self._known
        if known:
            rows = [r for r in rows if (k := known.get(r.node)) is None or k.get(r.id) != r.ts]
        self._pending.extend(rows)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def resume(self, node: str) -> None:
        """``node``'s daemon is back and sends its backlog again: until `resumed`, a row of
        ``node`` already held (same id, same time) is not added twice."""
        self._known[node] = {r.id: r.ts for r in chain(self.rows, self._pending) if r.node == node}

    def resumed(self, node: str) -> None:
        self._known.pop(node, None)

    def settle(self) -> bool:
        """Merge pending rows in; True when anything changed."""
        if not self._pending:
            return False
        new = self._pending
        self._pending = []
        new.sort(key=_key)
        if len(self.seen) < MAX_SEEN:
            self.seen.update(map(_src, new))
            self.seen.update(map(_dst, new))
        if self._view is not None and self.marked:
            m = self.marked
            if any((r.node, r.id) in m for r in new):
                self._view = None  # recomputed when next drawn
                if self._only_marked:
                    self._sorted = None
        if not self._only_marked:
            self._sorted_insert(new)
        if not self.rows or _key(new[0]) >= _key(self.rows[-1]):
            self.rows.extend(new)  # live rows: newer than everything held
        elif _key(new[-1]) <= _key(self.rows[0]):
            self.rows[:0] = new  # a newest-first backlog's next batch: older than everything
        else:
            self.rows.extend(new)
            self.rows.sort(key=_key)  # interleaved: two runs, which timsort merges
        over = len(self.rows) - self.cap
        if over > 0:
            gone = self.rows[:over]
            del self.rows[:over]
            self.dropped += over
            view = self._view
            if view:
                cut = bisect_left(view, _key(self.rows[0]), key=_key)
                if cut:
                    del view[:cut]
                    if self._only_marked:
                        self._sorted = None
            if not self._only_marked:
                self._sorted_remove(gone)
        return True

    def clear(self) -> None:
        """Empty the list (a new filter, or `C`); marks, seen endpoints and the sort stay."""
        if self.rows:
            self._dead.append(self.rows)
        self.rows = []
        self._pending = []
        self._view = None
        self._sorted = None
        self._known.clear()


    def reap(self, limit: int = REAP_ROWS) -> int:
        """Free up to ``limit`` rows of cleared lists; how many are left to free."""
        dead = self._dead
        while dead and limit > 0:
            rows = dead[-1]
            n = min(limit, len(rows))
            del rows[len(rows) - n :]
            limit -= n
            if not rows:
                dead.pop()
        return sum(map(len, dead))


def _key(r: Row) -> tuple[float, str, str]:
    return (r.ts, r.node, r.id)
