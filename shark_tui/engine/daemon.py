"""The node capture daemon: sources, the writer thread, the supervisor loop.

Three kinds of threads and who owns what:

- one `CaptureSource` thread per interface (per namespace): libpcap only, batches onto the
  queue;
- the writer thread: takes batches off the queue and feeds the `Recorder` (segments, index),
  ticks it for flushing, rotation and retention. It is the only thread that touches the
  recorder except under ``lock``. While capture is paused (`Daemon.set_paused`, a client's
  `wire.Pause`) it stores nothing: the batches every source (TLS plaintext included) hands
  over are counted per source as ``paused`` packets and let go;
- the supervisor (the thread calling `Daemon.run`): one rtnetlink watcher per namespace, opens
  a source for every link that is up (or every named one) and for links that appear later,
  stops sources whose link went away, and writes ``status.json`` in the store every second.
  With ``--kube`` (`cluster`) it also follows the targeted pods: every `RETARGET_INTERVAL` (and
  at once when a client changes the targets) it finds their network namespaces on this host
  and captures inside each (``NS/POD/eth0``, and ``lo`` beside a sidecar proxy) — or, with
  ``--iface``, on those host interfaces, whose kernel filter then names the targeted pods'
  addresses (and inside a pod only the ``lo`` of a sidecar); the pods' history
  (`kube.KubeWatcher` → `PodMap`, kept beside the segments) names the entries' ends.

`Daemon.stop` (SIGTERM/SIGINT) stops the sources, lets the writer drain the queue, and closes
the current segment. A `kill -9` leaves the segments as they were last flushed (at most half a
second behind); the next start trims and re-indexes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from shark_tui.engine import cluster, netlink, netns, podnet
from shark_tui.engine.capture import BatchQueue, CaptureError, CaptureSource
from shark_tui.engine.reorder import Reorderer
from shark_tui.engine.server import Server
from shark_tui.engine.store import Recorder

__all__ = ["Daemon", "DaemonConfig", "capture_filter", "default_store_dir"]

STATUS_INTERVAL: Final = 1.0
RETARGET_INTERVAL: Final = 2.0
"""Seconds between two looks for the targeted pods' namespaces (``--kube``)."""
PACKET_META: Final = 16
"""Bytes of `CaptureSource` batch metadata per packet (``next_batch``'s records)."""
DEFAULT_FILTER: Final = "tcp"


def default_store_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/shark-tui"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "shark-tui")


def capture_filter(user: str, own_port: int = 0) -> str:
    """The BPF filter every source gets: TCP only, not the daemon's own clients (their
    frames would be captured, stored and shown to them again), narrowed by the user's
    expression."""
    expr = DEFAULT_FILTER
    if own_port:
        expr += f" and not port {own_port}"
    user = user.strip()
    return f"{expr} and ({user})" if user else expr


@dataclass(slots=True)
class DaemonConfig:
    store: str
    max_bytes: int
    max_age_ns: int
    ifaces: list[str] = field(default_factory=list)  # empty: every link that is up
    netns: list[str] = field(default_factory=list)  # empty: the daemon's own namespace
    bpf: str = ""
    segment_bytes: int | None = None
    segment_ns: int | None = None
    listen: tuple[str, int] | str | None = None  # None: no query socket
    token: str = ""
    tls: bool = False  # eBPF TLS plaintext (shark_tui.ebpf), on the ``tls`` source
    tls_optional: bool = False  # without eBPF, carry on without TLS (the TUI's own daemon)
    kube: bool = False  # cluster-aware: watch pods, capture the targeted ones (`cluster`)
    kubeconfig: str | None = None  # None: $KUBECONFIG, ~/.kube/config, or in-cluster
    context: str | None = None
    node: str | None = None  # this node's name (downward API); None: pods found on this host
    pods: str = ""  # targeted pods: a regex on names ("" every pod)
    namespaces: list[str] = field(default_factory=list)  # targeted namespaces (empty: all)


class _Namespace:
    """One network namespace being watched: its label, path and link watcher (``pod``: the
    targeted pod it belongs to, with ``--kube``)."""

    def __init__(
        self,
        path: str | None,
        label: str,
        watcher: netlink.LinkWatcher,
        pod: cluster.PodSource | None = None,
    ) -> None:
        self.path = path
        self.label = label
        self.watcher = watcher
        self.pod = pod
        self.links: dict[str, netlink.Link] = {}

    def source_name(self, ifname: str) -> str:
        return f"{self.label}/{ifname}" if self.label else ifname


