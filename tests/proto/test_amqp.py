"""The AMQP 0-9-1 dissector: synthetic frames (pamqp-built) and streams recorded from a real
RabbitMQ broker on loopback through a recording relay, compared with what pika saw."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from pamqp import commands, frame, header, heartbeat

from shark_tui.proto import amqp as mod
from shark_tui.proto.amqp import AmqpDissector
from shark_tui.proto.base import (
    CLIENT,
    PENDING_TIMEOUT,
    SERVER,
    Desynced,
    Event,
    Exchange,
    ExchangeCompleted,
)
from tests.proto import amqp_broker

PH = b"AMQP\x00\x00\x09\x01"


# -- building streams ------------------------------------------------------------------------


def method(obj: Any, channel: int = 1) -> bytes:
    return frame.marshal(obj, channel)


def content(body: bytes, channel: int = 1, frame_max: int = 4096, **props: Any) -> bytes:
    out = frame.marshal(
        header.ContentHeader(body_size=len(body), properties=commands.Basic.Properties(**props)),
        channel,
    )
    step = frame_max - 8
    for i in range(0, len(body), step):
        out += frame.marshal(_body(body[i : i + step]), channel)
    return out


def _body(data: bytes) -> Any:
    from pamqp import body as pbody

    return pbody.ContentBody(data)


def run(
    ops: list[tuple[int, bytes]], dissector: AmqpDissector | None = None, finish: bool = True
) -> tuple[list[Exchange], list[Event], AmqpDissector]:
    d = dissector or AmqpDissector()
    events: list[Event] = []
    for i, (direction, data) in enumerate(ops):
        events += d.feed(direction, data, 100.0 + i)
    if finish:
        events += d.finish(1000.0)
    exchanges = [e.exchange for e in events if isinstance(e, ExchangeCompleted)]
    return exchanges, events, d


def handshake() -> list[tuple[int, bytes]]:
    return [
        (CLIENT, PH),
        (SERVER, method(commands.Connection.Start(server_properties={"product": "R"}), 0)),
        (CLIENT, method(commands.Connection.StartOk(client_properties={}, response="\0g\0g"), 0)),
        (SERVER, method(commands.Connection.Tune(channel_max=2047, frame_max=4096), 0)),
        (CLIENT, method(commands.Connection.TuneOk(channel_max=2047, frame_max=4096), 0)),
        (CLIENT, method(commands.Connection.Open(virtual_host="/"), 0)),
        (SERVER, method(commands.Connection.OpenOk(), 0)),
        (CLIENT, method(commands.Channel.Open(), 1)),
        (SERVER, method(commands.Channel.OpenOk(), 1)),
    ]


# -- synthetic -------------------------------------------------------------------------------


def test_handshake_pairs_across_directions() -> None:
    exchanges, events, d = run(handshake())
    assert [x.method for x in exchanges] == [
        "connection.start",
        "connection.tune",
        "connection.open",
        "channel.open",
    ]
    start = exchanges[0]
    assert start.request is not None and start.response is not None
    assert start.request["sender"] == "server" and start.response["sender"] == "client"
    assert start.request["arguments"]["server_properties"] == {"product": "R"}
    assert start.response["method"] == "start-ok"
    assert start.latency_ms == 1000.0
    assert all(x.error is None and x.proto == "amqp" for x in exchanges)
    assert exchanges[2].summary == "vhost=/"
    assert d.stats["protocol_headers"] == 1
    assert not [e for e in events if not isinstance(e, ExchangeCompleted)]


DELIVER = method(commands.Basic.Deliver("ctag", 1, False, "logs", "info"))


def test_publish_deliver_get_and_acks() -> None:
    body = bytes(range(256)) * 40  # 10240 bytes: three body frames, binary
    ops = [
        *handshake(),
        (
            CLIENT,
            method(commands.Basic.Publish(exchange="logs", routing_key="info"))
            + content(b"hi", content_type="text/plain", headers={"k": [1, "v"]}),
        ),
        (SERVER, DELIVER),
        (SERVER, content(body, delivery_mode=2)),
        (CLIENT, method(commands.Basic.Ack(delivery_tag=1))),
        (CLIENT, method(commands.Basic.Get(queue="q"))),
        (SERVER, method(commands.Basic.GetOk(2, False, "", "q", 0)) + content(b"")),
        (CLIENT, method(commands.Basic.Get(queue="q"))),
        (SERVER, method(commands.Basic.GetEmpty())),
    ]
    exchanges, _, _ = run(ops)
    rest = exchanges[4:]
    assert [x.method for x in rest] == [
        "basic.publish",
        "basic.deliver",
        "basic.ack",
        "basic.get",
        "basic.get",
    ]
    pub, deliver, ack, get, empty = rest
    assert pub.summary == "exchange=logs routing_key=info"
    assert pub.response is None and pub.request is not None and pub.error is None
    assert pub.request["properties"] == {"content_type": "text/plain", "headers": {"k": [1, "v"]}}
    assert pub.request["body"] == "hi" and pub.request["body_size"] == 2
    assert deliver.request is None and deliver.response is not None
    assert deliver.response["body_encoding"] == "base64"
    assert base64.b64decode(deliver.response["body"]) == body
    assert deliver.response["properties"] == {"delivery_mode": 2}
    assert deliver.response_size == len(DELIVER) + len(content(body, delivery_mode=2))
    assert ack.summary == "delivery_tag=1" and ack.request is not None
    assert get.response is not None and get.response["method"] == "get-ok"
    assert get.response["body"] == "" and get.status is None
    assert empty.response is not None and empty.response["method"] == "get-empty"


def test_sizes_are_frame_bytes() -> None:
    pub = method(commands.Basic.Publish(exchange="", routing_key="q"))
    cont = content(b"x" * 5000)
    exchanges, _, _ = run([(CLIENT, pub + cont)])
    assert exchanges[0].request_size == len(pub) + len(cont)
    assert exchanges[0].summary == 'exchange="" routing_key=q'


def test_channel_close_404_and_refused_declare() -> None:
    close = commands.Channel.Close(404, "NOT_FOUND - no queue 'x' in vhost '/'", 50, 10)
    ops = [
        (CLIENT, method(commands.Basic.Qos(prefetch_count=1), 2)),
        (CLIENT, method(commands.Queue.Declare(queue="x", passive=True))),
        (SERVER, method(close)),
        (CLIENT, method(commands.Channel.CloseOk())),
    ]
    exchanges, _, _ = run(ops)
    declare, chclose, qos = exchanges
    assert qos.method == "basic.qos" and qos.error == "no_response"  # another channel
    assert declare.method == "queue.declare" and declare.status == 404
    assert declare.response is not None and declare.response["method"] == "close"
    assert chclose.method == "channel.close" and chclose.status == 404
    assert chclose.summary == "NOT_FOUND - no queue 'x' in vhost '/'"
    assert chclose.request is not None and chclose.request["sender"] == "server"
    assert chclose.response is not None and chclose.response["method"] == "close-ok"
    assert chclose.error is None


def test_nowait_is_one_way_and_missing_halves() -> None:
    ops = [
        (CLIENT, method(commands.Queue.Declare(queue="a", nowait=True))),
        (SERVER, method(commands.Queue.BindOk())),  # no request
        (CLIENT, method(commands.Basic.Qos(prefetch_count=1))),  # no response
    ]
    exchanges, _, d = run(ops)
    assert [(x.method, x.error) for x in exchanges] == [
        ("queue.declare", None),
        ("queue.bind-ok", "no_request"),
        ("basic.qos", "no_response"),
    ]
    assert d.pending() == 0


def test_expire_and_oldest_pending() -> None:
    d = AmqpDissector()
    d.feed(CLIENT, method(commands.Basic.Qos(prefetch_count=1)), 10.0)
    assert d.oldest_pending() == 10.0
    assert d.expire(20.0) == []
    events = d.expire(10.0 + PENDING_TIMEOUT + 1)
    assert len(events) == 1 and isinstance(events[0], ExchangeCompleted)
    assert events[0].exchange.error == "no_response"
    assert d.oldest_pending() is None and d.stats["expired"] == 1


def test_heartbeats_counted_not_listed() -> None:
    hb = frame.marshal(heartbeat.Heartbeat(), 0)
    exchanges, events, d = run([(CLIENT, hb), (SERVER, hb + hb)])
    assert exchanges == [] and events == [] and d.stats["heartbeats"] == 3


def test_body_cap_and_gap_inside_body() -> None:
    pub = method(commands.Basic.Publish(exchange="e", routing_key="r"))
    cont = content(b"a" * 3000, frame_max=1 << 16)
    d = AmqpDissector(body_cap=100)
    exchanges, _, _ = run([(CLIENT, pub + cont)], d)
    obj = exchanges[0].request
    assert obj is not None and obj["body"] == "a" * 100 and obj["body_truncated"]
    assert obj["body_size"] == 3000 and exchanges[0].error is None
    # A gap inside the payload: skipped, counted, truncated.
    d = AmqpDissector()
    cut = len(pub) + len(cont) - 1001
    events = d.feed(CLIENT, (pub + cont)[:cut], 1.0)
    events += d.gap(CLIENT, 1000, 2.0)
    events += d.feed(CLIENT, (pub + cont)[cut + 1000 :], 3.0)
    events += d.feed(CLIENT, method(commands.Basic.Ack(delivery_tag=1)), 4.0)
    xs = [e.exchange for e in events if isinstance(e, ExchangeCompleted)]
    assert [x.method for x in xs] == ["basic.publish", "basic.ack"]
    assert xs[0].error == "truncated" and xs[0].request is not None
    assert xs[0].request["body_truncated"] and xs[0].request["body_size"] == 3000
    assert xs[0].request_size == len(pub) + len(cont)
    assert not [e for e in events if isinstance(e, Desynced)]


def test_gap_outside_body_resyncs() -> None:
    ops = handshake()
    d = AmqpDissector()
    events: list[Event] = []
    for direction, data in ops[:5]:
        events += d.feed(direction, data, 1.0)
    events += d.gap(CLIENT, 5, 2.0)
    for direction, data in ops[6:]:
        events += d.feed(direction, data, 3.0)
    events += d.feed(CLIENT, method(commands.Basic.Ack(delivery_tag=1)) * 2, 4.0)
    events += d.finish(5.0)
    desyncs = [e for e in events if isinstance(e, Desynced)]
    assert len(desyncs) == 1 and desyncs[0].direction == CLIENT
    xs = [e.exchange for e in events if isinstance(e, ExchangeCompleted)]
    methods = [(x.method, x.error) for x in xs]
    assert ("basic.ack", None) in methods
    assert ("connection.open-ok", "no_request") in methods


@pytest.mark.parametrize("skip", [0, 1, 3, 9, 20, 21])
def test_midstream(skip: int) -> None:
    stream = b"".join(
        method(commands.Basic.Publish(exchange="e", routing_key=f"r{i}")) + content(b"x%d" % i)
        for i in range(4)
    )
    exchanges, events, d = run([(CLIENT, stream[skip:])], AmqpDissector(midstream=True))
    keys = [x.summary for x in exchanges if x.error is None]
    assert keys[-3:] == [
        "exchange=e routing_key=r1",
        "exchange=e routing_key=r2",
        "exchange=e routing_key=r3",
    ]
    if skip == 0:
        assert len(keys) == 4 and not [e for e in events if isinstance(e, Desynced)]
    elif skip == 20:  # exactly at the content header: nothing skipped, the orphans counted
        assert d.stats["orphan_frames"] == 2 and len(keys) == 3
    else:
        assert [e for e in events if isinstance(e, Desynced)]


def test_garbage_and_bad_frames_never_raise() -> None:
    d = AmqpDissector()
    bad_method = b"\x01\x00\x01\x00\x00\x00\x04\x00\x63\x00\x63\xce"  # unknown method id
    events = d.feed(CLIENT, bad_method, 1.0)
    assert d.stats["bad_frames"] == 1 and isinstance(events[0], Desynced)
    events = d.feed(CLIENT, b"\xff" * 100, 2.0)
    events += d.feed(SERVER, b"AMQX\x00" * 50, 2.0)
    events += d.finish(3.0)
    assert d.stats["internal_errors"] == 0
    assert [e for e in events if isinstance(e, Desynced)]


def test_internal_error_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    d = AmqpDissector()

    def boom(*_: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(d, "_run", boom)
    events = d.feed(CLIENT, b"AMQP", 1.0)
    assert d.stats["internal_errors"] == 1 and isinstance(events[0], Desynced)


def test_content_cap_on_channels() -> None:
    d = AmqpDissector()
    stream = b"".join(
        method(commands.Basic.Publish(exchange="e"), ch)
        for ch in range(1, mod.MAX_OPEN_CONTENTS + 3)
    )
    events = d.feed(CLIENT, stream, 1.0)
    assert d.stats["contents_dropped"] == 2
    xs = [e.exchange for e in events if isinstance(e, ExchangeCompleted)]
    assert len(xs) == 2 and all(x.error == "truncated" for x in xs)


# -- a real broker ---------------------------------------------------------------------------

pika = pytest.importorskip("pika")


@pytest.fixture(scope="module")
def broker() -> Iterator[int]:
    if not amqp_broker.available():
        pytest.skip("rabbitmq-server is not installed")
    with amqp_broker.rabbitmq_broker() as port:
        yield port


def _record(port: int, scenario: Any, heartbeat: int | None = None) -> list[tuple[int, bytes]]:
    relay = amqp_broker.Relay(port)
    try:
        params = pika.ConnectionParameters("127.0.0.1", relay.port, heartbeat=heartbeat)
        conn = pika.BlockingConnection(params)
        scenario(conn)
        if conn.is_open:
            conn.close()
        relay.wait_idle()
    finally:
        relay.close()
    assert len(relay.connections) == 1
    return relay.connections[0]


def _dissect(chunks: list[tuple[int, bytes]], **kw: Any) -> tuple[list[Exchange], AmqpDissector]:
    exchanges, events, d = run(chunks, AmqpDissector(**kw))
    assert not [e for e in events if isinstance(e, Desynced)]
    assert d.stats["internal_errors"] == 0 and d.stats["bad_frames"] == 0
    return exchanges, d


def test_broker_declare_bind_publish_consume_get(broker: int) -> None:
    seen: dict[str, Any] = {}
    big = bytes(range(256)) * 1200  # 307200 bytes: several body frames at frame_max 131072
    props = pika.BasicProperties(
        content_type="application/json",
        headers={"trace": "t-1", "n": 7, "nested": {"a": True}},
        delivery_mode=2,
        correlation_id="c-1",
        message_id="m-1",
        timestamp=1700000000,
        priority=3,
    )

    def scenario(conn: Any) -> None:
        ch = conn.channel()
        ch.exchange_declare("logs", "direct")
        q = ch.queue_declare("", exclusive=True).method.queue
        seen["queue"] = q
        ch.queue_bind(q, "logs", "info")
        ch.basic_qos(prefetch_count=10)
        ch.basic_publish("logs", "info", b'{"n": 1}', props)
        ch.basic_publish("logs", "info", big)
        got = ch.basic_get(q)
        seen["get"] = got
        ch.basic_ack(got[0].delivery_tag)
        seen["delivered"] = []

        def on_message(chan: Any, meth: Any, p: Any, body: bytes) -> None:
            seen["delivered"].append((meth, p, body))
            chan.basic_ack(meth.delivery_tag)

        ch.basic_consume(q, on_message, consumer_tag="ctag-1")
        while not seen["delivered"]:
            conn.process_data_events(0.2)
        ch.close()

    chunks = _record(broker, scenario)
    exchanges, d = _dissect(chunks)
    by_method: dict[str, list[Exchange]] = {}
    for x in exchanges:
        by_method.setdefault(x.method or "", []).append(x)
    q = seen["queue"]
    assert [x.method for x in exchanges[:4]] == [
        "connection.start",
        "connection.tune",
        "connection.open",
        "channel.open",
    ]
    (declare,) = by_method["queue.declare"]
    assert declare.summary == f"queue={q}"
    assert declare.response is not None and declare.response["arguments"]["queue"] == q
    (bind,) = by_method["queue.bind"]
    assert bind.summary == f"exchange=logs queue={q} routing_key=info" and bind.error is None
    pub1, pub2 = by_method["basic.publish"]
    assert pub1.request is not None and pub1.response is None and pub1.error is None
    assert pub1.request["properties"] == {
        "content_type": "application/json",
        "headers": {"trace": "t-1", "n": 7, "nested": {"a": True}},
        "delivery_mode": 2,
        "priority": 3,
        "correlation_id": "c-1",
        "message_id": "m-1",
        "timestamp": 1700000000,
    }
    assert pub1.request["body"] == '{"n": 1}'
    assert pub2.request is not None and pub2.request["body_size"] == len(big)
    assert pub2.request["body_truncated"]
    assert base64.b64decode(pub2.request["body"]) == big[:65536]
    (get,) = by_method["basic.get"]
    meth, _, body = seen["get"]
    assert get.response is not None and get.response["method"] == "get-ok"
    assert get.response["arguments"]["delivery_tag"] == meth.delivery_tag
    assert get.response["body"] == body.decode()
    (deliver,) = by_method["basic.deliver"]
    dmeth, _, dbody = seen["delivered"][0]
    assert deliver.request is None and deliver.response is not None and deliver.error is None
    assert deliver.response["arguments"]["consumer_tag"] == "ctag-1"
    assert deliver.response["arguments"]["delivery_tag"] == dmeth.delivery_tag
    assert deliver.response["body_size"] == len(dbody) == len(big)
    assert deliver.response_size is not None and deliver.response_size > len(big)
    assert [x.summary for x in by_method["basic.ack"]] == ["delivery_tag=1", "delivery_tag=2"]
    (consume,) = by_method["basic.consume"]
    assert consume.response is not None and consume.response["method"] == "consume-ok"
    assert (
        "channel.close" in by_method and by_method["channel.close"][0].status == 0
    )  # pika sends 0
    assert "connection.close" in by_method
    assert d.stats["body_frames"] >= 6
    assert all(x.error is None for x in exchanges)
    # Cut anywhere: the same exchanges.
    stream = [(dr, bytes([b])) for dr, data in chunks[:12] for b in data]
    cut_ex, _, _ = run(stream)
    whole_ex, _, _ = run(chunks[:12])
    assert [(x.method, x.summary, x.request, x.response) for x in cut_ex] == [
        (x.method, x.summary, x.request, x.response) for x in whole_ex
    ]


def test_broker_publish_to_missing_exchange_is_404(broker: int) -> None:
    errors: list[Any] = []

    def scenario(conn: Any) -> None:
        ch = conn.channel()
        ch.basic_publish("no-such-exchange", "k", b"lost")
        try:
            ch.queue_declare("", exclusive=True)  # the close arrives while pika waits
        except pika.exceptions.ChannelClosedByBroker as exc:
            errors.append(exc)

    chunks = _record(broker, scenario)
    exchanges, _ = _dissect(chunks)
    closes = [x for x in exchanges if x.method == "channel.close"]
    assert errors and getattr(errors[0], "reply_code", None) == 404
    assert len(closes) == 1
    close = closes[0]
    assert close.status == 404 and close.error is None
    assert "NOT_FOUND" in close.summary and "no-such-exchange" in close.summary  # type: ignore[operator]
    assert close.request is not None and close.request["sender"] == "server"
    assert close.response is not None and close.response["method"] == "close-ok"
    # The declare pika sent meanwhile is not what the close refused: no answer, no 404.
    declare = next(x for x in exchanges if x.method == "queue.declare")
    assert declare.error == "no_response" and declare.status is None
    pubs = [x for x in exchanges if x.method == "basic.publish"]
    assert pubs and pubs[0].summary == "exchange=no-such-exchange routing_key=k"


def test_broker_heartbeats(broker: int) -> None:
    def scenario(conn: Any) -> None:
        conn.channel()
        conn.sleep(2.5)

    chunks = _record(broker, scenario, heartbeat=1)
    exchanges, d = _dissect(chunks)
    assert d.stats["heartbeats"] >= 2
    tune = next(x for x in exchanges if x.method == "connection.tune")
    assert tune.response is not None and tune.response["arguments"]["heartbeat"] == 1


def test_broker_midstream_join(broker: int) -> None:
    def scenario(conn: Any) -> None:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        for i in range(20):
            ch.basic_publish("", q, b"m%d" % i)
        for _ in range(20):
            ch.basic_get(q, auto_ack=True)

    chunks = _record(broker, scenario)
    client = b"".join(c for dr, c in chunks if dr == CLIENT)
    whole, _ = _dissect([(CLIENT, client)])
    for skip in (1, 17, 200, 333):
        mid, _, _ = run([(CLIENT, client[skip:])], AmqpDissector(midstream=True))
        tail = [(x.method, x.summary, x.request) for x in mid if x.error is None][-10:]
        assert tail == [(x.method, x.summary, x.request) for x in whole if x.error is None][-10:]


def test_return_confirms_and_server_acks() -> None:
    ret = commands.Basic.Return(312, "NO_ROUTE", "logs", "nowhere")
    ops = [
        (CLIENT, method(commands.Confirm.Select())),
        (SERVER, method(commands.Confirm.SelectOk())),
        (
            CLIENT,
            method(commands.Basic.Publish(exchange="logs", routing_key="nowhere", mandatory=True)),
        ),
        (CLIENT, content(b"m", content_encoding="gzip")),
        (SERVER, method(ret) + content(b"m")),
        (SERVER, method(commands.Basic.Ack(delivery_tag=1))),
        (SERVER, method(commands.Basic.Nack(delivery_tag=2, requeue=False))),
    ]
    exchanges, _, _ = run(ops)
    assert [x.method for x in exchanges] == [
        "confirm.select",
        "basic.publish",
        "basic.return",
        "basic.ack",
        "basic.nack",
    ]
    _, pub, back, ack, nack = exchanges
    assert pub.request is not None and "body_decode_error" in pub.request  # not really gzip
    assert back.status == 312 and back.request is None and back.response is not None
    assert back.summary == "exchange=logs routing_key=nowhere NO_ROUTE"
    assert ack.request is None and ack.response is not None and ack.response["sender"] == "server"
    assert nack.summary == "delivery_tag=2" and nack.error is None
