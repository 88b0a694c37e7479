# HTTP/1 connections straight to entry JSON lines (_http1entries.c says what it takes over).
from collections.abc import Callable
from typing import Any

from shark_tui.proto.base import Dissector, Event

class Http1Entries:
    handed_over: bool
    def __init__(
        self,
        fallback: Callable[[], Dissector],
        head: bytes,
        mid: bytes,
        tls: bool,
        body_cap: int,
        line_head: int = 0,
    ) -> None: ...
    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]: ...
    def gap(self, direction: int, size: int, ts: float) -> list[Event]: ...
    def close(self, direction: int, ts: float) -> list[Event]: ...
    def finish(self, ts: float) -> list[Event]: ...
    def expire(self, now: float) -> list[Event]: ...
    def oldest_pending(self) -> float | None: ...

def configure(
    render_body: Callable[..., dict[str, Any]],
    query_pairs: Callable[[str], list[list[str]]],
    exchange_completed: type,
    pending_timeout: float,
) -> None: ...
def json_float(x: float, rounded: bool = False) -> bytes | None: ...
