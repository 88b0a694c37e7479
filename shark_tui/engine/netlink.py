"""The network links of one namespace, and their changes, from rtnetlink (stdlib only).

A ``LinkWatcher`` opens its two ``NETLINK_ROUTE`` sockets in the calling thread's network
namespace and keeps watching that namespace wherever it is used from afterwards: create it
inside ``netns.switched(path)`` to watch a pod's links from any thread.

Keeping a view of the links current::

    watcher = LinkWatcher()        # subscribes first...
    links = {l.index: l for l in watcher.dump()}   # ...then lists
    # whenever watcher.fileno() is readable:
    try:
        for ev in watcher.read_events():
            if ev.removed: links.pop(ev.link.index, None)
            else: links[ev.link.index] = ev.link
    except Overflow:
        links = {l.index: l for l in watcher.dump()}

Events queued while ``dump`` ran may be older than the dump; applied in order after it they
still end in the current state, because every change is followed by its own event.

The parsing half (``parse_events``) is sans-IO; malformed or short messages are skipped, never
raised on.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_RCVBUF",
    "MAX_DATAGRAM",
    "READ_LIMIT",
    "Channel",
    "Link",
    "LinkEvent",
    "LinkWatcher",
    "Overflow",
    "attr_string",
    "iter_messages",
    "link_kind",
    "parse_attrs",
    "parse_events",
]

NETLINK_ROUTE = 0
RTMGRP_LINK = 1

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18

NLM_F_REQUEST = 0x1
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300

IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000

#: Receive buffer asked for the event socket (SO_RCVBUFFORCE as root, else capped by
#: net.core.rmem_max); the kernel drops events, and ``read_events`` raises Overflow, beyond it.
DEFAULT_RCVBUF = 1 << 20
#: Largest datagram kept; a bigger one (no link message is near this) is dropped.
MAX_DATAGRAM = 1 << 20
#: Default bound on the datagrams ``read_events`` takes per call.
READ_LIMIT = 256
_DUMP_ATTEMPTS = 3  # a dump the kernel marks interrupted (links changed meanwhile) is redone
_SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; not exported by Python's socket module

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
_RTATTR = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """One network interface of the watched namespace."""

    index: int
    name: str
    #: IFF_UP: administratively up.
    up: bool
    #: IFF_RUNNING or IFF_LOWER_UP: operationally up / carrier present.
    running: bool
    #: IFF_LOOPBACK.
    loopback: bool
    #: IFLA_INFO_KIND: "veth", "bridge", "dummy", ...; "" for a physical or plain device.
    kind: str
    #: IFLA_MASTER: index of the bridge/bond this link is enslaved to, 0 if none.
    master: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkEvent:
    """A link appeared or changed (``removed`` False, RTM_NEWLINK) or went away (RTM_DELLINK)."""

    link: Link
    removed: bool


class Overflow(Exception):
    """The kernel dropped link events (ENOBUFS: the event socket's buffer was full).

    The caller's view of the links is stale: call ``dump()`` again. Events read in the call
    that raised are discarded too (the dump supersedes them); the watcher stays usable.
    """


def parse_events(data: bytes | bytearray | memoryview) -> list[LinkEvent]:
    """The link events in one netlink datagram (sans-IO).

    Skips messages of other types, AF_BRIDGE port messages (an AF_BRIDGE RTM_DELLINK means
    "left its bridge", not "removed"), and malformed ones; stops at a broken message header,
    after which nothing can be trusted. Never raises on content.
    """
    events: list[LinkEvent] = []
    for mtype, _flags, _seq, payload in iter_messages(memoryview(data)):
        if mtype in (RTM_NEWLINK, RTM_DELLINK):
            link = _link(payload)
            if link is not None:
                events.append(LinkEvent(link=link, removed=mtype == RTM_DELLINK))
    return events


class LinkWatcher:
    """Lists and watches the links of the network namespace it was created in.

    Two sockets: one subscribed to RTMGRP_LINK (non-blocking, ``fileno``, ``read_events``) and
    one for ``dump`` requests, so dump replies never mix with events and ``dump`` may run in
    another thread than ``read_events`` (one ``dump`` at a time). Both are opened here, so both
    stay in this thread's current namespace. Raises OSError if the sockets cannot be opened.
    """

    def __init__(self, *, rcvbuf: int = DEFAULT_RCVBUF, timeout: float = 5.0) -> None:
        """``rcvbuf``: event socket buffer in bytes; ``timeout``: seconds ``dump`` waits for
        each reply datagram before raising TimeoutError."""
        self._events = Channel(RTMGRP_LINK)
        try:
            self._requests = Channel(0)
        except BaseException:
            self._events.close()
            raise
        self._events.sock.setblocking(False)
        self._requests.sock.settimeout(timeout)
        _set_rcvbuf(self._events.sock, rcvbuf)
        self._seq = 0

    def fileno(self) -> int:
        """The event socket, readable when ``read_events`` has something to return."""
        return self._events.sock.fileno()

    def read_events(self, limit: int = READ_LIMIT) -> list[LinkEvent]:
        """The link events queued now, without blocking; [] when there are none.

        Takes at most ``limit`` datagrams (the kernel sends each link notification in a datagram
        of its own, so at most ``limit`` events); the socket stays readable if more wait.
        Raises Overflow if the kernel dropped events since the last call.
        """
        events: list[LinkEvent] = []
        for _ in range(limit):
            try:
                data = self._events.recv()
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    raise Overflow("link events were dropped (ENOBUFS): dump() again") from None
                raise
            if data is not None:
                events.extend(parse_events(data))
        return events

    def dump(self) -> list[Link]:
        """Every link of the namespace now, by index.

        A dump the kernel marks interrupted (links changed while it ran) is redone up to
        3 times, then returned as it is (the events that follow fix it up). Raises OSError for
        an error reply and TimeoutError if the kernel stops answering.
        """
        links: dict[int, Link] = {}
        for _ in range(_DUMP_ATTEMPTS):
            links, interrupted = self._dump_once()
            if not interrupted:
                break
        return [links[i] for i in sorted(links)]

    def close(self) -> None:
        """Close both sockets (idempotent)."""
        self._events.close()
        self._requests.close()

    def __enter__(self) -> LinkWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dump_once(self) -> tuple[dict[int, Link], bool]:
        self._seq = self._seq % 0xFFFFFFFF + 1
        seq = self._seq
        request = _NLMSGHDR.pack(
            _NLMSGHDR.size + _IFINFOMSG.size, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
        ) + _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        self._requests.sock.sendto(request, (0, 0))
        links: dict[int, Link] = {}
        interrupted = False
        while True:
            data = self._requests.recv()
            if data is None:
                continue
            for mtype, flags, mseq, payload in iter_messages(data):
                if mseq != seq:
                    continue  # the rest of an earlier dump that was given up on
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if mtype == RTM_NEWLINK:
                    link = _link(payload)
                    if link is not None:
                        links[link.index] = link
                elif mtype in (NLMSG_DONE, NLMSG_ERROR):
                    code = _S32.unpack_from(payload)[0] if len(payload) >= _S32.size else 0
                    if code < 0:
                        raise OSError(-code, f"RTM_GETLINK dump: {os.strerror(-code)}")
                    if mtype == NLMSG_DONE:
                        return links, interrupted


class Channel:
    """A NETLINK_ROUTE socket with its receive buffer (grown on demand up to MAX_DATAGRAM)."""

    __slots__ = ("buf", "sock")

    def __init__(self, groups: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self.sock.bind((0, groups))
        except BaseException:
            self.sock.close()
            raise
        self.buf = bytearray(1 << 16)

    def recv(self) -> memoryview | None:
        """The next datagram, or None if it was dropped (too big, or not from the kernel)."""
        peek = socket.MSG_PEEK | socket.MSG_TRUNC  # the datagram's whole size, left queued
        size, _ = self.sock.recvfrom_into(self.buf, len(self.buf), peek)
        if size > len(self.buf):
            if size > MAX_DATAGRAM:
                self.sock.recv(1)  # consume it
                return None
            self.buf = bytearray(min(MAX_DATAGRAM, max(size, 2 * len(self.buf))))
        size, (sender, _groups) = self.sock.recvfrom_into(self.buf)
        if sender != 0:
            return None  # another process unicast to us: not the kernel's word
        return memoryview(self.buf)[:size]

    def close(self) -> None:
        self.sock.close()


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    except OSError:  # not CAP_NET_ADMIN: capped by net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def iter_messages(data: memoryview) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, seq, payload) of each whole message in ``data``."""
    off = 0
    end = len(data)
    while end - off >= _NLMSGHDR.size:
        length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or length > end - off:
            return  # a broken header: no way to find the next message
        yield mtype, flags, seq, data[off + _NLMSGHDR.size : off + length]
        off += (length + 3) & ~3


def parse_attrs(data: memoryview) -> dict[int, memoryview] | None:
    """Type → payload of the rtattrs in ``data``; None if one overruns (a malformed message)."""
    found: dict[int, memoryview] = {}
    off = 0
    end = len(data)
    while end - off >= _RTATTR.size:
        length, atype = _RTATTR.unpack_from(data, off)
        if length < _RTATTR.size or length > end - off:
            return None
        found.setdefault(atype & _NLA_TYPE_MASK, data[off + _RTATTR.size : off + length])
        off += (length + 3) & ~3
    return found


def link_kind(attrs: dict[int, memoryview]) -> str:
    """The kind of a link (``veth``, ``bridge``…; "" for a plain device) from its attributes."""
    raw = attrs.get(IFLA_LINKINFO)
    info = parse_attrs(raw) if raw is not None else None
    if info is None or IFLA_INFO_KIND not in info:
        return ""
    return attr_string(info[IFLA_INFO_KIND])


def attr_string(data: memoryview) -> str:
    """A NUL-terminated attribute string, decoded as os.fsdecode would (names round-trip)."""
    return bytes(data).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _link(payload: memoryview) -> Link | None:
    """The Link an RTM_NEWLINK/RTM_DELLINK payload describes; None if malformed or not ours."""
    if len(payload) < _IFINFOMSG.size:
        return None
    family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    if family != socket.AF_UNSPEC or index <= 0:
        return None
    attrs = parse_attrs(payload[_IFINFOMSG.size :])
    if attrs is None or IFLA_IFNAME not in attrs:
        return None
    name = attr_string(attrs[IFLA_IFNAME])
    if not name:
        return None
    master = 0
    raw = attrs.get(IFLA_MASTER)
    if raw is not None and len(raw) >= _U32.size:
        master = _U32.unpack_from(raw)[0]
    kind = link_kind(attrs)
    return Link(
        index=index,
        name=name,
        up=bool(flags & IFF_UP),
        running=bool(flags & (IFF_RUNNING | IFF_LOWER_UP)),
        loopback=bool(flags & IFF_LOOPBACK),
        kind=kind,
        master=master,
    )
