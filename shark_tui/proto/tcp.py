"""The catch-all for connections no dissector understands: one ``tcp`` entry per connection.

It counts the bytes of each direction and keeps the first few, so an unknown protocol is still
a row (DESIGN.md: unrecognised TCP is never silently dropped).
"""

from __future__ import annotations

import base64

from shark_tui.proto.base import CLIENT, Event, Exchange, ExchangeCompleted
from shark_tui.proto.tls import MAX_HELLO, parse_hello

#: Bytes of each direction kept to show what the connection started with.
FIRST_BYTES = 64


class TcpDissector:
    """Counts; emits one exchange when the connection ends."""

    def __init__(
        self, *, start_ts: float, guess: str | None = None, midstream: bool = False
    ) -> None:
        self._start = start_ts
        # A connection seen neither opening nor carrying a byte (only its closing packets) has
        # nothing to show: it is not an entry.
        self._midstream = midstream
        self._guess = guess
        self._sizes = [0, 0]
        self._gaps = [0, 0]
        self._first = [b"", b""]
        self._done = False
        # TLS: enough of each direction's first bytes for its hello (SNI, ALPN)
        self._keep = MAX_HELLO if guess == "tls" else FIRST_BYTES

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        self._sizes[direction] += len(data)
        if len(self._first[direction]) < self._keep and not self._gaps[direction]:
            self._first[direction] += data[: self._keep - len(self._first[direction])]
        return []

    def gap(self, direction: int, size: int, ts: float) -> list[Event]:
        self._sizes[direction] += size
        self._gaps[direction] += size
        return []

    def close(self, direction: int, ts: float) -> list[Event]:
        return []

    def finish(self, ts: float) -> list[Event]:
        if self._done:
            return []
        self._done = True
        c, s = self._sizes
        if self._midstream and not c and not s:
            return []
        halves = []
        hellos = [{}, {}] if self._guess != "tls" else [parse_hello(f) for f in self._first]
        for d in (CLIENT, 1 - CLIENT):
            body, encoding = render_bytes(self._first[d][:FIRST_BYTES])
            halves.append(
                {
                    "size": self._sizes[d],
                    "lost_bytes": self._gaps[d],
                    "first_bytes": body,
                    "first_bytes_encoding": encoding,
                }
            )
            if hellos[d]:
                halves[-1]["tls"] = hellos[d]
        summary = f"{c} bytes ⇄ {s} bytes"
        hello = hellos[CLIENT]
        if hello.get("hello") == "client":
            alpn = ",".join(hello.get("alpn", []))
            summary = (
                f"TLS {hello.get('sni', '(no SNI)')}{f' [{alpn}]' if alpn else ''} · {summary}"
            )
        exchange = Exchange(
            proto="tcp",
            ts=self._start,
            summary=summary,
            request_size=c,
            response_size=s,
            request=halves[0],
            response=halves[1],
            extra={"guess": self._guess} if self._guess else {},
        )
        return [ExchangeCompleted(exchange=exchange)]

    def expire(self, now: float) -> list[Event]:
        return []

    def oldest_pending(self) -> float | None:
        return None if self._done else self._start


def render_bytes(data: bytes) -> tuple[str, str]:
    """(text, "text") when ``data`` is printable UTF-8, else (base64, "base64")."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"
    if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
        return text, "text"
    return base64.b64encode(data).decode(), "base64"
