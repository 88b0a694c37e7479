"""WebSocket framing: frames written by wsproto (masked client, unmasked server,
permessage-deflate) and by hand; gaps, caps, desyncs; property tests over cuts and damage."""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from shark_tui.proto.base import CLIENT, SERVER, Desynced, Event, ExchangeCompleted
from shark_tui.proto.websocket import MAX_FRAME, WebSocketDissector


def client(deflate: str | None = None) -> FrameProtocol:
    return FrameProtocol(client=True, extensions=_ext(deflate))


def server(deflate: str | None = None) -> FrameProtocol:
    return FrameProtocol(client=False, extensions=_ext(deflate))


def _ext(deflate: str | None) -> list[Any]:
    if deflate is None:
        return []
    pmd = PerMessageDeflate()
    pmd.finalize(deflate)
    return [pmd]


def exchanges(events: list[Event]) -> list[dict[str, Any]]:
    return [asdict(e.exchange) for e in events if isinstance(e, ExchangeCompleted)]


def desyncs(events: list[Event]) -> list[Desynced]:
    return [e for e in events if isinstance(e, Desynced)]


def run(chunks: list[tuple[int, bytes]], **kw: Any) -> tuple[list[Event], WebSocketDissector]:
    d = WebSocketDissector(path="/ws", host="example.test", **kw)
    out: list[Event] = []
    for i, (direction, data) in enumerate(chunks):
        out += d.feed(direction, data, 10.0 + i)
    out += d.finish(99.0)
    return out, d


def body_bytes(obj: dict[str, Any]) -> bytes:
    if obj["body_encoding"] == "text":
        return str(obj["body"]).encode()
    return base64.b64decode(obj["body"])


def hand_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bytes | None = None,
    rsv1: bool = False,
    length: int | None = None,
) -> bytes:
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    m = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


# -- messages ----------------------------------------------------------------------------------


def test_client_text_is_unmasked_and_in_request() -> None:
    wire = bytes(client().send_data("hello"))
    events, d = run([(CLIENT, wire)])
    (ex,) = exchanges(events)
    assert ex == {
        "proto": "websocket",
        "ts": 10.0,
        "method": "text",
        "summary": "hello",
        "status": None,
        "latency_ms": None,
        "request_size": len(wire),
        "response_size": None,
        "request": {
            "opcode": "text",
            "fin": True,
            "masked": True,
            "fragments": 1,
            "body": "hello",
            "body_encoding": "text",
            "body_truncated": False,
            "content_encoding": None,
            "body_size": 5,
        },
        "response": None,
        "error": None,
        "extra": {"path": "/ws", "host": "example.test"},
    }
    assert d.stats["text"] == 1 and d.stats["frames"] == 1


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_server_binary_lengths(size: int) -> None:
    payload = bytes(i & 0xFF for i in range(size))
    wire = bytes(server().send_data(payload))
    events, _ = run([(SERVER, wire)], body_cap=1 << 20)
    (ex,) = exchanges(events)
    assert ex["request"] is None and ex["response_size"] == len(wire)
    resp = ex["response"]
    assert resp["masked"] is False and resp["opcode"] == "binary"
    assert body_bytes(resp) == payload if size else resp["body"] == ""
    assert resp["body_size"] == size
    assert ex["summary"] == f"{size} bytes"


def test_masked_long_lengths_by_hand() -> None:
    payload = b"x" * 70000
    wire = hand_frame(2, payload, mask=b"\x01\x02\x03\x04")
    events, _ = run([(CLIENT, wire[:3]), (CLIENT, wire[3:9]), (CLIENT, wire[9:])], body_cap=1 << 17)
    (ex,) = exchanges(events)
    assert body_bytes(ex["request"]) == payload and ex["ts"] == 10.0


def test_fragments_with_interleaved_control_frames() -> None:
    c = client()
    chunks = [
        (CLIENT, bytes(c.send_data("Hello, ", fin=False))),
        (CLIENT, bytes(c.ping(b"p"))),
        (CLIENT, bytes(c.send_data("wor", fin=False))),
        (CLIENT, bytes(c.pong(b"q"))),
        (CLIENT, bytes(c.send_data("ld", fin=True))),
    ]
    events, d = run(chunks)
    (ex,) = exchanges(events)
    req = ex["request"]
    assert req["body"] == "Hello, world" and req["fragments"] == 3 and req["fin"] is True
    assert ex["ts"] == 10.0  # the first frame's time
    assert ex["request_size"] == len(chunks[0][1]) + len(chunks[2][1]) + len(chunks[4][1])
    assert d.stats["ping"] == 1 and d.stats["pong"] == 1 and d.stats["fragmented"] == 1


