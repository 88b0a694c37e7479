"""Pods' network namespaces, found from their processes by pod IP, and their sidecars
(stdlib only).

A pod's containers share one network namespace, kept alive by their processes, so no container
runtime or Kubernetes API is needed to find it: ``scan`` walks ``/proc``, groups processes by the
namespace their ``/proc/PID/ns/net`` names (its inode), and lists each namespace's interfaces
and addresses from inside it (rtnetlink, from a thread moved there with ``netns.enter``).
``find`` matches a pod IP to its namespace, whose ``path`` capture opens (``--netns``), and
``host_veth`` names the pod's veth on the host side, where the same traffic can be caught
without entering the pod::

    stats = ScanStats()                       # the caller's counters, kept across scans
    spaces = podnet.scan(stats=stats)         # every few seconds
    pod = podnet.find("10.244.1.7", spaces)
    if pod is not None:
        ...capture in pod.path, on "eth0", and on "lo" too if pod.sidecar
        ...or on the host: podnet.host_veth(pod, host=spaces[0])

The host's own namespace is listed too (first, ``host=True``): hostNetwork pods live there.

Sidecars: the app talks to its mesh proxy over the pod's ``lo`` in plaintext (the proxy does
the TLS on ``eth0``), so a namespace with a sidecar is worth capturing on ``lo`` as well.
``sidecar`` is ``"envoy"`` (Istio and other Envoy meshes) when a process whose executable or
``comm`` is ``envoy`` has ``INSTANCE_IP=`` in its environment (a plain Envoy deployment, e.g. an
ingress gateway's, is not a sidecar), ``"linkerd"`` when a process is ``linkerd2-proxy`` or has
``_pod_name=`` in its environment (what linkerd's injector sets), else None; ``"envoy"`` when
both match.

Cost: per process one ``readlink`` (``exe``), one ``stat`` (``ns/net``) and one small read
(``comm``); environments (``/proc/PID/environ``) are read only where they can change the
answer: for a process named ``envoy``, and for the processes of a pod namespace (not the host's)
until its sidecar is known. Per namespace, one ``setns`` and two rtnetlink dumps (links and
addresses). Processes that exit, or cannot be read, while a scan looks at them are skipped
and counted; nothing about another process makes ``scan`` raise.

Bounds: ``max_procs`` processes and ``max_namespaces`` namespaces per scan, ``MAX_IFACES``
interfaces and ``MAX_ADDRS`` addresses per namespace, ``MAX_ENVIRON`` bytes of one environment
and ``MAX_ENVIRON_READS`` environments per namespace; what each cap leaves out is counted in
``ScanStats``.

Entering namespaces needs CAP_SYS_ADMIN (root). Without it, namespaces other than the caller's
are listed with their processes but no interfaces, and ``error`` says why.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from shark_tui.engine import netns
from shark_tui.engine.netlink import (
    IFF_LOOPBACK,
    IFLA_IFNAME,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_GETLINK,
    RTM_NEWLINK,
    Channel,
    attr_string,
    iter_messages,
    link_kind,
    parse_attrs,
)

__all__ = [
    "MAX_ADDRS",
    "MAX_ENVIRON",
    "MAX_ENVIRON_READS",
    "MAX_IFACES",
    "MAX_NAMESPACES",
    "MAX_PROCS",
    "Iface",
    "NetNs",
    "Process",
    "ScanStats",
    "find",
    "host_veth",
    "scan",
]

#: Default cap on the processes one scan examines (the lowest PIDs are taken).
MAX_PROCS = 16384
#: Default cap on the namespaces one scan lists (the host's first, then by lowest PID).
MAX_NAMESPACES = 1024
#: Interfaces and addresses kept per namespace (IPVS nodes hold every ClusterIP on one device).
MAX_IFACES = 4096
MAX_ADDRS = 4096
#: Bytes of one process's environment searched for INSTANCE_IP / _pod_name.
MAX_ENVIRON = 256 * 1024
#: Environments read per namespace and scan.
MAX_ENVIRON_READS = 64

_HOST_NS = "/proc/self/ns/net"  # the main thread's: the namespace shark-tui runs in
_THREAD_NS = "/proc/thread-self/ns/net"
_ENTER_ATTEMPTS = 3  # processes of one namespace tried in turn when the first has exited
_DUMP_TIMEOUT = 5.0  # seconds the kernel may take for each reply datagram of a dump

_RTM_NEWADDR = 20
_RTM_GETADDR = 22
_IFLA_LINK = 5
_IFLA_LINK_NETNSID = 37
_IFA_ADDRESS = 1
_IFA_LOCAL = 2

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")
_ADDR_LEN = {socket.AF_INET: 4, socket.AF_INET6: 16}

_Ident = tuple[int, int]  # (st_dev, st_ino) of a namespace file: identifies the namespace
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Process:
    """One process of a namespace."""

    pid: int
    #: Base name of ``/proc/PID/exe`` ("" when it may not be read: not root).
    exe: str
    #: ``/proc/PID/comm``: the name the process gave itself, at most 15 bytes.
    comm: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Iface:
    """One network interface of a namespace, as rtnetlink lists it from inside."""

    index: int
    name: str
    #: IFLA_INFO_KIND: "veth", "bridge", ...; "" for a physical or plain device.
    kind: str
    loopback: bool
    #: IFLA_LINK: for a veth, its peer's ifindex (in the peer's namespace); 0 if none.
    peer: int
    #: IFLA_LINK_NETNSID: the peer is in another namespace (this one's id for it); else None.
    peer_netnsid: int | None
    #: IPv4 then IPv6 addresses, in ``ipaddress`` text form, without prefix length.
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class NetNs:
    """One network namespace in use by the host's processes."""

    #: Inode of the namespace file: the same for every process in it, stable while it lives.
    inode: int
    #: The process it was entered through (its lowest PID still running then), and its path.
    pid: int
    path: str
    #: The namespace shark-tui runs in (the host's, for a daemon with hostNetwork).
    host: bool
    #: By ifindex; empty when the namespace could not be entered (see ``error``).
    ifaces: tuple[Iface, ...]
    #: By PID.
    procs: tuple[Process, ...]
    #: "envoy", "linkerd" or None (see the module's doc).
    sidecar: str | None
    #: Why the interfaces are missing (not entered, dump failed), else None.
    error: str | None = None

    @property
    def addrs(self) -> dict[str, tuple[str, ...]]:
        """Interface name → its addresses, for the interfaces that have any."""
        return {i.name: i.addrs for i in self.ifaces if i.addrs}


