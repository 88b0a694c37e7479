"""The one client library of the daemon protocol: the TUI and the headless commands share it.

`Client` is asyncio: `connect` exchanges Hellos (the token goes in ours), a reader task routes
the daemon's frames by request number — one-shot replies to futures, streams (subscriptions,
exports) to queues. Errors the daemon reports for a request raise `RequestFailed`; a closed
connection raises `ConnectionClosed` in every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

from shark_tui.engine import wire

__all__ = ["Client", "ClientError", "ConnectionClosed", "RequestFailed", "parse_address"]


class ClientError(Exception):
    """Could not talk to the daemon (one line, with the fix when there is one)."""


class ConnectionClosed(ClientError):
    pass


class RequestFailed(ClientError):
    pass


def parse_address(text: str) -> tuple[str, int] | str:
    """``HOST:PORT``, ``[v6]:PORT`` or ``unix:PATH``."""
    try:
        return wire.parse_address(text)
    except ValueError:
        raise ClientError(f"not an address: {text!r} (HOST:PORT or unix:PATH)") from None


_END = object()


class Client:
    """A connection to one daemon; see the module docstring."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = wire.FrameDecoder()
        self._req = itertools.count(1)
        self._futures: dict[int, asyncio.Future[wire.Message]] = {}
        self._streams: dict[int, asyncio.Queue[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self.hello: wire.Hello | None = None
        self.closed: BaseException | None = None
        self.stats: dict[str, Any] = {}  # the last StatsChanged
        self._early: list[wire.Message] = []  # frames that came in with the daemon's Hello
        self.last_export: wire.ExportDone | None = None

    @classmethod
    async def connect(cls, address: str, token: str, timeout: float = 10.0) -> Client:
        addr = parse_address(address)
        try:
            if isinstance(addr, str):
                conn = asyncio.open_unix_connection(addr)
            else:
                conn = asyncio.open_connection(addr[0], addr[1])
            reader, writer = await asyncio.wait_for(conn, timeout)
        except (OSError, TimeoutError) as exc:
            raise ClientError(f"cannot reach the daemon at {address}: {exc}") from None
        client = cls(reader, writer)
        writer.write(wire.encode(wire.Hello(token=token, capabilities=["entries"])))
        try:
            hello = await asyncio.wait_for(client._first(), timeout)
        except TimeoutError:
            writer.close()
            raise ClientError(f"{address}: no answer from the daemon") from None
        client.hello = hello
        client._task = asyncio.create_task(client._read_loop())
        # the daemon closes at once on a bad token; find out now rather than at the first call
        await asyncio.sleep(0)
        return client

    async def _first(self) -> wire.Hello:
        while True:
            data = await self._reader.read(65536)
            if not data:
                raise ClientError("the daemon closed the connection (not a shark-tui daemon?)")
            try:
                msgs = self._decoder.feed(data)
            except wire.ProtocolError as exc:
                raise ClientError(f"not a shark-tui daemon: {exc}") from None
            for i, m in enumerate(msgs):
                if isinstance(m, wire.Hello):
                    # frames that came along with the Hello are for the read loop
                    self._early = msgs[i + 1 :]
                    return m
                if isinstance(m, wire.Failed):
                    raise ClientError(f"the daemon refused: {m.error}")
            # anything before Hello is ignored

    async def _read_loop(self) -> None:
        try:
            for m in self._early:
                self._route(m)
            while True:
                data = await self._reader.read(1 << 20)
                if not data:
                    raise ConnectionClosed("the daemon closed the connection")
                for m in self._decoder.feed(data):
                    self._route(m)
        except (wire.ProtocolError, OSError, ConnectionClosed) as exc:
            err: BaseException = exc if isinstance(exc, ClientError) else ConnectionClosed(str(exc))
        except asyncio.CancelledError:
            err = ConnectionClosed("closed")
        if self.closed is not None:  # the daemon said why (a fatal Failed) before closing
            err = self.closed
        self.closed = err
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(err)
        for q in self._streams.values():
            q.put_nowait(err)

    def _route(self, m: wire.Message) -> None:
        if isinstance(m, wire.Failed) and m.fatal:
            err = ConnectionClosed(f"the daemon refused: {m.error}")
            self.closed = err
            for fut in self._futures.values():
                if not fut.done():
                    fut.set_exception(err)
            for q in self._streams.values():
                q.put_nowait(err)
            return
        if isinstance(m, wire.StatsChanged):
            self.stats = m.stats
        req = getattr(m, "req", 0)
        stream = self._streams.get(req)
        if stream is not None:
            stream.put_nowait(m)
            return
        waiter = self._futures.pop(req, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(m)

    def _check(self) -> None:
        if self.closed is not None:
            raise (
                self.closed
                if isinstance(self.closed, ClientError)
                else ConnectionClosed(str(self.closed))
            )

    async def _call(self, msg: wire.Message) -> wire.Message:
        self._check()
        fut: asyncio.Future[wire.Message] = asyncio.get_running_loop().create_future()
        self._futures[msg.req] = fut  # type: ignore[attr-defined]
        self._writer.write(wire.encode(msg))
        reply = await fut
        if isinstance(reply, wire.Failed):
            raise RequestFailed(reply.error)
        return reply

    async def _stream(self, msg: wire.Message) -> AsyncIterator[wire.Message]:
        self._check()
        req: int = msg.req  # type: ignore[attr-defined]
        q: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[req] = q
        self._writer.write(wire.encode(msg))
        try:
            while True:
                m = await q.get()
                if isinstance(m, BaseException):
                    raise m
                if isinstance(m, wire.Failed):
                    raise RequestFailed(m.error)
                yield m
        finally:
            self._streams.pop(req, None)

    # -- requests -------------------------------------------------------------------------------

    async def subscribe(
        self,
        filter: str = "",
        *,
        since: float = 0.0,
        detail: bool = False,
        newest_first: bool = False,
        limit: int = 0,
        follow: bool = True,
    ) -> AsyncIterator[wire.EntriesAppended | wire.CaughtUp]:
        """Entries batches, then CaughtUp, then (with ``follow``) live batches until closed."""
        msg = wire.Subscribe(
            req=next(self._req), filter=filter, since=since, detail=detail,
            newest_first=newest_first, limit=limit, follow=follow,
        )  # fmt: skip
        async for m in self._stream(msg):
            if isinstance(m, wire.EntriesAppended | wire.CaughtUp):
                yield m
                if isinstance(m, wire.CaughtUp) and not follow:
                    return

    async def get_entry(self, entry_id: str, max_body: int = 0) -> dict[str, Any]:
        return (await self.entry_detail(entry_id, max_body)).entry

    async def entry_detail(self, entry_id: str, max_body: int = 0) -> wire.EntryDetail:
        """The full entry and what the daemon knows of its connection (`wire.EntryDetail`);
        ``max_body``: its bodies kept up to that many bytes (0: the daemon's cap)."""
        msg = wire.GetEntry(req=next(self._req), id=entry_id, max_body=max_body)
        reply = await self._call(msg)
        assert isinstance(reply, wire.EntryDetail)
        return reply

    async def export(
        self,
        filter: str = "",
        ids: list[str] | None = None,
        on_done: Callable[[wire.ExportDone], None] | None = None,
    ) -> AsyncIterator[bytes]:
        """The pcapng bytes of the selection, chunk by chunk; ``on_done`` receives this
        export's counts (``last_export`` holds the connection's most recent ones)."""
        msg = wire.Export(req=next(self._req), filter=filter, ids=ids or [])
        async for m in self._stream(msg):
            if isinstance(m, wire.ExportChunk):
                yield m.data
            elif isinstance(m, wire.ExportDone):
                self.last_export = m
                if on_done is not None:
                    on_done(m)
                return

    async def get_stream(
        self, entry_id: str, max_bytes: int = 1 << 20
    ) -> tuple[list[tuple[int, bytes]], int]:
        """The reassembled bytes of the entry's connection: ``(direction, bytes)`` chunks (0 =
        the client) and how many bytes were left out."""
        reply = await self._call(
            wire.GetStream(req=next(self._req), id=entry_id, max_bytes=max_bytes)
        )
        assert isinstance(reply, wire.StreamData)
        return [(int(d), bytes(b)) for d, b in reply.chunks], reply.left_out

    async def get_stats(self) -> dict[str, Any]:
        reply = await self._call(wire.Stats(req=next(self._req)))
        assert isinstance(reply, wire.StatsChanged)
        return reply.stats

    async def get_tls_status(self) -> dict[str, Any]:
        """The daemon's TLS status: ``report`` keys plus ``processes``."""
        reply = await self._call(wire.TlsStatus(req=next(self._req)))
        assert isinstance(reply, wire.TlsStatusReport)
        return dict(reply.report, processes=reply.processes)

    async def pause(self, paused: bool = True) -> dict[str, Any]:
        """Pause capture on the daemon (``paused=False``: resume); its status after the change.
        `RequestFailed` when the daemon does not capture."""
        reply = await self._call(wire.Pause(req=next(self._req), paused=paused))
        assert isinstance(reply, wire.StatsChanged)
        return reply.stats

    async def set_targets(
        self, pods: str = "", namespaces: list[str] | None = None
    ) -> dict[str, Any]:
        """Target pods on a ``--kube`` daemon (a regex on pod names, namespaces; empty: all);
        its status after the change. `RequestFailed` without ``--kube`` or for a bad regex."""
        msg = wire.SetTargets(req=next(self._req), pods=pods, namespaces=list(namespaces or []))
        reply = await self._call(msg)
        assert isinstance(reply, wire.StatsChanged)
        return reply.stats

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