def test_text_summary_is_cut_at_200_characters() -> None:
    events, _ = run([(SERVER, bytes(server().send_data("é" * 300)))])
    (ex,) = exchanges(events)
    assert ex["summary"] == "é" * 200 and ex["response"]["body"] == "é" * 300


@pytest.mark.parametrize(
    ("code", "reason", "summary"),
    [(1000, "bye", "close 1000 bye"), (1001, None, "close 1001"), (None, None, "close")],
)
def test_close_frames(code: int | None, reason: str | None, summary: str) -> None:
    wire = bytes(server().close(code, reason))
    events, d = run([(SERVER, wire)])
    (ex,) = exchanges(events)
    assert ex["method"] == "close" and ex["summary"] == summary and ex["status"] == code
    resp = ex["response"]
    assert resp["close_code"] == code
    assert resp["close_reason"] == (reason or "" if code is not None else None)
    assert resp["body_size"] == len(wire) - 2 and ex["response_size"] == len(wire)
    assert d.stats["close"] == 1


def test_masked_close_from_client() -> None:
    wire = bytes(client().close(4000, "app gone"))
    (ex,) = exchanges(run([(CLIENT, wire)])[0])
    assert ex["request"]["close_code"] == 4000 and ex["request"]["close_reason"] == "app gone"
    assert ex["request"]["masked"] is True


def test_both_directions() -> None:
    c, s = client(), server()
    events, _ = run(
        [
            (CLIENT, bytes(c.send_data("ping?"))),
            (SERVER, bytes(s.send_data("pong!"))),
            (SERVER, bytes(s.close(1000))),
            (CLIENT, bytes(c.close(1000))),
        ]
    )
    got = [(e["request"] is not None, e["summary"]) for e in exchanges(events)]
    assert got == [(True, "ping?"), (False, "pong!"), (False, "close 1000"), (True, "close 1000")]


# -- permessage-deflate ------------------------------------------------------------------------


def test_deflate_with_context_takeover() -> None:
    s = server("permessage-deflate")
    texts = [f"message number {i} " * 20 for i in range(5)]
    events, d = run([(SERVER, bytes(s.send_data(t))) for t in texts])
    got = exchanges(events)
    assert [e["response"]["body"] for e in got] == texts
    assert all(e["response"]["content_encoding"] == "permessage-deflate" for e in got)
    assert got[1]["response"]["body_size"] < len(texts[1])  # compressed size on the wire
    assert d.stats["deflated"] == 5 and d.stats["deflate_errors"] == 0


def test_deflate_without_context_takeover_and_fragmented() -> None:
    c = client("permessage-deflate; client_no_context_takeover")
    chunks = [(CLIENT, bytes(c.send_data("abc" * 100)))]
    chunks.append((CLIENT, bytes(c.send_data("part one, ", fin=False))))
    chunks.append((CLIENT, bytes(c.send_data("part two", fin=True))))
    chunks.append((CLIENT, bytes(c.send_data(b"\x00\x01\x02" * 50))))
    events, _ = run(chunks)
    got = [e["request"] for e in exchanges(events)]
    assert got[0]["body"] == "abc" * 100
    assert got[1]["body"] == "part one, part two" and got[1]["fragments"] == 2
    assert body_bytes(got[2]) == b"\x00\x01\x02" * 50


def test_deflate_after_lost_context_falls_back_to_fresh_inflater() -> None:
    s = server("permessage-deflate; server_no_context_takeover")
    first = bytes(s.send_data("one " * 50))
    second = bytes(s.send_data("two " * 50))
    d = WebSocketDissector()
    d.feed(SERVER, first[:10], 1.0)
    events = d.gap(SERVER, len(first) - 10, 1.5)
    events += d.feed(SERVER, second, 2.0)
    got = exchanges(events)
    assert got[0]["error"] == "truncated" and got[0]["response"]["body_truncated"] is True
    assert got[1]["response"]["body"] == "two " * 50 and got[1]["error"] is None


def test_bad_deflate_keeps_raw_bytes() -> None:
    wire = hand_frame(2, b"\xff\xfe\xfd garbage", rsv1=True)
    (ex,) = exchanges(run([(SERVER, wire)])[0])
    resp = ex["response"]
    assert body_bytes(resp) == b"\xff\xfe\xfd garbage"
    assert resp["content_encoding"] is None
    assert resp["body_decode_error"].startswith("failed to decode permessage-deflate")


