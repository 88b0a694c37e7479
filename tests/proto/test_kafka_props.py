"""Property tests of the Kafka dissector on recorded wire bytes: cuts, damage, caps."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shark_tui.proto.base import CLIENT, Desynced, Event, ExchangeCompleted, Truncated
from shark_tui.proto.kafka import MAX_RECORDS, KafkaDissector

#: kafka-python -> Tansu, recorded by a relay (conn 3): (direction, bytes) as sent.
NEW_STREAM: list[tuple[int, bytes]] = [
    (0, bytes.fromhex(
        "00000037001200040000000100176b61666b612d707974686f6e2d70726f64756365722d31000d6b"
        "61666b612d707974686f6e07332e302e313200"
    )),
    (1, bytes.fromhex(
        "0000011b0000000100002500330000000000002a0000000200003200000000000014000000060000"
        "110000000100001a00000004000045000000000000020000000900003c0000000100000f00000005"
        "0000180000000500001300000007000010000000050000190000000400001d000000030000010000"
        "001100000b0000000900001c0000000400000c00000004000016000000050000080000000900004b"
        "0000000000002c000000010000030000000c00000e000000050000090000000900002e0000000000"
        "00000000000b00000d00000005000015000000020000200000000400002400000002000012000000"
        "040000470000000000000a0000000600001e000000030000000000040001010108ffffffffffffff"
        "ff020101030100"
    )),
    (0, bytes.fromhex(
        "000000b3000000090000000200176b61666b612d707974686f6e2d70726f64756365722d310000ff"
        "ff000075300207742d677a697002000000007a00000000000000000000006d000000000203e9e5bd"
        "000000000002000001a21882ac0d000001a21882ac0effffffffffffffffffffffffffff00000003"
        "26000000046b300e76302d4e6f6e65020268027826000002046b310e76312d4e6f6e650202680278"
        "26000204046b320e76322d4e6f6e650202680278000000"
    )),
    (1, bytes.fromhex(
        "0000003500000002000207742d677a6970020000000000000000000000000000ffffffffffffffff"
        "0000000000000000010000000000000000"
    )),
]
#: kafka-python -> Tansu, recorded by a relay (conn 9): (direction, bytes) as sent.
OLD_STREAM: list[tuple[int, bytes]] = [
    (0, bytes.fromhex(
        "00000021001200010000000100176b61666b612d707974686f6e2d70726f64756365722d34"
    )),
    (1, bytes.fromhex(
        "000000e600000001000000000024003300000000002a000000020032000000000014000000060011"
        "00000001001a00000004004500000000000200000009003c00000001000f00000005001800000005"
        "001300000007001000000005001900000004001d00000003000100000011000b00000009001c0000"
        "0004000c00000004001600000005000800000009004b00000000002c0000000100030000000c000e"
        "00000005000900000009002e0000000000000000000b000d00000005001500000002002000000004"
        "002400000002001200000004004700000000000a00000006001e0000000300000000"
    )),
    (0, bytes.fromhex(
        "000000c9000000050000000200176b61666b612d707974686f6e2d70726f64756365722d34ffffff"
        "ff00007530000000010006742d6e6f6e650000000100000000000000880000000000000000000000"
        "7c00000000026fbd356f000000000002000001a21882ac4f000001a21882ac4fffffffffffffffff"
        "ffffffffffff0000000330000000046b301876302d28312c20302c20302902026802783000000204"
        "6b311876312d28312c20302c203029020268027830000004046b321876322d28312c20302c203029"
        "0202680278"
    )),
    (1, bytes.fromhex(
        "0000003600000002000000010006742d6e6f6e65000000010000000000000000000000000003ffff"
        "ffffffffffff000000000000000000000000"
    )),
]

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(chunks: list[tuple[int, bytes]], **kw: Any) -> tuple[list[Event], KafkaDissector]:
    d = KafkaDissector(**kw)
    events: list[Event] = []
    for direction, data in chunks:
        events += d.feed(direction, data, 1.0)
    events += d.finish(2.0)
    return events, d


def exchanges(events: list[Event]) -> list[Any]:
    return [e.exchange for e in events if isinstance(e, ExchangeCompleted)]


def recut(stream: list[tuple[int, bytes]], cuts: list[int]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for i, (direction, data) in enumerate(stream):
        points = sorted({c % (len(data) + 1) for c in cuts[i::len(stream)]} | {0, len(data)})
        out += [(direction, data[a:b]) for a, b in itertools.pairwise(points) if b > a]
    return out


def test_recorded_streams_decode() -> None:
    for stream in (NEW_STREAM, OLD_STREAM):
        events, d = run(stream)
        xs = exchanges(events)
        assert [x.method for x in xs][-1] == "Produce"
        assert all(x.error is None and x.status == 0 for x in xs)
        assert d.stats["internal_errors"] == 0 and d.stats["desyncs"] == 0


@SETTINGS
@given(st.sampled_from([NEW_STREAM, OLD_STREAM]), st.lists(st.integers(0, 10_000), max_size=40))
def test_cuts_give_identical_exchanges(stream: list[tuple[int, bytes]], cuts: list[int]) -> None:
    assert exchanges(run(recut(stream, cuts))[0]) == exchanges(run(stream)[0])


@SETTINGS
@given(st.binary(max_size=2000), st.booleans(), st.integers(0, 64))
def test_random_bytes_never_raise(data: bytes, midstream: bool, cap: int) -> None:
    d = KafkaDissector(midstream=midstream, body_cap=cap)
    d.feed(CLIENT, data, 1.0)
    d.feed(1, data[::-1], 1.0)
    d.gap(CLIENT, 7, 1.0)
    d.feed(CLIENT, data, 1.0)
    d.finish(2.0)
    assert d.stats["internal_errors"] == 0


@SETTINGS
@given(
    st.sampled_from([NEW_STREAM, OLD_STREAM]),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.binary(min_size=1, max_size=8),
    st.booleans(),
)
def test_mutations_never_raise_and_keep_earlier_exchanges(
    stream: list[tuple[int, bytes]], which: int, at: int, junk: bytes, insert: bool
) -> None:
    i = which % len(stream)
    direction, data = stream[i]
    pos = at % len(data)
    damaged = data[:pos] + junk + (data[pos:] if insert else data[pos + len(junk) :])
    mutated = [*stream[:i], (direction, damaged), *stream[i + 1 :]]
    events, d = run(mutated, body_cap=16)
    assert d.stats["internal_errors"] == 0
    before = exchanges(run(stream[:i], body_cap=16)[0])
    before = [x for x in before if x.error is None]
    got = exchanges(events)
    # Everything completed before the damaged chunk comes out unchanged.
    complete = [x for x in got if x in before]
    assert len(complete) >= len([x for x in before if x.response is not None])
    for x in got:
        for half in (x.request, x.response):
            for rec in _records(half):
                for part in ("key", "value"):
                    body = rec[part]
                    if body is not None and body["body_encoding"] == "text":
                        assert len(body["body"].encode()) <= 16
    assert sum(len(_records(x.request)) for x in got) <= MAX_RECORDS * max(1, len(got))


@SETTINGS
@given(st.sampled_from([NEW_STREAM, OLD_STREAM]), st.integers(1, 10_000), st.integers(1, 300))
def test_gaps_are_reported(stream: list[tuple[int, bytes]], where: int, size: int) -> None:
    whole = b"".join(d for dr, d in stream if dr == CLIENT)
    pos = where % len(whole)
    d = KafkaDissector()
    events: list[Event] = []
    events += d.feed(CLIENT, whole[:pos], 1.0)
    events += d.gap(CLIENT, size, 1.0)
    events += d.feed(CLIENT, whole[pos + size :], 1.0)
    events += d.finish(2.0)
    assert d.stats["internal_errors"] == 0
    damaged = [x for x in exchanges(events) if x.error is not None]
    assert damaged or any(isinstance(e, (Desynced, Truncated)) for e in events)


def _records(obj: Any) -> list[Any]:
    out: list[Any] = []
    if isinstance(obj, dict):
        if "batches" in obj and isinstance(obj["batches"], list):
            for b in obj["batches"]:
                out += b.get("records", [])
        for v in obj.values():
            out += _records(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _records(v)
    return out
