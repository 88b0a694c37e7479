"""The flow index: one compact record per TCP connection seen by the capture daemon.

The segment writer calls `FlowIndex.add` once per stored packet with the packet's decoded TCP
segment and where it went (segment number, block offset). The index keeps, per connection:
both ends (client first, when the handshake or the first bytes tell which is which), the
capture source of its first packet, first/last time, packets and bytes per direction, a
protocol guess from the first payload bytes of each direction (`proto.infer.guess` — the only
L7 look the always-on path takes), where its packets are (per segment: first and last block
offset) and *checkpoints*: block offsets of client packets that follow server data (where a new
request most likely starts), at least `CHECKPOINT_BYTES` of payload apart, from which the query
side can re-dissect one exchange without reading the connection from its first byte.

Flow numbers are assigned in the order connections first appear in the store. The segment
writer marks the first packet of each connection in each segment with the number (a pcapng
comment), and `add` accepts that number back when the index is rebuilt from the files: a
restarted daemon therefore gives every connection the number it had before.

Everything is bounded by the store: when a segment is deleted, `drop_segment` removes what
pointed into it, and a connection with nothing left goes. Loopback traffic is private to its
network namespace, so connections seen on a loopback source carry that source as a *zone* in
their key; connections seen on real links (where the same packet crosses a pod's veth and the
host side of it) share zone 0.
"""

from __future__ import annotations

import bisect
from array import array
from typing import Final

from shark_tui.engine.packet import ACK, FIN, RST, SYN
from shark_tui.proto.base import CLIENT, SERVER
from shark_tui.proto.infer import guess

__all__ = ["CHECKPOINT_BYTES", "MAX_CHECKPOINTS", "Flow", "FlowIndex"]

CHECKPOINT_BYTES: Final = 16 * 1024
"""Least payload between two checkpoints of a connection (doubled each time its list fills)."""
MAX_CHECKPOINTS: Final = 1024
"""Checkpoints kept per connection; a full list is thinned to every other one."""

# Flow.state bits
SYN_SEEN: Final = 1
FIN_CLIENT: Final = 2
FIN_SERVER: Final = 4
RESET: Final = 8
_ENDED: Final = FIN_CLIENT | FIN_SERVER | RESET


class Flow:
    """One TCP connection. ``locs`` holds where each of its packets is (``segment << 32 |
    block offset``, 8 bytes a packet, in store order); ``checkpoints`` is a flat list of
    ``segment, offset`` pairs, oldest first."""

    __slots__ = (
        "_ck_due",
        "_ck_shift",
        "_last_dir",
        "c_bytes",
        "c_pkts",
        "checkpoints",
        "client",
        "cport",
        "first_ns",
        "isn",
        "key",
        "last_ns",
        "locs",
        "num",
        "proto",
        "s_bytes",
        "s_pkts",
        "server",
        "source",
        "sport",
        "state",
    )

    def __init__(
        self, num: int, zone: int, client: bytes, cport: int, server: bytes, sport: int,
        source: int, ts: int,
    ) -> None:  # fmt: skip
        self.num = num
        self.key = (zone, client, cport, server, sport)
        self.client = client
        self.cport = cport
        self.server = server
        self.sport = sport
        self.source = source
        self.first_ns = ts
        self.last_ns = ts
        self.c_pkts = self.s_pkts = self.c_bytes = self.s_bytes = 0
        self.state = 0
        self.isn = -1
        self.proto: str | None = None  # None until a first payload was looked at
        self.locs = array("Q")  # every packet: segment << 32 | block offset, in store order
        self.checkpoints: list[int] | None = None
        self._ck_due = 0  # client payload bytes before the next checkpoint may be taken
        self._ck_shift = 0
        self._last_dir = -1

    @property
    def runs(self) -> list[int]:
        """Flat ``segment, first offset, last offset`` triples, oldest segment first."""
        out: list[int] = []
        for loc in self.locs:
            seg, off = loc >> 32, loc & 0xFFFFFFFF
            if out and out[-3] == seg:
                out[-1] = off
            else:
                out += (seg, off, off)
        return out

    def packets(self) -> list[tuple[int, int]]:
        """``(segment, block offset)`` of every stored packet of the connection, in order."""
        return [(loc >> 32, loc & 0xFFFFFFFF) for loc in self.locs]

    def as_dict(self) -> dict[str, object]:
        """A plain view for status output and tests."""
        from shark_tui.engine.packet import format_ip

        return {
            "flow": self.num,
            "client": [format_ip(self.client), self.cport],
            "server": [format_ip(self.server), self.sport],
            "source": self.source,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "packets": [self.c_pkts, self.s_pkts],
            "bytes": [self.c_bytes, self.s_bytes],
            "proto": self.proto,
            "ended": bool(self.state & _ENDED),
            "runs": [tuple(self.runs[i : i + 3]) for i in range(0, len(self.runs), 3)],
            "checkpoints": [
                tuple(self.checkpoints[i : i + 2]) for i in range(0, len(self.checkpoints), 2)
            ]
            if self.checkpoints
            else [],
        }


