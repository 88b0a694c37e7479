"""Properties of the AMQP dissector on generated (pamqp-marshalled) conversations.

(a) The same bytes cut anywhere and interleaved in any causally valid order give the same
    exchanges (and counters), also when joined mid-stream.
(b) Damaged input (flipped bytes, inserted garbage, truncation, capture gaps, noise) never
    raises, keeps every buffer within its cap, reports structural damage, and leaves the
    exchanges completed before the damage unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import commands, frame, header, heartbeat

from shark_tui.proto import amqp as mod
from shark_tui.proto.amqp import AmqpDissector
from shark_tui.proto.base import CLIENT, SERVER, Desynced, Event, ExchangeCompleted

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PH = b"AMQP\x00\x00\x09\x01"


@dataclass
class Op:
    direction: int
    data: bytes
    ts: float
    deps: list[int] = field(default_factory=list)


def _content(draw: st.DrawFn, channel: int) -> bytes:
    body = draw(st.binary(max_size=300))
    props: dict[str, Any] = {}
    if draw(st.booleans()):
        props["content_type"] = draw(st.sampled_from(["text/plain", "application/json"]))
    if draw(st.booleans()):
        props["headers"] = {"k": draw(st.integers(-5, 5)), "s": draw(st.text(max_size=5))}
    if draw(st.booleans()):
        props["delivery_mode"] = draw(st.sampled_from([1, 2]))
    frame_max = draw(st.integers(9, 200))
    out = frame.marshal(
        header.ContentHeader(body_size=len(body), properties=commands.Basic.Properties(**props)),
        channel,
    )
    step = frame_max - 8
    for i in range(0, len(body), step):
        out += frame.marshal(pbody.ContentBody(body[i : i + step]), channel)
    return out


@st.composite
def conversations(draw: st.DrawFn) -> list[Op]:
    ops: list[Op] = [Op(CLIENT, PH, 0.0)]
    last_client = 0

    def client(data: bytes) -> None:
        nonlocal last_client
        ops.append(Op(CLIENT, data, float(len(ops))))
        last_client = len(ops) - 1

    def server(data: bytes) -> None:
        ops.append(Op(SERVER, data, float(len(ops)), [last_client]))

    for _ in range(draw(st.integers(1, 8))):
        ch = draw(st.integers(1, 3))
        kind = draw(
            st.sampled_from(["publish", "declare", "qos", "get", "deliver", "ack", "hb", "ret"])
        )
        name = draw(st.text(alphabet="abc.", max_size=6))
        if kind == "publish":
            client(
                frame.marshal(commands.Basic.Publish(exchange=name, routing_key="r"), ch)
                + _content(draw, ch)
            )
        elif kind == "declare":
            client(frame.marshal(commands.Queue.Declare(queue=name), ch))
            server(
                frame.marshal(
                    commands.Queue.DeclareOk(
                        queue=name or "amq.gen-x", message_count=0, consumer_count=0
                    ),
                    ch,
                )
            )
        elif kind == "qos":
            client(frame.marshal(commands.Basic.Qos(prefetch_count=3), ch))
            server(frame.marshal(commands.Basic.QosOk(), ch))
        elif kind == "get":
            client(frame.marshal(commands.Basic.Get(queue=name), ch))
            if draw(st.booleans()):
                server(frame.marshal(commands.Basic.GetEmpty(), ch))
            else:
                ok = commands.Basic.GetOk(1, False, name, "r", 0)
                server(frame.marshal(ok, ch) + _content(draw, ch))
        elif kind == "deliver":
            deliver = commands.Basic.Deliver("ctag", 7, False, name, "r")
            server(frame.marshal(deliver, ch) + _content(draw, ch))
        elif kind == "ack":
            client(frame.marshal(commands.Basic.Ack(delivery_tag=7), ch))
        elif kind == "ret":
            ret = commands.Basic.Return(312, "NO_ROUTE", name, "r")
            server(frame.marshal(ret, ch) + _content(draw, ch))
        else:
            hb = frame.marshal(heartbeat.Heartbeat(), 0)
            if draw(st.booleans()):
                client(hb)
            else:
                server(hb)
    if draw(st.booleans()):
        close = commands.Channel.Close(404, "NOT_FOUND - no exchange 'x'", 60, 40)
        server(frame.marshal(close, 1))
        client(frame.marshal(commands.Channel.CloseOk(), 1))
        ops[-1].deps.append(len(ops) - 2)
    return ops


def run(ops: list[Op], d: AmqpDissector) -> list[Event]:
    events: list[Event] = []
    for op in ops:
        events += d.feed(op.direction, op.data, op.ts)
    events += d.finish(1000.0)
    return events


def exchanges(events: list[Event]) -> list[dict[str, Any]]:
    return [asdict(e.exchange) for e in events if isinstance(e, ExchangeCompleted)]


def unordered(events: list[Event]) -> list[dict[str, Any]]:
    """The exchanges in a canonical order: interleaving the two directions differently may
    complete a one-way message before or after a pair, never change what is emitted."""
    return sorted(exchanges(events), key=repr)


@st.composite
def split_and_interleave(draw: st.DrawFn, ops: list[Op], interleave: bool = True) -> list[Op]:
    """The same bytes in pieces, fed in a random order that respects causality (in the
    original order of the ops when not ``interleave``)."""
    pieces: list[list[Op]] = []
    for op in ops:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(op.data) - 1)), max_size=5))))
        bounds = [0, *[c for c in cuts if c < len(op.data)], len(op.data)]
        pieces.append([Op(op.direction, op.data[a:b], op.ts) for a, b in pairwise(bounds)])
    queues = {d: [i for i, op in enumerate(ops) if op.direction == d] for d in (CLIENT, SERVER)}
    fed: set[int] = set()
    out: list[Op] = []
    while queues[CLIENT] or queues[SERVER]:
        ready = [d for d, q in queues.items() if q and all(dep in fed for dep in ops[q[0]].deps)]
        if not interleave:
            ready = [min(ready, key=lambda d: queues[d][0])]
        direction = draw(st.sampled_from(ready))
        index = queues[direction][0]
        out.append(pieces[index].pop(0))
        if not pieces[index]:
            fed.add(index)
            queues[direction].pop(0)
    return out


# -- (a) cutting does not matter -------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_cut_anywhere_same_exchanges(data: st.DataObject) -> None:
    ops = data.draw(conversations())
    cap = data.draw(st.sampled_from([16, 65536]))
    whole = AmqpDissector(body_cap=cap)
    expected = run(ops, whole)
    cut = AmqpDissector(body_cap=cap)
    got = run(data.draw(split_and_interleave(ops)), cut)
    assert unordered(got) == unordered(expected)
    assert cut.stats == whole.stats
    assert whole.stats["internal_errors"] == 0 and whole.stats["bad_frames"] == 0
    assert not [e for e in expected if isinstance(e, Desynced)]
    errors = {x["error"] for x in exchanges(expected)}
    assert errors <= {None, "no_response"}  # a channel.close ends other pending requests


@SETTINGS
@given(st.data())
def test_midstream_cut_anywhere_same_exchanges(data: st.DataObject) -> None:
    ops = data.draw(conversations())
    ops[0] = Op(CLIENT, b"", 0.0)  # no protocol header: the capture starts later
    first = next((i for i, op in enumerate(ops) if op.direction == CLIENT and i), None)
    if first is not None:
        op = ops[first]
        skip = data.draw(st.integers(0, len(op.data)))
        junk = data.draw(st.binary(max_size=30))
        ops[first] = Op(CLIENT, junk + op.data[skip:], op.ts, op.deps)
    whole = AmqpDissector(midstream=True)
    expected = run(ops, whole)
    cut = AmqpDissector(midstream=True)
    # While a direction scans, it holds a plausible frame until the next one confirms it: a
    # response in the other direction meanwhile finds no request. So only cuts, not the
    # interleaving of the directions, are free here.
    got = run(data.draw(split_and_interleave(ops, interleave=False)), cut)
    assert unordered(got) == unordered(expected)
    assert cut.stats == whole.stats
    assert whole.stats["internal_errors"] == 0


# -- (b) damage -------------------------------------------------------------------------------

CAPS = {"MAX_FRAME_BYTES": 150, "MAX_SCAN_FRAME": 120, "MAX_PENDING": 3, "MAX_OPEN_CONTENTS": 2}


@contextmanager
def small_caps() -> Iterator[None]:
    caps: dict[str, Any] = dict(CAPS)
    with mock.patch.multiple(mod, **caps):
        yield


def check_caps(d: AmqpDissector, body_cap: int) -> None:
    limit = 2 * (CAPS["MAX_SCAN_FRAME"] + 8) + CAPS["MAX_FRAME_BYTES"] + 16
    for side in d._sides:
        assert len(side.buf) <= limit
        assert len(side.contents) <= CAPS["MAX_OPEN_CONTENTS"]
        for msg in side.contents.values():
            assert len(msg.body) <= body_cap
    assert d.pending() <= CAPS["MAX_PENDING"]


@SETTINGS
@given(st.data())
def test_damage_never_raises_and_is_contained(data: st.DataObject) -> None:
    ops = data.draw(conversations())
    body_cap = data.draw(st.sampled_from([0, 10, 1000]))
    k = data.draw(st.integers(0, len(ops) - 1))
    target = ops[k]
    at = data.draw(st.integers(0, len(target.data)))
    kind = data.draw(st.sampled_from(["flip", "garbage", "truncate", "gap", "noise"]))
    with small_caps():
        clean = AmqpDissector(body_cap=body_cap)
        before: list[Event] = []
        for op in ops[:k]:
            before += clean.feed(op.direction, op.data, op.ts)
        d = AmqpDissector(body_cap=body_cap)
        events: list[Event] = []
        for op in ops[:k]:
            events += d.feed(op.direction, op.data, op.ts)
            check_caps(d, body_cap)
        assert events == before  # what completed before the damage is unchanged
        head, tail = target.data[:at], target.data[at:]
        reported = True
        if kind == "flip" and tail:
            mask = data.draw(st.integers(1, 255))
            damaged = head + bytes([tail[0] ^ mask]) + tail[1:]
            events += d.feed(target.direction, damaged, target.ts)
            reported = False  # a flipped byte inside a payload may go unnoticed
        elif kind == "garbage":
            junk = b"\xff" + data.draw(st.binary(max_size=50))
            events += d.feed(target.direction, head + junk + tail, target.ts)
        elif kind == "truncate":
            events += d.feed(target.direction, head, target.ts)
            events += d.close(target.direction, target.ts)
            reported = False  # a cut at a frame boundary is invisible
        elif kind == "gap":
            events += d.feed(target.direction, head, target.ts)
            events += d.gap(target.direction, data.draw(st.integers(1, 400)), target.ts)
        else:
            noise = data.draw(st.binary(min_size=1, max_size=400))
            events += d.feed(target.direction, noise, target.ts)
            reported = False
        check_caps(d, body_cap)
        for op in ops[k + 1 :]:
            events += d.feed(op.direction, op.data, op.ts)
            check_caps(d, body_cap)
        events += d.finish(1000.0)
        check_caps(d, body_cap)
    assert d.stats["internal_errors"] == 0
    if reported:
        damage = [e for e in events if isinstance(e, Desynced)] + [
            e
            for e in events
            if isinstance(e, ExchangeCompleted) and e.exchange.error in ("truncated", "desynced")
        ]
        assert damage
    for x in exchanges(events):
        for half in (x["request"], x["response"]):
            if half is not None and "body" in half:
                assert half["body_size"] >= 0


@SETTINGS
@given(st.binary(max_size=2000), st.booleans(), st.integers(0, 1))
def test_random_bytes_never_raise(blob: bytes, midstream: bool, direction: int) -> None:
    with small_caps():
        d = AmqpDissector(midstream=midstream, body_cap=50)
        for i in range(0, len(blob), 97):
            d.feed(direction, blob[i : i + 97], float(i))
            check_caps(d, 50)
        d.gap(direction, 10, 1.0)
        d.feed(1 - direction, PH + blob[:100], 2.0)
        d.expire(1e9)
        d.finish(3.0)
        check_caps(d, 50)
    assert d.stats["internal_errors"] == 0
