"""A real query daemon serving real Redis, AMQP and Kafka traffic, for the detail pane's tests.

The traffic is recorded, once per test process, from real servers through the recording relays
of the protocol tests: redis-server (``tests.realpeers.redis_server``, the relay of
``tests.proto.test_redis``) driven by redis-py over RESP2 and RESP3, RabbitMQ
(``tests.proto.amqp_broker``) driven by pika, and the Tansu Kafka broker (the relay of
``tests.proto.test_kafka``, advertised to the clients) driven by kafka-python. Each recorded
connection becomes one TCP connection of a pcap with fixed addresses (client 10.0.0.N, servers
on their usual ports) and fixed times (one millisecond per turn of the conversation), so entry
ids, times and latencies do not depend on the machine. The store is loaded from that pcap and
served by an in-process ``Server`` on a Unix socket, as ``appfixture.fixture_daemon`` does.

What the clients send is fixed (values, keys, record timestamps, message properties), so the
snapshots of the detail tabs stay the same from run to run.
"""

from __future__ import annotations

import functools
import io
import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from tests.engine.fixtures_pcap import LINKTYPE_ETHERNET, eth_ipv4_tcp, pcap_bytes
from tests.widgets.appfixture import serve_capture

SYN, ACK, FIN, PSH = 2, 16, 1, 8
T0_NS = 1_700_000_000_000_000_000  # 2023-11-14 22:13:20 UTC
TURN_NS = 1_000_000  # one millisecond between turns of a conversation
CONN_NS = 10 * 1_000_000_000  # ten seconds between connections
MSS = 1400

REDIS = ("10.1.0.6", 6379)
AMQP = ("10.1.0.5", 5672)
KAFKA = ("10.1.0.9", 9092)

#: What the Kafka producer sends (topic, key, value, headers); record timestamps are fixed.
KAFKA_TOPIC = "orders"
KAFKA_RECORDS: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
    (b"order-1", b'{"id": 1, "item": "tea", "qty": 2}', [("trace-id", b"abc123")]),
    (b"order-2", b"plain text value", []),
    (None, bytes(range(0, 40, 3)), [("bin", b"\x00\x01")]),
]
KAFKA_TS_MS = 1_700_000_000_123
KAFKA_BIG_TOPIC = "blobs"
KAFKA_MISSING_TOPIC = "no-such-topic"
#: A value larger than the dissectors keep (64 KiB): shown cut, with a note.
BIG_VALUE = b"0123456789abcdef" * 6250

#: What pika publishes: (routing key, body, properties).
AMQP_QUEUE = "orders"
AMQP_JSON = b'{"order": 42, "items": ["tea", "cake"]}'

Conn = list[tuple[int, bytes]]


# -- recording ---------------------------------------------------------------------------------


def _redis_conns() -> list[Conn]:
    import redis

    from tests.proto.test_redis import Relay
    from tests.realpeers import redis_server

    with redis_server(extra=("--enable-debug-command", "yes")) as peer:
        relay = Relay(peer.port)
        try:
            # RESP2: one command per round trip, then a pipeline, then MULTI/EXEC
            r = redis.Redis(port=relay.port, protocol=2)
            r.execute_command("SET", "greeting", "hello world")
            r.execute_command("GET", "greeting")
            r.execute_command("GET", "missing")
            r.execute_command("INCR", "counter")
            r.execute_command("RPUSH", "list", "a", "b", "c d")
            r.execute_command("LRANGE", "list", 0, -1)
            r.execute_command("XADD", "stream", "1-1", "sensor", "7", "temp", "21.5")
            r.execute_command("XRANGE", "stream", "-", "+")
            r.execute_command("SET", "bin", b"\x00\x01\xff\n")
            r.execute_command("SET", "big", BIG_VALUE)
            r.execute_command("GET", "big")
            with suppress(redis.ResponseError):  # WRONGTYPE
                r.execute_command("LPUSH", "greeting", "x")
            pipe = r.pipeline(transaction=False)
            pipe.execute_command("SET", "pipe:1", "one")
            pipe.execute_command("INCR", "pipe:n")
            pipe.execute_command("GET", "pipe:1")
            pipe.execute()
            tx = r.pipeline(transaction=True)
            tx.execute_command("INCR", "tx:n")
            tx.execute_command("LRANGE", "list", 0, 1)
            tx.execute()
            r.close()
            # RESP3: HELLO 3, then its typed replies
            r3 = redis.Redis(port=relay.port, protocol=3)
            r3.execute_command("HSET", "user:1", "name", "Ada", "lang", "en")
            r3.execute_command("HGETALL", "user:1")
            r3.execute_command("SADD", "primes", 2, 3, 5)
            r3.execute_command("SMEMBERS", "primes")
            r3.execute_command("ZADD", "scores", 1.5, "ada")
            r3.execute_command("ZSCORE", "scores", "ada")
            for kind in ("true", "bignum", "verbatim"):
                r3.execute_command("DEBUG", "PROTOCOL", kind)
            with suppress(redis.RedisError):  # redis-py cannot read attributes: no matter
                r3.execute_command("DEBUG", "PROTOCOL", "attrib")
            r3.close()
            # a blocking pop that nothing answers before the client gives up: no response
            # (a plain socket: redis-py would retry on its timeout)
            with socket.create_connection(("127.0.0.1", relay.port)) as raw:
                raw.sendall(b"*3\r\n$5\r\nBLPOP\r\n$4\r\njobs\r\n$1\r\n0\r\n")
                time.sleep(0.2)
            time.sleep(0.1)
        finally:
            relay.close()
        return [[(d, data) for d, data, _ in c.chunks] for c in relay.conns]


