"""The endpoints view (`e`): per destination, method and path template — count, rate, error %,
p50/p99 latency — over the rows the list holds, refreshed every second while open."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from shark_tui.widgets.rows import Row, RowStore

_ID_SEGMENT = re.compile(r"/(?:\d+|[0-9a-f]{8,}|[0-9a-f-]{36})(?=/|$)", re.I)

Stat = tuple[str, str, str, int, float, float, float | None, float | None]


def template(row: Row) -> str:
    """The path template of an HTTP-like summary (ids and numbers as ``{id}``, no query);
    other protocols' summaries as they are (a Redis command's key, a gRPC method...)."""
    if row.proto in ("http", "http2", "grpc", "graphql", "websocket") and row.summary[:1] == "/":
        return _ID_SEGMENT.sub("/{id}", row.summary.partition("?")[0])
    return row.summary if row.proto not in ("redis", "kafka", "amqp") else ""


def _pct(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def endpoint_stats(rows: Iterable[Row]) -> list[Stat]:
    """(destination, method, template, count, rate/s, error %, p50 ms, p99 ms), busiest first."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dst, r.method, template(r)), []).append(r)
    out: list[Stat] = []
    for (dst, method, tmpl), rs in groups.items():
        span = max(r.ts for r in rs) - min(r.ts for r in rs)
        errors = sum(1 for r in rs if r.error or (r.status.isdigit() and int(r.status) >= 400))
        lat = sorted(r.latency_ms for r in rs if r.latency_ms is not None)
        rate = len(rs) / span if span > 0 else 0.0
        out.append((dst, method, tmpl, len(rs), rate, 100.0 * errors / len(rs),
                    _pct(lat, 0.5), _pct(lat, 0.99)))  # fmt: skip
    out.sort(key=lambda s: (-s[3], s[0], s[1], s[2]))
    return out


class EndpointsScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,e", "dismiss", "close", id="endpoints.close"),
    ]

    def __init__(self, store: RowStore) -> None:
        super().__init__()
        self.store = store

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("endpoints: the rows shown, by destination, method and path", id="ep-title")
        yield DataTable(id="ep-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("DESTINATION", "METHOD", "PATH", "COUNT", "RATE/S", "ERR %",
                          "P50 MS", "P99 MS")  # fmt: skip
        self.refresh_stats()
        self.set_interval(1.0, self.refresh_stats)

    def refresh_stats(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for dst, method, tmpl, n, rate, err, p50, p99 in endpoint_stats(self.store.rows)[:500]:
            table.add_row(
                dst, method or "-", tmpl or "-", f"{n:,}", f"{rate:.1f}", f"{err:.0f}",
                "-" if p50 is None else f"{p50:.1f}", "-" if p99 is None else f"{p99:.1f}",
            )  # fmt: skip
