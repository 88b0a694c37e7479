"""One daemon connection for the app: an async worker that subscribes, turns batches into rows
and posts them up; when the daemon goes away it says so and reconnects with capped exponential
backoff (`backoff`), and the list resumes where it was: the same subscription is made again,
and the app drops the rows of its backlog that it already holds (`LinkChanged.resume`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from textual.message_pump import MessagePump

from shark_tui.engine import wire
from shark_tui.engine.client import Client, ClientError
from shark_tui.widgets.messages import CaughtUp, EntriesArrived, LinkChanged, StatsArrived
from shark_tui.widgets.rows import row_of

#: Entries asked for when (re)subscribing: the newest this many, then live ones.
BACKLOG = 200_000
#: Seconds before the first attempt to reconnect; each failed attempt doubles it, up to the cap.
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 10.0


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = the first after a failure):
    0.5, 1, 2, 4, 8, then 10 s for every later one."""
    return min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** min(attempt, 32))


class DaemonLink:
    def __init__(self, target: MessagePump, address: str, token: str) -> None:
        self.target = target
        self.address = address
        self.token = token
        self.node = address
        self.filter = ""
        self.client: Client | None = None
        self.up = False
        #: while down: when the next attempt to connect is made (`time.monotonic` seconds)
        self.retry_at: float | None = None
        self.attempts = 0  # failed attempts (and short-lived connections) in a row
        #: entries older than this are not asked for (the list was cleared: `clear`)
        self.since = 0.0
        self.newest: float | None = None  # the newest entry's time received from this daemon
        self._changed = asyncio.Event()
        self.sent: list[wire.Message] = []  # what the UI asked of the daemon (tests read it)
        self.last_export: wire.ExportDone | None = None

    def set_filter(self, text: str) -> None:
        self.filter = text
        self._changed.set()

    def clear(self) -> None:
        """The list was cleared: later subscriptions (another filter, a reconnect) ask only for
        entries newer than every one received so far."""
        if self.newest is not None:
            self.since = max(self.since, self.newest + 1e-6)

    async def run(self) -> None:
        connected_before = False
        while True:
            try:
                client = await Client.connect(self.address, self.token)
            except ClientError as exc:
                await self._wait(str(exc))
                continue
            self.client = client
            self.retry_at = None
            since = time.monotonic()
            hello = client.hello
            if hello is not None and hello.node:
                self.node = hello.node
            self.up = True
            self.target.post_message(LinkChanged(self.node, True, resume=connected_before))
            connected_before = True
            why = "the daemon ended the subscription"
            try:
                await self._serve(client)
            except ClientError as exc:
                why = str(exc)
            finally:
                self.up = False
                self.client = None
                with contextlib.suppress(Exception):
                    await client.close()
            if time.monotonic() - since >= BACKOFF_CAP:
                self.attempts = 0  # it was up a while: start again from the shortest wait
            await self._wait(why)

    async def _wait(self, why: str) -> None:
        """Say the daemon is away and when it is tried again; wait until then."""
        delay = backoff(self.attempts)
        self.attempts += 1
        self.retry_at = time.monotonic() + delay
        self.target.post_message(LinkChanged(self.node, False, why, retry_at=self.retry_at))
        await asyncio.sleep(delay)

    async def _serve(self, client: Client) -> None:
        tasks: set[asyncio.Task[Any]] = {asyncio.create_task(self._stats(client))}
        try:
            while True:
                self._changed.clear()
                sub = asyncio.create_task(self._subscribe(client, self.filter))
                changed = asyncio.create_task(self._changed.wait())
                tasks |= {sub, changed}
                done, _ = await asyncio.wait({sub, changed}, return_when=asyncio.FIRST_COMPLETED)
                if sub in done:
                    sub.result()  # raises ClientError when the connection went
                    return
                sub.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientError):
                    await sub
                tasks -= {sub, changed}
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:  # every task's end is looked at: nothing left unretrieved
                with contextlib.suppress(asyncio.CancelledError, ClientError):
                    await task

    async def _subscribe(self, client: Client, text: str) -> None:
        since = self.since
        self.sent.append(wire.Subscribe(filter=text, since=since, newest_first=True,
                                        limit=BACKLOG))  # fmt: skip
        node = self.node
        async for m in client.subscribe(
            text, since=since, newest_first=True, limit=BACKLOG, follow=True
        ):
            if isinstance(m, wire.EntriesAppended):
                rows = [row_of(node, e) for e in m.entries]
                if rows:
                    top = max(r.ts for r in rows)
                    if self.newest is None or top > self.newest:
                        self.newest = top
                self.target.post_message(EntriesArrived(node, rows, m.backlog))
            elif isinstance(m, wire.CaughtUp):
                self.target.post_message(CaughtUp(node, m.entries))

    async def _stats(self, client: Client) -> None:
        with contextlib.suppress(ClientError):
            st = await client.get_stats()
            self.target.post_message(StatsArrived(self.node, st))
            while True:
                await asyncio.sleep(1.0)
                if client.stats:
                    self.target.post_message(StatsArrived(self.node, client.stats))

    async def pause(self, paused: bool) -> None:
        """Pause capture on the daemon (or resume it); its status comes up as `StatsArrived`."""
        client = self.client
        if client is None or not self.up:
            raise ClientError(f"{self.node}: not connected")
        self.sent.append(wire.Pause(paused=paused))
        stats = await client.pause(paused)
        self.target.post_message(StatsArrived(self.node, stats))

    async def set_targets(self, pods: str, namespaces: list[str]) -> dict[str, Any]:
        """Target pods on a ``--kube`` daemon (`Client.set_targets`); its status after the
        change, which also comes up as `StatsArrived`. `RequestFailed` when it refuses."""
        client = self.client
        if client is None or not self.up:
            raise ClientError(f"{self.node}: not connected")
        self.sent.append(wire.SetTargets(pods=pods, namespaces=list(namespaces)))
        stats = await client.set_targets(pods, namespaces)
        self.target.post_message(StatsArrived(self.node, stats))
        return stats

    async def tls_status(self) -> dict[str, Any]:
        """The daemon's TLS status (`Client.get_tls_status`: ``enabled``, ``kernel_path``,
        ``libraries``, ``processes``…, or ``enabled: False`` and the ``reason``)."""
        client = self.client
        if client is None or not self.up:
            raise ClientError(f"{self.node}: not connected")
        self.sent.append(wire.TlsStatus())
        return await client.get_tls_status()

    async def get_entry(self, entry_id: str, max_body: int = 0) -> dict[str, Any]:
        """The full entry (bodies up to ``max_body`` bytes; 0: the daemon's cap), with what the
        daemon knows of its connection under ``connection`` (`wire.EntryDetail`; absent from a
        daemon that does not say)."""
        if self.client is None:
            raise ClientError(f"{self.node}: not connected")
        self.sent.append(wire.GetEntry(id=entry_id, max_body=max_body))
        detail = await self.client.entry_detail(entry_id, max_body)
        entry = detail.entry
        if detail.connection:
            entry["connection"] = detail.connection
        return entry

    async def get_stream(self, entry_id: str) -> tuple[list[tuple[int, bytes]], int]:
        if self.client is None:
            raise ClientError(f"{self.node}: not connected")
        self.sent.append(wire.GetStream(id=entry_id))
        return await self.client.get_stream(entry_id)

    async def export(self, filter: str, ids: list[str]) -> AsyncIterator[bytes]:
        """The pcapng of a selection (``ids``, or else ``filter``); `last_export` then holds
        the daemon's packet and connection counts."""
        client = self.client
        if client is None or not self.up:
            raise ClientError(f"{self.node}: not connected")
        self.sent.append(wire.Export(filter=filter, ids=list(ids)))
        self.last_export = None
        done: list[wire.ExportDone] = []
        async for chunk in client.export(filter, ids, on_done=done.append):
            yield chunk
        self.last_export = done[0] if done else None  # this export's counts, not another's
