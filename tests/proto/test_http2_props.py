"""Properties of Http2Dissector: chunking does not matter, damage never raises and is reported,
nothing decoded after damage is wrong."""

from __future__ import annotations

import itertools
import os
from functools import cache

from h2.errors import ErrorCodes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shark_tui.proto.base import CLIENT, SERVER, Desynced, Event, ExchangeCompleted, Truncated
from shark_tui.proto.http2 import (
    MAX_HEADER_BLOCK,
    MAX_SCAN_FRAME,
    MAX_STREAMS,
    PREFACE,
    Http2Dissector,
)
from tests.proto.test_http2 import Conv, assert_no_wrong_headers, by_stream, frame_starts

SETTINGS = settings(
    max_examples=int(os.environ.get("H2_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@cache
def conversation() -> Conv:
    conv = Conv()
    for i in range(8):
        sid = conv.request(
            f"/c/{i}?n={i}",
            method="POST" if i % 2 else "GET",
            body=(b"payload-%d " % i) * (i * 30) if i % 2 else b"",
            extra=[("x-i", str(i)), ("x-user", "bob")],
        )
        if i == 5:
            conv.c.reset_stream(sid, ErrorCodes.CANCEL)
            conv.pump()
            continue
        conv.respond(
            sid,
            200 + i,
            (b"answer %d;" % i) * (i * 700),
            extra=[("content-type", "text/plain"), ("x-srv", "a")],
            trailers=[("x-done", str(i))] if i % 3 == 0 else None,
        )
    return conv


def split(chunks: list[tuple[int, bytes]], cuts: list[int]) -> list[tuple[int, int, bytes]]:
    """(original index, direction, piece): every chunk cut at the given fractions."""
    out = []
    for i, (direction, data) in enumerate(chunks):
        points = sorted({c % (len(data) + 1) for c in cuts[i % len(cuts) :: 3]} | {0, len(data)})
        for a, b in itertools.pairwise(points):
            if b > a:
                out.append((i, direction, data[a:b]))
    return out


def feed_all(
    d: Http2Dissector, pieces: list[tuple[int, int, bytes]], *, finish: bool = True
) -> list[Event]:
    events: list[Event] = []
    for i, direction, data in pieces:
        events += d.feed(direction, data, 1000.0 + i)
    if finish:
        events += d.finish(5000.0)
    return events


def exchanges(events: list[Event]) -> list[object]:
    return [e.exchange for e in events if isinstance(e, ExchangeCompleted)]


def whole(chunks: list[tuple[int, bytes]]) -> list[tuple[int, int, bytes]]:
    return [(i, d, data) for i, (d, data) in enumerate(chunks)]


@SETTINGS
@given(st.lists(st.integers(min_value=0, max_value=1 << 20), min_size=1, max_size=40))
def test_chunking_does_not_change_exchanges(cuts: list[int]) -> None:
    conv = conversation()
    clean = exchanges(feed_all(Http2Dissector(), whole(conv.chunks)))
    assert len(clean) == 8
    got = exchanges(feed_all(Http2Dissector(), split(conv.chunks, cuts)))
    assert got == clean


def midstream_chunks(conv: Conv, ck: int, sk: int) -> list[tuple[int, bytes]]:
    """Both directions with their first ``ck``/``sk`` bytes not captured."""
    out: list[tuple[int, bytes]] = []
    seen = [0, 0]
    for direction, data in conv.chunks:
        cut = ck if direction == CLIENT else sk
        start = max(0, cut - seen[direction])
        seen[direction] += len(data)
        if start < len(data):
            out.append((direction, data[start:]))
    return out


@SETTINGS
@given(
    st.integers(min_value=0, max_value=60000),
    st.integers(min_value=0, max_value=120000),
    st.lists(st.integers(min_value=0, max_value=1 << 20), min_size=1, max_size=20),
)
def test_midstream_never_wrong_and_never_raises(ck: int, sk: int, cuts: list[int]) -> None:
    conv = conversation()
    chunks = midstream_chunks(conv, ck, sk)
    d = Http2Dissector(midstream=True)
    events = feed_all(d, split(chunks, cuts))
    assert d.stats["internal_errors"] == 0
    assert_no_wrong_headers(conv, by_stream(exchanges(events)))  # type: ignore[arg-type]


@SETTINGS
@given(st.sampled_from([0, 1]), st.integers(min_value=0, max_value=40))
def test_midstream_at_frame_boundary_is_chunking_invariant(direction: int, k: int) -> None:
    conv = conversation()
    data = conv.client_bytes() if direction == CLIENT else conv.server_bytes()
    skip = len(PREFACE) if direction == CLIENT else 0
    starts = frame_starts(data[skip:])
    cut = skip + starts[k % len(starts)]
    ck, sk = (cut, 0) if direction == CLIENT else (0, cut)
    chunks = midstream_chunks(conv, ck, sk)
    one = exchanges(feed_all(Http2Dissector(midstream=True), whole(chunks)))
    pieces = split(chunks, [7, 1 << 19, 12345, 3])
    assert exchanges(feed_all(Http2Dissector(midstream=True), pieces)) == one


@SETTINGS
@given(
    st.sampled_from([CLIENT, SERVER]),
    st.integers(min_value=0, max_value=1 << 20),
    st.integers(min_value=1, max_value=3000),
)
def test_gap_is_reported_and_nothing_wrong_survives(direction: int, at: int, size: int) -> None:
    conv = conversation()
    clean = by_stream(exchanges(feed_all(Http2Dissector(), whole(conv.chunks))))  # type: ignore[arg-type]
    total = sum(len(d) for dr, d in conv.chunks if dr == direction)
    at %= total
    size = min(size, total - at)
    d = Http2Dissector()
    events: list[Event] = []
    seen = 0
    for i, (dr, data) in enumerate(conv.chunks):
        ts = 1000.0 + i
        if dr != direction:
            events += d.feed(dr, data, ts)
            continue
        lo, hi = seen, seen + len(data)
        seen = hi
        a = max(lo, min(hi, at))
        b = max(lo, min(hi, at + size))
        if a > lo:
            events += d.feed(dr, data[: a - lo], ts)
        if lo <= at < hi:
            events += d.gap(dr, size, ts)
        if hi > b:
            events += d.feed(dr, data[b - lo :], ts)
    events += d.finish(5000.0)
    assert d.stats["internal_errors"] == 0
    got = by_stream(exchanges(events))  # type: ignore[arg-type]
    damage = [e for e in events if isinstance(e, (Desynced, Truncated))] + [
        ex for ex in got.values() if ex.error is not None
    ]
    assert damage or len(got) < len(clean)
    assert_no_wrong_headers(conv, got)
    for sid, ex in got.items():
        if ex.error is None and ex.response is not None and "rst_stream" not in ex.response:
            ref = clean[sid]
            assert ex.request == ref.request and ex.response == ref.response, sid


@SETTINGS
@given(st.data())
def test_mutations_never_raise_and_earlier_exchanges_stand(data: st.DataObject) -> None:
    conv = conversation()
    pieces = whole(conv.chunks)
    n = len(pieces)
    k = data.draw(st.integers(min_value=0, max_value=n - 1))
    i, direction, chunk = pieces[k]
    pos = data.draw(st.integers(min_value=0, max_value=len(chunk) - 1))
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "garbage"]))
    junk = data.draw(st.binary(min_size=1, max_size=64))
    if kind == "flip":
        bad = chunk[:pos] + bytes([chunk[pos] ^ junk[0] or 1]) + chunk[pos + 1 :]
    elif kind == "insert":
        bad = chunk[:pos] + junk + chunk[pos:]
    elif kind == "delete":
        bad = chunk[:pos] + chunk[pos + len(junk) :]
    else:
        bad = chunk[:pos] + junk * 50
    before = exchanges(feed_all(Http2Dissector(), pieces[:k], finish=False))
    d = Http2Dissector()
    events = feed_all(d, pieces[:k], finish=False)
    assert exchanges(events) == before  # completed before the damage: unchanged
    events += feed_all(d, [(i, direction, bad), *pieces[k + 1 :]])
    assert d.stats["internal_errors"] == 0
    assert len(d._streams) <= MAX_STREAMS
    for side in d._sides:
        assert len(side.buf) <= max(MAX_HEADER_BLOCK, MAX_SCAN_FRAME) + 18


@SETTINGS
@given(st.binary(max_size=4000), st.binary(max_size=4000), st.booleans())
def test_random_bytes_never_raise(client: bytes, server: bytes, midstream: bool) -> None:
    d = Http2Dissector(midstream=midstream)
    d.feed(CLIENT, PREFACE + client if not midstream else client, 1.0)
    d.feed(SERVER, server, 2.0)
    d.gap(CLIENT, 7, 3.0)
    d.feed(CLIENT, client[::-1], 4.0)
    d.expire(1000.0)
    d.finish(5.0)
    assert d.stats["internal_errors"] == 0
