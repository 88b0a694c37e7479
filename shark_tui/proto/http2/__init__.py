"""HTTP/2 for a passive observer: hyperframe, one hpack decoder per direction (``dissector``)."""

from shark_tui.proto.http2.dissector import (
    DEFAULT_BODY_CAP,
    GRPC_BODY_FACTOR,
    MAX_DECODED_HEADERS,
    MAX_HEADER_BLOCK,
    MAX_SCAN_FRAME,
    MAX_STREAMS,
    MAX_TRACKED_BYTES,
    MAX_TRACKED_ENTRIES,
    PREFACE,
    Http2Dissector,
    looks_like_http2_frames,
)

__all__ = [
    "DEFAULT_BODY_CAP",
    "GRPC_BODY_FACTOR",
    "MAX_DECODED_HEADERS",
    "MAX_HEADER_BLOCK",
    "MAX_SCAN_FRAME",
    "MAX_STREAMS",
    "MAX_TRACKED_BYTES",
    "MAX_TRACKED_ENTRIES",
    "PREFACE",
    "Http2Dissector",
    "looks_like_http2_frames",
]
