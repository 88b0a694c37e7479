"""One daemon connection for the app: an async worker that subscribes, turns batches into rows
and posts them up; reconnects with backoff when the daemon goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from textual.message_pump import MessagePump

from shark_tui.engine import wire
from shark_tui.engine.client import Client, ClientError
from shark_tui.widgets.messages import CaughtUp, EntriesArrived, LinkChanged, StatsArrived
from shark_tui.widgets.rows import row_of

#: Entries asked for when (re)subscribing: the newest this many, then live ones.
BACKLOG = 200_000
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


class DaemonLink:
    def __init__(self, target: MessagePump, address: str, token: str) -> None:
        self.target = target
        self.address = address
        self.token = token
        self.node = address
        self.filter = ""
        self.client: Client | None = None
        self.up = False
        self._changed = asyncio.Event()
        self.sent: list[wire.Message] = []  # what the UI asked of the daemon (tests read it)
        self.last_export: wire.ExportDone | None = None

    def set_filter(self, text: str) -> None:
        self.filter = text
        self._changed.set()

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                self.client = await Client.connect(self.address, self.token)
            except ClientError as exc:
                self.target.post_message(LinkChanged(self.node, False, str(exc)))
                await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
                continue
            attempt = 0
            hello = self.client.hello
            if hello is not None and hello.node:
                self.node = hello.node
            self.up = True
            self.target.post_message(LinkChanged(self.node, True))
            try:
                await self._serve(self.client)
            except ClientError as exc:
                self.up = False
                self.target.post_message(LinkChanged(self.node, False, str(exc)))
            finally:
                with contextlib.suppress(Exception):
                    await self.client.close()
            await asyncio.sleep(BACKOFF[0])

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
        self.sent.append(wire.Subscribe(filter=text, newest_first=True, limit=BACKLOG))
        node = self.node
        async for m in client.subscribe(text, newest_first=True, limit=BACKLOG, follow=True):
            if isinstance(m, wire.EntriesAppended):
                rows = [row_of(node, e) for e in m.entries]
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

    async def get_entry(self, entry_id: str) -> dict[str, Any]:
        if self.client is None:
            raise ClientError(f"{self.node}: not connected")
        self.sent.append(wire.GetEntry(id=entry_id))
        return await self.client.get_entry(entry_id)

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