class Daemon:
    """See the module docstring."""

    def __init__(self, config: DaemonConfig, log: TextIO = sys.stderr) -> None:
        self.config = config
        self.log = log
        own_port = config.listen[1] if isinstance(config.listen, tuple) else 0
        self._own_port = own_port
        self.bpf = capture_filter(config.bpf, own_port)
        #: the filter of the host's interfaces: with --kube, narrowed to the targeted pods'
        #: addresses (`cluster.host_filter`)
        self.host_bpf = self.bpf
        self.queue = BatchQueue()
        self.recorder = Recorder(
            config.store,
            config.max_bytes,
            config.max_age_ns,
            segment_bytes=config.segment_bytes,
            segment_ns=config.segment_ns,
        )
        self.lock = threading.Lock()
        self.sources: dict[str, CaptureSource] = {}  # by source name, running ones
        self.failed: dict[str, str] = {}  # source name -> why it could not be opened
        self.namespaces: list[_Namespace] = []
        self.started_ns = time.time_ns()
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)
        self._wake_r, self._wake_w = os.pipe()
        self._running = False
        self.server: Server | None = None
        self.writer_errors = 0
        self._retry_at: dict[str, float] = {}  # source name -> when to try opening it again
        self.reorder_stats: dict[str, int] = {}
        self.tls: Any = None  # shark_tui.ebpf.capture.TlsCapture with --tls
        self.tls_error: str | None = None  # why TLS capture is not running, when asked for
        self.paused = False
        self.paused_packets: dict[int, int] = {}  # source id -> packets let go while paused
        self.kube: Any = None  # kube.KubeWatcher with --kube
        self.targets = cluster.Targets(config.pods, tuple(config.namespaces))
        self._retarget_at = 0.0  # monotonic; 0: now
        self.pod_sources: dict[str, cluster.PodSource] = {}  # targeted pods captured, by label

    # -- lifecycle -------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        print(f"shark-tui daemon: {line}", file=self.log, flush=True)

    def run(self) -> int:
        """Recover the store, start capturing, supervise until `stop`. Returns an exit code."""
        self.recorder.recover()
        for w in self.recorder.warnings:
            self.say(f"warning: {w}")
        rec = self.recorder
        if rec.stats["recovered_segments"]:
            self.say(
                f"store {self.config.store}: {rec.stats['recovered_segments']} segments, "
                f"{rec.stats['recovered_packets']} packets, {len(rec.index)} connections "
                "indexed again"
            )
        if self.config.listen is not None:
            self.server = Server(
                self.recorder,
                self.lock,
                self.config.token,
                self.config.listen,
                self.status,
                log=self.say,
                tls_status=self.tls_status,
                pause=self.set_paused,
                set_targets=self.set_targets if self.config.kube else None,
                node=self.config.node or "",  # the TUI's node column: the cluster's name for it
            )
            try:
                self.server.start()
            except OSError as exc:
                self.say(f"error: cannot listen on {self.config.listen}: {exc.strerror or exc}")
                return 1
            self.say(f"serving queries on {self.server.address}")
        if self.config.tls and not self._start_tls() and not self.config.tls_optional:
            if self.server is not None:
                self.server.stop()
            return 1
        if self.config.kube and not self._start_kube():
            if self.server is not None:
                self.server.stop()
            return 1
        self._open_namespaces()
        self._writer.start()
        for ns in self.namespaces:
            self._sync(ns)
        if self.config.kube:
            self._retarget()
        if not self.sources and not self.config.kube:
            why = "; ".join(self.failed.values()) or (
                f"none of {', '.join(self.config.ifaces)} is up here"
                if self.config.ifaces
                else "no interface is up"
            )
            self.say(f"error: no interface to capture on: {why}")
            self.stop()
            self._writer.join()
            if self.server is not None:
                self.server.stop()
            return 1
        self.say(f"capturing on {', '.join(sorted(self.sources)) or '(no targeted pod yet)'} "
                 f"(filter: {self.bpf})")  # fmt: skip
        self._running = True
        next_status = 0.0
        try:
            while not self._stopping.is_set():
                fds = [ns.watcher.fileno() for ns in self.namespaces] + [self._wake_r]
                ready, _, _ = select.select(fds, [], [], 0.25)
                if self._wake_r in ready:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                for ns in self.namespaces:
                    if ns.watcher.fileno() in ready:
                        self._on_links(ns)
                now = time.monotonic()
                if self.config.kube and now >= self._retarget_at:
                    self._retarget()
                if now >= next_status:
                    next_status = now + STATUS_INTERVAL
                    self._reap()
                    self.write_status()
        finally:
            self._shutdown()
        return 0

    def _start_kube(self) -> bool:
        """Watch the cluster's pods, services and endpoint slices into the store's history."""
        from shark_tui.engine.kube import KubeError, KubeWatcher, load_client

        try:
            client = load_client(self.config.kubeconfig, self.config.context)
        except KubeError as exc:
            self.say(f"error: --kube: {exc}")
            return False
        with self.lock:
            names = self.recorder.attach_names()
        self.kube = KubeWatcher(names, client)
        self.kube.start()
        if not self.kube.ready.wait(10.0):
            self.say(f"warning: --kube: the pods are not listed yet "
                     f"({self.kube.last_error or 'no answer'}); carrying on")  # fmt: skip
        node = self.config.node or "(any: pods found on this host)"
        self.say(f"cluster: node {node}, targets {self.targets.describe()}")
        return True

    def set_targets(self, pods: str, namespaces: list[str]) -> None:
        """Capture these pods from now on (a `wire.SetTargets`; safe from any thread).
        ValueError for a bad regex."""
        self.targets = cluster.Targets(pods, tuple(namespaces))
        self._retarget_at = 0.0
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"t")

    def _retarget(self) -> None:
        """Capture inside the targeted pods' namespaces; stop on the ones no longer targeted
        (or gone)."""
        self._retarget_at = time.monotonic() + RETARGET_INTERVAL
        names = self.recorder.names
        if names is None:
            return
        pods = cluster.targeted(names, self.config.node, self.targets)
        self._narrow_host_filter(ip for _ns, _name, ips in pods for ip in ips)
        wanted = cluster.plan(pods, podnet.scan()) if pods else {}
        for ns in [n for n in self.namespaces if n.pod is not None]:
            pod = ns.pod
            assert pod is not None
            want = wanted.get(ns.label)
            if want is not None and want.inode == pod.inode:
                # the same namespace: should the process it was entered through go, a source
                # opened again enters it through another
                ns.path = want.path
                continue
            for name in [n for n in self.sources if self._in_ns(n, ns)]:
                self._drop(name, "pod no longer targeted" if want is None else "pod changed")
            ns.watcher.close()
            self.namespaces.remove(ns)
            self.pod_sources.pop(ns.label, None)
        for label, pod in wanted.items():
            if label in self.pod_sources:
                continue
            if self.config.ifaces and pod.sidecar is None:
                continue  # --iface: the host side has its traffic; nothing to take inside
            try:
                with netns.switched(pod.path):
                    watcher = netlink.LinkWatcher()
            except OSError as exc:  # its process went between the scan and now: next time
                self.failed[label] = f"{label}: cannot enter its network namespace: {exc}"
                continue
            self.failed.pop(label, None)
            ns = _Namespace(pod.path, label, watcher, pod)
            self.namespaces.append(ns)
            self.pod_sources[label] = pod
            self._sync(ns)
            what = "its lo" if self.config.ifaces else "in its namespace"
            extra = f", with its {pod.sidecar} sidecar's lo" if pod.sidecar else ""
            self.say(f"pod {label} ({', '.join(pod.ips)}): capturing {what}{extra}")

    def _narrow_host_filter(self, ips: Iterable[str]) -> None:
        """Host interfaces (``--iface`` with ``--kube``) capture the targeted pods' traffic
        only: their BPF filter names those addresses (all TCP past `cluster.MAX_BPF_HOSTS`)."""
        hosts = cluster.host_filter(ips)
        user = self.config.bpf.strip()
        expr = " and ".join(f"({x})" for x in (user, hosts) if x)
        bpf = capture_filter(expr, self._own_port)
        if bpf == self.host_bpf:
            return
        self.host_bpf = bpf
        on_host = [name for ns in self.namespaces if ns.pod is None
                   for name in self.sources if self._in_ns(name, ns)]  # fmt: skip
        for name in on_host:  # every thread applies it at once; then the wait
            self.sources[name].set_filter(bpf, wait=0)
        deadline = time.monotonic() + 1.0
        late = []
        for name in on_host:
            if not self.sources[name].filter_applied(max(0.0, deadline - time.monotonic())):
                late.append(name)
        self.say(f"host interfaces: filter {bpf}"
                 + (f" (not yet applied on {', '.join(late)})" if late else ""))  # fmt: skip

    def _start_tls(self) -> bool:
        from shark_tui.ebpf.capture import EbpfUnavailable, TlsCapture

        with self.lock:
            sid = self.recorder.source("tls", 1, description="TLS plaintext (eBPF uprobes)")
        tls = TlsCapture(sid, self.queue, log=self.say)
        try:
            tls.start()
        except EbpfUnavailable as exc:
            self.tls_error = str(exc)
            level = "warning" if self.config.tls_optional else "error"
            self.say(f"{level}: --tls: {exc}")
            return False
        self.tls = tls
        self.say(f"TLS plaintext: OpenSSL uprobes, sockets via {tls.tracer.path}")
        return True

    def tls_status(self) -> dict[str, Any]:
        """What ``tls-status`` shows (an empty report without ``--tls``)."""
        if self.tls is None:
            return {"enabled": False, "processes": [],
                    "reason": self.tls_error or "the daemon runs without --tls"}  # fmt: skip
        with self.lock:
            wire = self.recorder.wire_tls_tuples()
        report: dict[str, Any] = self.tls.status(wire.__contains__)
        report["enabled"] = True
        return report

    def set_paused(self, paused: bool) -> None:
        """Stop storing what is captured (the sources stay open, their packets are counted as
        ``paused``), or store it again. Safe from any thread."""
        self.paused = paused

    def stop(self) -> None:
        """Ask `run` to finish (safe from a signal handler or another thread)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _shutdown(self) -> None:
        if self.server is not None:
            self.server.stop()
        for src in list(self.sources.values()):
            src.stop()
        for src in list(self.sources.values()):
            src.join()
        if self.tls is not None:
            self.tls.stop()
            self.tls.join()
        if self.kube is not None:
            self.kube.stop()
        self._stopping.set()
        self.queue.wake()
        self._writer.join()
        self.write_status()
        for ns in self.namespaces:
            ns.watcher.close()
        st = self.recorder.status()
        self.say(
            f"stopped: {st['packets']} packets stored, {st['duplicates']} duplicates dropped, "
            f"{st['flows']} connections, {st['store_bytes']} bytes in {st['segments']} segments"
        )

    # -- namespaces and links -------------------------------------------------------------------

    def _open_namespaces(self) -> None:
        if self.config.kube and not self.config.ifaces and not self.config.netns:
            return  # the targeted pods' namespaces only (`_retarget`)
        if not self.config.netns:
            self.namespaces.append(_Namespace(None, "", netlink.LinkWatcher()))
            return
        for spec in self.config.netns:
            path = netns.resolve(spec)
            with netns.switched(path):
                watcher = netlink.LinkWatcher()
            self.namespaces.append(_Namespace(path, netns.label(spec), watcher))

    def _wanted(self, ns: _Namespace, link: netlink.Link) -> bool:
        if not link.up:
            return False
        if ns.pod is not None:  # a targeted pod: its interfaces, lo only beside a sidecar
            if link.name == "lo":
                return ns.pod.sidecar is not None
            return not self.config.ifaces  # --iface: its traffic is taken on the host side
        if not self.config.ifaces:
            return True
        return link.name in self.config.ifaces or ns.source_name(link.name) in self.config.ifaces

    def _sync(self, ns: _Namespace) -> None:
        """Bring the sources of ``ns`` in line with a fresh dump of its links."""
        ns.links = {link.name: link for link in ns.watcher.dump()}
        for link in ns.links.values():
            self._consider(ns, link)
        prefix = f"{ns.label}/" if ns.label else ""
        for name in [n for n in self.sources if self._in_ns(n, ns)]:
            ifname = name[len(prefix) :]
            if ifname not in ns.links or not ns.links[ifname].up:
                self._drop(name, "link gone")

    def _in_ns(self, name: str, ns: _Namespace) -> bool:
        if ns.label:
            return name.startswith(ns.label + "/")
        return "/" not in name

    def _on_links(self, ns: _Namespace) -> None:
        try:
            events = ns.watcher.read_events()
        except netlink.Overflow:
            self._sync(ns)
            return
        for ev in events:
            name = ns.source_name(ev.link.name)
            if ev.removed or not ev.link.up:
                ns.links.pop(ev.link.name, None)
                if name in self.sources:
                    self._drop(name, "link removed" if ev.removed else "link down")
            else:
                ns.links[ev.link.name] = ev.link
                self._consider(ns, ev.link)

    def _consider(self, ns: _Namespace, link: netlink.Link) -> None:
        name = ns.source_name(link.name)
        if name in self.sources or not self._wanted(ns, link):
            return
        with self.lock:
            desc = f"netns {ns.path}" if ns.path else ""
            sid = self.recorder.source(name, 1, description=desc)
        bpf = self.bpf if ns.pod is not None else self.host_bpf
        src = CaptureSource(sid, link.name, bpf, self.queue, ns.path, self._on_exit)
        try:
            src.start()
        except CaptureError as exc:
            self.failed[name] = str(exc)
            self.say(f"warning: {exc}")
            return
        with self.lock:
            info = self.recorder.sources[sid]
            info.linktype = src.linktype
        self.failed.pop(name, None)
        self.sources[name] = src
        if self._running:
            self.say(f"capturing on {name}")

    def _drop(self, name: str, why: str) -> None:
        src = self.sources.pop(name, None)
        if src is not None:
            src.stop()
            self.say(f"stopped capturing on {name} ({why})")

    def _on_exit(self, src: CaptureSource) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _reap(self) -> None:
        """Forget sources whose thread ended by itself; when the link is still there and up
        (the thread failed, the interface did not go), open it again — at most every 5 s."""
        now = time.monotonic()
        for name, src in list(self.sources.items()):
            if not src.alive:
                del self.sources[name]
                self.say(f"stopped capturing on {name} ({src.error or 'ended'})")
                self._retry_at[name] = now + 5.0
        for name, when in list(self._retry_at.items()):
            if when > now or name in self.sources:
                continue
            del self._retry_at[name]
            for ns in self.namespaces:
                if self._in_ns(name, ns):
                    link = ns.links.get(name.rpartition("/")[2])
                    if link is not None:
                        self._consider(ns, link)

    # -- the writer -----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        rec = self.recorder
        q = self.queue
        reorder = Reorderer()
        last_tick = 0.0
        while True:
            batch = q.get(0.05)
            while batch is not None:  # take everything queued, then store it in time order
                if self.paused:
                    sid = batch[0]
                    n = len(batch[2]) // PACKET_META
                    self.paused_packets[sid] = self.paused_packets.get(sid, 0) + n
                else:
                    reorder.push(batch)
                batch = q.get(0)
            done = self._stopping.is_set() and q.bytes == 0
            multi = len(self.sources) + (self.tls is not None) > 1
            ready = reorder.pop(time.time_ns(), multi=multi, final=done)
            if ready:
                with self.lock:
                    for b in ready:
                        try:
                            rec.add_batch(*b)
                        except Exception as exc:  # a bug must not stop the store: count, go on
                            self.writer_errors += 1
                            if self.writer_errors <= 10:
                                self.say(f"error: a batch could not be stored: {exc!r}")
            if done:
                break
            now = time.monotonic()
            if now - last_tick >= 0.2:
                last_tick = now
                with self.lock:
                    rec.tick()
                    self.reorder_stats = dict(reorder.stats, held=reorder.held)
        with self.lock:
            rec.close()

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        with self.lock:
            for name, src in self.sources.items():
                sid = src.sid
                self.recorder.sources[sid].counters = dict(
                    src.counters, capturing=1, paused=self.paused_packets.get(sid, 0)
                )
                del name
            if self.tls is not None:
                self.recorder.sources[self.tls.sid].counters = dict(
                    self.tls.counters,
                    capturing=int(self.tls.alive),
                    paused=self.paused_packets.get(self.tls.sid, 0),
                )
            st = self.recorder.status()
        st["pid"] = os.getpid()
        st["started_ns"] = self.started_ns
        st["queue_bytes"] = self.queue.bytes
        st["queue_dropped_batches"] = self.queue.dropped_batches
        st["writer_errors"] = self.writer_errors
        st["reorder"] = dict(self.reorder_stats)
        st["capturing"] = sorted(self.sources)
        st["filters"] = {name: src.bpf for name, src in sorted(self.sources.items())}
        st["paused"] = self.paused
        st["failed"] = dict(self.failed)
        if self.config.kube:
            kube = self.kube
            st["kube"] = {
                "node": self.config.node,
                "targets": self.targets.describe(),
                "pods": sorted(self.pod_sources),
                "watch": kube.stats if kube is not None else {},
                "error": kube.last_error if kube is not None else None,
            }
        return st

    def write_status(self) -> None:
        path = os.path.join(self.config.store, "status.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.status(), f)
        os.replace(tmp, path)