def _amqp_conns() -> list[Conn]:
    import pika

    from tests.proto import amqp_broker

    with amqp_broker.rabbitmq_broker() as port:
        relay = amqp_broker.Relay(port)
        try:
            params = pika.ConnectionParameters(
                host="127.0.0.1", port=relay.port, heartbeat=0,
                client_properties={"product": "shark-tui tests"},
            )  # fmt: skip
            conn = pika.BlockingConnection(params)
            ch = conn.channel()
            ch.queue_declare(AMQP_QUEUE)
            ch.basic_publish(
                exchange="",
                routing_key=AMQP_QUEUE,
                body=AMQP_JSON,
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    priority=5,
                    correlation_id="c-42",
                    reply_to="replies",
                    message_id="m-1",
                    timestamp=1_700_000_000,
                    app_id="shop",
                    headers={"x-tenant": "acme", "retry": 1},
                ),
            )
            ch.basic_publish(
                exchange="", routing_key=AMQP_QUEUE, body=bytes(range(0, 64, 5)),
                properties=pika.BasicProperties(content_type="application/octet-stream"),
            )  # fmt: skip
            text = pika.BasicProperties(content_type="text/plain")
            ch.basic_publish(exchange="", routing_key=AMQP_QUEUE, body=BIG_VALUE, properties=text)
            for _ in range(3):
                ch.basic_get(AMQP_QUEUE, auto_ack=True)
            with suppress(pika.exceptions.ChannelClosedByBroker):  # 404 NOT_FOUND
                ch.exchange_declare("nope", passive=True)
            conn.close()
            relay.wait_idle(0.2)
        finally:
            relay.close()
        return [list(c) for c in relay.connections]


def _kafka_conns() -> list[Conn]:
    import subprocess

    import kafka
    import kafka.admin
    import kafka.errors

    from tests.proto.test_kafka import Relay, free_port, wait_port
    from tests.realpeers3 import tansu_binary

    bp, rp = free_port(), free_port()
    proc = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{bp}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{rp}",
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(bp)
        relay = Relay(rp, ("127.0.0.1", bp))
        boot = f"127.0.0.1:{rp}"
        adm = kafka.KafkaAdminClient(bootstrap_servers=boot, client_id="admin")
        adm.create_topics([kafka.admin.NewTopic(t, 1, 1) for t in (KAFKA_TOPIC, KAFKA_BIG_TOPIC)])
        with suppress(kafka.errors.KafkaError):  # no such topic: UNKNOWN_TOPIC_OR_PARTITION
            adm.describe_topics([KAFKA_MISSING_TOPIC])
        adm.close()
        p = kafka.KafkaProducer(bootstrap_servers=boot, client_id="shop-producer", linger_ms=50)
        for key, value, headers in KAFKA_RECORDS:
            p.send(KAFKA_TOPIC, key=key, value=value, headers=headers, timestamp_ms=KAFKA_TS_MS)
        p.flush()
        p.send(KAFKA_BIG_TOPIC, key=b"big", value=BIG_VALUE, timestamp_ms=KAFKA_TS_MS)
        p.flush()
        p.close()
        c = kafka.KafkaConsumer(bootstrap_servers=boot, client_id="shop-consumer")
        c.assign([kafka.TopicPartition(KAFKA_TOPIC, 0)])
        c.seek_to_beginning()
        got, end = 0, time.time() + 15
        while got < len(KAFKA_RECORDS) and time.time() < end:
            got += sum(len(v) for v in c.poll(500).values())
        c.close()
        time.sleep(0.3)
        relay.close()
        with relay.lock:
            return [[(d, data) for d, data, _ in rec] for rec in relay.conns]
    finally:
        proc.terminate()
        proc.wait(10)


