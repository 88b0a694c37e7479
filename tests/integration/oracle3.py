"""tshark 4.0 as the oracle for Redis (RESP), AMQP 0-9-1 and Kafka.

Off their standard ports tshark needs decode-as: ``-d tcp.port==P,resp|amqp|kafka``
(``oracle.decode_as(ports, proto)``). Every helper returns one record per packet (tshark's
``-T json -e``: each field a list of occurrences in that packet), in frame order, with the
packet's direction resolved against the server ports.

Known blind spots (measured with tshark 4.0.17, see the test modules): RESP — a pipeline of
several commands in one segment decodes only partly, RESP3 types (``%`` map, ``~`` set, ``,``
double, ``_`` null, ``>`` push, ``|`` attribute, ``=`` verbatim) are not decoded at all;
Kafka — request/response versions beyond what 4.0 knows (flexible versions of newer clients)
come out as "unknown version"/malformed; AMQP — decoded fully (content bodies per frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from tests.integration.oracle import _first, decode_as, tshark_json_fields

Endpoint = tuple[str, int]

_BASE = ["frame.number", "frame.time_epoch", "tcp.stream", "ip.src", "tcp.srcport", "ip.dst",
         "tcp.dstport"]


@dataclass
class Packet:
    """One packet's decoded fields, with where it went."""

    frame: int
    ts: float
    stream: int
    src: Endpoint
    dst: Endpoint
    to_server: bool
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> list[str]:
        return self.fields.get(name, [])


def packets(
    path: str | PathLike[str], proto: str, ports: Iterable[int], fields: Sequence[str],
    display_filter: str | None = None,
) -> list[Packet]:
    """Packets tshark decodes as ``proto`` (decode-as on ``ports``), with ``fields``."""
    ports = list(ports)
    rows = tshark_json_fields(path, display_filter or proto, [*_BASE, *fields],
                              *decode_as(ports, proto))
    out = []
    for layers in rows:
        src = (_first(layers, "ip.src") or "", int(_first(layers, "tcp.srcport") or 0))
        dst = (_first(layers, "ip.dst") or "", int(_first(layers, "tcp.dstport") or 0))
        out.append(Packet(
            frame=int(_first(layers, "frame.number") or 0),
            ts=float(_first(layers, "frame.time_epoch") or 0),
            stream=int(_first(layers, "tcp.stream") or -1),
            src=src, dst=dst, to_server=dst[1] in ports,
            fields={k: v for k, v in layers.items() if k not in _BASE},
        ))
    return out


def hexbytes(value: str) -> bytes:
    """tshark's FT_BYTES rendering (``61:62`` or ``6162``) back to bytes."""
    return bytes.fromhex(value.replace(":", ""))


# --------------------------------------------------------------------------------------------
# RESP


RESP_FIELDS = ["resp.bulk_string.value", "resp.string", "resp.error", "resp.integer",
               "resp.array.length"]


def resp_packets(path: str | PathLike[str], ports: Iterable[int]) -> list[Packet]:
    return packets(path, "resp", ports, RESP_FIELDS)


def resp_first_words(path: str | PathLike[str], ports: Iterable[int]) -> list[tuple[int, str]]:
    """``(stream, first bulk string upper-cased)`` of each client packet: the command name of a
    command that went alone in its segment (redis-py sends one command per write outside
    pipelines)."""
    out = []
    for p in resp_packets(path, ports):
        bulks = p.get("resp.bulk_string.value")
        if p.to_server and bulks:
            out.append((p.stream, hexbytes(bulks[0]).decode("latin-1").upper()))
    return out


def resp_errors(path: str | PathLike[str], ports: Iterable[int]) -> list[str]:
    """Every RESP error string tshark found in server packets."""
    return [e for p in resp_packets(path, ports) if not p.to_server for e in p.get("resp.error")]


# --------------------------------------------------------------------------------------------
# AMQP 0-9-1


AMQP_METHOD_NAMES: dict[tuple[int, int], str] = {
    (10, 10): "connection.start", (10, 11): "connection.start-ok",
    (10, 20): "connection.secure", (10, 21): "connection.secure-ok",
    (10, 30): "connection.tune", (10, 31): "connection.tune-ok",
    (10, 40): "connection.open", (10, 41): "connection.open-ok",
    (10, 50): "connection.close", (10, 51): "connection.close-ok",
    (10, 60): "connection.blocked", (10, 61): "connection.unblocked",
    (20, 10): "channel.open", (20, 11): "channel.open-ok", (20, 20): "channel.flow",
    (20, 21): "channel.flow-ok", (20, 40): "channel.close", (20, 41): "channel.close-ok",
    (40, 10): "exchange.declare", (40, 11): "exchange.declare-ok",
    (40, 20): "exchange.delete", (40, 21): "exchange.delete-ok",
    (40, 30): "exchange.bind", (40, 31): "exchange.bind-ok",
    (40, 40): "exchange.unbind", (40, 51): "exchange.unbind-ok",
    (50, 10): "queue.declare", (50, 11): "queue.declare-ok", (50, 20): "queue.bind",
    (50, 21): "queue.bind-ok", (50, 30): "queue.purge", (50, 31): "queue.purge-ok",
    (50, 40): "queue.delete", (50, 41): "queue.delete-ok", (50, 50): "queue.unbind",
    (50, 51): "queue.unbind-ok",
    (60, 10): "basic.qos", (60, 11): "basic.qos-ok", (60, 20): "basic.consume",
    (60, 21): "basic.consume-ok", (60, 30): "basic.cancel", (60, 31): "basic.cancel-ok",
    (60, 40): "basic.publish", (60, 50): "basic.return", (60, 60): "basic.deliver",
    (60, 70): "basic.get", (60, 71): "basic.get-ok", (60, 72): "basic.get-empty",
    (60, 80): "basic.ack", (60, 90): "basic.reject", (60, 100): "basic.recover-async",
    (60, 110): "basic.recover", (60, 111): "basic.recover-ok", (60, 120): "basic.nack",
    (85, 10): "confirm.select", (85, 11): "confirm.select-ok",
    (90, 10): "tx.select", (90, 11): "tx.select-ok", (90, 20): "tx.commit",
    (90, 21): "tx.commit-ok", (90, 30): "tx.rollback", (90, 31): "tx.rollback-ok",
}

