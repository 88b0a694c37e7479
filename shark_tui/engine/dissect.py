"""Capture file in, entries out: the pipeline behind ``shark-tui dissect``.

packets (capfile) -> TCP segments (packet) -> connections and in-order bytes (tcp) ->
dissectors (proto) -> exchanges -> entries (DESIGN.md's schema) -> filter -> ``ts`` order.

Entries leave in ``ts`` order: each is held until no connection can still produce an earlier
one (the oldest pending exchange of any connection is the watermark).
"""

from __future__ import annotations

import gc
import heapq
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from functools import partial
from typing import IO, Any

from shark_tui.engine.capfile import CaptureFile, Item
from shark_tui.engine.packet import PacketDecoder, format_ip
from shark_tui.engine.podmap import PodMap, from_comments
from shark_tui.engine.tcp import TLS_ZONE, Flow, FlowTable
from shark_tui.proto.amqp import AmqpDissector
from shark_tui.proto.base import (
    CLIENT,
    PENDING_TIMEOUT,
    SERVER,
    Desynced,
    Dissector,
    Event,
    Exchange,
    ExchangeCompleted,
    Truncated,
)
from shark_tui.proto.bodies import render_body
from shark_tui.proto.http import HttpDissector
from shark_tui.proto.http2.dissector import Http2Dissector
from shark_tui.proto.kafka import KafkaDissector
from shark_tui.proto.redis import RedisDissector
from shark_tui.proto.tcp import TcpDissector
from shark_tui.proto.urls import query_pairs

try:  # the C filter of undissected connections' segments (shark_tui/engine/_native.c)
    from shark_tui.engine._native import IgnoreSet as _IgnoreSet
except ImportError:  # pragma: no cover - an install without a compiler
    _IgnoreSet = None  # type: ignore[assignment, misc]

try:  # HTTP/1 connections written straight as entry JSON (shark_tui/engine/_http1entries.c)
    from shark_tui.engine._http1entries import Http1Entries as _Http1Entries
    from shark_tui.engine._http1entries import configure as _configure_http1
except ImportError:  # pragma: no cover - an install without a compiler
    _Http1Entries = None  # type: ignore[assignment, misc]
else:
    _configure_http1(render_body, query_pairs, ExchangeCompleted, PENDING_TIMEOUT)

Entry = dict[str, Any]
#: Receives each entry in order: the entry itself, or its rendered bytes when ``render`` is set.
EntrySink = Callable[[Any], None]
#: The part of an HTTP/1 entry line between its id and its ts, in msgspec's form.
_HTTP1_MID = (
    b'","proto":"http","src":{"ip":"%s","port":%d,"pod":null,"ns":null},'
    b'"dst":{"ip":"%s","port":%d,"pod":null,"ns":null},"ts":'
)
#: Completes the head of an entry line the C HTTP/1 path wrote: (line, ts, flow, n).
LineFramer = Callable[[bytearray, float, int, int], None]

#: Capture seconds between sweeps (expiring exchanges, forgetting closed connections).
SWEEP_INTERVAL = 5.0
#: Entries held for ordering before the watermark is recomputed early.
HOLD_RECHECK = 2_000
#: Entries held at most; past it the oldest go out even if an earlier one may still come.
MAX_HOLD = 500_000
#: Bytes of held entries at most (estimated from their sizes, bodies capped): one streaming call
#: that lasts the whole capture must not make the run hold every later entry.
MAX_HOLD_BYTES = 64 * 1024 * 1024
#: Default cap on the body bytes kept per message.
DEFAULT_BODY_CAP = 64 * 1024


def _zones(interfaces: list[Any]) -> list[int]:
    """The flow-table zone of each interface: TLS plaintext (the daemon's ``tls`` interface)
    stays apart from its ciphertext."""
    return [TLS_ZONE if i.name == "tls" else 0 for i in interfaces]


