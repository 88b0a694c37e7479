"""The daemon ↔ client wire protocol, sans-IO: frames and messages, no sockets.

A frame is ``[u8 type][u32 big-endian length][msgpack payload]``; the payload is a msgpack map
decoded into the message class registered for the type (msgspec: typed, fast, never pickle).
Fields a peer does not know are ignored and fields it leaves out take their defaults, so either
side can grow a message; a type a peer does not know is skipped (`FrameDecoder` hands it out as
`Unknown`, which the receiver ignores).

Both sides open with `Hello`; the client's carries the token. Requests are imperative and carry
``req`` (the client's number for it) which the replies repeat; pushes are past tense.

`FrameDecoder.feed(bytes) -> list[Message]` raises `ProtocolError` for anything that means the
peer does not speak this protocol or is hostile — a frame over ``max_frame`` (checked from the
5-byte header, before any payload is buffered), a payload that is not the message its type
says — and the connection is then closed; nothing else is affected.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Final

import msgspec

__all__ = [
    "MAX_FRAME",
    "VERSION",
    "CaughtUp",
    "EntriesAppended",
    "EntryDetail",
    "Export",
    "ExportChunk",
    "ExportDone",
    "Failed",
    "FrameDecoder",
    "GetEntry",
    "GetStream",
    "Hello",
    "Message",
    "Pause",
    "ProtocolError",
    "SetTargets",
    "Stats",
    "StatsChanged",
    "StreamData",
    "Subscribe",
    "TlsStatus",
    "TlsStatusReport",
    "Unknown",
    "Unsubscribe",
    "encode",
    "parse_address",
]

VERSION: Final = 1
MAX_FRAME: Final = 16 * 1024 * 1024
"""Largest payload accepted by default (an export chunk or an entry batch stays far below)."""

_HEAD: Final = struct.Struct(">BI")


class ProtocolError(Exception):
    """The peer broke the protocol: close the connection (one line says why)."""


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    TYPE: ClassVar[int] = 0


# -- both ways ----------------------------------------------------------------------------------


class Hello(Message):
    """First frame each way. The client's carries the token; the server's, its node name."""

    TYPE: ClassVar[int] = 1
    version: int = VERSION
    capabilities: list[str] = []
    token: str = ""
    node: str = ""


# -- client → daemon (imperative) ---------------------------------------------------------------


class Subscribe(Message):
    """Stream the entries matching ``filter``: the stored ones (the newest ``limit`` first when
    ``newest_first``), then `CaughtUp`, then live ones. ``since``: only entries at or after this
    time (seconds since the epoch; 0 = everything stored). ``detail``: full entries instead of
    summaries. A new Subscribe replaces the previous one on the connection."""

    TYPE: ClassVar[int] = 16
    req: int = 0
    filter: str = ""
    since: float = 0.0
    detail: bool = False
    newest_first: bool = False
    limit: int = 0  # 0 = no limit on the backlog
    follow: bool = True  # keep streaming live entries after CaughtUp


class Unsubscribe(Message):
    TYPE: ClassVar[int] = 17
    req: int = 0


class GetEntry(Message):
    """The full entry ``id``, answered with `EntryDetail`. ``max_body``: keep bodies (and the
    other values a dissector caps) up to this many bytes when dissecting it again — the
    detail pane's "show full"; 0 = the daemon's own cap, the one its summaries were made with.
    The daemon sends at most its own limit (`server.MAX_ASKED_BODY`)."""

    TYPE: ClassVar[int] = 18
    req: int = 0
    id: str = ""
    max_body: int = 0


class Export(Message):
    """pcapng of every packet of the connections holding the selected entries."""

    TYPE: ClassVar[int] = 19
    req: int = 0
    filter: str = ""
    ids: list[str] = []


class GetStream(Message):
    """The reassembled bytes of the connection holding entry ``id`` (the Raw view)."""

    TYPE: ClassVar[int] = 22
    req: int = 0
    id: str = ""
    max_bytes: int = 1 << 20


class Stats(Message):
    TYPE: ClassVar[int] = 20
    req: int = 0


class TlsStatus(Message):
    TYPE: ClassVar[int] = 21
    req: int = 0


class Pause(Message):
    """Pause capture (``paused``: the sources stay open and count what they see, nothing is
    stored), or resume it. Answered with `StatsChanged` (the status after the change, which
    says ``paused``; every client watching stats gets it too), or `Failed` from a daemon that
    does not capture (one serving a file)."""

    TYPE: ClassVar[int] = 23
    req: int = 0
    paused: bool = True


# -- daemon → client (past tense) ---------------------------------------------------------------


class EntriesAppended(Message):
    """A batch of entries (summaries, or full entries with ``detail``) for subscription ``req``;
    ``backlog`` is true while they come from what was stored before the subscription."""

    TYPE: ClassVar[int] = 32
    req: int = 0
    entries: list[dict[str, Any]] = []
    backlog: bool = False


class CaughtUp(Message):
    TYPE: ClassVar[int] = 33
    req: int = 0
    entries: int = 0  # how many backlog entries were sent


class StatsChanged(Message):
    TYPE: ClassVar[int] = 34
    req: int = 0
    stats: dict[str, Any] = {}


class EntryDetail(Message):
    """The entry `GetEntry` asked for (what ``dissect --json`` prints of it), and beside it
    ``connection``: what the daemon's flow index knows of its TCP connection (interface,
    packets and bytes per end, first/last packet, state, handshake; `QueryEngine.connection`).
    Empty from a daemon that does not send it."""

    TYPE: ClassVar[int] = 35
    req: int = 0
    entry: dict[str, Any] = {}
    connection: dict[str, Any] = {}


class ExportChunk(Message):
    TYPE: ClassVar[int] = 36
    req: int = 0
    data: bytes = b""


class ExportDone(Message):
    TYPE: ClassVar[int] = 37
    req: int = 0
    packets: int = 0
    connections: int = 0


class TlsStatusReport(Message):
    """``processes``: one dict each (pid, comm, exe, libs, visible, reason, tls_connections…);
    ``report``: the rest (enabled, kernel_path, libraries, lost, synthetic counters)."""

    TYPE: ClassVar[int] = 38
    req: int = 0
    processes: list[dict[str, Any]] = []
    report: dict[str, Any] = {}


class StreamData(Message):
    """``chunks``: ``[direction, bytes]`` in delivery order (0 = the client); ``left_out``:
    bytes lost to the capture or past ``max_bytes``."""

    TYPE: ClassVar[int] = 40
    req: int = 0
    chunks: list[tuple[int, bytes]] = []
    left_out: int = 0


class Failed(Message):
    """A request could not be served (bad filter, unknown entry...); ``fatal``: the daemon
    closes the connection after this (bad token, wrong version)."""

    TYPE: ClassVar[int] = 39
    req: int = 0
    error: str = ""
    fatal: bool = False


class SetTargets(Message):
    """Which pods a cluster-aware daemon captures (``pods``: a regex on pod names, "" every
    pod; ``namespaces``: empty, every namespace), changed live. Answered with `StatsChanged`
    (``targets`` in it), or `Failed` from a daemon without ``--kube`` or for a bad regex."""

    TYPE: ClassVar[int] = 24
    req: int = 0
    pods: str = ""
    namespaces: list[str] = []


class Unknown(Message):
    """A frame of a type this side does not know: ignore it."""

    type: int = 0


_TYPES: Final[dict[int, type[Message]]] = {
    cls.TYPE: cls
    for cls in (
        Hello, Subscribe, Unsubscribe, GetEntry, GetStream, Export, Stats, TlsStatus, Pause,
        SetTargets, EntriesAppended, CaughtUp, StatsChanged, EntryDetail, ExportChunk, ExportDone,
        TlsStatusReport, StreamData, Failed,
    )
}  # fmt: skip
_DECODERS: Final = {t: msgspec.msgpack.Decoder(cls) for t, cls in _TYPES.items()}
_encoder = msgspec.msgpack.Encoder()


def parse_address(text: str) -> tuple[str, int] | str:
    """A daemon's address, to listen on or to reach: ``HOST:PORT`` (``[v6]:PORT``) or
    ``unix:PATH``; raise ValueError with a reason."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a path")
        return path
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT or unix:PATH, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def encode(msg: Message) -> bytes:
    """One frame holding ``msg``."""
    payload = _encoder.encode(msg)
    return _HEAD.pack(msg.TYPE, len(payload)) + payload