def test_deflate_bomb_is_capped() -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = comp.compress(b"\x00" * (20 << 20)) + comp.flush(zlib.Z_SYNC_FLUSH)
    wire = hand_frame(2, packed[:-4], rsv1=True)
    (ex,) = exchanges(run([(SERVER, wire)], body_cap=1 << 20)[0])
    resp = ex["response"]
    assert len(body_bytes(resp)) == 1 << 20 and resp["body_truncated"] is True


# -- caps, gaps, desyncs -----------------------------------------------------------------------


def test_body_cap_keeps_a_prefix_and_counts_all() -> None:
    wire = bytes(client().send_data("a" * 1000))
    (ex,) = exchanges(run([(CLIENT, wire)], body_cap=10)[0])
    req = ex["request"]
    assert req["body"] == "a" * 10 and req["body_truncated"] is True
    assert req["body_size"] == 1000 and ex["request_size"] == len(wire)
    assert ex["error"] is None


def test_gap_inside_payload_truncates_that_message_only() -> None:
    c = client()
    first = bytes(c.send_data("0123456789" * 10))
    second = bytes(c.send_data("after"))
    d = WebSocketDissector()
    events = d.feed(CLIENT, first[:30], 1.0)
    events += d.gap(CLIENT, 20, 1.1)
    events += d.feed(CLIENT, first[50:] + second, 1.2)
    a, b = exchanges(events)
    assert a["error"] == "truncated" and a["request"]["body_truncated"] is True
    assert a["request"]["body"] == first_text_prefix(first, 30)  # the bytes before the gap
    assert a["request"]["body_size"] == 100 and a["request_size"] == len(first)
    assert b["request"]["body"] == "after" and b["error"] is None
    assert not desyncs(events)


def first_text_prefix(frame: bytes, upto: int) -> str:
    """The unmasked text of a masked 7-bit-length frame's payload bytes before ``upto``."""
    mask = frame[2:6]
    return bytes(b ^ mask[i % 4] for i, b in enumerate(frame[6:upto])).decode()


def test_gap_outside_payload_desyncs_the_direction() -> None:
    c = client()
    one, two = bytes(c.send_data("one")), bytes(c.send_data("two"))
    d = WebSocketDissector()
    events = d.feed(CLIENT, one, 1.0)
    events += d.gap(CLIENT, 5, 1.1)
    events += d.feed(CLIENT, two, 1.2)
    assert [e["summary"] for e in exchanges(events)] == ["one"]
    (ds,) = desyncs(events)
    assert ds.reason == "capture gap"
    assert d.stats["skipped_bytes"] == len(two)
    # the other direction is unaffected
    assert exchanges(d.feed(SERVER, bytes(server().send_data("ok")), 2.0))[0]["summary"] == "ok"


def test_gap_past_a_payload_end_truncates_then_desyncs() -> None:
    wire = bytes(server().send_data("x" * 50))
    d = WebSocketDissector()
    events = d.feed(SERVER, wire[:20], 1.0) + d.gap(SERVER, 40, 1.1)
    (ex,) = exchanges(events)
    assert ex["error"] == "truncated" and ex["response"]["body"] == "x" * 18
    assert len(desyncs(events)) == 1


def test_gap_in_fragmented_message_header_desyncs_message() -> None:
    s = server()
    d = WebSocketDissector()
    events = d.feed(SERVER, bytes(s.send_data("start", fin=False)), 1.0)
    events += d.gap(SERVER, 7, 1.1)
    (ex,) = exchanges(events)
    assert ex["error"] == "truncated" and ex["response"]["fin"] is False


def test_huge_length_desyncs() -> None:
    bad = hand_frame(2, b"", length=MAX_FRAME + 1)
    d = WebSocketDissector()
    events = d.feed(SERVER, bytes(server().send_data("ok")) + bad + b"tail", 1.0)
    assert [e["summary"] for e in exchanges(events)] == ["ok"]
    (ds,) = desyncs(events)
    assert "over" in ds.reason and ds.skipped == 10
    assert d.stats["skipped_bytes"] == 14
    assert d.feed(SERVER, b"more", 2.0) == [] and d.stats["skipped_bytes"] == 18
    top_bit = bytes([0x82, 127]) + b"\x80" + b"\x00" * 7
    assert desyncs(WebSocketDissector().feed(CLIENT, top_bit, 1.0))


def test_reserved_opcode_and_long_control_frame_desync() -> None:
    for wire in (hand_frame(3, b"abc"), hand_frame(9, b"x" * 126)):
        d = WebSocketDissector()
        events = d.feed(SERVER, bytes(server().send_data("start", fin=False)) + wire, 1.0)
        (ex,) = exchanges(events)
        assert ex["error"] == "desynced"
        assert len(desyncs(events)) == 1 and d.stats["desyncs"] == 1