class FlowIndex:
    """Connections by number and by key; see the module docstring."""

    __slots__ = ("_ips", "by_key", "by_num", "dirty", "next_num", "segment_flows", "stats")

    def __init__(self) -> None:
        self.by_num: dict[int, Flow] = {}
        self.by_key: dict[tuple[int, bytes, int, bytes, int], Flow] = {}
        # segment number -> numbers of the flows with a run in it (for drop_segment)
        self.segment_flows: dict[int, list[int]] = {}
        self.next_num = 1
        #: Flows that received packets since the query side last looked (None: nobody looks).
        self.dirty: set[int] | None = None
        self._ips: dict[bytes, bytes] = {}
        self.stats = {"flows_created": 0, "flows_evicted": 0, "port_reuse": 0, "swapped": 0}

    def __len__(self) -> int:
        return len(self.by_num)

    def add(
        self,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        seqno: int,
        flags: int,
        data: bytes,
        pstart: int,
        pend: int,
        wire_len: int,
        ts: int,
        zone: int,
        source: int,
        segment: int,
        offset: int,
        number: int | None = None,
    ) -> tuple[Flow, bool]:
        """Account one stored packet; return its flow and whether it is the flow's first packet
        in ``segment`` (the writer then marks it with the flow number).

        The TCP payload is ``data[pstart:pend]`` (sliced only when the protocol guess needs
        it). ``number`` is given when rebuilding from the files: the number the packet's comment
        carries for a connection starting (or continuing) here.
        """
        f = self.by_key.get((zone, src, sport, dst, dport))
        if f is not None:
            direction = CLIENT
        else:
            f = self.by_key.get((zone, dst, dport, src, sport))
            direction = SERVER
        if number is not None:
            if f is None or f.num != number:
                known = self.by_num.get(number)
                if known is not None:  # continuing a flow whose key was taken over since
                    f = known
                    direction = CLIENT if f.client == src and f.cport == sport else SERVER
                else:
                    f = None
        elif (
            f is not None
            and flags & (SYN | ACK) == SYN
            # a SYN on an ended connection starts a new one even from its "server" end (roles
            # guessed from the ports can be wrong)
            and (f.state & _ENDED or (direction == CLIENT and f.isn >= 0 and f.isn != seqno))
        ):
            self.stats["port_reuse"] += 1
            f = None
        if f is None:
            f, direction = self._new(src, sport, dst, dport, flags, zone, source, ts, number)
        # -- counters
        f.last_ns = ts
        if self.dirty is not None:
            self.dirty.add(f.num)
        n = pend - pstart
        if direction == CLIENT:
            f.c_pkts += 1
            f.c_bytes += wire_len
        else:
            f.s_pkts += 1
            f.s_bytes += wire_len
        if flags & (SYN | FIN | RST):
            if flags & SYN:
                if not flags & ACK and direction == CLIENT:
                    f.isn = seqno
                f.state |= SYN_SEEN
            if flags & FIN:
                f.state |= FIN_CLIENT if direction == CLIENT else FIN_SERVER
            if flags & RST:
                f.state |= RESET
        if n:
            if f.proto is None and f._last_dir != direction:
                direction = self._guess(f, direction, data[pstart : min(pend, pstart + 4096)])
            if direction == CLIENT:
                if f._last_dir == SERVER and f._ck_due <= 0:
                    cps = f.checkpoints
                    if cps is None:
                        cps = f.checkpoints = []
                    cps += (segment, offset)
                    if len(cps) >= 2 * MAX_CHECKPOINTS:
                        kept: list[int] = []
                        for i in range(0, len(cps), 4):  # keep pairs 0, 2, 4, ...
                            kept += cps[i : i + 2]
                        cps[:] = kept
                        f._ck_shift += 1
                    f._ck_due = CHECKPOINT_BYTES << f._ck_shift
                f._ck_due -= n
            f._last_dir = direction
        # -- where it is
        locs = f.locs
        loc = (segment << 32) | offset
        if locs and locs[-1] >> 32 == segment:
            locs.append(loc)
            return f, False
        locs.append(loc)
        members = self.segment_flows.get(segment)
        if members is None:
            self.segment_flows[segment] = [f.num]
        else:
            members.append(f.num)
        return f, True

    def _new(
        self, src: bytes, sport: int, dst: bytes, dport: int, flags: int, zone: int,
        source: int, ts: int, number: int | None,
    ) -> tuple[Flow, int]:  # fmt: skip
        # Who is the client: the SYN's sender, the SYN-ACK's receiver, else the end with the
        # higher (ephemeral-looking) port until the first payload says otherwise.
        ips = self._ips.setdefault  # one bytes object per address: pods talk a lot
        if flags & SYN:
            client_is_src = not flags & ACK
        else:
            client_is_src = sport >= dport
        if number is None:
            number = self.next_num
        if number >= self.next_num:
            self.next_num = number + 1
        if client_is_src:
            f = Flow(number, zone, ips(src, src), sport, ips(dst, dst), dport, source, ts)
        else:
            f = Flow(number, zone, ips(dst, dst), dport, ips(src, src), sport, source, ts)
        # an older connection on these ports, keyed the other way round, is superseded
        self.by_key.pop((zone, f.server, f.sport, f.client, f.cport), None)
        self.by_key[f.key] = f
        self.by_num[number] = f
        self.stats["flows_created"] += 1
        return f, CLIENT if client_is_src else SERVER

    def _guess(self, f: Flow, direction: int, payload: bytes) -> int:
        """Guess the protocol from the first payload of a direction; fix the roles if the bytes
        say the other end is the client and no handshake said so. Returns the direction."""
        g = guess(payload)
        if g is None:
            if f._last_dir >= 0:
                f.proto = "tcp"  # both directions spoke and neither said what it is
            return direction
        f.proto = g.proto
        if g.role in (CLIENT, SERVER) and g.role != direction and not f.state & SYN_SEEN:
            self._swap(f)
            self.stats["swapped"] += 1
            return g.role
        return direction

    def _swap(self, f: Flow) -> None:
        if self.by_key.get(f.key) is f:
            del self.by_key[f.key]
        f.client, f.cport, f.server, f.sport = f.server, f.sport, f.client, f.cport
        f.c_pkts, f.s_pkts = f.s_pkts, f.c_pkts
        f.c_bytes, f.s_bytes = f.s_bytes, f.c_bytes
        f.key = (f.key[0], f.client, f.cport, f.server, f.sport)
        f._last_dir = -1 if f._last_dir < 0 else 1 - f._last_dir
        self.by_key[f.key] = f

    def drop_segment(self, segment: int) -> int:
        """Forget everything that points into ``segment`` (the oldest one, being deleted);
        return how many connections went with it."""
        gone = 0
        for num in self.segment_flows.pop(segment, ()):
            f = self.by_num.get(num)
            if f is None:
                continue
            locs = f.locs
            del locs[: bisect.bisect_left(locs, (segment + 1) << 32)]
            cps = f.checkpoints
            if cps:
                while cps and cps[0] <= segment:
                    del cps[:2]
            if not locs:
                del self.by_num[num]
                if self.by_key.get(f.key) is f:
                    del self.by_key[f.key]
                gone += 1
        self.stats["flows_evicted"] += gone
        if len(self._ips) > 4 * len(self.by_num) + 4096:
            self._ips = {}  # addresses of flows long gone: start over (flows keep theirs)
        return gone
