"""The header line: capture state (capturing, paused, disconnected and when the next attempt
to reconnect is made), daemons connected, packets/s with a sparkline of the recent rate, drops,
entries (and how many of them two daemons saw, when any did), marks, follow, the sort order and
the filter in force.

The rate comes from the daemons' stats pushes: per node, the growth of the capture sources'
``received`` counters over the time between two pushes; the sparkline holds the sum over nodes,
one sample per push of the node that pushed last."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

#: Samples in the sparkline (stats come about once a second: the last minute).
HISTORY = 60


def _sources(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    src = stats.get("sources")
    return [s for s in src if isinstance(s, dict)] if isinstance(src, list) else []


def received(stats: Mapping[str, Any]) -> int:
    return sum(int(s.get("received", 0) or 0) for s in _sources(stats))


def drops(stats: Mapping[str, Any]) -> int:
    """Packets lost: by the kernel, the interface, and the daemon's own queue."""
    n = 0
    for s in _sources(stats):
        n += int(s.get("dropped", 0) or 0) + int(s.get("ifdropped", 0) or 0)
        n += int(s.get("queue_dropped", 0) or 0)
    return n


class RateMeter:
    """Packets/s per node from successive ``received`` totals and their arrival times."""

    def __init__(self, history: int = HISTORY) -> None:
        self._last: dict[str, tuple[int, float]] = {}
        self.rates: dict[str, float] = {}
        self.samples: deque[float] = deque([0.0] * history, maxlen=history)

    def feed(self, node: str, total: int, at: float) -> None:
        prev = self._last.get(node)
        self._last[node] = (total, at)
        if prev is None:
            return
        n0, t0 = prev
        if at <= t0:
            return
        # a counter that went back is a restarted daemon: its new total is what it saw since
        grown = total - n0 if total >= n0 else total
        self.rates[node] = grown / (at - t0)
        self.samples.append(self.rate)

    def forget(self, node: str) -> None:
        self._last.pop(node, None)
        self.rates.pop(node, None)

    @property
    def rate(self) -> float:
        return sum(self.rates.values())


def capture_state(
    stats: Mapping[str, Mapping[str, Any]], up: int, retry_in: int | None = None
) -> tuple[str, str]:
    """(text, class) of what the daemons are doing: capturing (and on what), paused, serving a
    file, failed, or not connected (and in how many seconds it is tried again)."""
    if not up:
        if retry_in is None:
            return "disconnected", "-down"
        when = f"retrying in {retry_in}s" if retry_in > 0 else "reconnecting…"
        return f"disconnected, {when}", "-down"
    live = {n: st for n, st in stats.items() if "capturing" in st}
    failed = {n: st.get("failed") for n, st in live.items() if st.get("failed")}
    capturing = {n: st["capturing"] for n, st in live.items() if st.get("capturing")}
    paused = [n for n in capturing if live[n].get("paused")]
    if paused and len(paused) == len(capturing):
        text = "paused" if len(stats) == 1 else f"paused on {len(paused)}/{len(stats)} nodes"
        return text, "-warn"
    if capturing:
        if len(stats) == 1:
            (ifaces,) = capturing.values()
            names = ",".join(str(i) for i in ifaces)
            text = f"capturing {names[:28] + '…' if len(names) > 29 else names}"
        else:
            text = f"capturing on {len(capturing)}/{len(stats)} nodes"
            if paused:
                text += f", {len(paused)} paused"
        return (text + " (some failed)", "-warn") if failed else (text, "-live")
    if failed:
        return "capture failed", "-down"
    if live:
        return "not capturing", "-warn"
    return ("stored" if stats else "connected"), "-stored"


class StatusHeader(Horizontal):
    """See the module docstring. The app feeds it (`feed`, `show`): attributes flow down."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.meter = RateMeter()
        self.stats: dict[str, Mapping[str, Any]] = {}
        # kept by reference: stats may come before this widget's children are mounted
        self._state = Static("", id="header-state")
        self._daemons = Static("", id="header-daemons")
        self._rate = Static("", id="header-rate")
        self._spark = Sparkline(list(self.meter.samples), id="header-spark")
        self._drops = Static("", id="header-drops")
        self._rest = Static("", id="header-rest")
        self._parts = (self._state, self._daemons, self._rate, self._drops, self._rest)

    def compose(self):  # type: ignore[no-untyped-def]
        yield from self._parts[:3]
        yield self._spark
        yield from self._parts[3:]

    def feed(self, node: str, stats: Mapping[str, Any], at: float) -> None:
        self.stats[node] = stats
        self.meter.feed(node, received(stats), at)
        self._spark.data = list(self.meter.samples)

    def forget(self, node: str) -> None:
        """``node`` went away: its rate no longer counts (its stats stay for the totals)."""
        self.meter.forget(node)

    def show(self, *, up: int, total: int, entries: int, marked: int, only_marked: bool,
             follow: bool, filter: str, sort: str = "time ▲",
             retry_in: int | None = None, twice: int = 0) -> None:  # fmt: skip
        """``retry_in``: seconds to the next attempt to reach a daemon that went away;
        ``twice``: entries shown once that two daemons sent (the call's two ends)."""
        text, cls = capture_state(self.stats, up, retry_in)
        state = self._state
        for c in ("-live", "-stored", "-warn", "-down"):
            state.set_class(c == cls, c)
        _update(state, f"● {text}")
        again = f", retrying in {retry_in}s" if up and up < total and retry_in else ""
        _update(self._daemons, f"daemons {up}/{total}{again}")
        _update(self._rate, f"{self.meter.rate:,.0f} pkt/s")
        lost = sum(drops(st) for st in self.stats.values())
        drop = self._drops
        drop.set_class(lost > 0, "-bad")
        _update(drop, f"drops {lost:,}")
        only = " (only marked shown)" if only_marked else ""
        seen = f" ({twice:,} seen twice)" if twice else ""
        _update(
            self._rest,
            f"entries {entries:,}{seen}  marked {marked:,}{only}"
            f"  {'FOLLOW' if follow else 'follow off'}  sort {sort}  filter: {filter or '(none)'}",
        )

    @property
    def text(self) -> str:
        """The header as one line of text (tests read it)."""
        return "  ".join(str(w.render()) for w in self._parts)


def _update(widget: Static, text: str) -> None:
    """Update ``widget`` when its text changes (the header is shown again ten times a second
    while a daemon is away)."""
    if str(widget.render()) != text:
        widget.update(text)