# -- the capture -------------------------------------------------------------------------------


def _packets(index: int, server: tuple[str, int], conn: Conn, t0: int) -> list[tuple[int, bytes]]:
    """One recorded connection as TCP packets: handshake, payload in MSS segments, FINs."""
    cip, cport = f"10.0.0.{index + 1}", 40000 + index
    sip, sport = server
    seq = {0: 1_000_000 * (index + 1), 1: 500_000_000 + index}
    out: list[tuple[int, bytes]] = []
    turn = 0

    def send(direction: int, ts: int, payload: bytes = b"", flags: int = ACK) -> None:
        if direction == 0:
            frame = eth_ipv4_tcp(cip, sip, cport, sport, seq[0], seq[1], flags, payload)
        else:
            frame = eth_ipv4_tcp(sip, cip, sport, cport, seq[1], seq[0], flags, payload)
        out.append((ts, frame))
        seq[direction] = (seq[direction] + len(payload) + (1 if flags & (SYN | FIN) else 0)) % 2**32

    send(0, t0, flags=SYN)
    send(1, t0 + 1000, flags=SYN | ACK)
    send(0, t0 + 2000)
    last = None
    for direction, data in conn:
        if direction != last:
            turn += 1
            last = direction
        ts = t0 + turn * TURN_NS
        for i in range(0, len(data), MSS):
            send(direction, ts, data[i : i + MSS], ACK | PSH)
    end = t0 + (turn + 1) * TURN_NS
    send(0, end, flags=FIN | ACK)
    send(1, end + 1000, flags=FIN | ACK)
    send(0, end + 2000)
    return out


@functools.cache
def recorded() -> dict[str, list[Conn]]:
    """The recorded connections of each protocol (servers run once per test process)."""
    return {"redis": _redis_conns(), "amqp": _amqp_conns(), "kafka": _kafka_conns()}


@functools.cache
def proto_capture() -> bytes:
    """A pcap of every recorded connection: Redis, then AMQP, then Kafka, one after another."""
    servers = {"redis": REDIS, "amqp": AMQP, "kafka": KAFKA}
    packets: list[tuple[int, bytes]] = []
    index = 0
    for proto, conns in recorded().items():
        for conn in conns:
            if not conn:
                continue
            packets += _packets(index, servers[proto], conn, T0_NS + index * CONN_NS)
            index += 1
    return pcap_bytes(LINKTYPE_ETHERNET, packets)


@contextmanager
def proto_daemon(node: str = "fixture") -> Iterator[tuple[str, str]]:
    """(address, token) of a daemon serving ``proto_capture()``."""
    with serve_capture(proto_capture(), node, prefix="shark-tui-prototest-") as found:
        yield found


def entries() -> list[dict[str, Any]]:
    """The entries ``shark-tui dissect --json`` makes of ``proto_capture()`` (in-process)."""
    from shark_tui.engine.capfile import CaptureFile
    from shark_tui.engine.dissect import Dissection

    out: list[dict[str, Any]] = []
    d = Dissection(out.append)
    cap = CaptureFile(io.BytesIO(proto_capture()))
    d.run(cap, cap.interfaces)
    return json.loads(json.dumps(out))


def pick(pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The one entry of the capture for which ``pred`` holds."""
    found = [e for e in entries() if pred(e)]
    assert len(found) == 1, [(e["id"], e["method"], e["summary"]) for e in found]
    return found[0]
