"""``shark-tui dissect`` on real AMQP 0-9-1 traffic: RabbitMQ 3.10 confined to loopback
(``tests/realpeers3.rabbitmq``), pika clients, tcpdump. pika's record (what it declared,
published, got and was delivered) is the truth; tshark's AMQP dissector, which decodes every
frame, the second opinion.

The broker starts once per module (~5 s); the scenario is driven once (one capture, one
``dissect``).
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest

from tests import realpeers, realpeers3
from tests.integration import oracle3
from tests.realpeers import capture, run_dissect

Entry = dict[str, Any]
BODY_CAP = 64 * 1024
BIG = 300_000  # > RabbitMQ's frame_max (131072): three body frames
EXCHANGE, QUEUE, RKEY = "shk.x", "shk.q", "rk.1"


@dataclass
class Record:
    """What pika did and got."""

    local: tuple[str, int] = ("", 0)
    frame_max: int = 0
    small_props: pika.BasicProperties | None = None
    small_body: bytes = b""
    big_body: bytes = b""
    get_ok: Any = None
    get_props: Any = None
    get_body: bytes = b""
    deliver: Any = None
    deliver_body: bytes = b""
    closed_reply: tuple[int, str] | None = None
    declare_ok: Any = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    port: int
    pcap: Path
    rec: Record
    result: realpeers.DissectResult

    @property
    def amqp(self) -> list[Entry]:
        return [e for e in self.result.entries if e["proto"] == "amqp"]

    def named(self, method: str) -> list[Entry]:
        return [e for e in self.amqp if e["method"] == method]


def _drive(port: int) -> Record:
    rec = Record()
    params = pika.ConnectionParameters("127.0.0.1", port, heartbeat=0,
                                       blocked_connection_timeout=10)
    conn = pika.BlockingConnection(params)
    sock = conn._impl._transport._sock  # type: ignore[attr-defined]
    name = sock.getsockname()
    rec.local = (name[0], name[1])
    rec.frame_max = conn._impl.params.frame_max  # negotiated  # type: ignore[attr-defined]
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, exchange_type="direct", durable=False, auto_delete=False)
    rec.declare_ok = ch.queue_declare(QUEUE, durable=False, auto_delete=False).method
    ch.queue_bind(QUEUE, EXCHANGE, routing_key=RKEY)
    rec.small_props = pika.BasicProperties(
        content_type="application/json", correlation_id="corr-1", message_id="msg-1",
        delivery_mode=2, headers={"x-shark": "yes", "n": 7}, app_id="shark-test")
    rec.small_body = b'{"hello": "amqp"}'
    ch.basic_publish(EXCHANGE, RKEY, rec.small_body, rec.small_props)
    rec.big_body = bytes((i * 13) % 256 for i in range(BIG))
    ch.basic_publish(EXCHANGE, RKEY, rec.big_body,
                     pika.BasicProperties(content_type="application/octet-stream"))
    # basic.get: the small one
    for _ in range(50):
        got = ch.basic_get(QUEUE, auto_ack=False)
        if got[0] is not None:
            break
        conn.sleep(0.05)
    rec.get_ok, rec.get_props, rec.get_body = got
    assert rec.get_body == rec.small_body
    ch.basic_ack(rec.get_ok.delivery_tag)
    # basic.consume: the big one arrives as basic.deliver
    for method, _props, body in ch.consume(QUEUE, auto_ack=False, inactivity_timeout=5):
        assert method is not None, "no delivery within 5 s"
        rec.deliver, rec.deliver_body = method, body
        ch.basic_ack(method.delivery_tag)
        break
    ch.cancel()
    assert rec.deliver_body == rec.big_body
    # a publish to a missing exchange: the broker closes the channel with 404
    ch2 = conn.channel()
    ch2.basic_publish("shk.missing", RKEY, b"lost")
    try:
        conn.process_data_events(time_limit=1)
        ch2.queue_declare("shk.never", passive=True)  # raises: the channel is closed
    except pika.exceptions.ChannelClosedByBroker as exc:
        rec.closed_reply = (exc.reply_code, exc.reply_text)
    assert rec.closed_reply and rec.closed_reply[0] == 404, rec.closed_reply
    ch.queue_delete(QUEUE)
    ch.exchange_delete(EXCHANGE)
    conn.close()
    return rec


@pytest.fixture(scope="module")
def broker(capture_tools: None) -> Any:
    with realpeers3.rabbitmq() as mq:
        yield mq


@pytest.fixture(scope="module")
def scenario(broker: realpeers3.RabbitMQ, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    pcap = tmp_path_factory.mktemp("amqp") / "amqp.pcap"
    with capture(ports=[broker.port], path=pcap) as cap:
        rec = _drive(broker.port)
    assert cap.stats.get("dropped", 0) == 0, cap.stats
    result = run_dissect(pcap, "--decode", f"{broker.port}=amqp").check()
    return Scenario(broker.port, pcap, rec, result)


def _explain(entries: list[Entry]) -> str:
    return "\n".join(f"  {e['id']} {e['method']} {e['summary']!r} status={e['status']!r} "
                     f"err={e['error']}" for e in entries)


def _body(obj: dict[str, Any]) -> bytes:
    if obj.get("body_encoding") == "base64":
        return base64.b64decode(obj["body"])
    return (obj.get("body") or "").encode()


# --------------------------------------------------------------------------------------------


def test_all_entries_amqp_on_one_connection(scenario: Scenario) -> None:
    ents = scenario.result.entries
    assert ents, scenario.result.stderr
    assert Counter(e["proto"] for e in ents) == Counter({"amqp": len(ents)}), _explain(ents)
    for e in ents:
        assert (e["src"]["ip"], e["src"]["port"]) == scenario.rec.local, e["src"]
        assert (e["dst"]["ip"], e["dst"]["port"]) == ("127.0.0.1", scenario.port)
        assert e["tls"] is False


def test_method_sequence(scenario: Scenario) -> None:
    methods = [e["method"] for e in scenario.amqp]
    want_in_order = ["connection.start", "connection.tune", "connection.open", "channel.open",
                     "exchange.declare", "queue.declare", "queue.bind", "basic.publish",
                     "basic.publish", "basic.get", "basic.ack", "basic.consume", "basic.deliver",
                     "basic.ack", "basic.cancel", "channel.open", "basic.publish",
                     "channel.close", "queue.delete", "exchange.delete", "connection.close"]
    it = iter(methods)
    missing = [m for m in want_in_order if m not in it]
    assert not missing, f"not in order: {missing}\n{_explain(scenario.amqp)}"
    for e in scenario.amqp:
        one_way = e["method"] in ("basic.publish", "basic.deliver", "basic.ack")
        if e["summary"] == "queue=shk.never":
            # sent by pika on the channel the broker was closing: dropped, never answered
            assert e["error"] == "no_response" and e["response"] is None, _explain([e])
            continue
        assert e["error"] is None, _explain([e])
        if not one_way:
            assert e["request"] is not None and e["response"] is not None, _explain([e])
            assert e["latency_ms"] is not None


def test_declare_bind_summaries(scenario: Scenario) -> None:
    ex = scenario.named("exchange.declare")[0]
    assert ex["summary"].startswith(f"exchange={EXCHANGE}"), ex["summary"]
    assert ex["request"]["arguments"]["exchange_type"] == "direct"
    assert ex["response"]["method"] == "declare-ok" and ex["status"] is None
    q = scenario.named("queue.declare")[0]
    assert f"queue={QUEUE}" in q["summary"]
    assert q["response"]["arguments"]["queue"] == scenario.rec.declare_ok.queue
    b = scenario.named("queue.bind")[0]
    for part in (f"exchange={EXCHANGE}", f"queue={QUEUE}", f"routing_key={RKEY}"):
        assert part in b["summary"], b["summary"]


def test_publish_properties_and_bodies(scenario: Scenario) -> None:
    rec = scenario.rec
    pubs = scenario.named("basic.publish")
    small, big, lost = pubs[0], pubs[1], pubs[2]
    for e in (small, big):
        assert e["request"] is not None and e["response"] is None
        assert e["status"] is None and e["error"] is None
        assert f"exchange={EXCHANGE}" in e["summary"] and f"routing_key={RKEY}" in e["summary"]
    props = small["request"]["properties"]
    p = rec.small_props
    assert p is not None
    assert props["content_type"] == p.content_type
    assert props["correlation_id"] == p.correlation_id
    assert props["message_id"] == p.message_id
    assert props["delivery_mode"] == 2
    assert props["app_id"] == "shark-test"
    assert props["headers"] == {"x-shark": "yes", "n": 7}
    assert _body(small["request"]) == rec.small_body
    assert small["request"]["body_truncated"] is False
    # the big one spans body frames (frame_max) and is capped, its size kept
    assert rec.frame_max < BIG
    assert big["request"]["body_size"] == BIG
    assert big["request"]["body_truncated"] is True
    kept = _body(big["request"])
    assert 0 < len(kept) <= BODY_CAP and rec.big_body.startswith(kept)
    assert big["request_size"] > BIG
    assert "exchange=shk.missing" in lost["summary"]


def test_basic_get_and_deliver_match_pika(scenario: Scenario) -> None:
    rec = scenario.rec
    get = scenario.named("basic.get")[0]
    assert f"queue={QUEUE}" in get["summary"]
    resp = get["response"]
    assert resp["method"] == "get-ok"
    assert resp["arguments"]["delivery_tag"] == rec.get_ok.delivery_tag
    assert resp["arguments"]["routing_key"] == rec.get_ok.routing_key == RKEY
    assert resp["arguments"]["exchange"] == EXCHANGE
    assert resp["properties"]["correlation_id"] == rec.get_props.correlation_id
    assert _body(resp) == rec.get_body
    dl = scenario.named("basic.deliver")[0]
    assert dl["request"] is None and dl["response"] is not None and dl["error"] is None
    args = dl["response"]["arguments"]
    assert args["delivery_tag"] == rec.deliver.delivery_tag
    assert args["consumer_tag"] == rec.deliver.consumer_tag
    assert args["routing_key"] == RKEY
    assert dl["response"]["body_size"] == BIG and dl["response"]["body_truncated"] is True
    assert rec.big_body.startswith(_body(dl["response"]))
    acks = scenario.named("basic.ack")
    assert [a["request"]["arguments"]["delivery_tag"] for a in acks] == \
        [rec.get_ok.delivery_tag, rec.deliver.delivery_tag]


def test_channel_close_404(scenario: Scenario) -> None:
    closes = [e for e in scenario.named("channel.close") if e["status"] == 404]
    assert closes, _explain(scenario.amqp)
    c = closes[0]
    assert c["request"]["sender"] == "server"
    assert c["response"]["method"] == "close-ok"
    assert scenario.rec.closed_reply is not None
    assert scenario.rec.closed_reply[1] in c["summary"], c["summary"]
    assert c["request"]["arguments"]["class_id"] == 60
    assert c["request"]["arguments"]["method_id"] == 40
    # the connection close at the end: 200
    assert [e["status"] for e in scenario.named("connection.close")] == [200]


# -- tshark -----------------------------------------------------------------------------------


def _our_frames(entries: list[Entry]) -> list[tuple[str, str]]:
    """(sender, class.method) of every method frame our entries hold, in ts order."""
    frames: list[tuple[float, str, str]] = []
    for e in entries:
        for half in ("request", "response"):
            obj = e.get(half)
            if obj:
                frames.append((e["ts"], obj["sender"], f"{obj['class']}.{obj['method']}"))
    return [(s, m) for _, s, m in sorted(frames, key=lambda f: f[0])]


def test_tshark_sees_the_same_methods(scenario: Scenario) -> None:
    theirs = oracle3.amqp_methods(scenario.pcap, [scenario.port])
    assert theirs, "tshark decoded no AMQP"
    t = Counter(("client" if m.to_server else "server", m.name) for m in theirs)
    o = Counter(_our_frames(scenario.amqp))
    assert t == o, f"tshark only: {t - o}\nours only: {o - t}"


def test_tshark_routing_keys_and_reply_codes(scenario: Scenario) -> None:
    pk = oracle3.amqp_packets(scenario.pcap, [scenario.port])
    rks = [rk for p in pk for rk in p.get("amqp.method.arguments.routing_key")]
    assert rks.count(RKEY) >= 5  # bind, 3 publishes, get-ok, deliver
    codes = sorted(int(c) for p in pk for c in p.get("amqp.method.arguments.reply_code"))
    ours = sorted(e["status"] for e in scenario.amqp if e["status"] is not None)
    assert codes == ours, (codes, ours)
