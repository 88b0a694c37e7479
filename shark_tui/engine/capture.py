"""Live capture with pcapy-ng: one thread per source, nothing but libpcap in its loop.

A `CaptureSource` opens one interface (inside a network namespace when given one: the thread
switches into it with ``setns`` first, and the handle keeps capturing there), sets snaplen and
a 64 MiB kernel buffer before activating, installs the BPF filter, and then loops on
``select`` + ``next_batch``: one C→Python crossing per batch, never a blocking read (those
never return on an idle filter — RECIPES.md). Each batch goes onto the shared `BatchQueue`
as ``(source id, packet bytes, packed metadata)``; parsing happens in the writer thread.

The queue is bounded in bytes; a batch that does not fit is dropped and counted against its
source, so a slow writer shows up as drops instead of unbounded memory. libpcap's own
received/dropped counters are read from the capture thread (``pcap_stats`` is not safe to
call on a handle another thread reads) about once a second. On ``lo`` the kernel counts each
packet twice; the source halves them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Final

import pcapy

from shark_tui.engine import netns

__all__ = ["BUFFER_BYTES", "SNAPLEN", "BatchQueue", "CaptureError", "CaptureSource"]

SNAPLEN: Final = 262144
BUFFER_BYTES: Final = 64 << 20
BATCH: Final = 4096
READ_TIMEOUT_MS: Final = 50
QUEUE_BYTES: Final = 256 << 20


class CaptureError(Exception):
    """A source could not be opened (one line, with the fix when there is one)."""


Batch = tuple[int, bytes, bytes]  # source id, packet bytes, next_batch metadata


class BatchQueue:
    """Batches from every capture thread to the writer, bounded in bytes."""

    def __init__(self, max_bytes: int = QUEUE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._q: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.bytes = 0
        self.dropped_batches = 0

    def put(self, batch: Batch) -> bool:
        n = len(batch[1])
        with self._lock:
            if self.bytes + n > self.max_bytes:
                self.dropped_batches += 1
                return False
            self.bytes += n
        self._q.put(batch)
        return True

    def get(self, timeout: float) -> Batch | None:
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is not None:
            with self._lock:
                self.bytes -= len(item[1])
        return item

    def wake(self) -> None:
        self._q.put(None)


class CaptureSource:
    """One interface, one thread. ``counters`` (read by anyone, written by the thread) hold
    ``received``, ``dropped`` (kernel), ``ifdropped``, ``queue_dropped`` (packets) and
    ``batches``; ``error`` says why the thread stopped, if it did."""

    def __init__(
        self,
        sid: int,
        ifname: str,
        bpf: str,
        out: BatchQueue,
        netns_path: str | None = None,
        on_exit: Callable[[CaptureSource], None] | None = None,
    ) -> None:
        self.sid = sid
        self.ifname = ifname
        self.bpf = bpf
        self.netns_path = netns_path
        self.out = out
        self.on_exit = on_exit
        self.linktype = -1
        self.counters = {
            "received": 0,
            "dropped": 0,
            "ifdropped": 0,
            "queue_dropped": 0,
            "batches": 0,
        }
        self.error: str | None = None
        self._new_bpf: str | None = None  # set by `set_filter`, applied by the thread
        self._filter_set = threading.Event()
        self.error_filter: str | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._opened = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"capture {ifname}", daemon=True
        )
        self._handle: pcapy.Reader | None = None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, timeout: float = 5.0) -> None:
        """Start the thread; return once the handle is open. Raise `CaptureError` if it failed."""
        self._thread.start()
        if not self._opened.wait(timeout):
            raise CaptureError(f"{self.ifname}: opening the capture timed out")
        if self.error is not None:
            raise CaptureError(self.error)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")

    def set_filter(self, bpf: str, wait: float = 1.0) -> bool:
        """Capture with ``bpf`` from now on: the capture thread applies it (within 200 ms);
        returns once it did (True), or after ``wait`` seconds (False; 0: do not wait, see
        `filter_applied`). A filter libpcap refuses leaves the old one, and says so in
        ``error_filter``."""
        self._filter_set.clear()
        self._new_bpf = bpf
        return self.filter_applied(wait) if wait else False

    def filter_applied(self, wait: float) -> bool:
        """Whether the filter last given to `set_filter` was applied, waiting up to ``wait``."""
        return self._filter_set.wait(wait)

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)

    def _open(self) -> pcapy.Reader:
        if self.netns_path is not None:
            netns.enter(self.netns_path)
        h = pcapy.create(self.ifname)
        h.set_snaplen(SNAPLEN)
        h.set_buffer_size(BUFFER_BYTES)
        h.set_timeout(READ_TIMEOUT_MS)
        h.set_promisc(0)
        h.activate()
        if self.bpf:
            h.setfilter(self.bpf)
        h.setnonblock(1)
        self.linktype = h.datalink()
        return h

    def _run(self) -> None:
        try:
            try:
                h = self._open()
            except (pcapy.PcapError, netns.NetnsError, OSError) as exc:
                self.error = _explain(self.ifname, exc)
                return
            finally:
                self._opened.set()
            self._handle = h
            self._loop(h)
        finally:
            with contextlib.suppress(Exception):
                if self._handle is not None:
                    self._handle.close()
            for fd in (self._stop_r, self._stop_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self.on_exit is not None:
                self.on_exit(self)

    def _loop(self, h: pcapy.Reader) -> None:
        fd = h.getfd()
        stop = self._stop_r
        put = self.out.put
        sid = self.sid
        counters = self.counters
        loopback = self.ifname == "lo"
        next_stats = 0.0
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(stop, select.POLLIN)
        while True:
            ready = poller.poll(200)
            for rfd, events in ready:
                if rfd == stop:
                    self._drain(h, put, sid, counters)
                    self._read_stats(h, loopback)
                    return
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    # keep what the kernel still hands over, then stop
                    with contextlib.suppress(pcapy.PcapError):
                        self._drain(h, put, sid, counters)
                    self.error = f"{self.ifname}: the interface went away"
                    return
            try:
                self._drain(h, put, sid, counters)
            except pcapy.PcapError as exc:
                self.error = _explain(self.ifname, exc)
                return
            if self._new_bpf is not None:
                bpf, self._new_bpf = self._new_bpf, None
                try:
                    h.setfilter(bpf)
                    self.bpf = bpf
                except pcapy.PcapError as exc:
                    counters["filter_errors"] = counters.get("filter_errors", 0) + 1
                    self.error_filter = f"{bpf!r}: {exc}"
                self._filter_set.set()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + 1.0
                self._read_stats(h, loopback)

    @staticmethod
    def _drain(
        h: pcapy.Reader,
        put: Callable[[Batch], bool],
        sid: int,
        counters: dict[str, int],
    ) -> None:
        for _ in range(64):  # bounded, so the stop pipe is looked at now and then
            data, meta = h.next_batch(BATCH)
            if not meta:
                return
            counters["batches"] += 1
            if not put((sid, data, meta)):
                counters["queue_dropped"] += len(meta) // 16

    def _read_stats(self, h: pcapy.Reader, loopback: bool) -> None:
        try:
            recv, drop, ifdrop = h.stats()
        except pcapy.PcapError:
            return
        if loopback:  # the kernel sees each loopback packet twice (out and in)
            recv //= 2
            drop //= 2
        c = self.counters
        c["received"], c["dropped"], c["ifdropped"] = recv, drop, ifdrop


def _explain(ifname: str, exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "permission" in text.lower() or "not permitted" in text.lower():
        return (
            f"{ifname}: {text} — capturing needs root or CAP_NET_RAW "
            "(sudo setcap cap_net_raw,cap_net_admin+eip on the Python interpreter, or run as root)"
        )
    return f"{ifname}: {text}"
