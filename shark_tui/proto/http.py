"""HTTP/1.x and what a connection becomes after an upgrade.

An HTTP/1.1 connection may switch protocols: ``Upgrade: h2c`` continues as HTTP/2 (the
upgrade request is stream 1), ``Upgrade: websocket`` as WebSocket frames, a ``CONNECT``
tunnel as opaque bytes. The HTTP/1 dissector stops at the ``101``/``2xx`` and keeps the bytes
that followed; this wrapper hands them to the next dissector and routes everything after to it.
"""

from __future__ import annotations

from shark_tui.proto.base import CLIENT, SERVER, Dissector, Event
from shark_tui.proto.http1.dissector import Http1Dissector
from shark_tui.proto.http2.dissector import Http2Dissector
from shark_tui.proto.tcp import TcpDissector
from shark_tui.proto.websocket import WebSocketDissector


class HttpDissector:
    """An HTTP/1.x connection, upgrades included (a base.Dissector)."""

    def __init__(self, *, midstream: bool = False, body_cap: int = 65536) -> None:
        self._body_cap = body_cap
        self.http1 = Http1Dissector(midstream=midstream, body_cap=body_cap)
        #: What the connection became after an upgrade, once it did.
        self.upgraded: Dissector | None = None

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        if self.upgraded is not None:
            return self.upgraded.feed(direction, data, ts)
        return self._after(self.http1.feed(direction, data, ts), ts)

    def gap(self, direction: int, size: int, ts: float) -> list[Event]:
        if self.upgraded is not None:
            return self.upgraded.gap(direction, size, ts)
        return self._after(self.http1.gap(direction, size, ts), ts)

    def close(self, direction: int, ts: float) -> list[Event]:
        if self.upgraded is not None:
            return self.upgraded.close(direction, ts)
        return self._after(self.http1.close(direction, ts), ts)

    def finish(self, ts: float) -> list[Event]:
        out = self.http1.finish(ts)
        if self.upgraded is not None:
            out += self.upgraded.finish(ts)
        return out

    def expire(self, now: float) -> list[Event]:
        out = self.http1.expire(now)
        if self.upgraded is not None:
            out += self.upgraded.expire(now)
        return out

    def oldest_pending(self) -> float | None:
        times = [self.http1.oldest_pending()]
        if self.upgraded is not None:
            times.append(self.upgraded.oldest_pending())
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def _after(self, out: list[Event], ts: float) -> list[Event]:
        kind = self.http1.upgraded
        if kind is None:
            return out
        request = self.http1.upgrade_request or {}
        low = kind.lower()
        nxt: Dissector
        if "h2c" in low:
            nxt = Http2Dissector(body_cap=self._body_cap, upgrade=request)
        elif "websocket" in low:
            nxt = WebSocketDissector(
                body_cap=self._body_cap, path=request.get("path"), host=request.get("host")
            )
        else:  # CONNECT tunnels and protocols we do not know: the bytes, counted
            nxt = TcpDissector(start_ts=ts, guess="tunnel" if kind == "CONNECT" else low)
        self.upgraded = nxt
        client, server = self.http1.take_upgrade_bytes()
        if client:
            out += nxt.feed(CLIENT, client, ts)
        if server:
            out += nxt.feed(SERVER, server, ts)
        return out
