"""The daemon's socket side: token-checked clients over `wire` frames, queries in one thread.

Two threads besides capture and the writer:

- the **network thread** runs an asyncio loop: accepts clients (TCP or a Unix socket), sends
  the daemon's `Hello`, checks the client's (version, then the token in constant time), decodes
  frames with a size cap and hands requests to the query thread. Whatever a client does wrong —
  a bad token, garbage, a truncated or oversized frame, HTTP — closes that one connection and
  is counted. Every client's outgoing bytes are bounded (`CLIENT_BUFFER`): one that stops
  reading is cut off instead of holding memory or slowing anybody else.
- the **query thread** owns the `QueryEngine`: runs subscriptions' backlogs, `GetEntry` and
  `Export`, and every `LIVE_INTERVAL` dissects the flows that received packets and pushes the
  new entries to the live subscriptions whose filter they match. It only dissects while some
  client is subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from shark_tui import __version__
from shark_tui.engine import wire
from shark_tui.engine.dissect import Entry
from shark_tui.engine.filter import Filter, FilterError, compile_filter
from shark_tui.engine.query import QueryEngine, parse_id, summary
from shark_tui.engine.store import Recorder

__all__ = [
    "CLIENT_BUFFER",
    "Server",
    "default_token_path",
    "ensure_token",
    "parse_listen",
]

CLIENT_BUFFER: Final = 32 << 20
"""Bytes queued for one client at most; past it the client is cut off."""
HELLO_TIMEOUT: Final = 5.0
HELLO_MAX_FRAME: Final = 64 * 1024
LIVE_INTERVAL: Final = 0.1
BATCH_INTERVAL: Final = 0.1
FIRST_SCREEN: Final = 200
"""Entries sent first, on their own, when a big newest-first backlog is asked for."""
DRAIN_TIMEOUT: Final = 30.0
"""How long a backlog or an export waits for its client to read; past it the client is cut."""
BATCH_ENTRIES: Final = 500
BATCH_BYTES: Final = 4 << 20
"""An `EntriesAppended` holds at most this many entries and about this many encoded bytes
(full entries carry bodies of up to 64 KiB each: 500 of them would pass `wire.MAX_FRAME`)."""
STATS_INTERVAL: Final = 1.0
MAX_ASKED_BODY: Final = 4 << 20
"""Largest body cap a `wire.GetEntry` may ask for (``max_body``: the detail pane's "show
full"); two bodies this big, in base64, stay under `wire.MAX_FRAME`."""
MAX_ENTRY_BYTES: Final = wire.MAX_FRAME - (1 << 20)
"""Largest encoded entry sent with a cap asked for; a bigger one is made again with less."""
CAPABILITIES: Final = ["entries", "detail", "export", "stats"]


def default_token_path() -> str:
    if os.geteuid() == 0:
        return "/run/shark-tui/token"
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    )
    return os.path.join(base, "shark-tui", "token")


def ensure_token(path: str) -> str:
    """The token in ``path``, created (0600, in a 0700 directory) when the file is missing."""
    try:
        with open(path) as f:
            token = f.read().strip()
            mode = os.fstat(f.fileno()).st_mode
        if token:
            if mode & 0o077:  # readable by others: it is a secret
                os.chmod(path, 0o600)
            return token
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


parse_listen = wire.parse_address
"""``--listen``: the same addresses clients reach (``HOST:PORT`` or ``unix:PATH``)."""


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    peer: str
    authed: bool = False
    stats_req: int = -1  # the Stats request to answer every second, if any
    sub: _Subscription | None = None
    closed: bool = False
    queued: int = 0  # bytes posted from the query thread, not yet handed to the transport


@dataclass(eq=False)
class _Subscription:
    client: _Client
    req: wire.Subscribe
    flt: Filter
    live: bool = False
    sent: int = 0
    pending: list[Entry] = field(default_factory=list)
    cancelled: bool = False


