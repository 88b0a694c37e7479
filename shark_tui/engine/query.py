"""The daemon's query side: stored packets of the flows a query touches, dissected on demand.

Nothing here runs unless a client asks. `QueryEngine` lives in one thread (the daemon's query
thread); it reads the flow index under the recorder's lock (a snapshot of a flow's packet
locations) and the segment files without it (memory-mapped, only what was flushed).

- A `FlowCursor` dissects one indexed connection incrementally: it remembers the last packet
  location it fed, so a flow that grew is fed only its new packets. Cursors are kept for the
  most recently used flows (`MAX_CURSORS`); a flow whose cursor was dropped is dissected again
  from its first stored packet when it grows.
- The summary cache keeps, per flow, the summaries of its entries (the entry without its
  request/response objects: what the list shows and most filters test), bounded by
  `MAX_CACHED_ENTRIES` (the flows that ended longest ago are dropped first). A changed filter
  re-runs over cached summaries; only a filter that looks into requests or responses, or a
  client that wants full entries, makes the engine dissect again.
- Entry ids are ``FLOW:N``: the flow number of the index (stable across daemon restarts) and
  the exchange's ordinal within the connection.
- With a pod history (``--kube``), an entry's ends are named when it is dissected. The watch
  reports a pod some time after its first packets, so a cached summary may have an end the
  history did not know then: such addresses are remembered (`QueryEngine._unnamed`), and a
  query made after the history gained addresses names those ends first (`_name_late`), at each
  entry's time, as a dissection now would.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import mmap
import os
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from shark_tui.engine import pcapng, podmap
from shark_tui.engine.dissect import DEFAULT_BODY_CAP, Entry, EntryBuilder, make_dissector_factory
from shark_tui.engine.filter import Filter
from shark_tui.engine.flowindex import FIN_CLIENT, FIN_SERVER, RESET, Flow
from shark_tui.engine.packet import ACK, SYN, PacketDecoder, format_ip
from shark_tui.engine.podmap import PodMap
from shark_tui.engine.store import Recorder, SegmentInfo
from shark_tui.engine.tcp import TLS_ZONE, FlowTable
from shark_tui.engine.tcp import Flow as TcpFlow
from shark_tui.proto.base import Event, ExchangeCompleted
from shark_tui.proto.tls import MAX_HELLO, parse_hello

__all__ = [
    "MAX_CACHED_ENTRIES",
    "MAX_CURSORS",
    "FlowCursor",
    "QueryEngine",
    "StoreReader",
    "needs_detail",
    "parse_id",
    "summary",
]

MAX_CURSORS: Final = 4096
MAX_CACHED_ENTRIES: Final = 2_000_000
MAX_FACETS: Final = 64  # distinct (proto, method, status) kept per flow
DETAIL_KEYS: Final = ("request", "response")
_FIN_BOTH: Final = 2 | 4
#: The handshake's packets: (SYN/ACK flags, sent by the client).
_HANDSHAKE: Final = ((SYN, True), (SYN | ACK, False), (ACK, True))
#: Protocols a dissection cannot start in the middle of (HTTP/2's header tables).
_NO_MIDSTREAM: Final = frozenset({"http2", "grpc", "graphql"})
_EPB: Final = struct.Struct("<IIIIIII")  # type, length, iface, ts hi, ts lo, caplen, orig
_U32: Final = struct.Struct("<I")
_DETAIL_WORDS: Final = re.compile(r"\b(request|response|messages|records)\b")
_SLIM_HEADERS: Final = frozenset({"host", ":authority", ":path"})
_SHARED_STRINGS: Final = ("proto", "method", "error")
_QUOTED: Final = re.compile(r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'")

Packet = tuple[int, int, bytes, int, int]  # ts_ns, linktype, data, source id, original length


def summary(entry: Entry) -> Entry:
    """The entry without its request and response objects — but with what the ``path`` and
    ``host`` shorthands read (the request's path and its Host/:authority/:path headers)."""
    out = {k: v for k, v in entry.items() if k not in DETAIL_KEYS}
    req = entry.get("request")
    if isinstance(req, dict):
        slim: dict[str, Any] = {}
        if isinstance(req.get("path"), str):
            slim["path"] = req["path"]
        headers = req.get("headers")
        if isinstance(headers, list):
            kept = [h for h in headers if isinstance(h, list | tuple) and len(h) == 2
                    and isinstance(h[0], str) and h[0].lower() in _SLIM_HEADERS]  # fmt: skip
            if kept:
                slim["headers"] = kept
        if slim:
            out["request"] = slim
    return out


def needs_detail(text: str) -> bool:
    """Whether a filter may look into requests or responses beyond what `summary` keeps."""
    return bool(_DETAIL_WORDS.search(_QUOTED.sub("", text)))


def parse_id(entry_id: str) -> tuple[int, int] | None:
    flow, sep, n = entry_id.partition(":")
    if not sep or not flow.isdigit() or not n.isdigit():
        return None
    return int(flow), int(n)


class StoreReader:
    """Packets by location, from the segment files (memory-mapped; only flushed bytes)."""

    def __init__(self, recorder: Recorder, lock: threading.Lock) -> None:
        self.recorder = recorder
        self.lock = lock
        self._maps: dict[int, tuple[mmap.mmap | None, int]] = {}
        self._infos: dict[int, SegmentInfo] = {}

    def _info(self, seq: int) -> SegmentInfo | None:
        info = self._infos.get(seq)
        if info is None or info is self.recorder.current:
            with self.lock:
                self._infos = {s.seq: s for s in self.recorder.segment_list()}
            info = self._infos.get(seq)
        return info

    def flushed(self, seq: int) -> int:
        """Bytes of segment ``seq`` readable now (0 when it is gone)."""
        info = self._info(seq)
        return 0 if info is None else info.size

    def _map(self, seq: int, need: int) -> mmap.mmap | None:
        got = self._maps.get(seq)
        if got is not None and got[1] >= need:
            return got[0]
        info = self._info(seq)
        if info is None:
            return None
        if got is not None and got[0] is not None:
            got[0].close()
        size = 0
        m: mmap.mmap | None = None
        try:
            fd = os.open(info.path, os.O_RDONLY)
        except OSError:
            self._maps.pop(seq, None)
            return None
        try:
            size = os.fstat(fd).st_size
            if size:
                m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._maps[seq] = (m, size)
        return m

    def _block(self, loc: int) -> tuple[mmap.mmap, int, int, int, int, int, int] | None:
        """``(map, offset, block length, ts_ns, source id, caplen, orig)`` of the packet block
        at ``loc`` (``segment << 32 | offset``), or None when it is not (or no longer) there."""
        seq, off = loc >> 32, loc & 0xFFFFFFFF
        m = self._map(seq, off + 32)
        if m is None or off + 28 > len(m):
            return None
        btype, blen, iface, hi, lo, caplen, orig = _EPB.unpack_from(m, off)
        if off + blen > len(m):  # mapped before the rest of the block was flushed
            m = self._map(seq, off + blen)
            if m is None or off + blen > len(m):
                return None
        if btype != 6:
            return None
        info = self._infos.get(seq)
        sid = info.sources[iface] if info is not None and iface < len(info.sources) else 0
        return m, off, blen, (hi << 32) | lo, sid, caplen, orig

    def read(self, locs: Iterable[int]) -> list[Packet]:
        """The packets at ``locs``; missing ones are skipped."""
        out: list[Packet] = []
        sources = self.recorder.sources
        for loc in locs:
            b = self._block(loc)
            if b is None:
                continue
            m, off, _blen, ts, sid, caplen, orig = b
            linktype = sources[sid].linktype if sid < len(sources) else 1
            out.append((ts, linktype, m[off + 28 : off + 28 + caplen], sid, orig))
        return out

    def blocks(self, locs: Iterable[int]) -> list[tuple[int, int, int, int]]:
        """``(ts_ns, loc, source id, block length)`` of the packet blocks at ``locs``."""
        out: list[tuple[int, int, int, int]] = []
        for loc in locs:
            b = self._block(loc)
            if b is not None:
                out.append((b[3], loc, b[4], b[2]))
        return out

    def mapped(self, seq: int) -> mmap.mmap | None:
        """The current mapping of segment ``seq`` (after `blocks` made sure it is big enough)."""
        got = self._maps.get(seq)
        return got[0] if got is not None else None

    def forget(self, alive: set[int]) -> None:
        """Unmap segments that are no longer in the store."""
        for seq in [s for s in self._maps if s not in alive]:
            m = self._maps.pop(seq)[0]
            if m is not None:
                m.close()

    def close(self) -> None:
        self.forget(set())


class FlowCursor:
    """Incremental dissection of one indexed connection (see the module docstring)."""

    __slots__ = ("_builder", "_decoder", "count", "done", "last_loc", "num", "out", "table",
                 "zone")  # fmt: skip

    def __init__(
        self,
        num: int,
        body_cap: int = DEFAULT_BODY_CAP,
        tls: bool = False,
        redis_resp: int = 2,
        names: PodMap | None = None,
    ) -> None:
        self.num = num
        self.zone = TLS_ZONE if tls else 0  # TLS plaintext: entries say ``tls: true``
        self.count = 0  # exchanges emitted
        self.last_loc = -1
        self.done = False
        self.out: list[Entry] = []
        self._builder = EntryBuilder(names)
        self._decoder = PacketDecoder()
        self.table = FlowTable(make_dissector_factory(body_cap, redis_resp), self._on_events)

    def _on_events(self, flow: TcpFlow, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, ExchangeCompleted):
                flow.num = self.num
                flow.n = self.count
                self.out.append(self._builder.build(flow, ev.exchange))
                self.count = flow.n

    def feed(self, packets: list[Packet]) -> None:
        decode = self._decoder.decode
        segment = self.table.segment
        zone = self.zone
        for ts_ns, linktype, data, _sid, _orig in sorted(packets, key=lambda p: p[0]):
            seg = decode(linktype, data, ts_ns)
            if seg is not None:
                src, sport, dst, dport, seq, ack, flags, _win, payload = seg
                segment(ts_ns / 1e9, src, sport, dst, dport, seq, ack, flags, payload, zone)

    def finish(self) -> None:
        if not self.done:
            self.table.finish()
            self.done = True

    def take(self) -> list[Entry]:
        out, self.out = self.out, []
        return out


class _Recorder:
    """A dissector that keeps the bytes it is fed (the Raw view of a connection)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.size = 0
        self.left_out = 0
        self.chunks: list[tuple[int, bytes]] = []

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        room = self.cap - self.size
        if room <= 0:
            self.left_out += len(data)
            return []
        keep = data[:room]
        self.left_out += len(data) - len(keep)
        self.size += len(keep)
        if self.chunks and self.chunks[-1][0] == direction:
            self.chunks[-1] = (direction, self.chunks[-1][1] + keep)
        else:
            self.chunks.append((direction, keep))
        return []

    def gap(self, direction: int, size: int, ts: float) -> list[Event]:
        self.left_out += size
        return []

    def close(self, direction: int, ts: float) -> list[Event]:
        return []

    def finish(self, ts: float) -> list[Event]:
        return []

    def expire(self, now: float) -> list[Event]:
        return []

    def oldest_pending(self) -> float | None:
        return None


class _FlowView:
    """What the query thread copies out of the index for one flow (under the lock): the cheap
    fields only; its packet locations are fetched when it has to be dissected."""

    __slots__ = ("client", "cport", "ended", "first_ns", "last_ns", "num", "proto", "server",
                 "sport", "tls")  # fmt: skip

    def __init__(self, f: Flow, tls_zone: int | None = None) -> None:
        self.tls = f.key[0] == tls_zone
        self.num = f.num
        self.proto = f.proto
        self.client = format_ip(f.client)
        self.cport = f.cport
        self.server = format_ip(f.server)
        self.sport = f.sport
        self.first_ns = f.first_ns
        self.last_ns = f.last_ns
        self.ended = bool(f.state & RESET or f.state & _FIN_BOTH == _FIN_BOTH)


def _note_resp(changes: list[tuple[int, int]], n: int, e: Entry) -> None:
    """Append (n, version) to ``changes`` when entry N's reply is in another RESP version than
    the last one noted (2 before any)."""
    res = e.get("response")
    resp = res.get("resp") if isinstance(res, dict) else None
    if type(resp) is int and resp != (changes[-1][1] if changes else 2):
        changes.append((n, resp))


def _resp_at(changes: list[tuple[int, int]], n: int) -> int:
    """The RESP version of entry N's reply, from the changes `_note_resp` kept."""
    i = bisect.bisect_right(changes, (n, 99))
    return changes[i - 1][1] if i else 2


class _Cached:
    __slots__ = ("complete", "emitted", "entries", "facets", "last_ns", "latency", "ordered",
                 "resp", "unnamed")  # fmt: skip

    def __init__(self) -> None:
        # summaries, in exchange order; None when the cache bound dropped them
        self.entries: list[Entry] | None = []
        self.complete = False  # the flow ended and every packet was fed
        self.last_ns = 0
        self.emitted = 0  # entries handed out as new (N of ``FLOW:N``); outlives `entries`
        self.ordered = True  # `entries` are in ts order (HTTP/2 streams may end out of order)
        #: every (proto, method, status) its entries have had (None: too many to keep), so a
        #: filter on those can rule the flow out without looking at its entries
        self.facets: set[tuple[Any, Any, Any]] | None = set()
        self.latency: tuple[float | None, float | None] = (None, None)  # smallest, largest
        #: Redis: (N, version) where the RESP version of the replies changed (``HELLO 3``),
        #: so an entry dissected again from a checkpoint past the HELLO starts in that version
        self.resp: list[tuple[int, int]] = []
        #: addresses of ends of its summaries that the pod history did not name (at most the
        #: flow's two), each also in `QueryEngine._unnamed`
        self.unnamed: tuple[str, ...] = ()


def _named(end: dict[str, Any], ref: podmap.Ref) -> dict[str, Any]:
    """``end`` named by ``ref`` (as `EntryBuilder` names an end when it knows the address)."""
    out = dict(end, ns=ref.ns)
    if ref.kind == "pod":
        out["pod"] = ref.name
    if ref.service:
        out["service"] = ref.service
    return out


class QueryEngine:
    """Dissection on demand over a `Recorder`; used from one thread."""

    def __init__(
        self,
        recorder: Recorder,
        lock: threading.Lock,
        body_cap: int = DEFAULT_BODY_CAP,
        max_cursors: int = MAX_CURSORS,
        max_cached_entries: int = MAX_CACHED_ENTRIES,
    ) -> None:
        self.recorder = recorder
        self.lock = lock
        self.body_cap = body_cap
        self.reader = StoreReader(recorder, lock)
        self.max_cursors = max_cursors
        self.max_cached_entries = max_cached_entries
        self._cursors: OrderedDict[int, FlowCursor] = OrderedDict()
        self._cache: dict[int, _Cached] = {}
        self._cached_entries = 0
        self._strings: dict[str, str] = {}  # methods, protocols...: one object each
        #: Flows with packets indexed but not yet flushed when last looked at.
        self._unflushed: set[int] = set()
        #: address -> the flows whose cached summaries have an end there that the pod history
        #: did not name when dissected (`_name_late` names them once it knows the address)
        self._unnamed: dict[str, set[int]] = {}
        self._addresses_seen = 0  # the history's `addresses_added` when last looked at
        self.stats = {"dissected_packets": 0, "cursor_evictions": 0, "cache_evictions": 0,
                      "entries": 0, "full_redissections": 0, "exported_packets": 0,
                      "checkpoint_reads": 0, "full_reads": 0, "wire_twins": 0,
                      "facet_skips": 0}  # fmt: skip
        self.last_export_packets = 0

    # -- keeping flows up to date ---------------------------------------------------------------

    def _views(self, nums: Iterable[int] | None = None) -> list[_FlowView]:
        """Snapshot of flows (all, or ``nums``)."""
        with self.lock:
            by_num = self.recorder.index.by_num
            flows = by_num.values() if nums is None else [by_num[n] for n in nums if n in by_num]
            tz = self.recorder.tls_zone()
            return [_FlowView(f, tz) for f in flows]

    def _locs_after(self, num: int, after: int) -> list[int]:
        """Locations of flow ``num``'s packets stored after location ``after`` (-1: all)."""
        with self.lock:
            f = self.recorder.index.by_num.get(num)
            if f is None:
                return []
            locs = f.locs
            start = bisect.bisect_right(locs, after) if after >= 0 else 0
            return locs[start:].tolist()

    def update(self, views: list[_FlowView]) -> list[Entry]:
        """Bring the cached entries of these flows up to date; return the new full entries."""
        new: list[Entry] = []
        names = self.recorder.names
        for v in views:
            cached = self._cache.get(v.num)
            if cached is None:
                cached = self._cache[v.num] = _Cached()
            summaries = cached.entries
            if summaries is None:  # dropped by the cache bound: dissect it again
                summaries = cached.entries = []
                cached.complete = False
                cached.ordered = True
            if cached.complete:
                continue
            cur = self._cursors.get(v.num)
            if cur is not None and cached.last_ns == v.last_ns and v.num not in self._unflushed:
                self._cursors.move_to_end(v.num)
                continue  # nothing new since it was last fed
            cached.last_ns = v.last_ns
            if cur is None:
                cur = FlowCursor(v.num, self.body_cap, v.tls, names=self.recorder.names)
                self._cursors[v.num] = cur
                self._evict_cursors()
                if cached.emitted:
                    self.stats["full_redissections"] += 1
            else:
                self._cursors.move_to_end(v.num)
            wanted = self._locs_after(v.num, cur.last_loc)
            locs = self._readable(wanted)
            self._unflushed.discard(v.num)
            if len(locs) < len(wanted):
                self._unflushed.add(v.num)  # look again once the writer flushed the rest
            if locs:
                cur.feed(self.reader.read(locs))
                cur.last_loc = locs[-1]
                self.stats["dissected_packets"] += len(locs)
            if v.ended and len(locs) == len(wanted):
                cur.finish()
            entries = cur.take()
            if entries and not v.tls and v.proto == "tls" and self.wire_twin_exists(v.num):
                # its plaintext was captured: the connection shows as those entries
                self.stats["wire_twins"] += len(entries)
                entries = []
            known = len(summaries)
            for e in entries:
                n = parse_id(e["id"])
                k = n[1] if n is not None else 0
                if k <= known:
                    continue  # dissected again after the cursor was dropped: already cached
                if summaries and e["ts"] < summaries[-1]["ts"]:
                    cached.ordered = False
                sm = summary(e)
                if summaries:  # one src/dst dict per flow, not per entry (most of a summary)
                    first = summaries[0]
                    if sm["src"] == first["src"]:
                        sm["src"] = first["src"]
                    if sm["dst"] == first["dst"]:
                        sm["dst"] = first["dst"]
                strings = self._strings
                if len(strings) > 65536:  # varied error texts: start over, bounded
                    strings = self._strings = {}
                for key in _SHARED_STRINGS:
                    text = sm.get(key)
                    if type(text) is str and len(text) < 64:
                        sm[key] = strings.setdefault(text, text)
                summaries.append(sm)
                if names is not None:
                    for end in (sm["src"], sm["dst"]):
                        if end.get("ns") is None and end["ip"] not in cached.unnamed:
                            cached.unnamed += (end["ip"],)
                            self._unnamed.setdefault(end["ip"], set()).add(v.num)
                if sm["proto"] == "redis":
                    _note_resp(cached.resp, k, e)
                facets = cached.facets
                if facets is not None:
                    facets.add((sm["proto"], sm["method"], sm["status"]))
                    if len(facets) > MAX_FACETS:
                        cached.facets = None
                lat = sm["latency_ms"]
                if lat is not None:
                    lo, hi = cached.latency
                    cached.latency = (lat if lo is None or lat < lo else lo,
                                      lat if hi is None or lat > hi else hi)  # fmt: skip
                self._cached_entries += 1
                if k > cached.emitted:  # not when dissected again after the cache dropped it
                    cached.emitted = k
                    new.append(e)
            if cur.done:
                cached.complete = True
                self._cursors.pop(v.num, None)
        self.stats["entries"] += len(new)
        self._evict_cache({v.num for v in views})
        return new

    def _readable(self, locs: list[int]) -> list[int]:
        """The prefix of ``locs`` already flushed to the files."""
        if not locs:
            return locs
        last_seq = locs[-1] >> 32
        limit = self.reader.flushed(last_seq)
        if (locs[-1] & 0xFFFFFFFF) < limit:
            return locs
        cut = bisect.bisect_left(locs, (last_seq << 32) | limit)
        return locs[:cut]

    def _evict_cursors(self) -> None:
        while len(self._cursors) > self.max_cursors:
            self._cursors.popitem(last=False)
            self.stats["cursor_evictions"] += 1

    def _evict_cache(self, keep: set[int]) -> None:
        """Drop the summaries of the flows that ended longest ago, not those of ``keep`` (the
        flows being answered). A dropped flow keeps how many of its entries went out as new,
        so dissecting it again does not hand them out again."""
        if self._cached_entries <= self.max_cached_entries:
            return
        by_age = sorted(
            ((num, c) for num, c in self._cache.items() if c.entries and num not in keep),
            key=lambda kv: kv[1].last_ns,
        )
        for num, c in by_age:
            if self._cached_entries <= self.max_cached_entries * 9 // 10:
                break
            self._cached_entries -= len(c.entries or ())
            c.entries = None
            c.complete = False
            self._cursors.pop(num, None)
            self._forget_unnamed(num, c)
            self.stats["cache_evictions"] += 1

    def _forget_unnamed(self, num: int, c: _Cached) -> None:
        """Flow ``num``'s summaries are gone: none of its ends waits for a name any more."""
        for ip in c.unnamed:
            nums = self._unnamed.get(ip)
            if nums is not None:
                nums.discard(num)
                if not nums:
                    del self._unnamed[ip]
        c.unnamed = ()

    def _name_late(self) -> None:
        """Name the ends of cached summaries that the pod history did not know when they were
        dissected and knows now. Looked at only when addresses were added to the history since
        the last time; then one lookup per address waiting, and the summaries of the flows at
        the addresses it now knows are named at their own times."""
        names = self.recorder.names
        if names is None or not self._unnamed or names.addresses_added == self._addresses_seen:
            return
        self._addresses_seen = names.addresses_added  # read first: what comes later is seen next
        known = [ip for ip in self._unnamed if names.history(ip)]
        for ip in known:
            for num in self._unnamed.pop(ip):
                c = self._cache.get(num)
                if c is None or not c.entries:
                    continue
                c.unnamed = tuple(x for x in c.unnamed if x != ip)
                # one dict per port and holder, shared by the summaries as `update` shares them
                renamed: dict[tuple[Any, podmap.Ref], dict[str, Any]] = {}
                for sm in c.entries:
                    for key in ("src", "dst"):
                        end = sm[key]
                        if end.get("ns") is not None or end["ip"] != ip:
                            continue
                        ref = names.resolve(ip, round(sm["ts"] * 1e9), end["port"])
                        if ref is None:
                            continue
                        got = renamed.get((end["port"], ref))
                        if got is None:
                            got = renamed[end["port"], ref] = _named(end, ref)
                        sm[key] = got

    def forget_deleted(self) -> None:
        """Drop what belongs to flows the store no longer has."""
        with self.lock:
            alive = set(self.recorder.index.by_num)
            segs = {s.seq for s in self.recorder.segment_list()}
        for num in [n for n in self._cache if n not in alive]:
            c = self._cache.pop(num)
            self._cached_entries -= len(c.entries or ())
            self._forget_unnamed(num, c)
            self._cursors.pop(num, None)
        self.reader.forget(segs)

    # -- queries --------------------------------------------------------------------------------

    def poll(self, dirty: Iterable[int]) -> list[Entry]:
        """New full entries of the flows that received packets (the live feed)."""
        nums = set(dirty) | self._unflushed  # (update() takes flows off _unflushed)
        if not nums:
            return []
        return self.update(self._views(nums))

    def backlog(
        self,
        flt: Filter,
        since_ns: int = 0,
        newest_first: bool = False,
        limit: int = 0,
        detail: bool = False,
        on_new: Callable[[list[Entry]], None] | None = None,
    ) -> Iterator[list[Entry]]:
        """The stored entries matching ``flt``, in batches: in ts order, or the newest
        ``limit`` newest first. Entries dissected for the first time on the way are also handed
        to ``on_new`` (the live subscribers must hear of them)."""
        self._name_late()
        views = [v for v in self._views() if v.last_ns >= since_ns]
        pushdown = flt.pushdown
        if pushdown.selective:
            views = [
                v for v in views
                if pushdown.flow_may_match(v.proto, v.client, v.cport, v.server, v.sport)
            ]  # fmt: skip
        full = detail or needs_detail(flt.text)
        since = since_ns / 1e9
        pred = flt.predicate
        ruled_out = self._facet_check(flt, on_new)
        if newest_first:
            views.sort(key=lambda v: v.last_ns, reverse=True)
            best: list[tuple[float, str, Entry]] = []  # min-heap of the newest `limit`
            for v in views:
                if limit and len(best) >= limit and best[0][0] >= v.last_ns / 1e9:
                    break  # nothing in this flow (or older ones) is newer than what we have
                if ruled_out is not None and ruled_out(v):
                    continue
                entries = self._entries_of(v, full, on_new)
                cached = self._cache.get(v.num)
                # a flow whose entries are in ts order is read from its newest back, and only
                # as far as it can still hold one of the newest `limit`
                in_order = not full and cached is not None and cached.ordered
                for e in reversed(entries):
                    ts = e["ts"]
                    if in_order and (ts < since or (limit and len(best) >= limit
                                                    and ts < best[0][0])):  # fmt: skip
                        break
                    if ts < since or not pred(e):
                        continue
                    item = (ts, e["id"], e)
                    if not limit or len(best) < limit:
                        heapq.heappush(best, item)
                    elif item > best[0]:
                        heapq.heapreplace(best, item)
            ordered = [e for _, _, e in sorted(best, key=lambda t: (t[0], t[1]), reverse=True)]
            for i in range(0, len(ordered), 500):
                yield ordered[i : i + 500]
            return
        views.sort(key=lambda v: v.first_ns)
        matched: list[tuple[float, int, int, Entry]] = []
        for v in views:
            if ruled_out is not None and ruled_out(v):
                continue
            for e in self._entries_of(v, full, on_new):
                if e["ts"] >= since and pred(e):
                    num, n = parse_id(e["id"]) or (0, 0)
                    matched.append((e["ts"], num, n, e))
        matched.sort(key=lambda t: t[:3])
        if limit:
            matched = matched[-limit:]
        for i in range(0, len(matched), 500):
            yield [t[3] for t in matched[i : i + 500]]

    def _facet_check(
        self, flt: Filter, on_new: Callable[[list[Entry]], None] | None
    ) -> Callable[[_FlowView], bool] | None:
        """For a filter on ``method``/``status``: a test that brings a flow's summaries up to
        date and says True when its facets rule every entry out (None: no such filter)."""
        pushdown = flt.pushdown
        if not pushdown.uses_facets:
            return None
        may_match = pushdown.facets_may_match

        def ruled_out(v: _FlowView) -> bool:
            new = self.update([v])
            if new and on_new is not None:
                on_new(new)
            cached = self._cache.get(v.num)
            if cached is None or cached.facets is None:
                return False
            if may_match(v.client, v.cport, v.server, v.sport, cached.facets, cached.latency):
                return False
            self.stats["facet_skips"] += 1
            return True

        return ruled_out

    def _entries_of(
        self, v: _FlowView, full: bool, on_new: Callable[[list[Entry]], None] | None
    ) -> list[Entry]:
        new = self.update([v])
        if new and on_new is not None:
            on_new(new)
        if not full:
            cached = self._cache.get(v.num)
            return cached.entries or [] if cached is not None else []
        return self.dissect_whole(v.num)

    def dissect_whole(self, num: int, body_cap: int | None = None) -> list[Entry]:
        """Every full entry of flow ``num``, dissected again from its first stored packet
        (bodies kept up to ``body_cap`` bytes; None: the engine's cap)."""
        with self.lock:
            f = self.recorder.index.by_num.get(num)
            if f is None:
                return []
            locs = f.locs.tolist()
            ended = bool(f.state & RESET or f.state & _FIN_BOTH == _FIN_BOTH)
            tls = f.key[0] == self.recorder.tls_zone()
            if not tls and f.proto == "tls" and self.recorder.twin(f) is not None:
                return []  # its plaintext was captured: shown as those entries
        readable = self._readable(locs)
        cap = self.body_cap if body_cap is None else body_cap
        cur = FlowCursor(num, cap, tls, names=self.recorder.names)
        cur.feed(self.reader.read(readable))
        if ended and len(readable) == len(locs):  # else its tail is still in the writer's buffer
            cur.finish()
        return cur.take()

    def wire_twin(self, num: int) -> dict[str, Any] | None:
        """The ciphertext twin of TLS plaintext flow ``num``: its flow number, interface,
        packets and bytes, and what its hellos say (SNI, ALPN, versions). None when the wire
        connection was not captured."""
        with self.lock:
            f = self.recorder.index.by_num.get(num)
            twin = self.recorder.twin(f) if f is not None else None
            if twin is None:
                return None
            info: dict[str, Any] = {
                "flow": twin.num,
                "iface": self.recorder.sources[twin.source].name,
                "packets": twin.c_pkts + twin.s_pkts,
                "bytes": twin.c_bytes + twin.s_bytes,
            }
            client = (twin.client, twin.cport)
            locs = twin.locs[:24].tolist()
        heads = [bytearray(), bytearray()]
        decode = PacketDecoder().decode
        for ts_ns, linktype, data, _sid, _orig in self.reader.read(self._readable(locs)):
            seg = decode(linktype, data, ts_ns)
            if seg is not None and seg[8]:
                side = 0 if (seg[0], seg[1]) == client else 1
                if len(heads[side]) < MAX_HELLO:
                    heads[side] += seg[8]
        for side, name in ((0, "client_hello"), (1, "server_hello")):
            hello = parse_hello(bytes(heads[side]))
            if hello:
                info[name] = hello
        return info

    def wire_twin_exists(self, num: int) -> bool:
        with self.lock:
            f = self.recorder.index.by_num.get(num)
            return f is not None and self.recorder.twin(f) is not None

    def _is_tls(self, num: int) -> bool:
        with self.lock:
            f = self.recorder.index.by_num.get(num)
            return f is not None and f.key[0] == self.recorder.tls_zone()

    def known_flows(self) -> set[int]:
        with self.lock:
            return set(self.recorder.index.by_num)

    def stream(self, num: int, cap: int = 1 << 20) -> tuple[list[tuple[int, bytes]], int]:
        """The reassembled bytes of flow ``num`` as ``(direction, bytes)`` chunks in the order
        they were delivered (0 = client), at most ``cap`` bytes; and the bytes left out (gaps
        and what is past the cap)."""
        with self.lock:
            f = self.recorder.index.by_num.get(num)
            if f is None:
                return [], 0
            locs = f.locs.tolist()
        recorder = _Recorder(cap)
        table = FlowTable(lambda proto, midstream, ts: recorder, lambda flow, events: None)
        decode = PacketDecoder().decode
        for ts_ns, linktype, data, _sid, _orig in sorted(
            self.reader.read(self._readable(locs)), key=lambda p: p[0]
        ):
            seg = decode(linktype, data, ts_ns)
            if seg is not None:
                src, sport, dst, dport, seqno, ack, flags, _win, payload = seg
                table.segment(ts_ns / 1e9, src, sport, dst, dport, seqno, ack, flags, payload)
        table.finish()
        return recorder.chunks, recorder.left_out

    def get_entry(self, entry_id: str, body_cap: int | None = None) -> Entry | None:
        """The full entry ``FLOW:N``, or None; its bodies kept up to ``body_cap`` bytes (None:
        the engine's cap, the one the summaries were made with).

        A long connection is not dissected from its first byte: when the entry's summary is
        cached, dissection starts at the flow's last checkpoint (a client packet after server
        data, where a request starts) at or before the entry's time and stops as soon as the
        entry is complete. HTTP/2 (its header tables) and connections without checkpoints are
        dissected whole."""
        key = parse_id(entry_id)
        if key is None:
            return None
        found = self._get_entry(entry_id, *key, body_cap)
        if found is not None and found["tls"]:
            found["wire"] = self.wire_twin(key[0])
        return found

    def connection(self, num: int) -> dict[str, Any] | None:
        """What the index knows of connection ``num`` (GetEntry's answer carries it beside the
        entry, for the Connection tab): the interface of its first packet, packets and bytes
        (on the wire) sent by each end, its first and last packet times, its state, and its
        handshake when its first packets are stored (times from SYN to SYN-ACK and from SYN-ACK
        to ACK; None: joined midway)."""
        with self.lock:
            f = self.recorder.index.by_num.get(num)
            if f is None:
                return None
            sources = self.recorder.sources
            fins = f.state & (FIN_CLIENT | FIN_SERVER)
            info: dict[str, Any] = {
                "flow": f.num,
                "iface": sources[f.source].name if f.source < len(sources) else None,
                "packets": {"client": f.c_pkts, "server": f.s_pkts},
                "bytes": {"client": f.c_bytes, "server": f.s_bytes},
                "first_ts": f.first_ns / 1e9,
                "last_ts": f.last_ns / 1e9,
                "state": "reset" if f.state & RESET else "closed" if fins == _FIN_BOTH
                else "closed by the client" if fins == FIN_CLIENT
                else "closed by the server" if fins else "open",
            }  # fmt: skip
            client = (f.client, f.cport)
            locs = f.locs[:8].tolist()
        times: list[int] = []  # SYN, SYN-ACK, ACK
        decode = PacketDecoder().decode
        for ts_ns, linktype, data, _sid, _orig in self.reader.read(self._readable(locs)):
            seg = decode(linktype, data, ts_ns)
            if seg is None:
                continue
            flags = seg[6] & (SYN | ACK)
            from_client = (seg[0], seg[1]) == client
            if (flags, from_client) == _HANDSHAKE[len(times)]:
                times.append(ts_ns)
                if len(times) == 3:
                    break
        info["handshake"] = None if not times else {
            "syn_ts": times[0] / 1e9,
            "syn_ack_ms": round((times[1] - times[0]) / 1e6, 3) if len(times) > 1 else None,
            "ack_ms": round((times[2] - times[1]) / 1e6, 3) if len(times) > 2 else None,
        }  # fmt: skip
        return info

    def _get_entry(self, entry_id: str, num: int, n: int, body_cap: int | None) -> Entry | None:
        cached = self._cache.get(num)
        if cached is not None and cached.entries is not None and 0 < n <= len(cached.entries):
            want = cached.entries[n - 1]
            found = self._from_checkpoint(num, want, _resp_at(cached.resp, n), body_cap)
            if found is not None:
                found["id"] = entry_id
                self.stats["checkpoint_reads"] += 1
                return found
        self.stats["full_reads"] += 1
        for e in self.dissect_whole(num, body_cap):
            if e["id"] == entry_id:
                return e
        return None

    def _from_checkpoint(
        self, num: int, want: Entry, redis_resp: int = 2, body_cap: int | None = None
    ) -> Entry | None:
        with self.lock:
            f = self.recorder.index.by_num.get(num)
            if f is None or not f.checkpoints or f.proto in _NO_MIDSTREAM:
                return None
            cps = list(zip(f.checkpoints[0::2], f.checkpoints[1::2], strict=True))
            locs = f.locs.tolist()
        ts_ns = round(want["ts"] * 1e9)
        # the last checkpoint at or before the entry (checkpoints are in time order)
        start = -1
        lo, hi = 0, len(cps)
        while lo < hi:
            mid = (lo + hi) // 2
            seg, off = cps[mid]
            got = self.reader.read([(seg << 32) | off])
            if got and got[0][0] <= ts_ns:
                start = (seg << 32) | off
                lo = mid + 1
            else:
                hi = mid
        if start < 0:
            return None
        rest = self._readable(locs[bisect.bisect_left(locs, start) :])
        cap = self.body_cap if body_cap is None else body_cap
        cur = FlowCursor(num, cap, self._is_tls(num), redis_resp, self.recorder.names)

        def same(e: Entry) -> bool:
            # everything the summary holds but the id must agree, or this start was wrong
            # (a pipelined response still in flight at the checkpoint, say): then go whole.
            # Compared as summaries: the cached one keeps a slim ``request`` (path, Host).
            got = summary(e)
            return all(got.get(k) == v for k, v in want.items() if k != "id")

        def pick(entries: list[Entry]) -> tuple[bool, Entry | None]:
            """(done, the wanted entry or None). Several entries can share a timestamp (a
            pipeline in one segment): all of them are looked at before giving up."""
            for e in entries:
                if e["ts"] < want["ts"]:
                    continue
                if same(e):
                    return True, e
                if e["ts"] > want["ts"]:
                    return True, None
            return False, None

        for i in range(0, len(rest), 64):
            cur.feed(self.reader.read(rest[i : i + 64]))
            done, found = pick(cur.take())
            if done:
                return found
        cur.finish()
        return pick(cur.take())[1]

    def flows_of(self, flt: Filter | None, ids: Iterable[str]) -> set[int]:
        """The flow numbers holding the selected entries (ids, or all entries matching flt)."""
        nums = {k[0] for k in map(parse_id, ids) if k is not None}
        if flt is not None:
            for batch in self.backlog(flt):
                nums.update(k[0] for k in (parse_id(e["id"]) for e in batch) if k is not None)
        return nums

    def export(self, nums: set[int]) -> Iterator[bytes]:
        """pcapng bytes of every stored packet of the flows ``nums``, in time order, each once;
        one interface block per capture source used."""
        ips: set[str] = set()
        t0, t1 = 1 << 63, 0
        with self.lock:
            locs: list[int] = []
            for num in nums:
                f = self.recorder.index.by_num.get(num)
                if f is not None:
                    locs += f.locs.tolist()
                    ips.update((format_ip(f.client), format_ip(f.server)))
                    t0, t1 = min(t0, f.first_ns), max(t1, f.last_ns)
        locs.sort()
        blocks: list[tuple[int, int, int, int]] = []  # ts, loc, source id, block length
        for i in range(0, len(locs), 4096):
            blocks += self.reader.blocks(self._readable(locs[i : i + 4096]))
        blocks.sort()
        names = self.recorder.names
        if names is None or not ips:
            yield pcapng.section_header("exported by shark-tui", "shark-tui")
        else:
            # the pod history of these connections' addresses travels with them (`open` reads
            # it back) and their names as a name resolution block (Wireshark shows them)
            history = podmap.history_comments(names.to_records(ips, t0, t1))
            yield pcapng.section_header("exported by shark-tui", "shark-tui", history)
            seen = names.names(ips, t0, t1)
            if seen:
                yield podmap.nrb_block(seen)
        # The stored blocks go out as they are (their flow comment included), only their
        # interface id rewritten: no packet is decoded or encoded again.
        ifaces: dict[int, bytes] = {}
        chunk = bytearray()
        u32 = _U32.pack
        for _ts, loc, sid, blen in blocks:
            iface = ifaces.get(sid)
            if iface is None:
                iface = ifaces[sid] = u32(len(ifaces))
                src = self.recorder.sources[sid]
                chunk += pcapng.interface_description(
                    src.linktype, src.snaplen, src.name, src.description
                )
            m = self.reader.mapped(loc >> 32)
            if m is None:
                continue
            off = loc & 0xFFFFFFFF
            chunk += m[off : off + 8]
            chunk += iface
            chunk += m[off + 12 : off + blen]
            if len(chunk) >= 1 << 20:
                yield bytes(chunk)
                chunk = bytearray()
        if chunk:
            yield bytes(chunk)
        self.last_export_packets = len(blocks)
        self.stats["exported_packets"] += len(blocks)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.reader.close()
