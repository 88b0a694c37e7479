"""The daemon's TLS source: the OpenSSL tracer's plaintext, as synthetic packets, onto the
same batch queue as the interfaces (source ``tls``), plus what ``tls-status`` reports."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from shark_tui.ebpf.loader import EbpfUnavailable
from shark_tui.ebpf.openssl import OpenSSLTracer
from shark_tui.engine.capture import BatchQueue
from shark_tui.engine.tlssynth import Chunk, Synthesizer

__all__ = ["EbpfUnavailable", "TlsCapture"]

_META: Final = struct.Struct("=IIII")
SCAN_INTERVAL: Final = 1.0
_NS: Final = 1_000_000_000


class TlsCapture:
    """One thread: poll the ring buffer, turn chunks into packets, queue them as batches."""

    def __init__(self, sid: int, out: BatchQueue, log: Callable[[str], None] | None = None) -> None:
        self.sid = sid
        self.out = out
        self.log = log
        self.synth = Synthesizer()
        self.tracer = OpenSSLTracer(self._on_chunk)
        self.counters = {"received": 0, "dropped": 0, "ifdropped": 0, "queue_dropped": 0,
                         "batches": 0}  # fmt: skip
        self.error: str | None = None
        self.lock = threading.Lock()  # guards the tracer's tables against status readers
        self._pending: list[tuple[int, bytes]] = []
        self._chunks: list[Chunk] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls capture", daemon=True)

    def start(self) -> None:
        """Load and attach the probes (raises `EbpfUnavailable`), then start the thread."""
        self.tracer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _on_chunk(self, ch: Chunk) -> None:
        self._chunks.append(ch)

    def _feed(self) -> None:
        """The chunks of one poll, in time order: the ring holds them in the order the calls
        returned, and two threads' calls on one connection can return out of order (Go's
        writes carry the time they took the connection's lock)."""
        chunks, self._chunks = self._chunks, []
        chunks.sort(key=lambda c: c.ts_ns)
        for ch in chunks:
            self._pending.extend(self.synth.feed(ch))

    def _run(self) -> None:
        next_scan = time.monotonic() + SCAN_INTERVAL
        try:
            while not self._stop.is_set():
                with self.lock:
                    self.tracer.poll(100)
                    self._feed()
                self._flush()
                now = time.monotonic()
                if now >= next_scan:
                    next_scan = now + SCAN_INTERVAL
                    with self.lock:
                        self.tracer.scan()
                        self.synth.forget_closed()
            with self.lock:
                self.tracer.poll(0)
                self._feed()
            self._flush()
        except Exception as exc:  # the thread says why it stopped; the daemon carries on
            self.error = f"tls: {exc!r}"
            if self.log is not None:
                self.log(f"error: TLS capture stopped: {exc!r}")
        finally:
            with self.lock:
                self.tracer.close()

    def _flush(self) -> None:
        if not self._pending:
            return
        packets, self._pending = self._pending, []
        packets.sort(key=lambda p: p[0])
        data = bytearray()
        meta = bytearray()
        for ts, pkt in packets:
            meta += _META.pack(ts // _NS, (ts % _NS) // 1000, len(data), len(pkt))
            data += pkt
        self.counters["received"] += len(packets)
        self.counters["batches"] += 1
        if not self.out.put((self.sid, bytes(data), bytes(meta))):
            self.counters["queue_dropped"] += len(packets)

    def status(self, wire_tls: Callable[[tuple[bytes, int, bytes, int]], bool]) -> dict[str, Any]:
        """Processes using TLS and whether their plaintext is visible (see `tlsstatus`)."""
        from shark_tui.ebpf.tlsstatus import report

        with self.lock:
            return report(self, wire_tls)
