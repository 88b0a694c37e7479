"""Properties of the Redis dissector, on streams recorded from a real server and on generated ones.

(a) The same bytes cut anywhere (each direction's order kept, causal order between them kept)
    give the same exchanges, events and counters.
(b) Damaged input (flipped bytes, inserted noise, capture gaps, truncation, random bytes) never
    raises, keeps every buffer within its cap, reports the damage it can see, and leaves the
    exchanges completed before the damage unchanged.
"""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shark_tui.proto import redis as mod
from shark_tui.proto.base import (
    CLIENT,
    SERVER,
    Desynced,
    Event,
    ExchangeCompleted,
    Truncated,
)
from shark_tui.proto.redis import RedisDissector
from tests.proto.test_redis import (  # noqa: F401  (``server`` is a fixture)
    Conn,
    _inline,
    _multi,
    _pipeline,
    _pubsub,
    _resp3,
    record,
    server,
)

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

Op = tuple[int, bytes, float]


def run(ops: list[Op], *, body_cap: int = 65536, midstream: bool = False) -> dict[str, Any]:
    """Feed ``ops`` (("gap", ...) ops have data ``b""`` and a negative direction); check caps."""
    d = RedisDissector(body_cap=body_cap, midstream=midstream)
    events: list[tuple[int, Event]] = []
    last = 0.0
    for i, (direction, data, ts) in enumerate(ops):
        if direction < 0:
            got = d.gap(-direction - 1, len(data), ts)
        else:
            got = d.feed(direction, data, ts)
        events += [(i, e) for e in got]
        for side in d._sides:
            assert len(side.buf) <= max(mod.MAX_LINE + 3, mod.MAX_INLINE + 1)
            assert len(side.stack) <= mod.MAX_DEPTH
        assert d.pending <= mod.MAX_PENDING
        last = ts
    events += [(len(ops), e) for e in d.finish(last + 1)]
    assert d.stats["internal_errors"] == 0
    for _, e in events:
        if isinstance(e, ExchangeCompleted):
            ex = e.exchange
            for obj in (ex.request, ex.response):
                if obj is not None and "reply" in obj:
                    check_value(obj["reply"], body_cap)
            if ex.request is not None:
                assert len(ex.request["args"]) <= mod.MAX_ELEMENTS
    return {"events": events, "stats": d.stats, "d": d}


def check_value(node: dict[str, Any], cap: int) -> None:
    t = node["type"]
    v: Any = node.get("value")
    if t in ("bulk", "blob_error", "verbatim"):
        assert isinstance(v, str)
        raw = base64.b64decode(v) if node.get("encoding") == "base64" else v.encode()
        assert len(raw) <= cap
        assert node.get("truncated", False) or len(raw) + 4 * (t == "verbatim") == node["size"]
    elif isinstance(v, list):
        assert len(v) <= mod.MAX_ELEMENTS
        for item in v:
            if t in ("map", "attribute"):
                for x in item:
                    if x is not None:
                        check_value(x, cap)
            else:
                check_value(item, cap)
    for k, x in node.get("attributes") or []:
        check_value(k, cap)
        check_value(x, cap)


def outcome(result: dict[str, Any]) -> list[Any]:
    """What must not depend on how the bytes were cut."""
    out: list[Any] = []
    for _, e in result["events"]:
        if isinstance(e, ExchangeCompleted):
            out.append(asdict(e.exchange))
        else:
            out.append(e)
    return out


def exchanges_before(result: dict[str, Any], index: int) -> list[Any]:
    return [
        asdict(e.exchange)
        for i, e in result["events"]
        if i < index and isinstance(e, ExchangeCompleted)
    ]


@st.composite
def recut(draw: st.DrawFn, ops: list[Op]) -> list[Op]:
    """``ops`` with each chunk cut at random points (same ts for every piece)."""
    out: list[Op] = []
    for direction, data, ts in ops:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=4))))
        prev = 0
        for c in [*cuts, len(data)]:
            if c > prev:
                out.append((direction, data[prev:c], ts))
                prev = c
    return out


# -- recorded streams ------------------------------------------------------------------------


