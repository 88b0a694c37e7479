"""netlink: the rtnetlink parser on built and broken datagrams, and LinkWatcher on real
namespaces (veth pairs and a bridge made with `ip`; this kernel has no dummy links).

The live tests need root and `ip` (iproute2): they fail, not skip, without them.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shark_tui.engine import netlink, netns
from shark_tui.engine.netlink import Link, LinkEvent, LinkWatcher, Overflow, parse_events

PID = os.getpid()
SIOCGSKNS = 0x894C  # <linux/sockios.h>: open the network namespace of a socket

# --- building messages -----------------------------------------------------------------------


def attr(atype: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), atype) + payload
    return raw + b"\0" * (-len(raw) % 4)


def nlmsg(mtype: int, payload: bytes, *, flags: int = 0, seq: int = 0) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload
    return raw + b"\0" * (-len(raw) % 4)


def link_msg(
    index: int,
    name: str,
    *,
    flags: int = 0,
    kind: str = "",
    master: int = 0,
    removed: bool = False,
    family: int = socket.AF_UNSPEC,
) -> bytes:
    attrs = attr(netlink.IFLA_IFNAME, name.encode() + b"\0")
    attrs += attr(4, struct.pack("=I", 1500))  # IFLA_MTU, ignored
    if master:
        attrs += attr(netlink.IFLA_MASTER, struct.pack("=I", master))
    if kind:
        info = attr(netlink.IFLA_INFO_KIND, kind.encode() + b"\0")
        attrs += attr(netlink.IFLA_LINKINFO | 0x8000, info)  # NLA_F_NESTED, as the kernel sets
    body = struct.pack("=BxHiII", family, 1, index, flags, 0xFFFFFFFF) + attrs
    return nlmsg(netlink.RTM_DELLINK if removed else netlink.RTM_NEWLINK, body)


UP_RUNNING = netlink.IFF_UP | netlink.IFF_RUNNING | netlink.IFF_LOWER_UP
LO = Link(index=1, name="lo", up=True, running=True, loopback=True, kind="", master=0)
VETH = Link(index=7, name="eth0", up=True, running=False, loopback=False, kind="veth", master=9)
GONE = Link(index=9, name="cni0", up=False, running=False, loopback=False, kind="bridge", master=0)
STREAM = (
    link_msg(1, "lo", flags=UP_RUNNING | netlink.IFF_LOOPBACK)
    + nlmsg(netlink.NLMSG_DONE, struct.pack("=i", 0))  # not a link message: skipped
    + link_msg(7, "eth0", flags=netlink.IFF_UP, kind="veth", master=9)
    + link_msg(9, "cni0", kind="bridge", removed=True)
)
EXPECTED = [
    LinkEvent(link=LO, removed=False),
    LinkEvent(link=VETH, removed=False),
    LinkEvent(link=GONE, removed=True),
]


# --- the parser ------------------------------------------------------------------------------


def test_parse_built_stream() -> None:
    assert parse_events(STREAM) == EXPECTED
    assert parse_events(bytearray(STREAM)) == EXPECTED
    assert parse_events(memoryview(STREAM)) == EXPECTED
    assert parse_events(b"") == []


def test_running_from_lower_up_alone() -> None:
    (event,) = parse_events(link_msg(3, "x", flags=netlink.IFF_UP | netlink.IFF_LOWER_UP))
    assert event.link.up and event.link.running


def test_garbage_after_valid_messages() -> None:
    for junk in (b"\xff" * 40, b"\x01\x02\x03", os.urandom(300), b"\0" * 64):
        assert parse_events(STREAM + junk) == EXPECTED


def test_truncated_anywhere() -> None:
    """Cut at every offset: no exception, and the whole messages before the cut survive."""
    for cut in range(len(STREAM) + 1):
        events = parse_events(STREAM[:cut])
        assert events == EXPECTED[: len(events)]
    assert len(parse_events(STREAM[:-1])) == 2


def test_broken_message_header_stops_the_datagram() -> None:
    short_len = struct.pack("=IHHII", 8, netlink.RTM_NEWLINK, 0, 0, 0)  # nlmsg_len < header
    too_long = struct.pack("=IHHII", 4096, netlink.RTM_NEWLINK, 0, 0, 0) + b"\0" * 32
    assert parse_events(link_msg(1, "lo") + short_len + link_msg(2, "b"))[0].link.name == "lo"
    assert len(parse_events(link_msg(1, "lo") + short_len + link_msg(2, "b"))) == 1
    assert len(parse_events(link_msg(1, "lo") + too_long)) == 1


def test_malformed_messages_are_skipped_alone() -> None:
    good = link_msg(5, "ok")
    short_ifinfo = nlmsg(netlink.RTM_NEWLINK, b"\0" * 8)
    overrun = bytearray(link_msg(6, "bad"))
    overrun[32:34] = struct.pack("=H", 200)  # first rtattr claims more than the message holds
    tiny_attr = bytearray(link_msg(6, "bad"))
    tiny_attr[32:34] = struct.pack("=H", 2)  # rtattr shorter than its own header
    no_name = nlmsg(netlink.RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, 6, 1, 0))
    empty_name = link_msg(6, "")
    bad_index = link_msg(0, "zero")
    bridge_port = link_msg(6, "port", removed=True, family=socket.AF_BRIDGE)
    bad_master = bytearray(
        nlmsg(
            netlink.RTM_NEWLINK,
            struct.pack("=BxHiII", 0, 1, 8, 0, 0)
            + attr(netlink.IFLA_IFNAME, b"m\0")
            + attr(netlink.IFLA_MASTER, b"\x01"),  # too short: master stays 0
        )
    )
    for bad in (short_ifinfo, overrun, tiny_attr, no_name, empty_name, bad_index, bridge_port):
        assert parse_events(good + bytes(bad) + good) == parse_events(good) * 2
    (event,) = parse_events(bytes(bad_master))
    assert event.link.master == 0 and event.link.name == "m"


def test_odd_names() -> None:
    raw = nlmsg(
        netlink.RTM_NEWLINK,
        struct.pack("=BxHiII", 0, 1, 4, 0, 0) + attr(netlink.IFLA_IFNAME, b"e\xffx"),
    )  # no NUL, not UTF-8: kept as os.fsdecode would
    (event,) = parse_events(raw)
    assert event.link.name == "e\udcffx" and os.fsencode(event.link.name) == b"e\xffx"


@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    parse_events(data)
    parse_events(STREAM + data)


@given(st.binary(min_size=1, max_size=8), st.integers(min_value=0, max_value=len(STREAM) - 1))
def test_corrupted_bytes_never_raise(patch: bytes, at: int) -> None:
    damaged = bytearray(STREAM)
    damaged[at : at + len(patch)] = patch
    for event in parse_events(bytes(damaged)):
        assert isinstance(event, LinkEvent)


# --- live: namespaces and links --------------------------------------------------------------


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture(scope="module")
def root_and_ip() -> None:
    if os.geteuid() != 0:
        pytest.fail("netlink tests need root (ip netns add, setns): run them as root")
    if shutil.which("ip") is None:
        pytest.fail("netlink tests need `ip` (apt-get install iproute2)")


@pytest.fixture
def ns(root_and_ip: None) -> Iterator[str]:
    """A fresh, empty namespace (only its lo); its name. Deleting it removes its links."""
    name = f"skNL{PID}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    ip("netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def watcher_in(ns: str, **kwargs: int) -> LinkWatcher:
    """A LinkWatcher made by a thread switched into ``ns``; that thread has ended."""

    def make() -> LinkWatcher:
        with netns.switched(netns.resolve(ns)):
            return LinkWatcher(**kwargs)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(make).result(timeout=20)


def collect(
    watcher: LinkWatcher, done: Callable[[list[LinkEvent]], bool], timeout: float = 2.0
) -> list[LinkEvent]:
    """Events until ``done(events)``, waiting on ``fileno`` with select, at most ``timeout``."""
    events: list[LinkEvent] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no such events within {timeout}s; got {events}")
        readable, _, _ = select.select([watcher], [], [], left)
        if readable:
            events.extend(watcher.read_events())
    return events


def drain(watcher: LinkWatcher, quiet: float = 0.3) -> list[LinkEvent]:
    """Every event until none came for ``quiet`` seconds."""
    events: list[LinkEvent] = []
    while select.select([watcher], [], [], quiet)[0]:
        events.extend(watcher.read_events())
    return events


def ip_links(ns: str | None) -> dict[int, dict[str, Any]]:
    where = ["-n", ns] if ns else []
    return {row["ifindex"]: row for row in json.loads(ip(*where, "-j", "-d", "link", "show"))}


def names(events: list[LinkEvent]) -> set[str]:
    return {e.link.name for e in events}


def has(
    name: str, *, removed: bool | None = None, **fields: object
) -> Callable[[list[LinkEvent]], bool]:
    """A ``done`` for ``collect``: an event for link ``name`` with these Link fields."""

    def check(events: list[LinkEvent]) -> bool:
        return any(
            e.link.name == name
            and (removed is None or e.removed == removed)
            and all(getattr(e.link, k) == v for k, v in fields.items())
            for e in events
        )

    return check


def test_dump_lists_only_the_namespace(ns: str) -> None:
    va, vb, br = f"skla{PID}", f"sklb{PID}", f"sklbr{PID}"
    ip("-n", ns, "link", "add", va, "type", "veth", "peer", "name", vb)
    ip("-n", ns, "link", "add", br, "type", "bridge")
    ip("-n", ns, "link", "set", va, "master", br)
    ip("-n", ns, "link", "set", vb, "up")
    ip("-n", ns, "link", "set", va, "up")

    def dump_inside() -> list[Link]:
        with netns.switched(netns.resolve(ns)), LinkWatcher() as watcher:
            return watcher.dump()

    with ThreadPoolExecutor(1) as pool:
        links = pool.submit(dump_inside).result(timeout=20)
    oracle = ip_links(ns)
    assert {(link.index, link.name) for link in links} == {
        (i, row["ifname"]) for i, row in oracle.items()
    }
    assert [link.index for link in links] == sorted(oracle)  # by index, each once
    by_name = {link.name: link for link in links}
    lo = by_name["lo"]
    assert lo.loopback and not lo.up and not lo.running and lo.kind == "" and lo.master == 0
    assert by_name[va].kind == by_name[vb].kind == "veth"
    assert by_name[br].kind == "bridge"
    assert by_name[va].master == by_name[br].index and by_name[vb].master == 0
    assert by_name[va].up and by_name[va].running and not by_name[va].loopback
    assert not by_name[br].up
    for link in links:
        row = oracle[link.index]
        assert link.up == ("UP" in row["flags"])
        assert link.loopback == ("LOOPBACK" in row["flags"])

    # and the root namespace's own dump, from this thread, has none of them
    with LinkWatcher() as root:
        root_names = {link.name for link in root.dump()}
    assert "lo" in root_names and root_names.isdisjoint({va, vb, br})


def test_sockets_stay_in_their_namespace(ns: str) -> None:
    path = netns.resolve(ns)
    with watcher_in(ns) as watcher:  # the thread that made it has ended
        assert netns.same_as_root("/proc/thread-self/ns/net")
        for fd in (watcher.fileno(), watcher._requests.sock.fileno()):
            ns_fd = fcntl.ioctl(fd, SIOCGSKNS)
            try:
                theirs, wanted = os.fstat(ns_fd), os.stat(path)
                assert (theirs.st_dev, theirs.st_ino) == (wanted.st_dev, wanted.st_ino)
            finally:
                os.close(ns_fd)
        assert [link.name for link in watcher.dump()] == ["lo"]
        ip("-n", ns, "link", "add", f"skla{PID}", "type", "veth", "peer", "name", f"sklb{PID}")
        assert sorted(link.name for link in watcher.dump()) == ["lo", f"skla{PID}", f"sklb{PID}"]
        collect(watcher, has(f"skla{PID}"))


def test_events_add_up_master_delete(ns: str) -> None:
    va, vb, br = f"skla{PID}", f"sklb{PID}", f"sklbr{PID}"
    with watcher_in(ns) as watcher, LinkWatcher() as root:
        assert watcher.read_events() == []  # nothing yet, and no blocking
        drain(root, quiet=0.05)

        ip("-n", ns, "link", "add", va, "type", "veth", "peer", "name", vb)
        events = collect(watcher, lambda ev: {va, vb} <= names(ev))
        assert all(not e.removed and not e.link.up and e.link.kind == "veth" for e in events)

        ip("-n", ns, "link", "set", va, "up")
        ip("-n", ns, "link", "set", vb, "up")
        collect(watcher, has(va, up=True, running=True, removed=False))

        ip("-n", ns, "link", "add", br, "type", "bridge")
        events = collect(watcher, has(br, kind="bridge"))
        bridge = next(e.link.index for e in events if e.link.name == br)
        ip("-n", ns, "link", "set", va, "master", br)
        collect(watcher, has(va, master=bridge))
        # leaving the bridge sends an AF_BRIDGE RTM_DELLINK for the port: not a removal
        ip("-n", ns, "link", "set", va, "nomaster")
        events = collect(watcher, has(va, master=0))
        events += drain(watcher, quiet=0.2)
        assert not any(e.removed for e in events)

        ip("-n", ns, "link", "delete", va)  # takes its peer along
        events = collect(
            watcher, lambda ev: has(va, removed=True)(ev) and has(vb, removed=True)(ev)
        )
        assert {e.link.name for e in events if e.removed} == {va, vb}

        # none of it reached the root namespace's watcher
        assert names(drain(root)).isdisjoint({va, vb, br})


def test_root_watcher_sees_root_links_only(ns: str) -> None:
    """A veth pair across the boundary, as a pod has: each side sees only its own end."""
    host, pod = f"sklh{PID}", f"sklp{PID}"
    with watcher_in(ns) as inside, LinkWatcher() as root:
        try:
            ip("link", "add", host, "type", "veth", "peer", "name", pod, "netns", ns)
            assert has(host)(collect(root, has(host)))
            assert pod not in names(drain(root, quiet=0.2))
            got = collect(inside, has(pod, kind="veth"))
            assert host not in names(got + drain(inside, quiet=0.2))
            assert host in {link.name for link in root.dump()}
            assert sorted(link.name for link in inside.dump()) == ["lo", pod]
        finally:
            subprocess.run(["ip", "link", "delete", host], capture_output=True)


def test_overflow_then_dump(ns: str) -> None:
    pairs = 12
    with watcher_in(ns, rcvbuf=1) as watcher:  # the kernel's minimum: a couple of messages
        batch = "".join(
            f"link add skl{i}a{PID} type veth peer name skl{i}b{PID}\n" for i in range(pairs)
        )
        subprocess.run(
            ["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True, timeout=20
        )
        with pytest.raises(Overflow, match=r"dump\(\) again"):
            for _ in range(50):
                select.select([watcher], [], [], 0.1)
                watcher.read_events()
        links = watcher.dump()
        assert len(links) == 1 + 2 * pairs
        assert {link.name for link in links} == {"lo"} | {
            f"skl{i}{side}{PID}" for i in range(pairs) for side in "ab"
        }
        drain(watcher, quiet=0.05)  # still usable after the overflow
        ip("-n", ns, "link", "set", f"skl0a{PID}", "up")
        collect(watcher, has(f"skl0a{PID}", up=True))


def test_read_events_is_bounded(ns: str) -> None:
    with watcher_in(ns) as watcher:
        batch = "".join(
            f"link add skl{i}a{PID} type veth peer name skl{i}b{PID}\n" for i in range(3)
        )
        subprocess.run(
            ["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True, timeout=20
        )
        assert select.select([watcher], [], [], 2.0)[0]
        first = watcher.read_events(limit=1)
        assert len(first) == 1  # one notification per datagram
        assert select.select([watcher], [], [], 0)[0]  # the rest still wait
        rest = first + drain(watcher)
        assert len({e.link.name for e in rest}) == 6


def test_close_is_idempotent(root_and_ip: None) -> None:
    watcher = LinkWatcher()
    with watcher:
        assert watcher.fileno() >= 0
    watcher.close()
    assert watcher.fileno() == -1