AMQP_FIELDS = [
    "amqp.type", "amqp.channel", "amqp.method.class", "amqp.method.method",
    "amqp.method.arguments.exchange", "amqp.method.arguments.queue",
    "amqp.method.arguments.routing_key", "amqp.method.arguments.reply_code",
    "amqp.method.arguments.reply_text", "amqp.method.arguments.delivery_tag",
    "amqp.method.arguments.consumer_tag", "amqp.header.body-size", "amqp.payload",
]


@dataclass
class AmqpMethod:
    """One method frame as tshark decoded it (argument values are per packet: tshark's ``-e``
    cannot say which of several frames in one packet an optional argument belongs to, so they
    are attached only when the packet held a single method frame)."""

    frame: int
    stream: int
    to_server: bool
    channel: int | None
    name: str
    args: dict[str, list[str]]


def amqp_packets(path: str | PathLike[str], ports: Iterable[int]) -> list[Packet]:
    return packets(path, "amqp", ports, AMQP_FIELDS)


def amqp_methods(path: str | PathLike[str], ports: Iterable[int]) -> list[AmqpMethod]:
    """Every AMQP method frame tshark decoded, in wire order."""
    out = []
    for p in amqp_packets(path, ports):
        classes = p.get("amqp.method.class")
        methods = p.get("amqp.method.method")
        types = p.get("amqp.type")
        chans = p.get("amqp.channel")
        # channels of method frames: amqp.type 1 = method
        method_chans = [int(c) for t, c in zip(types, chans) if t == "1"]
        single = len(classes) == 1
        args = {k.split(".")[-1]: v for k, v in p.fields.items()
                if k.startswith("amqp.method.arguments.")} if single else {}
        for i, (c, m) in enumerate(zip(classes, methods)):
            name = AMQP_METHOD_NAMES.get((int(c), int(m)), f"{c}.{m}")
            ch = method_chans[i] if i < len(method_chans) else None
            out.append(AmqpMethod(p.frame, p.stream, p.to_server, ch, name, args))
    return out


# --------------------------------------------------------------------------------------------
# Kafka


KAFKA_FIELDS = ["kafka.len", "kafka.api_key", "kafka.api_version", "kafka.correlation_id",
                "kafka.client_id", "kafka.topic_name", "kafka.error", "kafka.partition_id",
                "kafka.request_frame", "kafka.response_frame", "_ws.expert.message",
                "_ws.malformed"]


@dataclass
class KafkaMessage:
    """One Kafka request or response tshark decoded (first message of the packet's fields)."""

    frame: int
    stream: int
    to_server: bool
    api_key: int | None
    api_version: int | None
    correlation_id: int | None
    topics: list[str]
    errors: list[int]
    malformed: bool
    raw: dict[str, list[str]]


KAFKA_API_NAMES = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit",
                   9: "OffsetFetch", 10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat",
                   13: "LeaveGroup", 14: "SyncGroup", 17: "SaslHandshake", 18: "ApiVersions",
                   19: "CreateTopics", 20: "DeleteTopics", 22: "InitProducerId",
                   32: "DescribeConfigs", 36: "SaslAuthenticate", 60: "DescribeCluster"}


def kafka_messages(path: str | PathLike[str], ports: Iterable[int]) -> list[KafkaMessage]:
    out = []
    for p in packets(path, "kafka", ports, KAFKA_FIELDS):
        def first_int(name: str, p: Packet = p) -> int | None:
            v = p.get(name)
            return int(v[0]) if v else None

        out.append(KafkaMessage(
            frame=p.frame, stream=p.stream, to_server=p.to_server,
            api_key=first_int("kafka.api_key"), api_version=first_int("kafka.api_version"),
            correlation_id=first_int("kafka.correlation_id"),
            topics=list(p.get("kafka.topic_name")),
            errors=[int(e) for e in p.get("kafka.error")],
            malformed=bool(p.get("_ws.malformed")) or any(
                "malformed" in m.lower() or "unknown" in m.lower()
                for m in p.get("_ws.expert.message")),
            raw=p.fields,
        ))
    return out


def kafka_requests(path: str | PathLike[str], ports: Iterable[int]) -> list[KafkaMessage]:
    return [m for m in kafka_messages(path, ports) if m.to_server and m.api_key is not None]


def summarize(items: Iterable[Any]) -> str:
    """A compact multi-line rendering for assertion messages."""
    return "\n".join(f"  {x}" for x in items)