def tune_gc() -> None:
    """Make the cyclic garbage collector rare: dissection allocates millions of short-lived,
    acyclic lists and dicts, and with the default thresholds the collector's rescans of a
    large live heap cost ~40% of the run (measured with py-spy on the bench capture)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


class EntryBuilder:
    """Turns a connection's exchanges into entries with their identity and endpoints.

    With ``names`` (a cluster's pod history), each end is named by the pod (or service) that
    held its address at the entry's time: ``pod`` and ``ns``, and ``service`` when known (the
    service a pod's port backs; for a ClusterIP, the service itself and no pod)."""

    def __init__(self, names: PodMap | None = None) -> None:
        self.names = names

    def _endpoint(self, ip: bytes, port: int, ts: float) -> dict[str, Any]:
        text = format_ip(ip)
        end: dict[str, Any] = {"ip": text, "port": port, "pod": None, "ns": None}
        if self.names is not None:
            ref = self.names.resolve(text, round(ts * 1e9), port)
            if ref is not None:
                end["ns"] = ref.ns
                if ref.kind == "pod":
                    end["pod"] = ref.name
                if ref.service:
                    end["service"] = ref.service
        return end

    def build(self, flow: Flow, ex: Exchange) -> Entry:
        flow.n += 1
        cip, cport = flow.endpoint(CLIENT)
        sip, sport = flow.endpoint(SERVER)
        entry: Entry = {
            "id": f"{flow.num}:{flow.n}",
            "proto": ex.proto,
            "src": self._endpoint(cip, cport, ex.ts),
            "dst": self._endpoint(sip, sport, ex.ts),
            "ts": ex.ts,
            "latency_ms": None if ex.latency_ms is None else round(ex.latency_ms, 3),
            "method": ex.method,
            "summary": ex.summary,
            "status": ex.status,
            "request_size": ex.request_size,
            "response_size": ex.response_size,
            "tls": flow.tls,
            "request": ex.request,
            "response": ex.response,
            "error": ex.error,
        }
        if ex.extra:
            entry.update(ex.extra)
        return entry


def make_dissector_factory(
    body_cap: int, redis_resp: int = 2
) -> Callable[[str, bool, float], Dissector]:
    """``redis_resp``: the RESP version a Redis connection's replies are in at first (3 when
    dissection starts past the connection's ``HELLO 3``)."""
    kafka_topic_ids: dict[str, str] = {}  # Kafka topic ids are cluster-wide: shared

    def make(proto: str, midstream: bool, start_ts: float) -> Dissector:
        if proto == "http":
            return HttpDissector(midstream=midstream, body_cap=body_cap)
        if proto in ("http2", "grpc", "graphql"):
            return Http2Dissector(midstream=midstream, body_cap=body_cap)
        if proto == "kafka":
            return KafkaDissector(midstream=midstream, body_cap=body_cap, topic_ids=kafka_topic_ids)
        if proto == "redis":
            return RedisDissector(midstream=midstream, body_cap=body_cap, resp=redis_resp)
        if proto == "amqp":
            return AmqpDissector(midstream=midstream, body_cap=body_cap)
        guess = None if proto == "tcp" else proto
        return TcpDissector(start_ts=start_ts, guess=guess, midstream=midstream)

    return make


class Dissection:
    """One run over a capture. ``out`` receives entries in ``ts`` order."""

    def __init__(
        self,
        out: EntrySink,
        *,
        entry_filter: Callable[[Entry], bool] | None = None,
        flow_filter: Callable[[str, int, str, int], bool] | None = None,
        decode_ports: dict[int, str] | None = None,
        body_cap: int = DEFAULT_BODY_CAP,
        names: PodMap | None = None,
    ) -> None:
        self.out = out  # where entries go, in order (settable)
        #: When set, entries are rendered (to bytes) as soon as they are final, and ``out``
        #: receives the rendered bytes: held entries then cost exactly their output size.
        self.render: Callable[[Entry, bytearray], None] | None = None
        #: True when ``render`` writes msgspec's JSON of the entry and a newline: then (with
        #: neither an entry filter nor pod names in use) the HTTP/1 connections whose start was
        #: captured are written by the C path (`_http1entries`), which hands each entry over as
        #: the very line ``render`` would have made, behind ``line_head`` bytes that ``frame``
        #: (if set) fills in, as ``render`` does.
        self.json_lines = False
        self.line_head = 0
        self.frame: LineFramer | None = None
        self._http1_fallback: Callable[[], Dissector] | None = None
        self._filter = entry_filter
        self._flow_filter = flow_filter
        self._builder = EntryBuilder(names)
        self.warnings: list[str] = []  # one line each, for the user (not counters)
        # (ts, flow, n, entry): ties in ts go by flow number, then exchange number, so that the
        # order is the same however the work is split (see `parallel.dissect_file`).
        self._held: list[tuple[float, int, int, Any]] = []
        self._held_bytes = 0
        self._recheck_bytes = MAX_HOLD_BYTES // 8
        #: With fast connections (`run_file`), the capture time of the last record `_run` handled
        #: before the batch being read: entries the read completes may be later than entries
        #: the batch's other records will complete, so only older ones may go out early.
        self._clock: float | None = None
        self._spill: IO[bytes] | None = None  # held entries moved out of memory
        self._spill_end = 0
        self._body_cap = body_cap
        self.partition: tuple[int, int] | None = None  # (index, count): the flows to dissect
        self.decoder = PacketDecoder()
        self.table = FlowTable(
            make_dissector_factory(body_cap),
            self._on_events,
            decode_ports=decode_ports,
            select=self._select,
            owns=self._owns,
            fast_http1=self._fast_http1,
        )
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "packets",
                "entries",
                "entries_filtered_out",
                "desyncs",
                "truncations",
                "forced_order",
                "spilled",
                "spill_failed",
                "wire_twins",
            ),
            0,
        )

    def _owns(self, flow: Flow) -> bool:
        """This run's share of the connections (all of them without a partition). Kafka
        connections all go to the first worker: a Fetch on one connection names its topics
        from a Metadata response seen on another."""
        if self.partition is None:
            return True
        index, count = self.partition
        if flow.proto == "kafka":
            return index == 0
        return flow.num % count == index

    def _select(self, flow: Flow) -> bool:
        if self._flow_filter is None:
            return True
        a0, p0, a1, p1 = flow.addr
        return self._flow_filter(format_ip(a0), p0, format_ip(a1), p1)

    def _fast_http1(self, flow: Flow) -> Dissector | None:
        """The C path's dissector for an HTTP/1 connection, when this run can take its lines."""
        if (
            _Http1Entries is None
            or not self.json_lines
            or self.render is None
            or self._filter is not None
            or self._builder.names is not None
        ):
            return None
        cip, cport = flow.endpoint(CLIENT)
        sip, sport = flow.endpoint(SERVER)
        # msgspec's JSON of EntryBuilder's endpoints without pod names (addresses need no
        # escaping; tests/engine/test_http1entries.py checks it against msgspec)
        mid = _HTTP1_MID % (format_ip(cip).encode(), cport, format_ip(sip).encode(), sport)
        if self._http1_fallback is None:
            self._http1_fallback = partial(HttpDissector, midstream=False, body_cap=self._body_cap)
        return _Http1Entries(
            self._http1_fallback,
            b'{"id":"%d:' % flow.num,
            mid,
            flow.tls,
            self._body_cap,
            self.line_head,
        )

    def _hold(self, ts: float, flow: Flow, item: Any) -> None:
        heapq.heappush(self._held, (ts, flow.num, flow.n, item))
        self._held_bytes += self._weight(item)
        if self._held_bytes > self._recheck_bytes:
            # Big entries: look at the watermark now rather than every N entries.
            watermark = self.table.oldest_pending()
            if self._clock is not None:
                watermark = self._clock if watermark is None else min(watermark, self._clock)
            self._release(watermark)
            self._recheck_bytes = self._held_bytes + MAX_HOLD_BYTES // 8

    def _on_events(self, flow: Flow, events: list[Event]) -> None:
        for ev in events:
            if type(ev) is tuple:  # (ts, line): an entry the C HTTP/1 path wrote
                flow.n += 1
                ts, line = ev
                if self.frame is not None:
                    self.frame(line, ts, flow.num, flow.n)
                self._hold(ts, flow, line)
            elif isinstance(ev, ExchangeCompleted):
                ex = ev.exchange
                if ex.extra.get("guess") == "tls" and self.table.twin(flow, TLS_ZONE):
                    # its plaintext is in the file too: the connection shows as those entries
                    self.stats["wire_twins"] += 1
                    continue
                entry = self._builder.build(flow, ex)
                if self._filter is not None and not self._filter(entry):
                    self.stats["entries_filtered_out"] += 1
                    continue
                item: Any = entry
                if self.render is not None:
                    item = bytearray()
                    self.render(entry, item)
                self._hold(entry["ts"], flow, item)
            elif isinstance(ev, Desynced):
                self.stats["desyncs"] += 1
            elif isinstance(ev, Truncated):
                self.stats["truncations"] += 1

    def _release(self, watermark: float | None) -> None:
        held, out = self._held, self.out
        while held and (watermark is None or held[0][0] < watermark):
            self.stats["entries"] += 1
            out(self._take(heapq.heappop(held)[3]))
        if not held and self._spill is not None:
            self._spill.seek(0)
            self._spill.truncate()
            self._spill_end = 0
        if self._held_bytes > MAX_HOLD_BYTES // 2 and self.render is not None:
            self._spill_held()
        while held and (len(held) > MAX_HOLD or self._held_bytes > MAX_HOLD_BYTES // 2):
            self.stats["forced_order"] += 1
            self.stats["entries"] += 1
            out(self._take(heapq.heappop(held)[3]))

    def _spill_held(self) -> None:
        """Move the rendered entries held in memory to a temporary file, keeping their order:
        a long exchange holding the order back costs disk, not memory."""
        try:
            if self._spill is None:
                self._spill = tempfile.TemporaryFile(prefix="shark-tui-hold-")  # noqa: SIM115
            spill = self._spill
            spill.seek(self._spill_end)
            moved: list[tuple[float, int, int, Any]] = []
            for ts, flow, n, item in self._held:
                if isinstance(item, bytearray):
                    spill.write(item)
                    item = (self._spill_end, len(item))
                    self._spill_end += item[1]
                moved.append((ts, flow, n, item))
            spill.flush()
        except OSError:
            self.stats["spill_failed"] += 1
            return
        self._held = moved  # same keys in the same places: still a heap
        self._held_bytes = 0  # what stays in memory per entry is bounded by MAX_HOLD instead
        self.stats["spilled"] += 1

    def _take(self, item: Any) -> Any:
        """A held item as it goes out (read back from the spill file when it was moved there)."""
        if isinstance(item, tuple):
            assert self._spill is not None
            offset, length = item
            return bytearray(os.pread(self._spill.fileno(), length, offset))
        self._held_bytes -= self._weight(item)
        return item

    def _weight(self, entry: Entry | bytearray) -> int:
        """What a held entry costs: its rendered size, or about its bodies (capped) and a fixed
        part."""
        if isinstance(entry, bytearray):
            return 100 + len(entry)
        cap = self._body_cap
        return 2048 + min(entry["request_size"] or 0, cap) + min(entry["response_size"] or 0, cap)

    def _adopt_names(self, packets: object) -> None:
        """A capture file that carries a pod history (a shark-tui export) names its ends
        with it, unless the run was given one."""
        reader = getattr(packets, "reader", None)
        if self._builder.names is None and reader is not None:
            names, problem = from_comments(reader.comments)
            self._builder.names = names
            if problem is not None:
                self.warnings.append(problem)

    def run(self, packets: Iterable[Item], interfaces: list[Any]) -> None:
        """Dissect ``packets``: (ts_ns, iface, data, orig_len) tuples, or packets the capture
        reader already decoded (`capfile.Decoded`).

        ``interfaces[iface].linktype`` gives each packet's link type; the list may grow while
        ``packets`` is consumed (a pcapng interface block in mid-file).
        """
        self._run((packets,), interfaces, packets)

    def run_file(self, capture: CaptureFile) -> None:
        """Dissect a capture file: its records come decoded from the reader where they can
        (`CaptureFile.item_batches`), and with the C module, the plain segments of connections
        nothing is dissected of here (another worker's, ruled out by a filter) are not even
        made into records (`_native.IgnoreSet`): the same entries, the same counters, less
        work."""
        ignored = None
        if _IgnoreSet is not None:
            ignored = self.table.ignored = _IgnoreSet()
            ignored.set_sink(self._on_events)
            self.table.fast = True
            self._clock = -math.inf
        try:
            self._run(capture.item_batches(ignored), capture.interfaces, capture)
        finally:
            if ignored is not None:
                ignored.set_sink(None)  # (it refers to this run: no cycle left behind)

    def _run(
        self, batches: Iterable[Iterable[Item]], interfaces: list[Any], source: object
    ) -> None:
        decode = self.decoder.decode
        segment = self.table.segment
        table = self.table
        ignored = table.ignored
        # A connection the table puts in the set in the middle of a batch: the set handles its
        # next records of that batch too, as the record loops will from the next one on.
        take = ignored.take if ignored is not None and table.fast else None
        zones: list[int] = []
        next_sweep: float | None = None
        recheck = HOLD_RECHECK
        count = 0
        ts = 0.0
        for batch in batches:
            for item in batch:
                count += 1
                if len(item) == 4:
                    ts_ns, iface, data, _orig_len = item
                    seg = decode(interfaces[iface].linktype, data, ts_ns)
                    if seg is None:
                        continue
                    src, sport, dst, dport, seq, ack, flags, _win, payload = seg
                else:
                    ts_ns, iface, src, sport, dst, dport, seq, ack, flags, payload = item
                if iface >= len(zones):  # an interface described since (pcapng, mid-file)
                    zones = _zones(interfaces)
                ts = ts_ns / 1e9
                if take is None or len(item) == 4 or not take(item, zones[iface]):
                    segment(ts, src, sport, dst, dport, seq, ack, flags, payload, zones[iface])
                if next_sweep is None:
                    next_sweep = ts + SWEEP_INTERVAL
                    self._adopt_names(source)
                elif ts >= next_sweep or len(self._held) > recheck:
                    if ts >= next_sweep:
                        table.sweep(ts)
                        next_sweep = ts + SWEEP_INTERVAL
                    oldest = table.oldest_pending()
                    self._release(ts if oldest is None else min(oldest, ts))
                    recheck = len(self._held) + HOLD_RECHECK
            if ignored is not None:  # the next batch is read with this clock and these zones
                if len(zones) != len(interfaces):
                    zones = _zones(interfaces)
                ignored.arm(zones, next_sweep, SWEEP_INTERVAL)
            if self._clock is not None:
                self._clock = ts
        if ignored is not None:  # what the ignore set took out or handled was read too
            count += ignored.dropped + ignored.taken
            table.stats["segments"] += ignored.dropped + ignored.taken + ignored.looped
        self.stats["packets"] += count
        table.finish()
        self._release(None)
        if self._spill is not None:
            self._spill.close()
            self._spill = None