def _big_value(port: int) -> None:
    r: Any = redis.Redis(port=port, protocol=2)
    r.set("big", b"\xff" * 200_000)
    assert r.get("big") == b"\xff" * 200_000
    r.close()


@pytest.fixture(scope="module")
def recorded(server: int) -> list[list[Op]]:  # noqa: F811
    streams: list[list[Op]] = []
    for scenario in (
        _pipeline,
        _resp3,
        lambda p: _pubsub(p, 2),
        lambda p: _pubsub(p, 3),
        _multi,
        _inline,
        _big_value,
    ):
        conns, _ = record(server, scenario)
        for conn in conns:
            streams.append(conn.chunks)
    return streams


@SETTINGS
@given(data=st.data())
def test_recorded_streams_cut_anywhere(recorded: list[list[Op]], data: st.DataObject) -> None:
    ops = data.draw(st.sampled_from(recorded))
    cap = data.draw(st.sampled_from([65536, 16, 0]))
    midstream = data.draw(st.booleans())
    want = run(ops, body_cap=cap, midstream=midstream)
    got = run(data.draw(recut(ops)), body_cap=cap, midstream=midstream)
    assert outcome(got) == outcome(want)
    assert got["stats"] == want["stats"]
    if not midstream:
        assert not [e for _, e in want["events"] if isinstance(e, Desynced | Truncated)]


