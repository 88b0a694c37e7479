"""``dissect`` of a file on several cores: the same entries, in the same order, sooner.

Every worker reads the whole file and tracks every connection (so flow numbers are the same
as in one process), but dissects only the connections whose number falls in its share
(``flow % jobs == index``). Each worker streams its entries, already rendered, in
(ts, flow, n) order through a pipe; the parent merges the streams on that key, which is the
order a single process uses too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import struct
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import IO, Any

from shark_tui.engine.capfile import CaptureFile, CaptureFormatError, CaptureReader
from shark_tui.engine.dissect import Dissection, Entry

_native: ModuleType | None
try:  # the merge in C (shark_tui/engine/_native.c); `merge_records` here is the reference
    from shark_tui.engine import _native
except ImportError:  # pragma: no cover - an install without a compiler
    _native = None

#: (ts, flow, n, payload length) before each record a worker sends.
_RECORD = struct.Struct("<dIIi")
_END = 0xFFFFFFFF  # `flow` of the last record: the worker's summary (JSON) follows
_FAILED = 0xFFFFFFFE  # `flow` of a record saying the worker failed (its reason follows)
_PIPE_BUFFER = 1 << 20
_IOV_MAX = 1024  # buffers per writev (Linux's IOV_MAX)
#: Chunks (of up to _PIPE_BUFFER bytes) read ahead from each worker before it must wait.
_PUMP_CHUNKS = 4
#: Bytes of the file a worker reads at a time. The connections it hands to its ignore set are
#: taken out from the next read on, so smaller reads take out more: on the bench capture 256 KiB
#: leaves a worker that owns nothing 0.76 s instead of 1.07 s with 1 MiB (416,238 records taken
#: out of a half share instead of 365,923).
_WORKER_CHUNK = 64 * 1024


#: Appends one rendered entry (a JSON line, a table row) to the buffer.
Renderer = Callable[[Entry, bytearray], None]


class WorkerFailed(RuntimeError):
    """A worker process died or reported an error."""


def check_capture(path: str) -> None:
    """Raise CaptureFormatError now if ``path`` is not a capture file at all."""
    reader = CaptureReader()
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    reader.feed(head)
    if len(head) < 1 << 16:
        reader.close()  # raises for an empty or header-less file


def dissect_file(
    path: str,
    jobs: int,
    make: Callable[[], Dissection],
    render: Renderer,
    out: IO[bytes],
) -> tuple[str | None, dict[str, dict[str, int]]]:
    """Write every entry of the capture at ``path``, rendered, to ``out`` in order.

    ``make`` builds a configured (filter, decode ports, body cap) Dissection whose output is
    ignored. Returns the capture's warning (truncated file) and the counters.
    """
    if jobs <= 1:
        return _single(path, make, render, out)
    check_capture(path)
    fds: list[int] = []
    pids: list[int] = []
    for index in range(jobs):
        r, w = os.pipe()
        with contextlib.suppress(OSError):  # 1 MiB pipes: 16x fewer wake-ups than 64 KiB ones
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_BUFFER)
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(r)
            for other in fds:
                os.close(other)
            _worker(path, index, jobs, make, render, w)  # never returns
        os.close(w)
        pids.append(pid)
        fds.append(r)
    summaries: list[dict[str, Any]] = []
    failures: list[str] = []
    # A thread per worker drains its pipe, so that no worker waits on the merge while the
    # merge waits on another worker.
    _fixed_mmap_threshold()
    pumps = [_Pump(fd) for fd in fds]
    try:
        _merge(pumps, out, summaries, failures)
    finally:
        for p in pumps:
            p.close()
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            if status != 0 and not failures:
                failures.append(f"worker {pid} exited with status {status}")
    if failures:
        kind, _, reason = failures[0].partition(": ")
        if kind == CaptureFormatError.__name__:
            raise CaptureFormatError(reason)
        raise WorkerFailed(failures[0])
    return _combine(summaries)


def _single(
    path: str, make: Callable[[], Dissection], render: Renderer, out: IO[bytes]
) -> tuple[str | None, dict[str, dict[str, int]]]:
    buf = bytearray()
    live = path == "-"  # a pipe (e.g. from tcpdump -w -): entries go out as they are final

    def emit(payload: bytearray) -> None:
        buf.extend(payload)
        if live or len(buf) > _PIPE_BUFFER:
            out.write(buf)
            buf.clear()
            if live:
                out.flush()

    d = make()
    d.out = emit
    d.render = render
    f = open(path, "rb") if path != "-" else None  # noqa: SIM115 - closed below
    try:
        capture = CaptureFile(f if f is not None else sys.stdin.buffer)
        d.run_file(capture)
    finally:
        if f is not None:
            f.close()
        out.write(buf)
    return capture.warning or next(iter(d.warnings), None), _counters(d)


def _counters(d: Dissection) -> dict[str, dict[str, int]]:
    return {"dissect": dict(d.stats), "tcp": dict(d.table.stats), "packet": dict(d.decoder.stats)}


def _worker(
    path: str,
    index: int,
    jobs: int,
    make: Callable[[], Dissection],
    render: Renderer,
    fd: int,
) -> None:
    code = 0
    # The records go out as they are, gathered (writev): no copy into one buffer.
    pending: list[bytes | bytearray | memoryview] = []
    pending_size = 0
    pack_into = _RECORD.pack_into
    size = _RECORD.size
    blank = bytes(size)

    def flush() -> None:
        nonlocal pending_size
        while pending:
            batch = pending[:_IOV_MAX]
            done = os.writev(fd, batch)
            k = 0
            while k < len(batch) and done >= len(batch[k]):
                done -= len(batch[k])
                k += 1
            del pending[:k]
            if done:  # the first one left was written in part
                pending[0] = memoryview(pending[0])[done:]
        pending_size = 0

    try:

        def record(entry: Entry, out: bytearray) -> None:
            """The entry rendered, behind the header the merge sorts on."""
            out.extend(blank)
            render(entry, out)
            flow, _, n = entry["id"].partition(":")
            pack_into(out, 0, entry["ts"], int(flow), int(n), len(out) - size)

        def emit(payload: bytearray) -> None:
            nonlocal pending_size
            pending.append(payload)
            pending_size += len(payload)
            if pending_size > _PIPE_BUFFER:
                flush()

        d = make()
        d.out = emit
        d.render = record
        d.partition = (index, jobs)

        def frame(line: bytearray, ts: float, flow: int, n: int) -> None:
            """The same header on an entry line the C path wrote behind room for it."""
            pack_into(line, 0, ts, flow, n, len(line) - size)

        d.line_head = size
        d.frame = frame
        with open(path, "rb") as f:
            capture = CaptureFile(f, _WORKER_CHUNK)
            d.run_file(capture)
        warning = capture.warning or next(iter(d.warnings), None)
        summary = json.dumps({"warning": warning, "counters": _counters(d)}).encode()
        pending.append(_RECORD.pack(float("inf"), _END, 0, len(summary)) + summary)
        flush()
    except BrokenPipeError:
        code = 1
    except BaseException as exc:  # report anything, then leave without running atexit hooks
        code = 1
        reason = f"{type(exc).__name__}: {exc}".encode()
        with contextlib.suppress(OSError):
            pending.clear()
            pending.append(_RECORD.pack(float("inf"), _FAILED, 0, len(reason)) + reason)
            flush()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        os._exit(code)


def _fixed_mmap_threshold() -> None:
    """Keep glibc from raising its mmap threshold once a 1 MiB chunk read from a pipe is freed:
    the chunks then come from the pump threads' heap arenas, which grew the parent to ~120 MB
    (measured); with the threshold fixed they are mapped and unmapped, and the parent stays at
    ~40 MB. Nothing happens where ``mallopt`` is missing (not glibc)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: glibc's default, made fixed
    except (OSError, AttributeError):
        pass