@dataclass(slots=True)
class ScanStats:
    """Counters a caller keeps across scans (one scan at a time updates them)."""

    scans: int = 0
    #: Processes examined, and those that exited or could not be read meanwhile.
    procs: int = 0
    procs_unreadable: int = 0
    #: Processes not examined: beyond ``max_procs``.
    procs_over_cap: int = 0
    #: Namespaces listed; beyond ``max_namespaces`` (not listed); every process gone before
    #: the namespace could be entered (not listed); listed without interfaces (``error``).
    namespaces: int = 0
    namespaces_over_cap: int = 0
    namespaces_vanished: int = 0
    namespaces_failed: int = 0
    #: Interfaces and addresses beyond MAX_IFACES / MAX_ADDRS in one namespace.
    ifaces_over_cap: int = 0
    addrs_over_cap: int = 0
    #: Environments read; cut at MAX_ENVIRON; not read past MAX_ENVIRON_READS.
    environs: int = 0
    environs_truncated: int = 0
    environs_over_cap: int = 0


def scan(
    proc: str = "/proc",
    *,
    max_procs: int = MAX_PROCS,
    max_namespaces: int = MAX_NAMESPACES,
    stats: ScanStats | None = None,
) -> list[NetNs]:
    """Every distinct network namespace of the processes under ``proc``, the host's first,
    then by lowest PID.

    ``proc`` is a procfs mount: this host's, or the host's mounted into a container (e.g.
    ``/host/proc``); "host" is always the namespace this process runs in. Never raises for a
    process or namespace that changes or goes away meanwhile: those are skipped, and counted
    in ``stats`` (one scan at a time per ``stats``).
    """
    st = stats if stats is not None else ScanStats()
    st.scans += 1
    host = _ident(_HOST_NS)
    groups = _group(proc, max_procs, st)
    order = sorted(groups.items(), key=lambda kv: (kv[0] != host, kv[1][0].pid))
    if len(order) > max_namespaces:
        st.namespaces_over_cap += len(order) - max_namespaces
        del order[max_namespaces:]
    views = _in_thread(lambda: [_view(proc, key, procs, st) for key, procs in order])
    found: list[NetNs] = []
    for (key, procs), view in zip(order, views):
        if view is None:
            st.namespaces_vanished += 1
            continue
        pid, ifaces, error = view
        if error is not None:
            st.namespaces_failed += 1
        found.append(
            NetNs(
                inode=key[1],
                pid=pid,
                path=f"{proc}/{pid}/ns/net",
                host=key == host,
                ifaces=ifaces,
                procs=tuple(procs),
                sidecar=_sidecar(proc, procs, key == host, st),
                error=error,
            )
        )
    st.namespaces += len(found)
    return found


