"""Saving a selection as a capture file through the daemons' Export (`w`, `:save`).

No Textual here. A `Selection` is fixed when the key is pressed: the marked entries' ids per
node, or — none marked — the filter in force then, bounded per node by the time of the newest
entry shown from it ("all shown" = the entries matching the filter when the key was pressed,
DESIGN.md: entries a live daemon adds later are not saved). Each daemon
exports its own connections, so with several daemons one file is written per node
(``NAME-NODE.pcapng``): their pcapng sections and interface numbers are their own, and one
file per node is what Wireshark opens without a merge step. A name ending in ``.pcap`` gets
classic pcap when one link type suffices (else pcapng, said in the result). Files are written
to ``PATH.part`` and renamed when complete, so a failed save leaves no half file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Saved", "Selection", "default_name", "path_for", "path_problem", "save"]


class Exporter(Protocol):
    node: str

    def export(self, filter: str, ids: list[str]) -> AsyncIterator[bytes]: ...

    @property
    def last_export(self) -> Any: ...


@dataclass(frozen=True)
class Selection:
    """What `w` saves: ``ids`` per node when entries are marked, else every entry matching
    ``filter`` (the effective filter when the key was pressed; empty = everything) up to
    ``until[node]``, the time of the newest entry shown from that node (a node missing from
    ``until`` showed nothing and is skipped). ``shown`` is how many rows the list held."""

    filter: str
    ids: dict[str, list[str]] | None = None
    until: dict[str, float] = field(default_factory=dict)
    shown: int = 0

    def describe(self) -> str:
        if self.ids is not None:
            n = sum(len(v) for v in self.ids.values())
            return f"{n:,} marked entr{'y' if n == 1 else 'ies'}"
        what = f"all {self.shown:,} entries shown"
        return f"{what} (matching {self.filter})" if self.filter else what

    def filter_for(self, node: str) -> str | None:
        """The filter to export ``node``'s part by, or None when nothing of it was shown."""
        if node not in self.until:
            return None
        bound = f"ts <= {self.until[node]!r}"
        return f"({self.filter}) and {bound}" if self.filter else bound


@dataclass
class Saved:
    """One file written (or not: ``error``)."""

    node: str
    path: str
    packets: int = 0
    connections: int = 0
    bytes: int = 0
    fmt: str = "pcapng"
    error: str = ""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.error:
            return f"{self.node}: {self.error}"
        note = f" ({'; '.join(self.notes)})" if self.notes else ""
        return (
            f"{self.packets:,} packet{'s' * (self.packets != 1)} of {self.connections:,} "
            f"connection{'s' * (self.connections != 1)} written to {self.path}{note}"
        )


def default_name(now: float) -> str:
    """``shark-tui-YYYYmmdd-HHMMSS.pcapng`` (UTC, like the list's times)."""
    return time.strftime("shark-tui-%Y%m%d-%H%M%S.pcapng", time.gmtime(now))


def path_for(path: str, node: str, several: bool) -> str:
    """The file for ``node``'s part: ``path`` itself, or with several daemons
    ``stem-NODE.ext`` (the node name made safe for a file name)."""
    if not several:
        return path
    stem, ext = os.path.splitext(path)
    safe = re.sub(r"[^\w.-]+", "_", node).strip("_") or "node"
    return f"{stem}-{safe}{ext}"


def path_problem(path: str) -> str:
    """Why ``path`` cannot be written ("" when it looks fine)."""
    if not path:
        return "a file name, please"
    if os.path.isdir(path):
        return f"{path} is a directory"
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        return f"no such directory: {parent}"
    if not os.access(parent, os.W_OK):
        return f"cannot write in {parent}"
    return ""


Progress = Callable[[str, int], None]


async def save(
    links: Sequence[Exporter], sel: Selection, path: str, progress: Progress | None = None
) -> list[Saved]:
    """Export ``sel`` from each daemon in ``links`` to ``path`` (one file per node when there
    are several); ``progress(node, bytes_so_far)`` is called as chunks arrive. Failures are
    reported per node in the result, never raised."""
    path = os.path.expanduser(path)
    several = len(links) > 1
    out: list[Saved] = []
    for link in links:
        ids: list[str] = []
        flt = ""
        if sel.ids is not None:
            ids = sel.ids.get(link.node, [])
            if not ids:
                continue
        else:
            bounded = sel.filter_for(link.node)
            if bounded is None:
                continue
            flt = bounded
        target = path_for(path, link.node, several)
        out.append(await _save_one(link, flt, ids, target, progress))
    return out


async def _save_one(
    link: Exporter, flt: str, ids: list[str], path: str, progress: Progress | None
) -> Saved:
    from shark_tui.engine.pcapng import to_classic_pcap

    done = Saved(link.node, path)
    classic = path.endswith(".pcap")
    part = path + ".part"
    f: Any = None
    try:
        f = await asyncio.to_thread(open, part, "wb")
        held: list[bytes] = []
        async for chunk in link.export(flt, ids):
            done.bytes += len(chunk)
            if classic:
                held.append(chunk)
            else:
                await asyncio.to_thread(f.write, chunk)
            if progress is not None:
                progress(link.node, done.bytes)
        if classic:
            data = b"".join(held)
            pcap = await asyncio.to_thread(to_classic_pcap, data)
            if pcap is None:
                done.notes.append("several link types: written as pcapng")
            else:
                data, done.fmt = pcap, "pcap"
            await asyncio.to_thread(f.write, data)
        await asyncio.to_thread(f.close)
        await asyncio.to_thread(os.replace, part, path)
    except BaseException as exc:  # reported in the result; the UI never sees it raised
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
        with contextlib.suppress(OSError):
            os.unlink(part)
        if not isinstance(exc, Exception):
            raise  # cancelled (the app is closing): no half file left behind
        done.error = str(exc) or type(exc).__name__
        return done
    report = link.last_export
    if report is not None:
        done.packets = int(getattr(report, "packets", 0))
        done.connections = int(getattr(report, "connections", 0))
    return done
