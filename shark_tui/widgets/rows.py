"""The list's rows: one compact tuple per entry summary, kept in time order, capped.

No Textual here: the model is plain Python so it can be tested and measured on its own. A row
holds only what the list shows and sorts by; the full entry is fetched from its daemon when
the user opens it.

A call between two nodes is seen by both nodes' daemons (the client's and the server's), each
with its own id. With several daemons attached (`RowStore(twins=True)`) such a call is one row:
a row whose call — proto, the client end's ip:port (`Row.client`), method, summary and status —
matches a row already held (or pending) from another node, at a time within `TWIN_SECONDS`, is
dropped and counted (`RowStore.duplicates`). The client end, not both ends: a call made through
a Kubernetes Service leaves the client's pod for ClusterIP:port and reaches the server's pod at
podIP:targetPort (kube-proxy rewrites the destination on the client's node), so the two copies
agree on the client's ip:port only — which names the connection by itself, pod addresses being
unique in a cluster. Rows of one node are never merged: a client that sends the same request
twice made two calls. Each row absorbs one copy: a call has two ends, and a third daemon's copy
(a proxy's node in between) shows.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, overload

__all__ = [
    "COLUMNS",
    "MAX_ROWS",
    "MAX_SEEN",
    "TWIN_SECONDS",
    "Row",
    "RowStore",
    "client_end",
    "endpoint",
    "row_of",
]

MAX_ROWS = 1_000_000
#: Distinct endpoints remembered for the pod picker (client ports make most of them unique).
MAX_SEEN = 100_000
#: Rows of a cleared list freed per `RowStore.reap` (a few milliseconds' work).
REAP_ROWS = 20_000
#: How far apart the times of two daemons' copies of one call may be. Both saw the same
#: packets, so what differs is the nodes' clock skew (NTP keeps it to milliseconds) plus the
#: one-way delay between them; a second is generous for both, and short enough that the same
#: call made again (a health check, a poll) rarely falls within it — when it does, each copy
#: still absorbs only one copy of the other node's (the nearest in time), so counts stay right.
TWIN_SECONDS = 1.0
#: Width of the time buckets twins are looked for in: a copy within TWIN_SECONDS of a row lies
#: in the row's bucket or in the neighbour on the nearer side.
_SPAN = 2 * TWIN_SECONDS


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
    #: the client end (``src``) as seen on the wire (ip, port), whatever the pod is called,
    #: hashed: part of what tells another daemon's copy of the same call; 0 (unknown) is never
    #: merged
    client: int = 0


class _Twin(NamedTuple):
    """A row held that stands for a call another node's daemon also sent, and which copy that
    was (dropped; remembered so that the same copy sent again — its daemon reconnected — is
    dropped again rather than taken for another call)."""

    kept: Row
    node: str
    id: str
    ts: float


_intern = sys.intern
#: what two daemons' copies of a call have in common (besides a time within TWIN_SECONDS)
_CALL = ("client", "proto", "method", "summary", "status")
_call = itemgetter(*map(Row._fields.index, _CALL))


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


def client_end(src: Any) -> int:
    """`Row.client` of an entry's ``src``: its ip and port, hashed (the destination may differ
    between two daemons' copies of a call: a Service's ClusterIP on the client's node, the
    pod's address on the server's). A hash rather than the text: an int costs a third of an
    ``ip:port`` string per row, and two connections' client ends hashing alike (one chance in
    2**64) would also need the same method, summary and status at the same second. 0 when the
    client end is unknown."""
    try:
        return hash((src["ip"], src["port"])) or 1
    except (KeyError, TypeError):
        return 0


def row_of(node: str, e: dict[str, Any]) -> Row:
    status = e.get("status")
    src, dst = e.get("src"), e.get("dst")
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
        src=endpoint(src),
        dst=endpoint(dst),
        client=client_end(src),
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
    reconnect: rows of that node already held are not added a second time.

    With ``twins`` (more than one daemon attached) another node's copy of a call held is
    dropped (see the module docstring); without, nothing is spent on it. `_calls` finds twins:
    (call, time bucket) → the rows held or pending of that call, each once (a `Row`; a `_Twin`
    once it has absorbed another node's copy; a list when several share the bucket). A row
    leaves it when it leaves the list (the cap, `clear`), so it is no bigger than the list. (It
    is kept from the first row, not built when a second node's rows come: by then a million
    rows may be held, a second's work on the UI thread.)"""

    def __init__(self, cap: int = MAX_ROWS, *, twins: bool = False) -> None:
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
        #: rows dropped as another node's copy of a call held (since the list was last cleared)
        self.duplicates = 0
        self._settled_duplicates = 0
        self._calls: dict[int, Any] | None = {} if twins else None  # see the class docstring
        self._dead_calls: list[dict[int, Any]] = []

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
        if self._calls is None:
            self._pending.extend(rows)
        else:
            twin = self._twin
            self._pending.extend([r for r in rows if not twin(r)])

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
        """Merge pending rows in; True when anything changed (rows, or `duplicates`)."""
        twins = self.duplicates != self._settled_duplicates
        self._settled_duplicates = self.duplicates
        if not self._pending:
            return twins
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
            if self._calls is not None:
                forget = self._forget
                for r in gone:
                    forget(r)
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
        if self._calls:
            self._dead_calls.append(self._calls)  # freed by `reap` too (~20 ms at 200,000)
            self._calls = {}
        self.duplicates = self._settled_duplicates = 0

    # -- twins: one call seen by two nodes' daemons ------------------------------------------------

    def _twin(self, r: Row) -> bool:
        """True when ``r`` is another node's copy of a call held or pending (it is dropped and
        counted), or a copy dropped before and sent again; otherwise ``r`` is registered."""
        call = _call(r)
        if not call[0]:
            return False  # no client end known
        calls = self._calls
        assert calls is not None
        h = hash(call)
        ts, node = r.ts, r.node
        b = int(ts // _SPAN)
        edge = ts - b * _SPAN  # from the bucket's start; the nearer neighbour is on this side:
        side = edge if edge < TWIN_SECONDS else _SPAN - edge  # this far away
        home = h + b  # (the sum stands for the pair: a clash only puts two calls in one slot)
        at_home: Any = None
        best: Row | None = None
        best_dt = TWIN_SECONDS
        where = home
        for slot in (home, h + (b - 1 if edge < TWIN_SECONDS else b + 1)):
            got = calls.get(slot)
            if slot == home:
                at_home = got
            if got is not None:
                for c in got if type(got) is list else (got,):
                    if type(c) is Row:
                        dt = abs(c.ts - ts)
                        if dt <= best_dt and c.node != node and _call(c) == call:
                            best, best_dt, where = c, dt, slot
                    elif c.ts == ts and c.id == r.id and c.node == node:
                        return True  # its daemon reconnected and sent it again
            if side > best_dt:
                break  # nothing over there is nearer
        if best is None:
            if at_home is None:
                calls[home] = r
            elif type(at_home) is list:
                at_home.append(r)
            else:
                calls[home] = [at_home, r]
            return False
        _swap(calls, where, best, _Twin(best, node, r.id, ts))
        self.duplicates += 1
        return True

    def _forget(self, r: Row) -> None:
        """``r`` left the list: it no longer stands for its call."""
        if not r.client:
            return
        calls = self._calls
        assert calls is not None
        slot = hash(_call(r)) + int(r.ts // _SPAN)
        got = calls.get(slot)
        if type(got) is list:
            for i, c in enumerate(got):
                if c is r or (type(c) is _Twin and c.kept is r):
                    del got[i]
                    if len(got) == 1:
                        calls[slot] = got[0]
                    break
        elif got is r or (type(got) is _Twin and got.kept is r):
            del calls[slot]

    def reap(self, limit: int = REAP_ROWS) -> int:
        """Free up to ``limit`` rows of cleared lists; how many are left to free."""
        dead_calls = self._dead_calls  # first: they hold rows too
        while dead_calls and limit > 0:
            calls = dead_calls[-1]
            n = min(limit, len(calls))
            for _ in range(n):
                calls.popitem()
            limit -= n
            if not calls:
                dead_calls.pop()
        dead = self._dead
        while dead and limit > 0:
            rows = dead[-1]
            n = min(limit, len(rows))
            del rows[len(rows) - n :]
            limit -= n
            if not rows:
                dead.pop()
        return sum(map(len, dead)) + sum(map(len, dead_calls))


def _key(r: Row) -> tuple[float, str, str]:
    return (r.ts, r.node, r.id)


def _swap(calls: dict[int, Any], slot: int, old: Row, new: _Twin) -> None:
    got = calls[slot]
    if type(got) is list:
        for i, c in enumerate(got):
            if c is old:
                got[i] = new
                return
    else:
        calls[slot] = new
