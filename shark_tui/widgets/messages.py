"""Messages that travel up to the app (one module for all of them)."""

from __future__ import annotations

import time
from typing import Any

from textual.message import Message

from shark_tui.widgets.rows import Row
from shark_tui.widgets.saver import Selection


class EntriesArrived(Message):
    """Rows for the list, from one daemon (``backlog``: stored before the subscription)."""

    def __init__(self, node: str, rows: list[Row], backlog: bool) -> None:
        super().__init__()
        self.node = node
        self.rows = rows
        self.backlog = backlog


class CaughtUp(Message):
    def __init__(self, node: str, entries: int) -> None:
        super().__init__()
        self.node = node
        self.entries = entries


class LinkChanged(Message):
    """A daemon connection came up, went away or failed (``error`` says why). Down, ``retry_at``
    is when the next attempt is made (`time.monotonic` seconds); up again after having been up
    before, ``resume`` says its backlog comes again (rows already held are not to be doubled)."""

    def __init__(self, node: str, up: bool, error: str = "", *, retry_at: float | None = None,
                 resume: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.node = node
        self.up = up
        self.error = error
        self.retry_at = retry_at
        self.resume = resume


class StatsArrived(Message):
    """A daemon's stats (``at``: when they came, monotonic seconds; rates are measured
    between arrivals)."""

    def __init__(self, node: str, stats: dict[str, Any], at: float | None = None) -> None:
        super().__init__()
        self.node = node
        self.stats = stats
        self.at = time.monotonic() if at is None else at


class FilterSubmitted(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class EntryChosen(Message):
    """The user opened a row (enter)."""

    def __init__(self, row: Row) -> None:
        super().__init__()
        self.row = row


class MarksChanged(Message):
    """A row was marked or unmarked, or the only-marked view was switched."""

    def __init__(self, marked: int) -> None:
        super().__init__()
        self.marked = marked


class SaveRequested(Message):
    """The save dialog's path was entered: export ``selection`` to ``path``."""

    def __init__(self, path: str, selection: Selection) -> None:
        super().__init__()
        self.path = path
        self.selection = selection


class CommandSubmitted(Message):
    """A `:` command line was entered (``text`` without the colon)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class SortChanged(Message):
    """The list is now sorted by ``column`` (descending or not)."""

    def __init__(self, column: str, descending: bool) -> None:
        super().__init__()
        self.column = column
        self.descending = descending