class FrameDecoder:
    """Bytes in, messages out. See the module docstring."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self.frames = 0
        self.unknown = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes, limit: int = 0) -> list[Message]:
        """The messages completed by ``data``; with ``limit``, at most that many (the rest
        stays buffered: ``feed(b"")`` continues), so a server can raise `max_frame` once the
        first frame — the Hello — has been checked."""
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        n = len(buf)
        while n - pos >= 5 and not (limit and len(out) >= limit):
            mtype, length = _HEAD.unpack_from(buf, pos)
            if length > self.max_frame:
                raise ProtocolError(
                    f"frame of {length} bytes (type {mtype}) over the {self.max_frame}-byte limit"
                )
            end = pos + 5 + length
            if end > n:
                break
            payload = bytes(buf[pos + 5 : end])
            pos = end
            self.frames += 1
            dec = _DECODERS.get(mtype)
            if dec is None:
                self.unknown += 1
                out.append(Unknown(type=mtype))
                continue
            try:
                out.append(dec.decode(payload))
            except (
                msgspec.DecodeError,
                msgspec.ValidationError,
                RecursionError,  # nesting deeper than msgspec's limit
                UnicodeDecodeError,  # a string that is not UTF-8, where the type says Any
            ) as exc:
                raise ProtocolError(f"bad {_TYPES[mtype].__name__} frame: {exc}") from None
        if pos:
            del buf[:pos]
        return out