@SETTINGS
@given(data=st.data())
def test_recorded_streams_damaged(recorded: list[list[Op]], data: st.DataObject) -> None:
    ops = data.draw(st.sampled_from(recorded))
    clean = run(ops)
    k = data.draw(st.integers(0, len(ops) - 1))
    direction, chunk, ts = ops[k]
    how = data.draw(st.sampled_from(["gap", "flip", "noise", "cut"]))
    if how == "gap":
        damaged: list[Op] = [(-direction - 1, chunk, ts)]
    elif how == "flip":
        i = data.draw(st.integers(0, len(chunk) - 1))
        damaged = [(direction, chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :], ts)]
    elif how == "noise":
        noise = data.draw(st.binary(min_size=1, max_size=64))
        damaged = [(direction, noise + chunk, ts)]
    else:
        damaged = [(direction, chunk[: len(chunk) // 2], ts)]
    result = run(ops[:k] + damaged + ops[k + 1 :])
    assert exchanges_before(result, k) == exchanges_before(clean, k)
    if how == "gap":
        # a lost chunk is always visible: a desync, or entries that say what they lack
        errors = [
            e.exchange.error
            for i, e in result["events"]
            if i >= k and isinstance(e, ExchangeCompleted)
        ]
        assert any(isinstance(e, Desynced) for _, e in result["events"]) or any(errors)


# -- generated conversations -------------------------------------------------------------------


def _bulk(tag: bytes, data: bytes) -> bytes:
    return tag + b"%d\r\n" % len(data) + data + b"\r\n"


scalars = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=10).map(
        lambda s: b"+" + s.encode("utf-8", "surrogatepass") + b"\r\n"
    ),
    st.sampled_from([b"-ERR x\r\n", b"-WRONGTYPE Operation\r\n", b"_\r\n", b"#t\r\n", b"#f\r\n"]),
    st.integers(-(2**70), 2**70).map(
        lambda i: b":%d\r\n" % i if abs(i) < 2**63 else b"(%d\r\n" % i
    ),
    st.sampled_from([b",1.5\r\n", b",-inf\r\n", b",nan\r\n", b",3\r\n", b"$-1\r\n", b"*-1\r\n"]),
    st.binary(max_size=40).map(lambda b: _bulk(b"$", b)),
    st.binary(max_size=20).map(lambda b: _bulk(b"!", b)),
    st.text(max_size=20).map(lambda s: _bulk(b"=", b"txt:" + s.encode("utf-8", "surrogatepass"))),
)


def _agg(tag: bytes, items: list[bytes]) -> bytes:
    if tag in (b"%", b"|"):
        items = items[: len(items) // 2 * 2]
        return tag + b"%d\r\n" % (len(items) // 2) + b"".join(items)
    return tag + b"%d\r\n" % len(items) + b"".join(items)


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.tuples(st.sampled_from([b"*", b"~", b"%", b">"]), st.lists(children, max_size=5)).map(
            lambda t: _agg(*t)
        ),
        st.tuples(st.lists(children, min_size=2, max_size=2), children).map(
            lambda t: _agg(b"|", t[0]) + t[1]
        ),
    ),
    max_leaves=12,
)
replies = values.filter(lambda v: not v.startswith(b">"))


@st.composite
def conversations(draw: st.DrawFn) -> list[Op]:
    ops: list[Op] = []
    t = 1.0
    n = draw(st.integers(1, 6))
    pending: list[bytes] = []
    for _ in range(n):
        name = draw(st.sampled_from([b"GET", b"SET", b"HGETALL", b"ECHO", b"DEL", b"MGET"]))
        args = draw(st.lists(st.binary(max_size=12), max_size=3))
        if draw(st.booleans()) and all(a and b" " not in a and b"\n" not in a for a in args):
            cmd = b" ".join([name, *[a for a in args if a.isalnum()]]) + b"\r\n"
        else:
            cmd = _agg(b"*", [_bulk(b"$", a) for a in [name, *args]])
        ops.append((CLIENT, cmd, t))
        t += 0.01
        pending.append(draw(replies))
        if draw(st.booleans()):  # answer what is pending (else keep pipelining)
            if draw(st.booleans()):
                ops.append((SERVER, draw(values.filter(lambda v: v.startswith(b">"))), t))
            ops.append((SERVER, b"".join(pending), t))
            pending = []
            t += 0.01
    if pending:
        ops.append((SERVER, b"".join(pending), t))
    return ops


@SETTINGS
@given(data=st.data())
def test_generated_cut_anywhere(data: st.DataObject) -> None:
    ops = data.draw(conversations())
    cap = data.draw(st.sampled_from([65536, 5, 0]))
    want = run(ops, body_cap=cap)
    assert not [e for _, e in want["events"] if isinstance(e, Desynced | Truncated)]
    got = run(data.draw(recut(ops)), body_cap=cap)
    assert outcome(got) == outcome(want)
    assert got["stats"] == want["stats"]
    cmds = sum(1 for d, _, _ in ops if d == CLIENT)
    assert want["stats"]["commands"] == cmds


@SETTINGS
@given(data=st.data())
def test_generated_damaged(data: st.DataObject) -> None:
    ops = data.draw(conversations())
    clean = run(ops)
    k = data.draw(st.integers(0, len(ops) - 1))
    direction, chunk, ts = ops[k]
    how = data.draw(st.sampled_from(["gap", "flip", "server_noise", "random"]))
    if how == "gap":
        damaged: list[Op] = [(-direction - 1, chunk, ts)]
    elif how == "flip":
        i = data.draw(st.integers(0, len(chunk) - 1))
        damaged = [(direction, chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :], ts)]
    elif how == "server_noise":
        # noise that cannot start a RESP value, where a server message starts
        noise = data.draw(st.binary(min_size=1, max_size=30).filter(lambda b: b[0] < 33))
        damaged = [(SERVER, noise, ts), (direction, chunk, ts)]
    else:
        damaged = [(data.draw(st.sampled_from([CLIENT, SERVER])), data.draw(st.binary()), ts)]
    result = run(ops[:k] + damaged + ops[k + 1 :])
    assert exchanges_before(result, k) == exchanges_before(clean, k)
    if how in ("gap", "server_noise"):
        errors = [
            e.exchange.error
            for i, e in result["events"]
            if i >= k and isinstance(e, ExchangeCompleted)
        ]
        assert any(isinstance(e, Desynced) for _, e in result["events"]) or any(errors)


@SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from([CLIENT, SERVER, -1, -2]), st.binary(max_size=200))),
    st.booleans(),
)
def test_random_bytes_never_raise(ops: list[tuple[int, bytes]], midstream: bool) -> None:
    run([(d, b, 1.0 + i) for i, (d, b) in enumerate(ops)], body_cap=8, midstream=midstream)