def test_close_mid_message_and_mid_header() -> None:
    wire = bytes(client().send_data("abcdefgh"))
    d = WebSocketDissector()
    events = d.feed(CLIENT, wire[:9], 1.0) + d.close(CLIENT, 2.0)
    (ex,) = exchanges(events)
    assert ex["error"] == "truncated" and ex["request"]["fin"] is True
    assert ex["request"]["body"] == "abc" and ex["request"]["body_size"] == 3
    d = WebSocketDissector()
    events = d.feed(SERVER, b"\x81", 1.0) + d.finish(2.0)
    (ds,) = desyncs(events)
    assert ds.reason == "closed inside a frame header" and ds.skipped == 1
    assert d.feed(SERVER, b"\x81\x00", 3.0) == []  # a closed direction only counts


def test_cut_close_frame() -> None:
    wire = bytes(server().close(1000, "going away now"))
    d = WebSocketDissector()
    (ex,) = exchanges(d.feed(SERVER, wire[:6], 1.0) + d.finish(2.0))
    assert ex["method"] == "close" and ex["error"] == "truncated" and ex["status"] == 1000
    assert ex["response"]["body_size"] == 4 and ex["response_size"] == 6


def test_orphan_continuation_and_interrupted_message() -> None:
    orphan = hand_frame(0, b"tail end", fin=True)
    events, d = run([(SERVER, orphan)])
    (ex,) = exchanges(events)
    assert ex["method"] == "continuation" and ex["error"] == "truncated"
    assert ex["summary"] == "tail end"
    assert d.stats["orphan_continuations"] == 1
    wire = hand_frame(1, b"first", fin=False) + hand_frame(1, b"second")
    events, d = run([(SERVER, wire)])
    a, b = exchanges(events)
    assert (a["summary"], a["error"], a["response"]["fin"]) == ("first", "truncated", False)
    assert (b["summary"], b["error"]) == ("second", None)
    assert d.stats["interrupted_messages"] == 1


def test_oldest_pending_and_expire() -> None:
    wire = bytes(client().send_data("x" * 300))
    d = WebSocketDissector()
    assert d.oldest_pending() is None
    d.feed(CLIENT, wire[:1], 5.0)
    assert d.oldest_pending() == 5.0
    d.feed(CLIENT, wire[1:100], 6.0)
    assert d.oldest_pending() == 5.0
    assert d.expire(1000.0) == []
    d.feed(CLIENT, wire[100:], 7.0)
    assert d.oldest_pending() is None