def find(ip: str, namespaces: Sequence[NetNs]) -> NetNs | None:
    """The namespace holding the address ``ip`` (on any interface), else None.

    A pod's namespace wins over the host's, which is returned only when no other one holds
    the address (a hostNetwork pod's IP is its node's). When several pod namespaces hold it,
    the first in ``namespaces`` wins. Loopback addresses, held by every namespace, and text
    that is no address give None. An IPv6 zone (``%eth0``) is ignored.
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if addr.is_loopback:
        return None
    text = str(addr)
    fallback: NetNs | None = None
    for ns in namespaces:
        if any(text in i.addrs for i in ns.ifaces):
            if not ns.host:
                return ns
            if fallback is None:
                fallback = ns
    return fallback


def host_veth(ns: NetNs, host: NetNs | None = None) -> str | None:
    """The host-side name of the veth that links ``ns`` to the host, else None.

    The pod side is ``eth0`` when it is a veth whose peer is in another namespace, else the
    first such veth holding an address that is not link-local. Its IFLA_LINK is the peer's
    index on the host; the host interface with that index must be a veth whose own IFLA_LINK
    points back. ``host`` is the host's NetNs from the same scan, which saves a dump of the
    host's links; without it they are dumped now (in the namespace of the main thread). None
    for the host namespace itself, a pod linked otherwise (ipvlan, macvlan), or a peer gone.
    """
    if ns.host:
        return None
    veths = [i for i in ns.ifaces if i.kind == "veth" and i.peer > 0 and i.peer_netnsid is not None]
    pod_side = next((i for i in veths if i.name == "eth0"), None)
    if pod_side is None:
        pod_side = next((i for i in veths if any(_routable(a) for a in i.addrs)), None)
    if pod_side is None:
        return None
    if host is not None and host.host and not host.error:
        links: Sequence[Iface] = host.ifaces
    else:
        try:
            links = _in_host(lambda: _dump_ns(None))
        except (OSError, netns.NetnsError):
            return None
    for link in links:
        if link.index == pod_side.peer:
            if link.kind == "veth" and link.peer == pod_side.index:
                return link.name
            return None
    return None


# --- processes ---------------------------------------------------------------------------------


def _group(proc: str, max_procs: int, st: ScanStats) -> dict[_Ident, list[Process]]:
    """Processes by namespace, by ascending PID; kernel threads and zombies (no ``exe``) left
    out."""
    try:
        pids = sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return {}
    if len(pids) > max_procs:
        st.procs_over_cap += len(pids) - max_procs
        del pids[max_procs:]
    groups: dict[_Ident, list[Process]] = {}
    for pid in pids:
        base = f"{proc}/{pid}"
        st.procs += 1
        try:
            target = os.readlink(base + "/exe")
        except PermissionError:
            target = ""
        except OSError:
            continue  # a kernel thread or a zombie (ENOENT), or gone: no one's container
        try:
            info = os.stat(base + "/ns/net")
            comm = _read(base + "/comm", 64, whole=True)
        except OSError:
            st.procs_unreadable += 1
            continue
        exe = os.path.basename(target.removesuffix(" (deleted)"))
        name = comm.rstrip(b"\n").decode("utf-8", "replace")
        key = (info.st_dev, info.st_ino)
        groups.setdefault(key, []).append(Process(pid=pid, exe=exe, comm=name))
    return groups


def _sidecar(proc: str, procs: Sequence[Process], host: bool, st: ScanStats) -> str | None:
    """The sidecar of one namespace's processes: "envoy", "linkerd" or None (module doc)."""
    linkerd = any("linkerd2-proxy" in (p.exe, p.comm) for p in procs)
    reads = 0
    for p in procs:
        envoy = "envoy" in (p.exe, p.comm)
        if not envoy and (linkerd or host):
            continue
        if reads >= MAX_ENVIRON_READS:
            st.environs_over_cap += 1
            continue
        reads += 1
        env = _environ(f"{proc}/{p.pid}/environ", st)
        if envoy and b"\0INSTANCE_IP=" in env:
            return "envoy"
        if b"\0_pod_name=" in env:
            linkerd = True
    return "linkerd" if linkerd else None


