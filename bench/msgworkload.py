"""Record a message-protocol seed: real Redis, Kafka (Tansu) or RabbitMQ traffic, by tcpdump.

Run by ``bench.mkcapture_msg`` as ``unshare -n python -m bench.msgworkload OUTDIR --proto P``:
in a private network namespace whose ``lo`` has MTU 1500 and no segmentation offload
(``bench.workload.setup_netns_lo``), so segments are Ethernet-sized. Nothing leaves it.

- ``redis``: redis-server 7 (``tests.realpeers.redis_server``) on 6379; ``redis-benchmark -P 16
  -d 100 -r 10000 -t set,get,incr,lpush,hset`` (pipelines of 16 that span segments) plus
  redis-py connections (pipelines, MULTI/EXEC, a WRONGTYPE error, keys holding ``q000000``).
- ``kafka``: Tansu (``tests.realpeers3.tansu``, memory storage) on 9092; kafka-python and
  confluent-kafka producers (several topics, gzip and none) and ``assign()``-ed consumers
  fetching everything back (no consumer groups).
- ``amqp``: RabbitMQ (``tests.realpeers3.rabbitmq``, its own epmd on loopback) on 5672; pika
  declares queues, publishes with routing keys holding ``q000000``, ``basic_get``s + acks some,
  consumes + acks the rest.

Writes ``seed.pcap`` and ``meta.json`` (tcpdump's counters, the clients' own counts). The
truth is derived from the seed by ``bench.mkcapture_msg`` (an independent framing parser) and
checked there against these client counts.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

PORTS = {"redis": 6379, "kafka": 9092, "amqp": 5672}
PLACEHOLDER = "q000000"


def _redis(scale: float, seed: int, meta: dict[str, Any]) -> Any:
    from tests.realpeers import redis_server

    port = PORTS["redis"]

    def run(srv: Any) -> None:
        import warnings

        import redis

        warnings.simplefilter("ignore", DeprecationWarning)  # lib_name=None: no CLIENT SETINFO
        n = max(1000, int(20000 * scale))
        subprocess.run(["redis-benchmark", "-p", str(port), "-P", "16", "-c", "8", "-n", str(n),
                        "-d", "100", "-r", "10000", "-t", "set,get,incr,lpush,hset", "-q"],
                       check=True, capture_output=True, timeout=600)
        rng = random.Random(seed)
        counts: Counter[str] = Counter()
        for c in range(max(4, int(20 * scale))):
            r = redis.Redis(port=port, lib_name=None, lib_version=None)
            tag = f"user:{PLACEHOLDER}:{c}"
            for i in range(rng.randrange(20, 60)):
                k = rng.randrange(4)
                if k == 0:
                    r.set(f"{tag}:{i}", "v" * rng.randrange(1, 3000))
                    counts["SET"] += 1
                elif k == 1:
                    r.get(f"{tag}:{i // 2}")
                    counts["GET"] += 1
                elif k == 2:
                    p = r.pipeline(transaction=rng.random() < 0.5)
                    for j in range(rng.randrange(2, 30)):
                        p.hset(f"{tag}:h", f"f{j}", j)
                        counts["HSET"] += 1
                    p.hgetall(f"{tag}:h")
                    counts["HGETALL"] += 1
                    p.execute()
                else:
                    r.set(f"{tag}:s", "x")
                    try:
                        r.lpush(f"{tag}:s", "y")  # WRONGTYPE
                    except redis.ResponseError:
                        counts["error"] += 1
                    counts["SET"] += 1
                    counts["LPUSH"] += 1
            r.close()
        meta["clients"] = {"redis-benchmark_n": n, "redis-py": dict(counts)}

    return redis_server(port=port), run


def _kafka(scale: float, seed: int, meta: dict[str, Any]) -> Any:
    from tests.realpeers3 import tansu

    def run(k: Any) -> None:
        import confluent_kafka
        import kafka
        from kafka import TopicPartition

        rng = random.Random(seed)
        n = max(50, int(400 * scale))
        topics = ["bench.a", "bench.b", "bench.c", "bench.d"]
        adm = kafka.KafkaAdminClient(bootstrap_servers=k.bootstrap, client_id="setup")
        adm.create_topics([kafka.admin.NewTopic(t, 1, 1) for t in topics])
        adm.close()
        produced: Counter[str] = Counter()
        consumed: Counter[str] = Counter()
        for rnd in range(3):
            for t, codec in (("bench.a", None), ("bench.b", "gzip")):
                p = kafka.KafkaProducer(bootstrap_servers=k.bootstrap, client_id=f"kp{rnd}",
                                        compression_type=codec, linger_ms=5, acks=1)
                futs = [p.send(t, key=b"k%d" % i, value=b"v" * rng.randrange(10, 2000),
                               partition=0) for i in range(n)]
                for f in futs:
                    f.get(30)
                p.close()
                produced[t] += n
            for t in ("bench.c", "bench.d"):
                p = confluent_kafka.Producer({"bootstrap.servers": k.bootstrap,
                                              "client.id": f"ck{rnd}", "linger.ms": 5,
                                              "enable.idempotence": False, "acks": 1})
                for i in range(n):
                    p.produce(t, key=b"c%d" % i, value=b"w" * rng.randrange(10, 2000),
                              partition=0)
                    if i % 100 == 99:
                        p.poll(0)
                assert p.flush(30) == 0
                produced[t] += n
            c = kafka.KafkaConsumer(bootstrap_servers=k.bootstrap, client_id=f"kc{rnd}",
                                    enable_auto_commit=False, consumer_timeout_ms=4000,
                                    group_id=None, max_partition_fetch_bytes=65536)
            c.assign([TopicPartition(t, 0) for t in ("bench.a", "bench.b")])
            c.seek_to_beginning()
            want = produced["bench.a"] + produced["bench.b"]
            for got, m in enumerate(c, 1):
                consumed[m.topic] += 1
                if got >= want:
                    break
            c.close()
            cc = confluent_kafka.Consumer({"bootstrap.servers": k.bootstrap,
                                           "client.id": f"cc{rnd}", "group.id": "unused",
                                           "enable.auto.commit": False,
                                           "max.partition.fetch.bytes": 65536})
            cc.assign([confluent_kafka.TopicPartition(t, 0, confluent_kafka.OFFSET_BEGINNING)
                       for t in ("bench.c", "bench.d")])
            want = produced["bench.c"] + produced["bench.d"]
            got = 0
            deadline = time.monotonic() + 30
            while got < want and time.monotonic() < deadline:
                m = cc.poll(0.5)
                if m is None or m.error():
                    continue
                consumed[m.topic()] += 1
                got += 1
            cc.close()
        meta["clients"] = {"produced": dict(produced), "consumed": dict(consumed)}

    return tansu(port=PORTS["kafka"]), run


def _amqp(scale: float, seed: int, meta: dict[str, Any]) -> Any:
    from tests.realpeers3 import rabbitmq

    def run(mq: Any) -> None:
        import pika

        rng = random.Random(seed)
        n = max(100, int(2000 * scale))
        counts: Counter[str] = Counter()
        for c in range(4):
            conn = pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", mq.port, heartbeat=0))
            ch = conn.channel()
            q = f"jobs.{PLACEHOLDER}.{c}"
            ch.queue_declare(q, auto_delete=False)
            for i in range(n):
                body = b"m" * rng.randrange(5, 3000)
                ch.basic_publish("", q, body,
                                 pika.BasicProperties(content_type="text/plain",
                                                      delivery_mode=1, message_id=str(i)))
                counts["publish"] += 1
            for _ in range(n // 4):
                meth, _props, _body = ch.basic_get(q)
                if meth is not None:
                    ch.basic_ack(meth.delivery_tag)
                    counts["get"] += 1
            ch.basic_qos(prefetch_count=50)
            left = n - n // 4
            got = 0

            def on_msg(chan: Any, meth: Any, _props: Any, _body: Any, left: int = left) -> None:
                nonlocal got
                chan.basic_ack(meth.delivery_tag)
                got += 1
                if got >= left:
                    chan.stop_consuming()

            ch.basic_consume(q, on_msg)
            ch.start_consuming()
            counts["deliver"] += got
            ch.queue_delete(q)
            ch.close()
            conn.close()
        meta["clients"] = dict(counts)

    return rabbitmq(port=PORTS["amqp"]), run


WORKLOADS = {"redis": _redis, "kafka": _kafka, "amqp": _amqp}


def record(out: Path, proto: str, scale: float, seed: int) -> dict[str, Any]:
    from tests.realpeers import capture

    meta: dict[str, Any] = {"proto": proto, "scale": scale, "seed": seed,
                            "port": PORTS[proto], "placeholder": PLACEHOLDER}
    server_cm, run = WORKLOADS[proto](scale, seed, meta)
    t0 = time.monotonic()
    with server_cm as srv, capture(ports=[PORTS[proto]], path=out / "seed.pcap",
                                   buffer_kib=131072) as cap:
        run(srv)
        time.sleep(0.2)
    meta["tcpdump"] = cap.stats
    meta["seconds"] = round(time.monotonic() - t0, 2)
    (out / "meta.json").write_text(json.dumps(meta))
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--proto", choices=sorted(WORKLOADS), required=True)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-netns-setup", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_netns_setup:
        from bench.workload import setup_netns_lo

        setup_netns_lo()
    print(json.dumps(record(args.out, args.proto, args.scale, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
