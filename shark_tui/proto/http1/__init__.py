"""HTTP/1.0 and HTTP/1.1: a sans-IO dissector with its own framing (see ``dissector``)."""

from shark_tui.proto.http1.dissector import (
    DEFAULT_BODY_CAP,
    MAX_CHUNK_LINE,
    MAX_HEADER_BYTES,
    MAX_PENDING,
    MAX_START_LINE,
    MAX_UPGRADE_BUFFER,
    Http1Dissector,
)

__all__ = [
    "DEFAULT_BODY_CAP",
    "MAX_CHUNK_LINE",
    "MAX_HEADER_BYTES",
    "MAX_PENDING",
    "MAX_START_LINE",
    "MAX_UPGRADE_BUFFER",
    "Http1Dissector",
]
