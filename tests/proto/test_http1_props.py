"""Properties of the HTTP/1.x dissector on generated conversations.

(a) The same bytes cut anywhere and interleaved in any causally valid order give the same
    exchanges (and counters).
(b) Damaged input (flipped bytes, inserted garbage, truncation, capture gaps, noise) never
    raises, keeps every buffer within its cap, reports the damage, and leaves the exchanges
    completed before the damage unchanged.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shark_tui.proto.base import CLIENT, SERVER, Desynced, Event, ExchangeCompleted, Truncated
from shark_tui.proto.http1 import dissector as mod
from shark_tui.proto.http1.dissector import Http1Dissector

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Op:
    """One feed of a conversation, and the ops that must have been fed before it."""

    direction: int
    data: bytes
    ts: float
    deps: list[int] = field(default_factory=list)


# -- generating conversations --------------------------------------------------------------


def _chunk(draw: st.DrawFn, body: bytes, eol: bytes) -> bytes:
    out = b""
    pos = 0
    while pos < len(body):
        size = draw(st.integers(1, max(1, len(body) - pos)))
        ext = draw(st.sampled_from([b"", b";x=1"]))
        out += b"%x" % size + ext + eol + body[pos : pos + size] + eol
        pos += size
    trailers = draw(st.sampled_from([b"", b"X-T: 1" + eol]))
    return out + b"0" + eol + trailers + eol


@st.composite
def conversations(draw: st.DrawFn) -> list[Op]:
    n = draw(st.integers(1, 5))
    pipelined = draw(st.booleans())
    ops: list[Op] = []
    last_server: int | None = None
    for i in range(n):
        eol = draw(st.sampled_from([b"\r\n", b"\n"]))
        method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE"]))
        path = draw(st.text(alphabet="ab/?=&%+2", max_size=8))
        req_body = draw(st.binary(max_size=40)) if method in (b"POST", b"PUT") else b""
        chunked_req = bool(req_body) and draw(st.booleans())
        expect = bool(req_body) and not pipelined and draw(st.booleans())
        head = method + b" /" + path.encode() + b" HTTP/1.1" + eol + b"Host: h" + eol
        if chunked_req:
            head += b"Transfer-Encoding: chunked" + eol
            wire_body = _chunk(draw, req_body, eol)
        else:
            wire_body = req_body
            if req_body:
                head += b"Content-Length: %d" % len(req_body) + eol
        if expect:
            head += b"Expect: 100-continue" + eol
        head += eol
        status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
        has_body = status not in (204, 304)
        resp_body = draw(st.binary(max_size=60)) if has_body else b""
        coding = draw(st.sampled_from(["cl", "chunked", "gzip"]))
        close_delimited = i == n - 1 and has_body and method != b"HEAD" and draw(st.booleans())
        resp_eol = draw(st.sampled_from([b"\r\n", b"\n"]))
        rhead = b"HTTP/1.1 %d X" % status + resp_eol
        if coding == "gzip":
            resp_body = gzip.compress(resp_body, mtime=0)
            rhead += b"Content-Encoding: gzip" + resp_eol
        if close_delimited:
            rwire = resp_body
        elif coding == "chunked" and has_body:
            rhead += b"Transfer-Encoding: chunked" + resp_eol
            rwire = _chunk(draw, resp_body, resp_eol)
        else:
            rhead += b"Content-Length: %d" % len(resp_body) + resp_eol
            rwire = resp_body
        if method == b"HEAD" or not has_body:
            rwire = b""
        rhead += resp_eol

        req_deps = [] if pipelined or last_server is None else [last_server]
        ts = float(len(ops))
        if expect:
            ops.append(Op(CLIENT, head, ts, req_deps))
            ops.append(Op(SERVER, b"HTTP/1.1 100 Continue\r\n\r\n", ts + 0.5, [len(ops) - 1]))
            ops.append(Op(CLIENT, wire_body, ts + 0.7, [len(ops) - 1]))
        else:
            ops.append(Op(CLIENT, head + wire_body, ts, req_deps))
        ops.append(Op(SERVER, rhead + rwire, ts + 0.9, [len(ops) - 1]))
        last_server = len(ops) - 1
    return [op for op in ops if op.data]


def run(ops: list[Op], d: Http1Dissector, close_server: bool = True) -> list[Event]:
    events: list[Event] = []
    for op in ops:
        events += d.feed(op.direction, op.data, op.ts)
    if close_server:
        events += d.close(SERVER, 99.0)
    events += d.finish(100.0)
    return events


def exchanges(events: list[Event]) -> list[dict[str, Any]]:
    return [asdict(e.exchange) for e in events if isinstance(e, ExchangeCompleted)]


@st.composite
def split_and_interleave(draw: st.DrawFn, ops: list[Op]) -> list[Op]:
    """The same bytes in pieces, fed in a random order that respects causality."""
    pieces: list[list[Op]] = []
    for op in ops:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(op.data) - 1)), max_size=4))))
        bounds = [0, *[c for c in cuts if c < len(op.data)], len(op.data)]
        pieces.append([Op(op.direction, op.data[a:b], op.ts) for a, b in pairwise(bounds)])
    queues = {CLIENT: [i for i, op in enumerate(ops) if op.direction == CLIENT],
              SERVER: [i for i, op in enumerate(ops) if op.direction == SERVER]}  # fmt: skip
    fed_ops: set[int] = set()
    out: list[Op] = []
    while queues[CLIENT] or queues[SERVER]:
        ready = [
            direction
            for direction, queue in queues.items()
            if queue and all(dep in fed_ops for dep in ops[queue[0]].deps)
        ]
        assert ready, "generated dependencies form a cycle"
        direction = draw(st.sampled_from(ready))
        index = queues[direction][0]
        out.append(pieces[index].pop(0))
        if not pieces[index]:
            fed_ops.add(index)
            queues[direction].pop(0)
    return out


# -- (a) cutting does not matter -------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_cut_anywhere_same_exchanges(data: st.DataObject) -> None:
    ops = data.draw(conversations())
    whole = Http1Dissector(body_cap=data.draw(st.sampled_from([16, 65536])))
    expected = run(ops, whole)
    cut_ops = data.draw(split_and_interleave(ops))
    cut = Http1Dissector(body_cap=whole.body_cap)
    got = run(cut_ops, cut)
    assert exchanges(got) == exchanges(expected)
    assert cut.stats == whole.stats
    assert whole.stats["internal_errors"] == 0
    assert all(e["error"] is None for e in exchanges(expected))
    assert not [e for e in expected if isinstance(e, Desynced | Truncated)]


@SETTINGS
@given(st.data())
def test_midstream_cut_anywhere_same_exchanges(data: st.DataObject) -> None:
    ops = data.draw(conversations())
    # The capture starts inside some earlier traffic of each direction.
    junk_c = data.draw(st.binary(max_size=40))
    junk_s = data.draw(st.binary(max_size=40))
    first_c = next(i for i, op in enumerate(ops) if op.direction == CLIENT)
    ops[first_c] = Op(CLIENT, junk_c + ops[first_c].data, ops[first_c].ts, ops[first_c].deps)
    first_s = next((i for i, op in enumerate(ops) if op.direction == SERVER), None)
    if first_s is not None:
        op = ops[first_s]
        ops[first_s] = Op(SERVER, junk_s + op.data, op.ts, op.deps)
    whole = Http1Dissector(midstream=True)
    expected = run(ops, whole)
    cut = Http1Dissector(midstream=True)
    got = run(data.draw(split_and_interleave(ops)), cut)
    assert exchanges(got) == exchanges(expected)
    assert cut.stats == whole.stats
    assert whole.stats["internal_errors"] == 0


# -- (b) damage -------------------------------------------------------------------------------

CAPS = {"MAX_HEADER_BYTES": 300, "MAX_PENDING": 3, "MAX_UPGRADE_BUFFER": 200}


@contextmanager
def small_caps() -> Iterator[None]:
    with (
        mock.patch.object(mod, "MAX_HEADER_BYTES", CAPS["MAX_HEADER_BYTES"]),
        mock.patch.object(mod, "MAX_PENDING", CAPS["MAX_PENDING"]),
        mock.patch.object(mod, "MAX_UPGRADE_BUFFER", CAPS["MAX_UPGRADE_BUFFER"]),
    ):
        yield


BODY_CAP = 24
SIDE_LIMIT = (
    max(
        CAPS["MAX_HEADER_BYTES"], mod.MAX_START_LINE, CAPS["MAX_UPGRADE_BUFFER"], mod.MAX_CHUNK_LINE
    )
    + 8
)


def checked_run(steps: list[tuple[str, int, Any, float]], d: Http1Dissector) -> list[list[Event]]:
    """Runs ``steps`` and checks the caps after each; returns the events of each step."""
    per_step: list[list[Event]] = []
    for kind, direction, arg, ts in steps:
        if kind == "feed":
            events = d.feed(direction, arg, ts)
        elif kind == "gap":
            events = d.gap(direction, arg, ts)
        elif kind == "close":
            events = d.close(direction, ts)
        else:
            events = d.finish(ts)
        per_step.append(events)
        assert d.stats["internal_errors"] == 0, events
        assert d.buffered() <= 2 * SIDE_LIMIT
        assert d.pending() <= CAPS["MAX_PENDING"]
        for e in events:
            if isinstance(e, ExchangeCompleted):
                for half in (e.exchange.request, e.exchange.response):
                    if half is not None and half["body_encoding"] == "text":
                        assert len(half["body"].encode()) <= BODY_CAP
                    elif half is not None:
                        assert len(half["body"]) <= (BODY_CAP + 2) // 3 * 4
    return per_step


def reported(d: Http1Dissector, events: list[Event]) -> bool:
    if any(isinstance(e, Desynced | Truncated) for e in events):
        return True
    if any(e["error"] is not None for e in exchanges(events)):
        return True
    counters = ("skipped_bytes", "gap_bytes", "bad_header_lines", "truncated_messages",
                "header_overflows", "queue_dropped", "upgrade_dropped", "desyncs")  # fmt: skip
    return any(d.stats[c] for c in counters)


@st.composite
def damaged(draw: st.DrawFn) -> tuple[list[tuple[str, int, Any, float]], int, str, int]:
    """Steps of a damaged conversation, the index of the first damaged step, the kind of
    damage, and how many exchanges the undamaged conversation has."""
    ops = draw(conversations())
    k = draw(st.integers(0, len(ops) - 1))
    op = ops[k]
    off = draw(st.integers(0, len(op.data)))
    kind = draw(st.sampled_from(["flip", "insert", "truncate", "gap"]))
    clean: list[tuple[str, int, Any, float]] = [
        ("feed", o.direction, o.data, o.ts) for o in ops[:k]
    ]
    if off:
        clean.append(("feed", op.direction, op.data[:off], op.ts))
    damage_at = len(clean)
    rest = op.data[off:]
    tail: list[tuple[str, int, Any, float]] = [
        ("feed", o.direction, o.data, o.ts) for o in ops[k + 1 :]
    ]
    if kind == "flip" and rest:
        bit = draw(st.integers(1, 255))
        rest = bytes([rest[0] ^ bit]) + rest[1:]
        steps = [*clean, ("feed", op.direction, rest, op.ts), *tail]
    elif kind == "insert":
        junk = draw(st.binary(min_size=1, max_size=30))
        steps = [*clean, ("feed", op.direction, junk + rest, op.ts), *tail]
    elif kind == "gap" and rest:
        size = draw(st.integers(1, len(rest)))
        steps = [*clean, ("gap", op.direction, size, op.ts)]
        if rest[size:]:
            steps.append(("feed", op.direction, rest[size:], op.ts))
        steps += tail
    else:  # truncate: the capture ends here
        kind = "truncate"
        steps = clean
    steps.append(("finish", 0, None, 100.0))
    return (
        steps,
        damage_at,
        kind,
        sum(1 for o in ops if o.direction == SERVER and b" 100 " not in o.data),
    )


@SETTINGS
@given(damaged())
def test_damage_is_contained_and_reported(case: tuple[list[Any], int, str, int]) -> None:
    steps, damage_at, kind, _ = case
    with small_caps():
        baseline = Http1Dissector(body_cap=BODY_CAP)
        clean_steps = steps[:damage_at]
        before = checked_run(clean_steps, baseline)
        d = Http1Dissector(body_cap=BODY_CAP)
        per_step = checked_run(steps, d)
    all_events = [e for events in per_step for e in events]
    # What completed before the damage is what completes without it.
    done_before = exchanges([e for events in before for e in events])
    assert exchanges(all_events)[: len(done_before)] == done_before
    if kind == "gap":
        assert reported(d, all_events)


@SETTINGS
@given(damaged())
def test_framing_damage_is_reported(case: tuple[list[Any], int, str, int]) -> None:
    """Damage that changes how many exchanges there are, or loses a half, is reported.

    (A byte changed inside a body or a header value is damage no observer can see.)
    """
    steps, _, kind, count = case
    with small_caps():
        d = Http1Dissector(body_cap=BODY_CAP)
        events = [e for step in checked_run(steps, d) for e in step]
    got = exchanges(events)
    whole = all(e["request"] is not None and e["response"] is not None for e in got)
    if kind == "truncate":
        # A capture that ends between two exchanges is a shorter, valid conversation.
        assert len(got) <= count
        assert whole or reported(d, events)
    elif len(got) != count or not whole:
        assert reported(d, events)


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from([CLIENT, SERVER]), st.binary(max_size=200), st.booleans()),
        max_size=20,
    ),
    st.booleans(),
)
def test_noise_never_breaks_anything(chunks: list[tuple[int, bytes, bool]], mid: bool) -> None:
    steps: list[tuple[str, int, Any, float]] = []
    for i, (direction, data, gap) in enumerate(chunks):
        if gap:
            steps.append(("gap", direction, len(data) + 1, float(i)))
        else:
            steps.append(("feed", direction, data, float(i)))
    steps.append(("finish", 0, None, 100.0))
    with small_caps():
        d = Http1Dissector(midstream=mid, body_cap=BODY_CAP)
        checked_run(steps, d)
    assert d.oldest_pending() is None


@SETTINGS
@given(st.data())
def test_noise_mixed_with_valid_messages(data: st.DataObject) -> None:
    ops = data.draw(conversations())
    steps: list[tuple[str, int, Any, float]] = []
    for op in ops:
        if data.draw(st.integers(0, 4)) == 0:
            steps.append(("feed", op.direction, data.draw(st.binary(max_size=50)), op.ts))
        steps.append(("feed", op.direction, op.data, op.ts))
    steps.append(("finish", 0, None, 100.0))
    with small_caps():
        d = Http1Dissector(body_cap=BODY_CAP)
        checked_run(steps, d)