def test_internal_errors_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    d = WebSocketDissector()

    def boom(*args: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(d, "_feed", boom)
    (ds,) = d.feed(CLIENT, b"\x81\x00", 1.0)
    assert isinstance(ds, Desynced) and "internal error" in ds.reason
    assert d.stats["internal_errors"] == 1
    assert d.feed(SERVER, bytes(server().send_data("fine")), 2.0)  # the other side goes on
    assert d.feed(CLIENT, b"x", 3.0) == [] and d.stats["skipped_bytes"] == 1


def test_bad_arguments_are_ignored() -> None:
    d = WebSocketDissector()
    assert d.feed(7, b"\x81\x00", 1.0) == []
    assert d.gap(CLIENT, 0, 1.0) == []
    assert d.close(5, 1.0) == []


# -- properties --------------------------------------------------------------------------------


_message = st.tuples(
    st.sampled_from([CLIENT, SERVER]),
    st.sampled_from(["text", "binary", "ping", "close"]),
    st.binary(max_size=300),
    st.integers(1, 4),  # fragments
)


def _stream(
    messages: list[tuple[int, str, bytes, int]], deflate: bool
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """The wire of each direction, frame by frame, and the expected (direction, payload)."""
    ext = "permessage-deflate" if deflate else None
    peers = {CLIENT: client(ext), SERVER: server(ext)}
    frames: list[tuple[int, bytes]] = []
    expected: list[tuple[int, bytes]] = []
    for direction, kind, payload, parts in messages:
        peer = peers[direction]
        if kind == "ping":
            frames.append((direction, bytes(peer.ping(payload[:100]))))
            continue
        if kind == "close":
            closer = FrameProtocol(client=direction == CLIENT, extensions=[])
            frames.append((direction, bytes(closer.close(1000, payload[:30].hex()))))
            continue
        data: bytes | str = payload.hex() if kind == "text" else payload
        step = max(1, len(data) // parts + 1)
        pieces = [data[i : i + step] for i in range(0, len(data), step)] or [data]
        for i, piece in enumerate(pieces):
            frames.append((direction, bytes(peer.send_data(piece, fin=i == len(pieces) - 1))))
        expected.append((direction, data.encode() if isinstance(data, str) else data))
    return frames, expected


def _feed_all(
    frames: list[tuple[int, bytes]], cuts: list[int], body_cap: int = 1 << 16
) -> tuple[list[dict[str, Any]], WebSocketDissector]:
    """Feed each direction's bytes, cut at ``cuts`` (offsets in the whole stream), in order."""
    d = WebSocketDissector(body_cap=body_cap)
    events: list[Event] = []
    pos = 0
    for direction, data in frames:
        marks = sorted({c - pos for c in cuts if pos < c < pos + len(data)})
        start = 0
        for m in [*marks, len(data)]:
            events += d.feed(direction, data[start:m], 1.0)
            start = m
        pos += len(data)
    events += d.finish(2.0)
    return exchanges(events), d


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_message, max_size=8),
    st.booleans(),
    st.lists(st.integers(0, 5000), max_size=12),
)
def test_cuts_do_not_change_the_exchanges(
    messages: list[tuple[int, str, bytes, int]], deflate: bool, cuts: list[int]
) -> None:
    frames, expected = _stream(messages, deflate)
    whole, d = _feed_all(frames, [])
    data_msgs = [e for e in whole if e["method"] != "close"]
    got = [
        (CLIENT if e["request"] else SERVER, body_bytes(e["request"] or e["response"]))
        for e in data_msgs
    ]
    assert got == expected
    assert all(e["error"] is None for e in whole)
    assert d.stats["desyncs"] == 0 and d.stats["deflate_errors"] == 0
    cut, _ = _feed_all(frames, cuts)
    assert cut == whole
    every_byte, _ = _feed_all(frames, list(range(sum(len(f) for _, f in frames))))
    assert every_byte == whole


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_message, min_size=1, max_size=6),
    st.booleans(),
    st.data(),
    st.integers(1, 200),
)
def test_damage_never_raises_and_keeps_what_came_before(
    messages: list[tuple[int, str, bytes, int]], deflate: bool, data: st.DataObject, cap: int
) -> None:
    frames, _ = _stream(messages, deflate)
    client_bytes = b"".join(f for d_, f in frames if d_ == CLIENT)
    if not client_bytes:
        return
    at = data.draw(st.integers(0, len(client_bytes) - 1))
    how = data.draw(st.sampled_from(["flip", "drop", "insert", "gap"]))
    junk = data.draw(st.binary(min_size=1, max_size=12))
    if how == "flip":
        damaged = client_bytes[:at] + bytes([client_bytes[at] ^ 0xFF]) + client_bytes[at + 1 :]
    elif how == "drop":
        damaged = client_bytes[:at] + client_bytes[at + len(junk) :]
    else:
        damaged = client_bytes[:at] + junk + client_bytes[at:]

    def feed(parts: list[bytes | int]) -> tuple[list[dict[str, Any]], WebSocketDissector]:
        d = WebSocketDissector(body_cap=cap)
        events: list[Event] = []
        for p in parts:
            if isinstance(p, int):
                events += d.gap(CLIENT, p, 1.0)
            else:
                events += d.feed(CLIENT, p, 1.0)
            side = d._sides[CLIENT]
            assert len(side.hdr) <= 14 and len(side.ctrl) <= 125
            assert side.msg is None or len(side.msg.body) <= cap
        return exchanges(events + d.finish(2.0)), d

    before, _ = feed([client_bytes[:at]])
    before = [e for e in before if e["error"] is None]  # complete before the damage
    if how == "gap":
        got, d = feed([client_bytes[:at], len(junk), client_bytes[at + len(junk) :]])
    else:
        got, d = feed([damaged])
    assert got[: len(before)] == before
    assert d.stats["internal_errors"] == 0
    for e in got:
        obj = e["request"]
        assert obj is not None
        assert len(body_bytes(obj)) <= max(cap, 125)


@settings(max_examples=300)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=5))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    d = WebSocketDissector(body_cap=64)
    marks = sorted({c for c in cuts if 0 < c < len(data)})
    start = 0
    for i, m in enumerate([*marks, len(data)]):
        if i % 2:
            d.gap(SERVER, 3, 1.0)
        d.feed(SERVER, data[start:m], 1.0)
        start = m
    d.finish(2.0)
    assert d.stats["internal_errors"] == 0