class Server:
    """See the module docstring. ``status`` returns the daemon's status dict (for Stats);
    ``pause`` pauses (True) or resumes (False) capture — None for a daemon that does not
    capture, which answers `wire.Pause` with `wire.Failed`."""

    def __init__(
        self,
        recorder: Recorder,
        lock: threading.Lock,
        token: str,
        listen: tuple[str, int] | str,
        status: Callable[[], dict[str, Any]],
        node: str = "",
        log: Callable[[str], None] = lambda line: None,
        tls_status: Callable[[], dict[str, Any]] | None = None,
        pause: Callable[[bool], None] | None = None,
        set_targets: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.recorder = recorder
        self.pause = pause
        self.set_targets = set_targets
        self.capabilities = CAPABILITIES + (["pause"] if pause is not None else [])
        self.tls_status = tls_status
        self.lock = lock
        self._token = token.encode()
        self.listen = listen
        self.status = status
        self.node = node or socket.gethostname()
        self.log = log
        self.counters = dict.fromkeys(
            ("clients", "clients_total", "bad_tokens", "bad_versions", "protocol_errors",
             "clients_cut", "requests", "entries_sent", "frames_sent"),
            0,
        )  # fmt: skip
        self.address = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[_Client] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._net = threading.Thread(target=self._run_loop, name="server", daemon=True)
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._queued_lock = threading.Lock()
        self._query = threading.Thread(target=self._run_queries, name="queries", daemon=True)
        self._subs: list[_Subscription] = []  # live ones (query thread only)
        self._stopping = threading.Event()
        self.engine = QueryEngine(recorder, lock)
        self._pending_subs = 0  # subscriptions being set up (query thread)
        self._next_forget = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and start serving; raise OSError when the address cannot be bound."""
        self._net.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        self._query.start()

    def stop(self) -> None:
        self._stopping.set()
        self._jobs.put(None)
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        self._net.join(5)
        self._query.join(5)
        with self.lock:
            self.recorder.index.dirty = None
        if isinstance(self.listen, str):
            with contextlib.suppress(OSError):
                os.unlink(self.listen)

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            if isinstance(self.listen, str):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.listen)
                srv = loop.run_until_complete(
                    asyncio.start_unix_server(self._serve, path=self.listen)
                )
                os.chmod(self.listen, 0o600)
                self.address = f"unix:{self.listen}"
            else:
                host, port = self.listen
                srv = loop.run_until_complete(
                    asyncio.start_server(self._serve, host, port, reuse_address=True)
                )
                addr = srv.sockets[0].getsockname()
                self.address = (
                    f"{addr[0]}:{addr[1]}" if ":" not in addr[0] else (f"[{addr[0]}]:{addr[1]}")
                )
            self._server = srv
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        stats_task = loop.create_task(self._push_stats())
        try:
            loop.run_forever()
        finally:
            stats_task.cancel()
            srv.close()
            for c in list(self._clients):
                c.writer.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    # -- the network thread ---------------------------------------------------------------------

    def _send(self, c: _Client, msg: wire.Message) -> None:
        """Queue a frame for ``c`` (network thread); cut the client off past its buffer."""
        self._write(c, wire.encode(msg))

    def _write(self, c: _Client, frame: bytes, posted: int = 0) -> None:
        try:
            if c.closed:
                return
            transport = c.writer.transport
            if transport.is_closing():
                c.closed = True
                return
            if transport.get_write_buffer_size() > CLIENT_BUFFER:
                self._cut(c)
                return
            c.writer.write(frame)
            self.counters["frames_sent"] += 1
        finally:
            if posted:  # only now: until it is in the transport's buffer it counts as queued,
                with self._queued_lock:  # or `_wait_drain` could see it in neither
                    c.queued -= posted

    def post(self, c: _Client, msg: wire.Message) -> None:
        """`_send` from any thread (encoded here; counted in ``c.queued`` until written, so
        `_wait_drain` sees frames the network thread has not taken yet)."""
        loop = self._loop
        if loop is not None and not c.closed:
            frame = wire.encode(msg)
            with self._queued_lock:
                c.queued += len(frame)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._write, c, frame, len(frame))

    def _cut(self, c: _Client) -> None:
        """Cut off a client that stopped reading (network thread)."""
        if not c.closed:
            self.counters["clients_cut"] += 1
            self.log(f"client {c.peer}: not reading, cut off")
            self._close(c)

    def _close(self, c: _Client) -> None:
        c.closed = True
        if c.sub is not None:
            c.sub.cancelled = True
        c.writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        c = _Client(writer, str(peer) if peer else "unix")
        self._clients.add(c)
        self.counters["clients"] += 1
        self.counters["clients_total"] += 1
        # Until the Hello is checked, frames are small: a stranger cannot make us buffer 16 MiB.
        decoder = wire.FrameDecoder(max_frame=HELLO_MAX_FRAME)
        try:
            self._send(c, wire.Hello(capabilities=self.capabilities, node=self.node))
            deadline = time.monotonic() + HELLO_TIMEOUT
            while not c.closed:
                timeout = None if c.authed else max(0.0, deadline - time.monotonic())
                try:
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                except TimeoutError:
                    self.counters["protocol_errors"] += 1
                    break
                if not data:
                    if decoder.buffered:  # the peer left in the middle of a frame
                        self.counters["protocol_errors"] += 1
                    break
                try:
                    if not c.authed:
                        messages = decoder.feed(data, limit=1)
                        if messages and self._handle(c, messages[0]) and c.authed:
                            decoder.max_frame = wire.MAX_FRAME
                            messages = decoder.feed(b"")
                        elif messages:
                            break
                    else:
                        messages = decoder.feed(data)
                except wire.ProtocolError as exc:
                    self.counters["protocol_errors"] += 1
                    self.log(f"client {c.peer}: {exc}; closed")
                    break
                for msg in messages:
                    if not self._handle(c, msg):
                        break
                else:
                    continue
                break
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(c)
            self.counters["clients"] -= 1
            if c.sub is not None:
                c.sub.cancelled = True
            c.closed = True
            writer.transport.abort()

    def _handle(self, c: _Client, msg: wire.Message) -> bool:
        """One message from ``c``; False closes the connection."""
        if not c.authed:
            if not isinstance(msg, wire.Hello):
                self.counters["protocol_errors"] += 1
                return False
            if msg.version != wire.VERSION:
                self.counters["bad_versions"] += 1
                why = f"version {msg.version} not served (this daemon speaks {wire.VERSION})"
                self._send(c, wire.Failed(error=why, fatal=True))
                return False
            if not hmac.compare_digest(msg.token.encode(), self._token):
                self.counters["bad_tokens"] += 1
                self.log(f"client {c.peer}: bad token; closed")
                self._send(c, wire.Failed(error="bad token", fatal=True))
                return False
            c.authed = True
            return True
        self.counters["requests"] += 1
        if isinstance(msg, wire.Subscribe):
            try:
                flt = compile_filter(msg.filter)
            except FilterError as exc:
                self._send(c, wire.Failed(req=msg.req, error=f"filter: {exc}"))
                return True
            if c.sub is not None:
                c.sub.cancelled = True
            sub = _Subscription(c, msg, flt)
            c.sub = sub
            self._jobs.put(lambda: self._subscribe(sub))
        elif isinstance(msg, wire.Unsubscribe):
            if c.sub is not None:
                c.sub.cancelled = True
                c.sub = None
        elif isinstance(msg, wire.GetEntry):
            self._jobs.put(lambda: self._get_entry(c, msg))
        elif isinstance(msg, wire.GetStream):
            self._jobs.put(lambda: self._get_stream(c, msg))
        elif isinstance(msg, wire.Export):
            try:
                xflt = compile_filter(msg.filter) if msg.filter or not msg.ids else None
            except FilterError as exc:
                self._send(c, wire.Failed(req=msg.req, error=f"filter: {exc}"))
                return True
            self._jobs.put(lambda: self._export(c, msg, xflt))
        elif isinstance(msg, wire.Stats):
            c.stats_req = msg.req
            self._send(c, wire.StatsChanged(req=msg.req, stats=self.full_status()))
        elif isinstance(msg, wire.TlsStatus):
            self._jobs.put(lambda: self._tls_status(c, msg.req))
        elif isinstance(msg, wire.Pause):
            if self.pause is None:
                why = "nothing to pause: this daemon serves a store, it does not capture"
                self._send(c, wire.Failed(req=msg.req, error=why))
                return True
            self.pause(msg.paused)
            self.log(f"capture {'paused' if msg.paused else 'resumed'} (client {c.peer})")
            st = self.full_status()
            self._send(c, wire.StatsChanged(req=msg.req, stats=st))
            for w in self._clients:  # every watcher sees the change now, not in a second
                if w.authed and w.stats_req >= 0:
                    self._send(w, wire.StatsChanged(req=w.stats_req, stats=st))
        elif isinstance(msg, wire.SetTargets):
            if self.set_targets is None:
                why = "no pods to target: this daemon runs without --kube"
                self._send(c, wire.Failed(req=msg.req, error=why))
                return True
            try:
                self.set_targets(msg.pods, list(msg.namespaces))
            except ValueError as exc:
                self._send(c, wire.Failed(req=msg.req, error=str(exc)))
                return True
            self.log(f"targets: pods {msg.pods or '(any)'!r}, namespaces "
                     f"{', '.join(msg.namespaces) or '(any)'} (client {c.peer})")  # fmt: skip
            self._send(c, wire.StatsChanged(req=msg.req, stats=self.full_status()))
        # anything else (Unknown, or a push type a client should not send) is ignored
        return True

    def _tls_status(self, c: _Client, req: int) -> None:
        """(query thread) The TLS status report; the connection lists walk the index."""
        if self.tls_status is None:
            rep: dict[str, Any] = {"enabled": False, "reason": "the daemon runs without --tls"}
        else:
            try:
                rep = self.tls_status()
            except Exception as exc:  # a status that cannot be read says so
                rep = {"enabled": True, "error": f"{exc!r}"}
        procs = rep.pop("processes", [])
        self.post(c, wire.TlsStatusReport(req=req, processes=procs, report=rep))

    async def _push_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            watchers = [c for c in self._clients if c.authed and c.stats_req >= 0]
            if watchers:
                st = self.full_status()
                for c in watchers:
                    self._send(c, wire.StatsChanged(req=c.stats_req, stats=st))

    def full_status(self) -> dict[str, Any]:
        st = self.status()
        st["server"] = dict(self.counters)
        st["query"] = dict(self.engine.stats)
        st["version"] = __version__
        return st

    # -- the query thread -----------------------------------------------------------------------

    def _run_queries(self) -> None:
        next_live = time.monotonic()
        while not self._stopping.is_set():
            timeout = max(0.0, next_live - time.monotonic())
            try:
                job = self._jobs.get(timeout=timeout)
            except queue.Empty:
                job = None
            else:
                if job is None:
                    break
                try:
                    job()
                except Exception as exc:  # a query bug must not take the daemon down
                    self.log(f"query failed: {type(exc).__name__}: {exc}")
            if time.monotonic() >= next_live:
                next_live = time.monotonic() + LIVE_INTERVAL
                try:
                    self._live()
                except Exception as exc:
                    self.log(f"live update failed: {type(exc).__name__}: {exc}")
        self.engine.close()

    def _take_dirty(self) -> set[int]:
        with self.lock:
            idx = self.recorder.index
            dirty = idx.dirty or set()
            idx.dirty = set() if self._subs_wanted() else None
        return dirty

    def _subs_wanted(self) -> bool:
        return any(not s.cancelled for s in self._subs) or bool(self._pending_subs)

    def _live(self) -> None:
        self._subs = [s for s in self._subs if not s.cancelled]
        # poll even with nothing new: flows seen before their packets were flushed are due
        self._dispatch(self.engine.poll(self._take_dirty()))
        now = time.monotonic()
        if now >= self._next_forget:
            self._next_forget = now + 5.0
            self.engine.forget_deleted()

    def _dispatch(self, entries: list[Entry]) -> None:
        if not entries:
            return
        for s in self._subs:
            if s.cancelled or not s.live:
                continue
            pred = s.flt.predicate
            out = [e if s.req.detail else summary(e) for e in entries if pred(e)]
            if out:
                self._deliver(s, out, backlog=False)

    def _wait_drain(self, c: _Client) -> bool:
        """Let a client read what it was sent before sending more from a backlog or an export
        (live pushes never wait: a client that does not read is cut off instead). A client
        that reads nothing for `DRAIN_TIMEOUT` is cut off; False when the client is gone."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        transport = c.writer.transport
        while not c.closed and transport.get_write_buffer_size() + c.queued > CLIENT_BUFFER // 2:
            if time.monotonic() > deadline:
                loop = self._loop
                if loop is not None:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(self._cut, c)
                return False
            time.sleep(0.005)
        return not c.closed

    def _deliver(self, s: _Subscription, entries: list[Entry], backlog: bool) -> None:
        for chunk in _batches(entries):
            if backlog and not self._wait_drain(s.client):
                s.cancelled = True
                return
            self.post(s.client, wire.EntriesAppended(req=s.req.req, entries=chunk, backlog=backlog))
        s.sent += len(entries)
        self.counters["entries_sent"] += len(entries)

    def _subscribe(self, s: _Subscription) -> None:
        if s.cancelled:
            return
        self._pending_subs += 1
        try:
            with self.lock:
                if self.recorder.index.dirty is None:
                    self.recorder.index.dirty = set()
            # first what is new since the last live pass, for the subscriptions already live
            self._dispatch(self.engine.poll(self._take_dirty()))
            req = s.req
            sent_first: set[str] = set()
            if req.newest_first and (not req.limit or req.limit > FIRST_SCREEN):
                # A screenful first, at once (the newest few are cheap to find), then the rest
                # of the asked backlog: a filter keystroke repaints before the big answer.
                first = [
                    e
                    for batch in self.engine.backlog(
                        s.flt, since_ns=int(req.since * 1e9), newest_first=True,
                        limit=FIRST_SCREEN, detail=req.detail, on_new=self._dispatch,
                    )
                    for e in batch
                ]  # fmt: skip
                if s.cancelled:
                    return
                self._deliver(s, first if req.detail else [summary(e) for e in first], True)
                sent_first = {e["id"] for e in first}
            pending: list[Entry] = []
            last = time.monotonic()
            for batch in self.engine.backlog(
                s.flt,
                since_ns=int(req.since * 1e9),
                newest_first=req.newest_first,
                limit=req.limit,
                detail=req.detail,
                on_new=self._dispatch,
            ):
                if s.cancelled:
                    return
                if sent_first:
                    batch = [e for e in batch if e["id"] not in sent_first]
                pending += batch if req.detail else [summary(e) for e in batch]
                if len(pending) >= 500 or time.monotonic() - last >= BATCH_INTERVAL:
                    self._deliver(s, pending, backlog=True)
                    pending = []
                    last = time.monotonic()
            if pending:
                self._deliver(s, pending, backlog=True)
            self.post(s.client, wire.CaughtUp(req=req.req, entries=s.sent))
            if req.follow and not s.cancelled:
                s.live = True
                self._subs.append(s)
        finally:
            self._pending_subs -= 1

    def _get_entry(self, c: _Client, msg: wire.GetEntry) -> None:
        # a cap asked for (``max_body``) is honoured up to MAX_ASKED_BODY; an answer that would
        # still pass the frame limit is made again with a quarter of the cap, down to the
        # engine's own
        cap = min(msg.max_body, MAX_ASKED_BODY) if msg.max_body > 0 else None
        while True:
            entry = self.engine.get_entry(msg.id, cap)
            if entry is None or cap is None or len(_measure(entry)) <= MAX_ENTRY_BYTES:
                break
            cap = cap // 4 if cap // 4 > self.engine.body_cap else None
        key = parse_id(msg.id)
        if entry is None or key is None:
            self.post(c, wire.Failed(req=msg.req, error=f"no entry {msg.id!r}"))
        else:
            conn = self.engine.connection(key[0]) or {}
            self.post(c, wire.EntryDetail(req=msg.req, entry=entry, connection=conn))

    def _get_stream(self, c: _Client, msg: wire.GetStream) -> None:
        key = parse_id(msg.id)
        cap = max(0, min(msg.max_bytes, wire.MAX_FRAME // 2))
        if key is None or key[0] not in self.engine.known_flows():
            self.post(c, wire.Failed(req=msg.req, error=f"no entry {msg.id!r}"))
            return
        chunks, left_out = self.engine.stream(key[0], cap)
        self.post(c, wire.StreamData(req=msg.req, chunks=chunks, left_out=left_out))

    def _export(self, c: _Client, msg: wire.Export, flt: Filter | None) -> None:
        nums = self.engine.flows_of(flt, msg.ids)
        total = 0
        for chunk in self.engine.export(nums):
            if not self._wait_drain(c):
                return
            total += len(chunk)
            self.post(c, wire.ExportChunk(req=msg.req, data=chunk))
        self.post(
            c,
            wire.ExportDone(
                req=msg.req,
                packets=self.engine.last_export_packets,
                connections=len(nums),
            ),
        )


_measure = msgspec.msgpack.Encoder().encode


def _batches(entries: list[Entry]) -> Iterator[list[Entry]]:
    """``entries`` in runs of `BATCH_ENTRIES` at most and about `BATCH_BYTES` (one entry alone
    may be bigger)."""
    start = size = 0
    for i, e in enumerate(entries):
        n = len(_measure(e))
        if i > start and (i - start >= BATCH_ENTRIES or size + n > BATCH_BYTES):
            yield entries[start:i]
            start, size = i, 0
        size += n
    if start < len(entries):
        yield entries[start:]