def _environ(path: str, st: ScanStats) -> bytes:
    """NUL + the first MAX_ENVIRON bytes of a process's environment; NUL alone if unreadable."""
    try:
        data = _read(path, MAX_ENVIRON + 1)
    except OSError:
        return b"\0"
    st.environs += 1
    if len(data) > MAX_ENVIRON:
        st.environs_truncated += 1
        data = data[:MAX_ENVIRON]
    return b"\0" + data


def _read(path: str, limit: int, *, whole: bool = False) -> bytes:
    """Up to ``limit`` bytes of a (proc) file; ``whole``: the file is known to fit in ``limit``
    and comes in one read. Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if whole:
            return os.read(fd, limit)
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _ident(path: str) -> _Ident | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


# --- inside the namespaces -----------------------------------------------------------------


def _view(
    proc: str, key: _Ident, procs: Sequence[Process], st: ScanStats
) -> tuple[int, tuple[Iface, ...], str | None] | None:
    """(pid entered through, interfaces, error) of one namespace, run in the scan thread;
    None when every process tried has left it (the namespace is likely gone).

    The namespace file is opened and checked to be ``key`` before entering through the open
    descriptor, so a PID reused meanwhile by a process elsewhere is never entered.
    """
    for p in procs[:_ENTER_ATTEMPTS]:
        try:
            fd = os.open(f"{proc}/{p.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                return p.pid, (), f"cannot open its namespace: {e.strerror} (run as root)"
            continue  # exited
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != key:
                continue  # exited, and the PID went to another process
            if _ident(_THREAD_NS) != key:
                via = f"/proc/self/fd/{fd}"
                try:
                    netns.enter(via)
                except netns.NetnsError as e:
                    return p.pid, (), str(e).replace(via, f"{proc}/{p.pid}/ns/net")
            try:
                return p.pid, _dump_ns(st), None
            except OSError as e:
                return p.pid, (), f"rtnetlink dump failed: {e.strerror or e}"
        finally:
            os.close(fd)
    return None


def _in_thread(fn: Callable[[], _T]) -> _T:
    """``fn()`` in a new thread, which may move between namespaces and then ends."""
    out: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    worker = threading.Thread(target=run, name="podnet-scan", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return out[0]


def _in_host(fn: Callable[[], _T]) -> _T:
    """``fn()`` in the host namespace: here if this thread is there, else in a new thread."""
    if _ident(_THREAD_NS) == _ident(_HOST_NS):
        return fn()

    def moved() -> _T:
        netns.enter(_HOST_NS)
        return fn()

    return _in_thread(moved)


def _dump_ns(st: ScanStats | None) -> tuple[Iface, ...]:
    """The interfaces of the calling thread's namespace with their addresses (what the caps
    leave out counted in ``st``). Raises OSError (TimeoutError if the kernel stops
    answering)."""
    chan = Channel(0)
    try:
        chan.sock.settimeout(_DUMP_TIMEOUT)
        links: dict[int, tuple[str, str, bool, int, int | None]] = {}
        over = 0
        for mtype, payload in _dump(chan, RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0), 1):
            if mtype == RTM_NEWLINK:
                parsed = _link(payload)
                if parsed is None:
                    continue
                if len(links) >= MAX_IFACES and parsed[0] not in links:
                    over += 1
                    continue
                links[parsed[0]] = parsed[1:]
        if st is not None:
            st.ifaces_over_cap += over
        addrs: dict[int, list[tuple[int, str]]] = {}
        kept = dropped = 0
        for mtype, payload in _dump(chan, _RTM_GETADDR, _IFADDRMSG.pack(0, 0, 0, 0, 0), 2):
            if mtype == _RTM_NEWADDR:
                parsed_addr = _addr(payload)
                if parsed_addr is None or parsed_addr[0] not in links:
                    continue
                if kept >= MAX_ADDRS:
                    dropped += 1
                    continue
                kept += 1
                addrs.setdefault(parsed_addr[0], []).append(parsed_addr[1:])
        if st is not None:
            st.addrs_over_cap += dropped
    finally:
        chan.close()
    ifaces = tuple(
        Iface(
            index=index,
            name=name,
            kind=kind,
            loopback=loopback,
            peer=peer,
            peer_netnsid=netnsid,
            addrs=tuple(a for _family, a in sorted(addrs.get(index, ()), key=lambda fa: fa[0])),
        )
        for index, (name, kind, loopback, peer, netnsid) in sorted(links.items())
    )
    return ifaces


def _dump(chan: Channel, request: int, body: bytes, seq: int) -> Iterator[tuple[int, memoryview]]:
    """(type, payload) of each message answering one dump request; payloads are valid only
    until the next item is asked for. Raises OSError for an error reply."""
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), request, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    chan.sock.sendto(header + body, (0, 0))
    while True:
        data = chan.recv()
        if data is None:
            continue
        for mtype, _flags, mseq, payload in iter_messages(data):
            if mseq != seq:
                continue
            if mtype in (NLMSG_DONE, NLMSG_ERROR):
                code = _S32.unpack_from(payload)[0] if len(payload) >= _S32.size else 0
                if code < 0:
                    raise OSError(-code, os.strerror(-code))
                if mtype == NLMSG_DONE or code == 0:
                    return
            else:
                yield mtype, payload


def _link(payload: memoryview) -> tuple[int, str, str, bool, int, int | None] | None:
    """(index, name, kind, loopback, IFLA_LINK, IFLA_LINK_NETNSID) of an RTM_NEWLINK."""
    if len(payload) < _IFINFOMSG.size:
        return None
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    attrs = parse_attrs(payload[_IFINFOMSG.size :])
    if index <= 0 or attrs is None or IFLA_IFNAME not in attrs:
        return None
    name = attr_string(attrs[IFLA_IFNAME])
    peer = 0
    raw = attrs.get(_IFLA_LINK)
    if raw is not None and len(raw) >= _U32.size:
        peer = _U32.unpack_from(raw)[0]
    netnsid: int | None = None
    raw = attrs.get(_IFLA_LINK_NETNSID)
    if raw is not None and len(raw) >= _S32.size:
        netnsid = _S32.unpack_from(raw)[0]
    kind = link_kind(attrs)
    return index, name, kind, bool(flags & IFF_LOOPBACK), peer, netnsid


def _addr(payload: memoryview) -> tuple[int, int, str] | None:
    """(ifindex, family, address text) of an RTM_NEWADDR; the local address (IFA_LOCAL, else
    IFA_ADDRESS: on a point-to-point link IFA_ADDRESS is the far end)."""
    if len(payload) < _IFADDRMSG.size:
        return None
    family, _prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
    size = _ADDR_LEN.get(family)
    attrs = parse_attrs(payload[_IFADDRMSG.size :])
    if size is None or attrs is None:
        return None
    raw = attrs.get(_IFA_LOCAL, attrs.get(_IFA_ADDRESS))
    if raw is None or len(raw) < size:
        return None
    return index, family, str(ipaddress.ip_address(bytes(raw[:size])))


def _routable(text: str) -> bool:
    addr = ipaddress.ip_address(text)
    return not (addr.is_link_local or addr.is_loopback)
