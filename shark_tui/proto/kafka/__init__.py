"""Kafka: a sans-IO dissector with its own framing and schema-driven bodies (see ``dissector``)."""

from shark_tui.proto.kafka.dissector import (
    DEFAULT_BODY_CAP,
    MAX_FRAME_SIZE,
    MAX_MESSAGE_BYTES,
    MAX_PENDING,
    MAX_RECORDS,
    MAX_SCAN_BYTES,
    KafkaDissector,
)

__all__ = [
    "DEFAULT_BODY_CAP",
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_BYTES",
    "MAX_PENDING",
    "MAX_RECORDS",
    "MAX_SCAN_BYTES",
    "KafkaDissector",
]
