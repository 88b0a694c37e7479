"""The list's rows: one compact tuple per entry summary, kept in time order, capped.

No Textual here: the model is plain Python so it can be tested and measured on its own. A row
holds only what the list shows and sorts by; the full entry is fetched from its daemon when
the user opens it.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from operator import attrgetter
from typing import Any, NamedTuple

__all__ = ["MAX_ROWS", "MAX_SEEN", "Row", "RowStore", "endpoint", "row_of"]

MAX_ROWS = 1_000_000
#: Distinct endpoints remembered for the pod picker (client ports make most of them unique).
MAX_SEEN = 100_000


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


class RowStore:
    """Rows in (ts, node, id) order. `add` is cheap; `settle` merges what was added (the
    backlog arrives newest first, live rows oldest first) and applies the cap.

    Marks are kept by (node, id), so a row marked before a filter change is marked again when
    it comes back. `shown` is what the list draws: every row, or with `only_marked` the marked
    ones among them (a view kept up to date, never a second subscription). `seen` holds the
    endpoints (``ns/pod`` or ``ip:port``) of every row that came in, across filter changes, for
    the pod picker."""

    def __init__(self, cap: int = MAX_ROWS) -> None:
        self.cap = cap
        self.rows: list[Row] = []
        self._pending: list[Row] = []
        self.dropped = 0
        self.marked: dict[tuple[str, str], Row] = {}
        self._only_marked = False
        self._view: list[Row] | None = None  # the marked rows among `rows`, when asked for
        self.seen: set[str] = set()

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

    @property
    def shown(self) -> list[Row]:
        if not self._only_marked:
            return self.rows
        if self._view is None:
            m = self.marked
            self._view = [r for r in self.rows if (r.node, r.id) in m] if m else []
        return self._view

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
        return now

    def clear_marks(self) -> None:
        self.marked.clear()
        self._view = None

    def marked_ids(self) -> dict[str, list[str]]:
        """The marked entries' ids per node, in time order."""
        out: dict[str, list[str]] = {}
        for r in sorted(self.marked.values(), key=_key):
            out.setdefault(r.node, []).append(r.id)
        return out

    def add(self, rows: list[Row]) -> None:
        self._pending.extend(rows)

    @property
    def pending(self) -> int:
        return len(self._pending)

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
        if not self.rows or _key(new[0]) >= _key(self.rows[-1]):
            self.rows.extend(new)  # live rows: newer than everything held
        elif _key(new[-1]) <= _key(self.rows[0]):
            self.rows[:0] = new  # a newest-first backlog's next batch: older than everything
        else:
            self.rows.extend(new)
            self.rows.sort(key=_key)  # interleaved: two runs, which timsort merges
        over = len(self.rows) - self.cap
        if over > 0:
            del self.rows[:over]
            self.dropped += over
            view = self._view
            if view:
                del view[: bisect_left(view, _key(self.rows[0]), key=_key)]
        return True

    def clear(self) -> None:
        """Empty the list (a new filter, or `C`); marks and seen endpoints stay."""
        self.rows = []
        self._pending = []
        self._view = None


def _key(r: Row) -> tuple[float, str, str]:
    return (r.ts, r.node, r.id)
