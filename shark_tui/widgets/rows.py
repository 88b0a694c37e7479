"""The list's rows: one compact tuple per entry summary, kept in time order, capped.

No Textual here: the model is plain Python so it can be tested and measured on its own. A row
holds only what the list shows and sorts by; the full entry is fetched from its daemon when
the user opens it.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

__all__ = ["MAX_ROWS", "Row", "RowStore", "endpoint", "row_of"]

MAX_ROWS = 1_000_000


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


class RowStore:
    """Rows in (ts, node, id) order. `add` is cheap; `settle` merges what was added (the
    backlog arrives newest first, live rows oldest first) and applies the cap."""

    def __init__(self, cap: int = MAX_ROWS) -> None:
        self.cap = cap
        self.rows: list[Row] = []
        self._pending: list[Row] = []
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.rows)

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
        if not self.rows or _key(new[0]) >= _key(self.rows[-1]):
            self.rows.extend(new)
        else:
            self.rows.extend(new)
            self.rows.sort(key=_key)  # two runs: timsort merges them in linear time
        over = len(self.rows) - self.cap
        if over > 0:
            del self.rows[:over]
            self.dropped += over
        return True

    def clear(self) -> None:
        self.rows = []
        self._pending = []


def _key(r: Row) -> tuple[float, str, str]:
    return (r.ts, r.node, r.id)