class _Pump:
    """Reads one worker's pipe on a thread into a bounded queue of chunks.

    The chunks are views of buffers the pump reuses once the merge gives them back
    (`release`): the same few megabytes all along, rather than a fresh mapping to fault in
    for every read (measured: a quarter of the parent's time went to page faults)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: queue.Queue[memoryview] = queue.Queue(maxsize=_PUMP_CHUNKS)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._eof = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        empty = memoryview(b"")
        try:
            while True:
                try:
                    buf = self._free.get_nowait()
                except queue.Empty:
                    buf = bytearray(_PIPE_BUFFER)
                n = os.readv(self._fd, [buf])
                self._queue.put(memoryview(buf)[:n] if n else empty)
                if not n:
                    return
        except OSError:
            self._queue.put(empty)

    def chunk(self) -> memoryview:
        """The next bytes read from the pipe; empty at its end."""
        if self._eof:
            return memoryview(b"")
        data = self._queue.get()
        self._eof = not data
        return data

    def release(self, chunk: bytes | memoryview) -> None:
        """The merge is done with ``chunk`` (a view `chunk` returned, or any bytes): its buffer
        may be read into again."""
        if isinstance(chunk, memoryview) and isinstance(chunk.obj, bytearray):
            self._free.put(chunk.obj)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        while self._thread.is_alive():  # let a blocked put() go through
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()


def _merge(
    pumps: list[_Pump], out: IO[bytes], summaries: list[dict[str, Any]], failures: list[str]
) -> None:
    """Write the workers' entries to ``out`` in (ts, flow, n) order, collecting their summaries
    and failures. The records are merged in the chunks they were read in, and with the C module
    written from there to ``out``'s file descriptor (`_native.merge_records`)."""
    k = len(pumps)
    # stream i: bufs[2i] then bufs[2i + 1] from poss[i] (a record may straddle two reads)
    bufs: list[bytes | memoryview] = [b""] * (2 * k)
    poss, live = [0] * k, [True] * k
    try:
        fd = out.fileno() if _native is not None else -1
    except (AttributeError, OSError, ValueError):  # not a file (io.BytesIO)
        fd = -1
    if fd >= 0:
        out.flush()
    while True:
        if fd >= 0:
            status, i = _native.merge_records(bufs, poss, live, fd)  # type: ignore[union-attr]
        else:
            status, i = merge_records(bufs, poss, live, out.write)
        if status == _MERGE_DONE:
            return
        if status == _MERGE_MORE:  # stream i's next record is not all there: read on
            chunk = pumps[i].chunk()
            if not chunk:
                failures.append("a worker stopped before its end record")
                live[i] = False
            a, b, pos = bufs[2 * i], bufs[2 * i + 1], poss[i]
            done = []
            if pos >= len(a):  # the first is done with: the rest is in the second
                done.append(a)
                a, pos, b = b, pos - len(a), b""
            if b:  # a record longer than a read: both into one (rare)
                done += (a, b)
                a, pos = bytes(a[pos:]) + bytes(b), 0
            bufs[2 * i], bufs[2 * i + 1], poss[i] = memoryview(a)[pos:], chunk, 0
            for old in done:
                pumps[i].release(old)
        else:  # _MERGE_LAST: stream i's end (or failed) record is the smallest
            live[i] = False
            head = _take(bufs[2 * i], bufs[2 * i + 1], poss[i], _RECORD.size)
            _ts, flow, _n, length = _RECORD.unpack(head)
            payload = _take(bufs[2 * i], bufs[2 * i + 1], poss[i] + _RECORD.size, max(0, length))
            if flow == _END:
                summaries.append(json.loads(payload))
            elif flow == _FAILED:
                failures.append(payload.decode(errors="replace"))
            else:
                failures.append(f"a worker sent a record of length {length}")


