"""The segment store: captured packets into rotating pcapng files, with the flow index beside.

`Recorder` is what the daemon's writer thread drives (it is single-threaded by design; the
capture threads only hand it batches): packets in, `seg-NNNNNNNN.pcapng` files out, one
interface block per capture source, original lengths kept, nanosecond timestamps. Rotation by
size and by time; retention by total bytes and by age, oldest segment first, so the store never
exceeds its byte budget by more than the segment being written. The buffer is written to the
file at least every `FLUSH_INTERVAL_NS` (the daemon calls `tick`), so a `kill -9` loses at most
that much, and a segment cut mid-block is trimmed back to its last complete block on restart.

On start, `recover` reads the segments already there and rebuilds the flow index from them,
flow numbers included (see `flowindex`), then writing continues in a new segment.

The same packet seen on two capture sources (a pod-to-pod call crosses both host-side veths of
a node's bridge, or a pod's eth0 and its host-side veth) is stored once: a packet whose TCP/IP
identity was stored from another source during the last `DEDUP_WINDOW_NS` is counted as a
duplicate and dropped. A retransmission is seen again on the *same* source and is kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from shark_tui import __version__
from shark_tui.engine import pcapng
from shark_tui.engine.flowindex import Flow, FlowIndex
from shark_tui.engine.packet import PacketDecoder
from shark_tui.engine.podmap import PodMap

__all__ = [
    "DEDUP_WINDOW_NS",
    "FLUSH_INTERVAL_NS",
    "Recorder",
    "SegmentInfo",
    "SourceInfo",
    "default_segment_bytes",
    "default_segment_ns",
    "segment_path",
]

FLUSH_INTERVAL_NS: Final = 200_000_000
"""Buffered packets reach the file at least this often (the contract says once a second;
queries read only what is in the file, so this is also the live view's delay)."""
FLUSH_BYTES: Final = 1 << 20
"""...or as soon as this much is buffered."""
DEDUP_WINDOW_NS: Final = 500_000_000
"""How long a stored packet's identity is remembered to recognise its copy on another source."""
DEDUP_MAX_KEYS: Final = 1 << 18
"""Identities remembered per half-window; more rotates the window early (counted)."""
MAX_FLOWS: Final = 1_000_000
"""Connections indexed at most; beyond it the oldest segment goes early (counted)."""

_SEGMENT_RE: Final = re.compile(r"seg-(\d{8})\.pcapng$")
_META: Final = struct.Struct("=IIII")  # pcapy-ng next_batch: sec, usec, offset, caplen
_IP4: Final = struct.Struct("!BxHHHxB2x4s4s")  # vihl, total, id, frag, proto, src, dst
_TCP: Final = struct.Struct("!HHIIHH")  # sport, dport, seq, ack, offset+flags, window
_EPB_HEAD: Final = struct.Struct("<IIIIIII")
_U32: Final = struct.Struct("<I")
_PAD: Final = (b"", b"\0\0\0", b"\0\0", b"\0")
_FLOW_COMMENT: Final = pcapng.FLOW_COMMENT
_NS: Final = 1_000_000_000


def segment_path(directory: str, seq: int) -> str:
    return os.path.join(directory, f"seg-{seq:08d}.pcapng")


def default_segment_bytes(max_bytes: int) -> int:
    """A sixteenth of the budget, between 1 MiB and 128 MiB (never above a quarter of it)."""
    return max(min(max_bytes // 4, 1 << 20), min(max_bytes // 16, 128 << 20))


def default_segment_ns(max_age_ns: int) -> int:
    """A twelfth of the retention age, between 1 s and 5 min."""
    return max(_NS, min(max_age_ns // 12, 300 * _NS))


@dataclass(slots=True)
class SegmentInfo:
    seq: int
    path: str
    size: int = 0
    packets: int = 0
    first_ns: int = 0
    last_ns: int = 0
    opened_wall_ns: int = 0  # when it was started (for rotation by time)
    sources: list[int] = field(default_factory=list)  # interface id in the file -> source id


@dataclass(slots=True)
class SourceInfo:
    """A capture source as the store knows it (the capture side keeps the handles)."""

    name: str  # `eth0`, or `NETNS/eth0` inside a namespace
    linktype: int
    snaplen: int
    description: str = ""
    zone: int = 0  # nonzero for loopback: its connections are private to its namespace
    packets: int = 0  # stored
    bytes: int = 0  # stored, original lengths
    duplicates: int = 0  # copies of a packet already stored from another source
    counters: dict[str, int] = field(default_factory=dict)  # from the capture side


#: The pod history's journal, beside the segments.
NAMES_FILE = "podmap.jsonl"


class Recorder:
    """Packets in, segments and the flow index out. See the module docstring."""

    def __init__(
        self,
        directory: str,
        max_bytes: int,
        max_age_ns: int,
        segment_bytes: int | None = None,
        segment_ns: int | None = None,
        clock: Callable[[], int] = time.time_ns,
        max_flows: int = MAX_FLOWS,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_age_ns = max_age_ns
        # offsets are kept in 32 bits (flowindex.Flow.locs)
        self.segment_bytes = min(segment_bytes or default_segment_bytes(max_bytes), (1 << 32) - 1)
        self.segment_ns = segment_ns or default_segment_ns(max_age_ns)
        self.max_flows = max_flows
        self.clock = clock
        self.index = FlowIndex()
        self.sources: list[SourceInfo] = []
        self._source_ids: dict[str, int] = {}
        self.segments: list[SegmentInfo] = []  # closed ones, oldest first
        self.current: SegmentInfo | None = None
        self.closed_bytes = 0
        self.stats = {
            "packets": 0,
            "bytes": 0,
            "duplicates": 0,
            "not_tcp": 0,
            "segments_deleted": 0,
            "segments_deleted_for_flows": 0,
            "dedup_early_rotations": 0,
            "flushes": 0,
            "recovered_segments": 0,
            "recovered_packets": 0,
            "trimmed_bytes": 0,
        }
        self.warnings: list[str] = []
        #: who held each address when (a cluster's pods and services), when known: entries
        #: name their ends with it; kept beside the segments (`attach_names`)
        self.names: PodMap | None = None
        self._decoder = PacketDecoder()
        self._fd = -1
        self._buf = bytearray()
        self._written = 0  # bytes of the current segment already in the file
        self._last_seq = 0  # segment numbers are never reused, even when the store emptied
        self._ifmap: dict[int, int] = {}  # source id -> interface id in the current segment
        self._last_flush = 0
        self._dedup_new: dict[object, int] = {}
        self._dedup_old: dict[object, int] = {}
        self._dedup_since = 0
        os.makedirs(directory, exist_ok=True)

    # -- sources --------------------------------------------------------------------------------

    def source(self, name: str, linktype: int, snaplen: int = 262144, description: str = "") -> int:
        """The id of the source called ``name`` (registered on first use)."""
        sid = self._source_ids.get(name)
        if sid is None:
            sid = len(self.sources)
            # Loopback and TLS plaintext are address spaces of their own: a flow there is never
            # the same connection as one with the same 4-tuple on the wire (nor a duplicate).
            own = name in ("lo", "tls") or name.endswith("/lo")
            self.sources.append(
                SourceInfo(name, linktype, snaplen, description, zone=sid + 1 if own else 0)
            )
            self._source_ids[name] = sid
        return sid

    def tls_zone(self) -> int | None:
        """The flow-index zone of the ``tls`` source (None: no TLS plaintext here)."""
        sid = self._source_ids.get("tls")
        return None if sid is None else self.sources[sid].zone

    def twin(self, f: Flow) -> Flow | None:
        """The same connection in the other world: a TLS plaintext flow's wire flow (on any
        interface), or a wire flow's plaintext flow."""
        tz = self.tls_zone()
        if tz is None:
            return None
        if f.key[0] != tz:
            zones = [tz]
        else:
            zones = sorted({0} | {s.zone for s in self.sources if s.zone and s.zone != tz})
        by_key = self.index.by_key
        for z in zones:
            for key in ((z, f.client, f.cport, f.server, f.sport),
                        (z, f.server, f.sport, f.client, f.cport)):  # fmt: skip
                t = by_key.get(key)
                if t is not None and t is not f:
                    return t
        return None

    def wire_tls_tuples(self) -> set[tuple[bytes, int, bytes, int]]:
        """Both orientations of the 4-tuple of every wire connection that looks like TLS."""
        tls = self.tls_zone()
        out: set[tuple[bytes, int, bytes, int]] = set()
        for f in self.index.by_num.values():
            if f.proto == "tls" and f.key[0] != tls:
                out.add((f.client, f.cport, f.server, f.sport))
                out.add((f.server, f.sport, f.client, f.cport))
        return out

    # -- recovery -------------------------------------------------------------------------------

    def recover(self) -> None:
        """Read the segments already in the directory: trim a cut last block, rebuild the index
        (with the flow numbers the files carry), then apply retention. Warnings go to
        ``warnings`` (one line each)."""
        found: list[tuple[int, str]] = []
        for name in os.listdir(self.directory):
            m = _SEGMENT_RE.match(name)
            if m:
                found.append((int(m.group(1)), os.path.join(self.directory, name)))
        found.sort()
        if found:
            self._last_seq = max(self._last_seq, found[-1][0])
        index = self.index
        decode = PacketDecoder().decode
        for seq, path in found:
            with open(path, "rb") as f:
                buf = f.read()
            if not buf:  # killed between opening it and its first flush: nothing was stored
                os.unlink(path)
                continue
            result = pcapng.SegmentScan([])
            info = SegmentInfo(seq, path)
            ids: list[int] = []
            for p in pcapng.scan(buf, result):
                while len(ids) < len(result.interfaces):
                    name, linktype, desc = result.interfaces[len(ids)]
                    ids.append(self.source(name, linktype, description=desc))
                sid = ids[p.iface]
                src = self.sources[sid]
                linktype = result.interfaces[p.iface][1]
                info.packets += 1
                if not info.first_ns:
                    info.first_ns = p.ts_ns
                info.last_ns = max(info.last_ns, p.ts_ns)
                src.packets += 1
                src.bytes += p.orig_len
                seg = decode(linktype, p.data, p.ts_ns)
                if seg is None:
                    continue
                number = pcapng.parse_flow_comment(p.comment) if p.comment else None
                payload = seg[8]
                index.add(
                    seg[0], seg[1], seg[2], seg[3], seg[4], seg[6], payload, 0, len(payload),
                    p.orig_len, p.ts_ns, src.zone, sid, seq, p.offset, number,
                )  # fmt: skip
            if result.problem is not None:
                if result.end == 0:
                    self.warnings.append(f"{path}: {result.problem}; not a segment, removed")
                    os.unlink(path)
                    continue
                self.warnings.append(
                    f"{path}: {result.problem}; trimmed to its last complete block "
                    f"({result.end} bytes, {info.packets} packets)"
                )
                self.stats["trimmed_bytes"] += len(buf) - result.end
                os.truncate(path, result.end)
            info.size = result.end
            info.sources = ids
            self.segments.append(info)
            self.closed_bytes += info.size
            self.stats["recovered_segments"] += 1
            self.stats["recovered_packets"] += info.packets
        self.enforce_retention()

    # -- writing --------------------------------------------------------------------------------

    def _open_segment(self) -> SegmentInfo:
        seq = self._last_seq = self._last_seq + 1
        path = segment_path(self.directory, seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        info = SegmentInfo(seq, path, opened_wall_ns=self.clock())
        self.current = info
        self._ifmap = {}
        self._buf = bytearray(
            pcapng.section_header(f"shark-tui segment {seq}", f"shark-tui {__version__}")
        )
        self._written = 0
        return info

    def _close_segment(self) -> None:
        info = self.current
        if info is None:
            return
        self.flush()
        os.close(self._fd)
        self._fd = -1
        info.size = self._written
        self.segments.append(info)
        self.closed_bytes += info.size
        self.current = None

    def _idb(self, sid: int) -> bytes:
        src = self.sources[sid]
        return pcapng.interface_description(src.linktype, src.snaplen, src.name, src.description)

    def _iface(self, sid: int) -> int:
        iface = len(self._ifmap)
        self._ifmap[sid] = iface
        self._buf += self._idb(sid)
        if self.current is not None:
            self.current.sources.append(sid)
        return iface

    def add_batch(
        self,
        sid: int,
        data: bytes,
        meta: bytes,
        exact: list[tuple[int, int]] | None = None,
    ) -> None:
        """A batch as pcapy-ng's ``next_batch`` returns it (µs timestamps, caplen = length:
        the daemon captures with the largest snaplen).

        The common case — Ethernet, IPv4 without fragments, TCP — is decoded in this loop
        straight from the batch buffer (no per-packet copy); anything else goes through
        `PacketDecoder`. This loop is the daemon's per-packet cost: keep it flat.
        """
        src = self.sources[sid]
        linktype = src.linktype
        zone = src.zone
        dedup = not zone and len(self.sources) > 1
        index_add = self.index.add
        ip4 = _IP4.unpack_from
        tcp = _TCP.unpack_from
        view = memoryview(data)
        stats = self.stats
        # the longest flow comment a packet of this batch may carry (one new number per packet)
        clen = len(pcapng.FLOW_COMMENT) + len(b"%d" % (self.index.next_num + len(meta) // 16))
        comment_room = 8 + clen + (-clen & 3)
        epb_head = _EPB_HEAD.pack
        u32 = _U32.pack
        pad = _PAD
        seg_limit = self.segment_bytes
        info = self.current
        buf = self._buf
        written = self._written
        segno = info.seq if info is not None else 0
        iface = self._ifmap.get(sid, -1) if info is not None else -1
        packets = nbytes = first_ts = last_ts = 0
        k = -1
        for sec, usec, off, caplen in _META.iter_unpack(meta):
            if exact is None:
                ts = sec * _NS + usec * 1000
                orig = caplen
            else:  # imported from a file: nanoseconds and cut packets
                k += 1
                ts, orig = exact[k]
            end = off + caplen
            # -- decode: the fast path inline, the rest through PacketDecoder
            fields = None
            if linktype == 1 and caplen >= 54 and data[off + 12] == 8 and data[off + 13] == 0:
                vihl, total, _ident, fragw, proto, ipsrc, ipdst = ip4(data, off + 14)
                ihl = (vihl & 15) << 2
                t = off + 14 + ihl
                if (
                    vihl >> 4 == 4
                    and ihl >= 20
                    and proto == 6
                    and not fragw & 0x3FFF
                    and off + 14 + total <= end
                    and t + 20 <= off + 14 + total
                ):
                    sport, dport, seqno, ackno, offfl, win = tcp(data, t)
                    pstart = t + ((offfl >> 10) & 0x3C)
                    pend = off + 14 + total
                    if t + 20 <= pstart <= pend:  # a data offset below 5 words is malformed
                        fields = (ipsrc, sport, ipdst, dport, seqno, ackno, offfl & 0xFF, win)
                        pdata = data
            if fields is None:
                seg = self._decoder.decode(linktype, data[off:end], ts)
                if seg is not None:
                    fields = seg[:8]
                    pdata = seg[8]
                    pstart = 0
                    pend = len(pdata)
            if fields is not None and dedup:
                key = (fields, pend - pstart)
                first = self._dedup_new.get(key)
                if first is None:
                    first = self._dedup_old.get(key)
                if first is None:
                    self._remember(key, sid, ts)
                elif first != sid:
                    src.duplicates += 1
                    stats["duplicates"] += 1
                    continue
            # -- write
            n = 32 + caplen + (-caplen & 3)
            # what may come along with the block: its flow comment (and, in a new segment,
            # its source's interface block, which `room` counts from the start)
            need = n + comment_room if fields is not None else n
            if iface < 0 and info is not None:
                need += len(self._idb(sid))
            if info is None or (
                (packets or info.packets) and written + len(buf) + need > seg_limit
            ):
                if info is not None:
                    self._account(info, src, packets, nbytes, first_ts, last_ts)
                    packets = nbytes = first_ts = last_ts = 0
                    self.rotate()
                info = self._open_segment()
                segno = info.seq
                buf = self._buf
                written = self._written
                iface = -1
            if iface < 0:
                iface = self._iface(sid)
            offset = written + len(buf)
            if fields is not None:
                flow, first_here = index_add(
                    fields[0], fields[1], fields[2], fields[3], fields[4], fields[6],
                    pdata, pstart, pend, orig, ts, zone, sid, segno, offset,
                )  # fmt: skip
                if first_here:
                    buf += pcapng.enhanced_packet(
                        iface, ts, data[off:end], orig, b"%s%d" % (_FLOW_COMMENT, flow.num)
                    )
                    packets += 1
                    nbytes += orig
                    last_ts = ts if ts > last_ts else last_ts
                    first_ts = first_ts or ts
                    continue
            else:
                stats["not_tcp"] += 1
            buf += epb_head(6, n, iface, ts >> 32, ts & 0xFFFFFFFF, caplen, orig)
            buf += view[off:end]
            buf += pad[caplen & 3]
            buf += u32(n)
            packets += 1
            nbytes += orig
            last_ts = ts if ts > last_ts else last_ts
            first_ts = first_ts or ts
        if info is not None:
            self._account(info, src, packets, nbytes, first_ts, last_ts)
        if len(self._buf) >= FLUSH_BYTES:
            self.flush()

    def _account(
        self, info: SegmentInfo, src: SourceInfo, packets: int, nbytes: int, first: int, last: int
    ) -> None:
        info.packets += packets
        if not info.first_ns:
            info.first_ns = first
        if last > info.last_ns:
            info.last_ns = last
        src.packets += packets
        src.bytes += nbytes
        self.stats["packets"] += packets
        self.stats["bytes"] += nbytes

    def add(self, sid: int, ts: int, data: bytes, orig_len: int) -> None:
        """Store one packet (imports, tests; the daemon uses `add_batch`)."""
        self.add_batch(
            sid, data, _META.pack(ts // _NS, ts % _NS // 1000, 0, len(data)), [(ts, orig_len)]
        )

    def _remember(self, key: object, sid: int, ts: int) -> None:
        if ts - self._dedup_since > DEDUP_WINDOW_NS or len(self._dedup_new) >= DEDUP_MAX_KEYS:
            if len(self._dedup_new) >= DEDUP_MAX_KEYS:
                self.stats["dedup_early_rotations"] += 1
            self._dedup_old = self._dedup_new
            self._dedup_new = {}
            self._dedup_since = ts
        self._dedup_new[key] = sid

    def flush(self) -> None:
        """Write what is buffered to the current segment (it then survives a kill -9)."""
        self._last_flush = self.clock()
        if not self._buf or self._fd < 0:
            return
        view = memoryview(self._buf)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._written += len(self._buf)
        if self.current is not None:
            self.current.size = self._written
        self._buf = bytearray()
        self.stats["flushes"] += 1

    def rotate(self) -> None:
        """Close the current segment (the next packet opens a new one) and apply retention."""
        self._close_segment()
        self.enforce_retention()

    def tick(self) -> None:
        """Called at least every few hundred ms: flush, rotate by time, retention by age."""
        now = self.clock()
        if self._buf and now - self._last_flush >= FLUSH_INTERVAL_NS:
            self.flush()
        cur = self.current
        if cur is not None and cur.packets and now - cur.opened_wall_ns >= self.segment_ns:
            self.rotate()
        elif self.segments and self.segments[0].last_ns < now - self.max_age_ns:
            self.enforce_retention()
        if len(self.index) > self.max_flows and (self.segments or cur is not None):
            if not self.segments:
                self.rotate()
            self._delete_oldest()
            self.stats["segments_deleted_for_flows"] += 1

    def store_bytes(self) -> int:
        cur = self.current
        return self.closed_bytes + (self._written + len(self._buf) if cur is not None else 0)

    def enforce_retention(self) -> None:
        """Delete the oldest closed segments while over the byte budget or older than the age."""
        cutoff = self.clock() - self.max_age_ns
        while self.segments and (
            self.store_bytes() > self.max_bytes or self.segments[0].last_ns < cutoff
        ):
            self._delete_oldest()

    def _delete_oldest(self) -> None:
        info = self.segments.pop(0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(info.path)
        self.closed_bytes -= info.size
        self.index.drop_segment(info.seq)
        self.stats["segments_deleted"] += 1
        if self.names is not None:
            self.names.forget_before(info.last_ns)  # nothing stored is older any more

    def attach_names(self) -> PodMap:
        """The pod history of this store, kept in ``podmap.jsonl`` beside the segments (read
        back when the store is reopened)."""
        if self.names is None:
            self.names = PodMap.resume(os.path.join(self.directory, NAMES_FILE))
        return self.names

    def close(self) -> None:
        """Flush and close the current segment (and the pod history's journal)."""
        self._close_segment()
        if self.names is not None:
            self.names.close_journal()

    def segment_list(self) -> list[SegmentInfo]:
        """Every segment, oldest first, the current one last."""
        return [*self.segments, *([self.current] if self.current is not None else [])]

    def status(self) -> dict[str, object]:
        return {
            "store_bytes": self.store_bytes(),
            "max_bytes": self.max_bytes,
            "segments": len(self.segments) + (self.current is not None),
            "flows": len(self.index),
            **self.stats,
            **self.index.stats,
            "sources": [
                {
                    "name": s.name,
                    "linktype": s.linktype,
                    "packets": s.packets,
                    "bytes": s.bytes,
                    "duplicates": s.duplicates,
                    **s.counters,
                }
                for s in self.sources
            ],
        }
