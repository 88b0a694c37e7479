"""What every dissector shares: directions, the exchange it emits, the events, its interface.

A dissector is a sans-IO push machine (STYLE.md): the engine feeds it the reassembled bytes of
each direction of one TCP connection and collects the events it returns. It never reads a
socket, a file or a clock; time comes in with the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

#: Bytes the client (the end that opened the connection, or sent the first request) sent.
CLIENT = 0
#: Bytes the server sent.
SERVER = 1

#: ``error`` values of an entry (DESIGN.md).
NO_RESPONSE = "no_response"
NO_REQUEST = "no_request"
TRUNCATED = "truncated"
DESYNCED = "desynced"
HEADER_STATE_UNKNOWN = "header_state_unknown"
PARTIAL = "partial"

#: Seconds an exchange may wait for its other half before it is emitted without it.
PENDING_TIMEOUT = 60.0

JSON = dict[str, Any]


@dataclass(slots=True, kw_only=True)
class Exchange:
    """One request/response exchange (or one one-way message): an entry without its identity.

    The engine adds ``id``, ``src``, ``dst`` and ``tls``; everything protocol-specific is here.
    ``request``/``response`` are the protocol objects of DESIGN.md's entry (JSON-ready dicts:
    str/int/float/bool/None/list/dict only), ``None`` when that half was not seen.
    """

    proto: str
    ts: float
    method: str | None = None
    #: None only when what it is made of was lost (an HTTP/2 ``:path`` from an unknown table).
    summary: str | None = ""
    status: int | str | None = None
    latency_ms: float | None = None
    request_size: int | None = None
    response_size: int | None = None
    request: JSON | None = None
    response: JSON | None = None
    error: str | None = None
    #: Extra top-level keys a protocol adds to the entry (e.g. ``host`` for filters).
    extra: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeCompleted:
    """An exchange is final: emit it as an entry. Emitted exactly once per exchange."""

    exchange: Exchange


@dataclass(frozen=True, slots=True, kw_only=True)
class Desynced:
    """The dissector lost the message framing in ``direction``; ``skipped`` bytes were dropped."""

    direction: int
    reason: str
    skipped: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Truncated:
    """A buffer hit its documented cap in ``direction``; what is past the cap was not kept."""

    direction: int
    what: str
    dropped: int = 0


#: An entry a fast path of the engine wrote itself: (ts, its line) (engine/_http1entries.c).
Rendered = tuple[float, bytearray]

Event = ExchangeCompleted | Desynced | Truncated | Rendered


class Dissector(Protocol):
    """The interface the engine drives. Every method returns the events it caused."""

    def feed(self, direction: int, data: bytes, ts: float) -> list[Event]:
        """In-order bytes of ``direction`` captured at ``ts`` (epoch seconds)."""
        ...

    def gap(self, direction: int, size: int, ts: float) -> list[Event]:
        """``size`` bytes of ``direction`` were lost to the capture (never seen)."""
        ...

    def close(self, direction: int, ts: float) -> list[Event]:
        """``direction`` ended (FIN): a close-delimited body there is complete."""
        ...

    def finish(self, ts: float) -> list[Event]:
        """The connection is over (RST, both FINs, end of file): emit everything pending."""
        ...

    def expire(self, now: float) -> list[Event]:
        """Emit exchanges that have waited more than ``PENDING_TIMEOUT`` for their other half."""
        ...

    def oldest_pending(self) -> float | None:
        """``ts`` of the oldest exchange begun but not yet emitted, or None."""
        ...
