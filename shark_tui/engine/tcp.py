"""TCP connections: per-direction reassembly and the hand-off of in-order bytes to dissectors.

``FlowTable.segment`` takes one decoded TCP segment at a time (in capture order) and drives, per
connection, a dissector chosen by protocol inference. What each direction delivers is in-order:
out-of-order segments wait in a capped buffer, retransmissions and overlaps are trimmed, and
bytes the capture never saw are reported to the dissector as gaps — when the peer acknowledged
past the hole, when the buffer is full, or when the connection ends.

Flow numbers follow the order of each connection's first packet, so they are the same for the
same input whatever the filter or the chunking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from shark_tui.proto.base import CLIENT, SERVER, Dissector, Event, Exchange, ExchangeCompleted
from shark_tui.proto.infer import PORT_HINTS, guess

if TYPE_CHECKING:
    from shark_tui.engine._native import IgnoreSet

FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
_MASK = 0xFFFFFFFF
_HALF = 0x80000000

#: Out-of-order bytes kept per direction before the oldest hole is declared a gap.
MAX_OOO_BYTES = 4 * 1024 * 1024
#: Out-of-order segments kept per direction.
MAX_OOO_SEGMENTS = 1024
#: Payload kept per connection while its protocol is not yet known.
MAX_UNDECIDED_BYTES = 64 * 1024
#: Bytes of each side's start that protocol inference looks at.
GUESS_BYTES = 4096
#: Connections tracked at once; past it the least recently seen are ended.
MAX_FLOWS = 1_000_000
#: A closed connection is forgotten this long (capture time) after it closed.
CLOSED_LINGER = 120.0


def _rel(a: int, b: int) -> int:
    """``a - b`` in 32-bit sequence space, as a signed number."""
    return ((a - b + _HALF) & _MASK) - _HALF


class Half:
    """One direction of a connection: what it sent and what is still waiting."""

    __slots__ = (
        "acked",
        "bytes",
        "closed",
        "fin",
        "first_ts",
        "isn",
        "next",
        "ooo",
        "ooo_bytes",
        "packets",
    )

    def __init__(self) -> None:
        self.next: int | None = None  # next sequence number expected in order
        self.isn: int | None = None  # initial sequence number when the SYN was seen
        self.ooo: dict[int, bytes] = {}  # seq -> payload, ahead of `next`
        self.ooo_bytes = 0
        self.acked: int | None = None  # highest ACK the peer sent for this direction
        self.fin: int | None = None  # sequence number of the FIN
        self.closed = False
        self.bytes = 0
        self.packets = 0
        self.first_ts: float | None = None


class Flow:
    """One TCP connection. Side 0 sent the first packet seen; ``client`` says which side opened."""

    __slots__ = (
        "addr",
        "client",
        "closed_at",
        "dissector",
        "fast",
        "first_ts",
        "halves",
        "heads",
        "last_ts",
        "n",
        "num",
        "proto",
        "proto_hint",
        "selected",
        "syn_seen",
        "tls",
        "undecided",
        "undecided_bytes",
        "zone",
    )

    def __init__(self, num: int, addr: tuple[bytes, int, bytes, int], ts: float) -> None:
        self.num = num
        self.addr = addr  # (ip0, port0, ip1, port1): side 0 then side 1
        self.halves = (Half(), Half())
        self.client = -1  # 0 or 1 once known
        self.syn_seen = False
        self.proto: str | None = None
        self.proto_hint: str | None = None  # the protocol, while which end is client is unknown
        self.dissector: Dissector | None = None
        self.undecided: list[tuple[int, int, Any, float]] = []  # (op, side, arg, ts) to replay
        self.undecided_bytes = 0
        #: The first bytes of each side while the protocol is undecided (for inference).
        self.heads: tuple[bytearray, bytearray] | None = None
        self.first_ts = ts
        self.last_ts = ts
        self.closed_at: float | None = None
        self.n = 0  # exchanges emitted
        self.selected = True  # False when a filter ruled the whole connection out
        self.zone = 0  # an address space of its own (TLS plaintext): not the wire's 4-tuple
        self.tls = False  # its bytes are TLS plaintext from the eBPF probes
        #: In the caller's ignore set as a fast connection: its plain in-order segments go to
        #: its dissector without reaching `FlowTable.segment` (`_native.IgnoreSet.add_fast`).
        self.fast = False

    def endpoint(self, role: int) -> tuple[bytes, int]:
        """(ip, port) of the CLIENT or SERVER end."""
        side = self.client ^ role if self.client >= 0 else role
        return (self.addr[0], self.addr[1]) if side == 0 else (self.addr[2], self.addr[3])


_FEED, _GAP, _CLOSE = 0, 1, 2
TLS_ZONE: Final = 1  # the zone of TLS plaintext connections


def _key(a: bytes, ap: int, b: bytes, bp: int, zone: int) -> tuple[Any, ...]:
    return (a, ap, b, bp) if not zone else (a, ap, b, bp, zone)


#: (proto, midstream, start_ts) -> a dissector for one connection.
DissectorFactory = Callable[[str, bool, float], Dissector]
EventSink = Callable[[Flow, list[Event]], None]
FlowFilter = Callable[[Flow], bool]


class FlowTable:
    """All connections of one capture. Feed it segments in capture order; ``finish`` at the end."""

    def __init__(
        self,
        make_dissector: DissectorFactory,
        sink: EventSink,
        *,
        decode_ports: dict[int, str] | None = None,
        select: FlowFilter | None = None,
        owns: FlowFilter | None = None,
        ignored: IgnoreSet | None = None,
        fast_http1: Callable[[Flow], Dissector | None] | None = None,
    ) -> None:
        self._make = make_dissector
        #: Asked first for an HTTP/1 connection whose start was seen: a dissector of the C path
        #: (`dissect.Dissection._fast_http1`), or None.
        self._fast_http1 = fast_http1
        self._sink = sink
        self._decode_ports = decode_ports or {}
        self._select = select
        #: Asked once a connection's protocol is known: False leaves it undissected (another
        #: worker process dissects it).
        self._owns = owns
        #: A `_native.IgnoreSet` the caller filters its batches with: each connection that
        #: stops being dissected goes in (its plain segments then never reach `segment`, which
        #: would only count them), and leaves it when the table ends it otherwise than the set
        #: does itself (eviction, the end of the input). With ``fast`` as well, a connection
        #: whose both directions are in order goes in the other way (`_fast_check`).
        self.ignored = ignored
        self.fast = False
        self._flows: dict[tuple[Any, ...], tuple[Flow, int]] = {}
        self.active: dict[int, Flow] = {}  # num -> open flow
        self._closed: list[Flow] = []
        self.next_num = 1
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "segments",
                "flows",
                "retransmitted",
                "overlaps",
                "out_of_order",
                "gaps",
                "gap_bytes",
                "ooo_dropped",
                "port_reuse",
                "after_close",
                "flows_evicted",
            ),
            0,
        )

    # -- the hot path ---------------------------------------------------------------------------

    def segment(
        self,
        ts: float,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes,
        zone: int = 0,
    ) -> None:
        """One TCP segment. ``zone`` non-zero keeps the connection apart from one with the same
        4-tuple in zone 0 (TLS plaintext beside its ciphertext)."""
        stats = self.stats
        stats["segments"] += 1
        found = self._flows.get(
            (src, sport, dst, dport) if not zone else (src, sport, dst, dport, zone)
        )
        if found is None:
            flow, side = self._new_flow(ts, src, sport, dst, dport, zone), 0
        else:
            flow, side = found
            if flow.fast:  # the set let go of it at this record: the table's again
                self._unfast(flow)
            if flow.closed_at is not None or (
                flags & (SYN | ACK) == SYN
                and flow.halves[side].isn is not None
                and flow.halves[side].isn != seq
            ):
                if flags & (SYN | ACK) != SYN:
                    stats["after_close"] += 1
                    return
                # A new connection on the same 4-tuple.
                stats["port_reuse"] += 1
                if flow.closed_at is None:
                    self._end(flow, ts)
                flow, side = self._new_flow(ts, src, sport, dst, dport, zone), 0
        flow.last_ts = ts
        half = flow.halves[side]
        half.packets += 1
        if not flow.selected and not flags & (SYN | FIN | RST):
            # Not dissected here (ruled out by a filter, or another worker's share): only what
            # opens or closes it matters — its FIN closes a half at once, whatever came before.
            return

        if flags & SYN:
            if half.isn is None:
                half.isn = seq
                half.next = (seq + 1) & _MASK
                flow.syn_seen = True
                if flow.client < 0:
                    flow.client = side if not flags & ACK else side ^ 1
            seq = (seq + 1) & _MASK  # data on a SYN (fast open) starts after it
        if flags & ACK:
            other = flow.halves[side ^ 1]
            if other.next is not None and (other.acked is None or _rel(ack, other.acked) > 0):
                other.acked = ack
                if other.ooo or (other.fin is not None and not other.closed):
                    self._resolve_holes(flow, side ^ 1, ts)

        if payload and flow.selected:
            nxt = half.next
            if nxt is None:
                half.next = nxt = seq
            rel = _rel(seq, nxt)
            if rel == 0:
                half.next = (nxt + len(payload)) & _MASK
                self._deliver(flow, side, payload, ts)
                if half.ooo:
                    self._drain(flow, side, ts)
            elif rel < 0:
                if rel + len(payload) <= 0:
                    stats["retransmitted"] += 1
                else:
                    stats["overlaps"] += 1
                    payload = payload[-rel:]
                    half.next = (nxt + len(payload)) & _MASK
                    self._deliver(flow, side, payload, ts)
                    if half.ooo:
                        self._drain(flow, side, ts)
            else:
                stats["out_of_order"] += 1
                old = half.ooo.get(seq)
                if old is None or len(old) < len(payload):
                    half.ooo[seq] = payload
                    half.ooo_bytes += len(payload) - (len(old) if old else 0)
                if half.ooo_bytes > MAX_OOO_BYTES or len(half.ooo) > MAX_OOO_SEGMENTS:
                    stats["ooo_dropped"] += 1
                    self._skip_hole(flow, side, ts)
                elif half.acked is not None and _rel(half.acked, nxt) > 0:
                    self._resolve_holes(flow, side, ts)
        elif payload:
            if half.next is None:
                half.next = seq
            half.next = (seq + len(payload)) & _MASK if _rel(seq, half.next) >= 0 else half.next

        if flags & (FIN | RST):
            if flags & RST:
                self._end(flow, ts)
                return
            half.fin = (seq + len(payload)) & _MASK
            if half.next is None or _rel(half.fin, half.next) <= 0 or not flow.selected:
                self._close_half(flow, side, ts)
        elif self.fast and flow.dissector is not None:
            self._fast_check(flow)

    def _fast_check(self, flow: Flow) -> None:
        """Hand the connection's plain in-order segments to the caller's set while both its
        directions are in order, with nothing waiting, open, and dissected here."""
        h0, h1 = flow.halves
        if (
            not flow.fast
            and flow.selected
            and flow.closed_at is None
            and flow.client >= 0
            and self.ignored is not None
            and h0.next is not None
            and h1.next is not None
            and not h0.ooo
            and not h1.ooo
            and h0.fin is None
            and h1.fin is None
        ):
            self.ignored.add_fast(flow)
            flow.fast = True

    def _unfast(self, flow: Flow) -> None:
        flow.fast = False
        if self.ignored is not None:
            a0, p0, a1, p1 = flow.addr
            self.ignored.discard(a0, p0, a1, p1, flow.zone)

    # -- reassembly -------------------------------------------------------------------------------

    def _drain(self, flow: Flow, side: int, ts: float) -> None:
        """Deliver buffered segments that are now in order."""
        half = flow.halves[side]
        ooo = half.ooo
        while ooo:
            nxt = half.next
            assert nxt is not None
            data = ooo.pop(nxt, None)
            if data is None:
                # Anything starting before `next` overlaps what was delivered: trim or drop it.
                for seq in list(ooo):
                    rel = _rel(seq, nxt)
                    if rel < 0:
                        piece = ooo.pop(seq)
                        half.ooo_bytes -= len(piece)
                        if rel + len(piece) > 0 and data is None:
                            data = piece[-rel:]
                if data is None:
                    break
                self.stats["overlaps"] += 1
            else:
                half.ooo_bytes -= len(data)
            half.next = (nxt + len(data)) & _MASK
            self._deliver(flow, side, data, ts)
        if half.fin is not None and not half.closed and _rel(half.fin, half.next or 0) <= 0:
            self._close_half(flow, side, ts)

    def _resolve_holes(self, flow: Flow, side: int, ts: float) -> None:
        """The peer acknowledged bytes we never saw: report them as a gap and move on."""
        half = flow.halves[side]
        while half.ooo and half.acked is not None and half.next is not None:
            first = min(half.ooo, key=lambda s: _rel(s, half.next or 0))
            if _rel(first, half.next) <= 0 or _rel(half.acked, first) < 0:
                break
            self._skip_hole(flow, side, ts)
        if (
            not half.ooo
            and half.fin is not None
            and half.acked is not None
            and _rel(half.acked, half.fin) > 0
        ):
            self._skip_to_end(flow, side, ts)

    def _skip_to_end(self, flow: Flow, side: int, ts: float) -> None:
        """Bytes before the FIN (or acknowledged) that were never captured: a gap, then close."""
        half = flow.halves[side]
        if half.next is None or half.closed:
            return
        end = half.fin if half.fin is not None else half.acked
        if end is not None:
            size = _rel(end, half.next)
            if size > 0:
                self.stats["gaps"] += 1
                self.stats["gap_bytes"] += size
                self._gap(flow, side, size, ts)
                half.next = end
        if half.fin is not None:
            self._close_half(flow, side, ts)

    def _skip_hole(self, flow: Flow, side: int, ts: float) -> None:
        """Declare the bytes before the earliest buffered segment lost, then drain."""
        half = flow.halves[side]
        if not half.ooo or half.next is None:
            return
        nxt = half.next
        first = min(half.ooo, key=lambda s: _rel(s, nxt))
        size = _rel(first, nxt)
        if size > 0:
            self.stats["gaps"] += 1
            self.stats["gap_bytes"] += size
            self._gap(flow, side, size, ts)
            half.next = first
        self._drain(flow, side, ts)

    def _close_half(self, flow: Flow, side: int, ts: float) -> None:
        half = flow.halves[side]
        if half.closed:
            return
        half.closed = True
        self._dispatch(flow, _CLOSE, side, None, ts)
        if flow.halves[side ^ 1].closed:
            self._end(flow, ts)

    # -- dissector hand-off -----------------------------------------------------------------------

    def _deliver(self, flow: Flow, side: int, data: bytes, ts: float) -> None:
        half = flow.halves[side]
        half.bytes += len(data)
        if half.first_ts is None:
            half.first_ts = ts
        d = flow.dissector
        if d is not None:
            events = d.feed(flow.client ^ side, data, ts)
            if events:
                self._sink(flow, events)
        else:
            self._dispatch(flow, _FEED, side, data, ts)

    def _gap(self, flow: Flow, side: int, size: int, ts: float) -> None:
        self._dispatch(flow, _GAP, side, size, ts)

    def _dispatch(self, flow: Flow, op: int, side: int, arg: Any, ts: float) -> None:
        if not flow.selected:
            return
        if flow.dissector is None:
            flow.undecided.append((op, side, arg, ts))
            if op == _FEED:
                flow.undecided_bytes += len(arg)
                self._decide(flow, side, arg)
            elif op == _CLOSE:
                self._decide(flow, side, None, force=True)
            if flow.dissector is None and flow.undecided_bytes > MAX_UNDECIDED_BYTES:
                self._decide(flow, side, None, force=True)
            return
        self._apply(flow, flow.dissector, op, side, arg, ts)

    def _apply(self, flow: Flow, d: Dissector, op: int, side: int, arg: Any, ts: float) -> None:
        role = flow.client ^ side
        if op == _FEED:
            events = d.feed(role, arg, ts)
        elif op == _GAP:
            events = d.gap(role, arg, ts)
        else:
            events = d.close(role, ts)
        if events:
            self._sink(flow, events)

    def _decide(self, flow: Flow, side: int, data: bytes | None, *, force: bool = False) -> None:
        """Choose the connection's protocol and client side, then replay what was held."""
        port0, port1 = flow.addr[1], flow.addr[3]
        proto = self._decode_ports.get(port1) or self._decode_ports.get(port0)
        if proto is not None and flow.client < 0:
            flow.client = 0 if port1 in self._decode_ports else 1
        if proto is None and data is not None:
            # The start of this direction so far (a first segment may be a single byte), and
            # for a connection joined mid-way, this segment alone (it may start a message).
            if flow.heads is None:
                flow.heads = (bytearray(), bytearray())
            head = flow.heads[side]
            earlier = len(head) > 0
            g = None
            if len(head) < GUESS_BYTES:  # (bounded work per segment, whatever their number)
                head += data[: GUESS_BYTES - len(head)]
                g = guess(bytes(head))
            if g is None and not flow.syn_seen and earlier:
                g = guess(data)
            if g is not None:
                if g.role in (CLIENT, SERVER):
                    proto = g.proto
                    if flow.client < 0:
                        flow.client = side if g.role == CLIENT else side ^ 1
                elif flow.client >= 0:
                    proto = g.proto
                else:
                    # The protocol is known but not which end is the client (HTTP/2 frames met
                    # mid-connection): wait for bytes that tell, up to the undecided cap.
                    flow.proto_hint = g.proto
        if proto is None and force:
            proto = flow.proto_hint
        if proto is None:
            if not force:
                return
            # Ports hint only when the start was not captured: from a start, bytes that match
            # nothing are not that protocol, whatever the port says.
            hint = None if flow.syn_seen else PORT_HINTS.get(port1) or PORT_HINTS.get(port0)
            proto = hint or "tcp"
        if flow.client < 0:
            flow.client = _client_by_ports(port0, port1)
        flow.proto = proto
        flow.heads = None
        if self._owns is not None and not self._owns(flow):
            flow.selected = False
            self._ignore(flow)
            flow.undecided, flow.undecided_bytes = [], 0
            return
        d = None
        if proto == "http" and flow.syn_seen and self._fast_http1 is not None:
            d = self._fast_http1(flow)
        if d is None:
            d = self._make(proto, not flow.syn_seen, flow.first_ts)
        flow.dissector = d
        held, flow.undecided, flow.undecided_bytes = flow.undecided, [], 0
        for op, s, arg, ts in held:
            self._apply(flow, d, op, s, arg, ts)

    # -- life cycle -------------------------------------------------------------------------------

    def _new_flow(
        self, ts: float, src: bytes, sport: int, dst: bytes, dport: int, zone: int = 0
    ) -> Flow:
        if len(self.active) >= MAX_FLOWS:
            oldest = min(self.active.values(), key=self._last_seen)
            self.stats["flows_evicted"] += 1
            self._end(oldest, ts)
        flow = Flow(self.next_num, (src, sport, dst, dport), ts)
        self.next_num += 1
        self.stats["flows"] += 1
        flow.zone = zone
        flow.tls = zone == TLS_ZONE
        self._flows[_key(src, sport, dst, dport, zone)] = (flow, 0)
        self._flows[_key(dst, dport, src, sport, zone)] = (flow, 1)
        self.active[flow.num] = flow
        self._ignore(flow, False)  # the 4-tuple may have been an undissected connection's
        if self._select is not None:
            flow.selected = self._select(flow)
            if not flow.selected:
                self._ignore(flow)
        return flow

    def _end(self, flow: Flow, ts: float) -> None:
        """The connection is over: flush what waits, let the dissector emit the rest."""
        if flow.closed_at is not None:
            return
        if flow.fast:
            self._unfast(flow)
        for side in (0, 1):
            half = flow.halves[side]
            while half.ooo:
                self._skip_hole(flow, side, ts)
            if flow.closed_at is not None:
                return  # the flush closed both halves, which ended the flow
            self._skip_to_end(flow, side, ts)
            if flow.closed_at is not None:
                return
        if flow.selected and flow.dissector is None:
            self._decide(flow, 0, None, force=True)  # may leave it to another worker
        if flow.selected and flow.dissector is not None:
            events = flow.dissector.finish(ts)
            if events:
                self._sink(flow, events)
            if flow.n == 0 and flow.proto != "tcp":
                self._unrecognised(flow)
        flow.closed_at = ts
        flow.dissector = None
        self.active.pop(flow.num, None)
        if not flow.selected:
            self._ignore(flow, False)
        self._closed.append(flow)

    def _unrecognised(self, flow: Flow) -> None:
        """A connection that carried bytes but gave no entry (its dissector lost the thread from
        the start: a snaplen-cut first request, garbage after a good preface) is still a row,
        as ``tcp`` with the protocol it looked like (DESIGN: never silently dropped)."""
        client = flow.client if flow.client >= 0 else 0
        c, s = flow.halves[client].bytes, flow.halves[1 - client].bytes
        if not c and not s:
            return
        exchange = Exchange(
            proto="tcp",
            ts=flow.first_ts,
            summary=f"{c} bytes ⇄ {s} bytes",
            request_size=c,
            response_size=s,
            error=f"no complete {flow.proto} exchange",
            extra={"guess": flow.proto} if flow.proto else {},
        )
        self._sink(flow, [ExchangeCompleted(exchange=exchange)])

    def _ignore(self, flow: Flow, on: bool = True) -> None:
        """Put the connection in the caller's ignore set (``on``), or take it out."""
        if self.ignored is not None:
            a0, p0, a1, p1 = flow.addr
            (self.ignored.add if on else self.ignored.discard)(a0, p0, a1, p1, flow.zone)

    def _last_seen(self, flow: Flow) -> float:
        """When the connection was last seen, counting the segments the caller's ignore set
        took out before they reached the table."""
        if self.ignored is None or flow.selected:
            return flow.last_ts
        a0, p0, a1, p1 = flow.addr
        ns = self.ignored.last_seen(a0, p0, a1, p1, flow.zone)
        return flow.last_ts if ns is None else max(flow.last_ts, ns / 1e9)

    def twin(self, flow: Flow, zone: int) -> Flow | None:
        """The connection with ``flow``'s 4-tuple in another ``zone`` (TLS plaintext beside
        its ciphertext), if one was seen."""
        a0, p0, a1, p1 = flow.addr
        found = self._flows.get(_key(a0, p0, a1, p1, zone))
        return found[0] if found is not None else None

    def sweep(self, now: float) -> None:
        """Expire exchanges waiting past their timeout; forget connections closed long ago."""
        for flow in list(self.active.values()):
            d = flow.dissector
            if d is not None:
                events = d.expire(now)
                if events:
                    self._sink(flow, events)
        keep: list[Flow] = []
        for flow in self._closed:
            if flow.closed_at is not None and now - flow.closed_at > CLOSED_LINGER:
                a0, p0, a1, p1 = flow.addr
                z = flow.zone
                for key in (_key(a0, p0, a1, p1, z), _key(a1, p1, a0, p0, z)):
                    found = self._flows.get(key)
                    if found is not None and found[0] is flow:
                        del self._flows[key]
            else:
                keep.append(flow)
        self._closed = keep

    def oldest_pending(self) -> float | None:
        """The earliest ``ts`` an entry still to come can have (None: nothing pending)."""
        oldest: float | None = None
        for flow in self.active.values():
            if not flow.selected:
                continue
            d = flow.dissector
            if d is None:
                t: float | None = flow.first_ts
            else:
                t = d.oldest_pending()
            if t is not None and (oldest is None or t < oldest):
                oldest = t
        return oldest

    def finish(self, ts: float | None = None) -> None:
        """End every connection (end of the capture)."""
        for flow in list(self.active.values()):
            self._end(flow, ts if ts is not None else flow.last_ts)


def _client_by_ports(port0: int, port1: int) -> int:
    """Which side is the client when nothing else tells: the one on the higher, ephemeral port."""
    if port1 in PORT_HINTS and port0 not in PORT_HINTS:
        return 0
    if port0 in PORT_HINTS and port1 not in PORT_HINTS:
        return 1
    return 0 if port0 >= port1 else 1


__all__ = ["ACK", "CLIENT", "FIN", "PSH", "RST", "SERVER", "SYN", "Flow", "FlowTable"]