_MERGE_DONE, _MERGE_MORE, _MERGE_LAST = 0, 1, 2


def _take(a: bytes | memoryview, b: bytes | memoryview, off: int, n: int) -> bytes:
    """``n`` bytes (fewer at the end) from ``off`` of a then b."""
    if off >= len(a):
        return bytes(b[off - len(a) : off - len(a) + n])
    if off + n <= len(a):
        return bytes(a[off : off + n])
    return bytes(a[off:]) + bytes(b[: off + n - len(a)])


def merge_records(
    bufs: list[bytes | memoryview],
    poss: list[int],
    live: list[bool],
    write: Callable[[bytes], object],
) -> tuple[int, int]:
    """The reference of `_native.merge_records` (its comment says what it does), writing with
    ``write`` instead of to a file descriptor."""
    size = _RECORD.size
    while True:
        best: tuple[float, int, int] | None = None
        at = best_len = -1
        for i in range(len(poss)):
            if not live[i]:
                continue
            a, b, pos = bufs[2 * i], bufs[2 * i + 1], poss[i]
            have = len(a) + len(b) - pos
            if have < size:
                return _MERGE_MORE, i
            ts, flow, n, length = _RECORD.unpack(_take(a, b, pos, size))
            if length >= 0 and have < size + length:
                return _MERGE_MORE, i
            if best is None or (ts, flow, n) < best:
                best, at, best_len = (ts, flow, n), i, length
        if best is None:
            return _MERGE_DONE, -1
        if best[1] >= _FAILED or best_len < 0:
            return _MERGE_LAST, at
        start = poss[at] + size
        write(_take(bufs[2 * at], bufs[2 * at + 1], start, best_len))
        poss[at] = start + best_len


def _combine(summaries: list[dict[str, Any]]) -> tuple[str | None, dict[str, dict[str, int]]]:
    """Counters of all workers: what every worker sees once (packets, segments) from the first,
    what each counts for its own share summed."""
    if not summaries:
        return None, {}
    first = summaries[0]["counters"]
    total: dict[str, dict[str, int]] = {k: dict(v) for k, v in first.items()}
    shared = {
        ("dissect", "packets"),
        ("tcp", "segments"),
        ("tcp", "flows"),
        ("tcp", "port_reuse"),
        ("tcp", "after_close"),
        ("tcp", "flows_evicted"),
    }
    for other in summaries[1:]:
        for group, counters in other["counters"].items():
            for key, value in counters.items():
                if group == "packet" or (group, key) in shared:
                    continue
                total[group][key] = total[group].get(key, 0) + value
    return summaries[0]["warning"], total


__all__ = ["CaptureFormatError", "WorkerFailed", "check_capture", "dissect_file"]
