"""The daemon protocol's frame codec, without sockets: round trips, any split of the byte
stream, unknown types, the size cap read from the header, garbage, forward compatibility."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shark_tui.engine import wire
from shark_tui.engine.wire import FrameDecoder, ProtocolError, Unknown, encode

HEAD = struct.Struct(">BI")


def frame(mtype: int, payload: bytes) -> bytes:
    return HEAD.pack(mtype, len(payload)) + payload


def packed(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)


ENTRY: dict[str, Any] = {
    "id": "12:3",
    "proto": "http",
    "src": {"ip": "10.0.0.1", "port": 40000, "pod": None, "ns": None},
    "dst": {"ip": "::1", "port": 80, "pod": "api-0", "ns": "default"},
    "ts": 1_700_000_000.123456,
    "latency_ms": 1.5,
    "method": "GET",
    "summary": "/a?b=1 ünïcode",
    "status": 200,
    "request": {"headers": [["Host", "x"]], "body": "", "body_truncated": False},
    "response": None,
    "error": None,
}

#: Every message type, with no field left at its default.
EXAMPLES: list[wire.Message] = [
    wire.Hello(version=7, capabilities=["entries", "detail"], token="t0k", node="node-1"),
    wire.Subscribe(
        req=3,
        filter='status >= 400 and path ~ "x"',
        since=1.5,
        detail=True,
        newest_first=True,
        limit=100,
        follow=False,
    ),
    wire.Unsubscribe(req=4),
    wire.GetEntry(req=5, id="12:3", max_body=1 << 20),
    wire.Export(req=6, filter="http", ids=["1:1", "2:7"]),
    wire.Stats(req=7),
    wire.TlsStatus(req=8),
    wire.EntriesAppended(
        req=9, entries=[ENTRY, {"id": "1:1", "x": [1, 2.5, None, True]}], backlog=True
    ),
    wire.CaughtUp(req=10, entries=12345),
    wire.StatsChanged(req=11, stats={"packets": 10, "sources": [{"name": "lo", "dropped": 0}]}),
    wire.EntryDetail(
        req=12, entry=ENTRY, connection={"flow": 3, "iface": "eth0", "packets": {"client": 4}}
    ),
    wire.ExportChunk(req=13, data=bytes(range(256)) * 3),
    wire.ExportDone(req=14, packets=99, connections=3),
    wire.TlsStatusReport(req=15, processes=[{"pid": 1, "visible": False, "why": "static"}]),
    wire.Failed(req=16, error="filter: no column 'foo'", fatal=True),
    wire.GetStream(req=17, id="3:1", max_bytes=4096),
    wire.StreamData(
        req=18, chunks=[(0, b"GET / HTTP/1.1\r\n\r\n"), (1, bytes(range(256)))], left_out=7
    ),
    wire.Pause(req=19, paused=False),
    wire.SetTargets(req=20, pods="^api-", namespaces=["shop", "db"]),
]


def test_every_message_type_is_covered() -> None:
    covered = {type(m) for m in EXAMPLES}
    declared = {
        cls
        for name in wire.__all__
        if isinstance(cls := getattr(wire, name), type)
        and issubclass(cls, wire.Message)
        and cls not in (wire.Message, Unknown)
    }
    assert covered == declared
    assert len({m.TYPE for m in EXAMPLES}) == len(EXAMPLES), "two messages share a type number"


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: wire.Message) -> None:
    data = encode(msg)
    mtype, length = HEAD.unpack_from(data)
    assert mtype == msg.TYPE and length == len(data) - 5
    dec = FrameDecoder()
    assert dec.feed(data) == [msg]
    assert dec.buffered == 0 and dec.frames == 1
    # the defaults round-trip too (omitted on the wire)
    empty = type(msg)()
    assert FrameDecoder().feed(encode(empty)) == [empty]
    assert len(encode(empty)) <= 6  # an empty map: defaults are not sent


STREAM = b"".join(encode(m) for m in EXAMPLES)


def test_byte_by_byte() -> None:
    dec = FrameDecoder()
    out: list[wire.Message] = []
    for i in range(len(STREAM)):
        out += dec.feed(STREAM[i : i + 1])
    assert out == EXAMPLES
    assert dec.buffered == 0


def test_every_single_cut() -> None:
    for cut in range(len(STREAM) + 1):
        dec = FrameDecoder()
        assert dec.feed(STREAM[:cut]) + dec.feed(STREAM[cut:]) == EXAMPLES


@given(st.lists(st.integers(0, len(STREAM)), max_size=20), st.randoms())
def test_random_cuts(cuts: list[int], rnd: Any) -> None:
    stream = STREAM + encode(wire.Stats(req=1))
    points = sorted({0, len(stream), *cuts})
    dec = FrameDecoder()
    out: list[wire.Message] = []
    for a, b in itertools.pairwise(points):
        out += dec.feed(stream[a:b])
    assert out == [*EXAMPLES, wire.Stats(req=1)]
    assert dec.buffered == 0


message_st = st.sampled_from(EXAMPLES) | st.builds(
    wire.EntriesAppended,
    req=st.integers(0, 2**63 - 1),
    entries=st.lists(
        st.dictionaries(
            st.text(max_size=8),
            st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
            | st.floats(allow_nan=False) | st.binary(max_size=20),
            max_size=5,
        ),
        max_size=4,
    ),
    backlog=st.booleans(),
)  # fmt: skip


@given(st.lists(message_st, max_size=8), st.data())
def test_any_messages_any_split(msgs: list[wire.Message], data: st.DataObject) -> None:
    stream = b"".join(encode(m) for m in msgs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    points = sorted({0, len(stream), *cuts})
    dec = FrameDecoder()
    out: list[wire.Message] = []
    for a, b in itertools.pairwise(points):
        out += dec.feed(stream[a:b])
    assert out == msgs


# -- unknown types ------------------------------------------------------------------------------


def test_unknown_types_are_handed_out_and_skipped() -> None:
    known = {m.TYPE for m in EXAMPLES}
    stream = bytearray()
    want: list[wire.Message] = []
    for t in range(256):
        if t in known:
            continue
        stream += frame(t, packed({"anything": [1, 2, 3]}) if t % 2 else b"\xc1garbage")
        want.append(Unknown(type=t))
        stream += encode(wire.Stats(req=t))
        want.append(wire.Stats(req=t))
    dec = FrameDecoder()
    out: list[wire.Message] = []
    for i in range(0, len(stream), 7):
        out += dec.feed(bytes(stream[i : i + 7]))
    assert out == want
    assert dec.unknown == 256 - len(known)
    # an unknown frame with an empty payload, and one as large as the limit allows
    dec = FrameDecoder(max_frame=1000)
    assert dec.feed(frame(200, b"") + frame(201, b"z" * 1000) + encode(wire.Stats())) == [
        Unknown(type=200),
        Unknown(type=201),
        wire.Stats(),
    ]


# -- the size cap -------------------------------------------------------------------------------


def test_oversized_frame_rejected_from_its_header() -> None:
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(ProtocolError, match="1025 bytes"):
        dec.feed(HEAD.pack(wire.Hello.TYPE, 1025))  # the header alone, no payload yet
    dec = FrameDecoder(max_frame=1024)
    assert dec.feed(HEAD.pack(99, 1024)) == []  # at the limit: waits for the payload
    assert dec.feed(b"x" * 1024) == [Unknown(type=99)]
    # the default limit, with a header announcing 4 GiB
    dec = FrameDecoder()
    with pytest.raises(ProtocolError, match="over the"):
        dec.feed(HEAD.pack(wire.EntriesAppended.TYPE, 0xFFFFFFFF))
    assert dec.buffered == 5  # nothing but the header was ever held


def test_oversized_frame_after_good_ones_in_the_same_read() -> None:
    dec = FrameDecoder(max_frame=100)
    with pytest.raises(ProtocolError):
        dec.feed(encode(wire.Stats(req=1)) + HEAD.pack(16, 101))


def test_oversized_header_split_across_reads() -> None:
    dec = FrameDecoder(max_frame=100)
    head = HEAD.pack(16, 101)
    assert dec.feed(head[:3]) == []
    with pytest.raises(ProtocolError):
        dec.feed(head[3:])


# -- garbage ------------------------------------------------------------------------------------

HTTP_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8898\r\nUser-Agent: curl/8\r\n\r\n"
TLS_HELLO = bytes.fromhex("160301020001") + b"\x00" * 64
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize("data", [HTTP_GET, b"GET /", TLS_HELLO, H2_PREFACE, b"SSH-2.0-x\r\n"])
def test_other_protocols_are_protocol_errors(data: bytes) -> None:
    """Rejected from their first 5 bytes: a frame header announcing a huge frame."""
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(data)
    dec = FrameDecoder()
    assert dec.feed(data[:4]) == []  # fewer than a header: nothing to say yet
    with pytest.raises(ProtocolError):
        dec.feed(data[4:])


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never used in msgpack
        b"",  # no map at all
        packed([1, 2, 3]),  # an array, not a map
        packed("hello"),
        packed({"version": "one"}),  # a field of the wrong type
        packed({"capabilities": "entries"}),
        packed({"capabilities": [1, 2]}),
        packed({"token": b"bytes"}),
        packed({"version": 1.5}),
        packed({"version": None}),
        packed({}) + b"\x00",  # trailing bytes
        b"\x81\xa7version",  # truncated map
        b"\xdf\xff\xff\xff\xff",  # a map announcing 4 G pairs
        b"\xdd\xff\xff\xff\xff",  # an array announcing 4 G items
    ],
)
def test_garbage_hello_payloads(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="bad Hello frame"):
        FrameDecoder().feed(frame(wire.Hello.TYPE, payload))


def test_deeply_nested_payload_is_a_protocol_error() -> None:
    """Nesting deeper than the decoder's recursion limit is garbage too (not RecursionError)."""
    deep = b"\x81\xa7entries\x91\x81\xa1a" + b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(frame(wire.EntriesAppended.TYPE, deep))
    deep_map = b"\x81\xa5stats" + b"\x81\xa1a" * 100_000 + b"\xc0"
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(frame(wire.StatsChanged.TYPE, deep_map))


def test_wrong_types_inside_lists_and_maps() -> None:
    for t, payload in [
        (wire.EntriesAppended.TYPE, packed({"entries": [1]})),
        (wire.EntriesAppended.TYPE, packed({"entries": {"a": 1}})),
        (wire.StatsChanged.TYPE, b"\x81\xa5stats\x81\x01\x02"),  # an int key
        (wire.ExportChunk.TYPE, packed({"data": "text, not bytes"})),
        (wire.Export.TYPE, packed({"ids": [1]})),
        (wire.Failed.TYPE, packed({"fatal": "yes"})),
        (wire.CaughtUp.TYPE, packed({"entries": 1.5})),
    ]:
        with pytest.raises(ProtocolError):
            FrameDecoder().feed(frame(t, payload))


KNOWN_TYPES = sorted({m.TYPE for m in EXAMPLES})


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_are_messages_or_protocol_error(data: bytes) -> None:
    dec = FrameDecoder(max_frame=4096)
    try:
        out = dec.feed(data)
    except ProtocolError:
        return
    assert all(isinstance(m, wire.Message) for m in out)


#: Payload starts that get random bytes past the first byte: into a map, into each message's
#: free-form (``Any``) fields, into its typed strings and lists.
PREFIXES = [
    b"",
    b"\x81",
    b"\x8f",
    b"\x81\xa7entries\x91\x81",
    b"\x81\xa5stats\x81\xa1a",
    b"\x81\xa5entry\x82\xa1a\x92",
    b"\x81\xa9processes\x91\x81\xa1a",
    b"\x81\xa5token",
    b"\x81\xa3ids\x92",
]


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KNOWN_TYPES), st.sampled_from(PREFIXES), st.binary(max_size=100))
def test_random_payloads_of_known_types(mtype: int, prefix: bytes, rest: bytes) -> None:
    try:
        out = FrameDecoder().feed(frame(mtype, prefix + rest))
    except ProtocolError:
        return
    assert len(out) == 1
    got = type(out[0]).TYPE
    assert got == mtype


def test_invalid_utf8_in_a_free_form_field() -> None:
    """msgspec raises UnicodeDecodeError (not DecodeError) for these: still a ProtocolError."""
    for mtype, payload in [
        (wire.StatsChanged.TYPE, b"\x81\xa5stats\x81\xa1a\xa2\xff\xfe"),
        (wire.EntryDetail.TYPE, b"\x81\xa5entry\x81\xa2\xc3\x28\x01"),  # as a key
        (wire.EntriesAppended.TYPE, b"\x81\xa7entries\x91\x81\xa1a\x91\xa1\x80"),
    ]:
        with pytest.raises(ProtocolError):
            FrameDecoder().feed(frame(mtype, payload))


# -- forward and backward compatibility ---------------------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    payload = packed(
        {
            "version": 1,
            "token": "t0k",
            "future_flag": True,
            "future_map": {"a": [1, {"b": None}]},
            "capabilities": ["entries", "something-new"],
        }
    )
    (msg,) = FrameDecoder().feed(frame(wire.Hello.TYPE, payload))
    assert msg == wire.Hello(version=1, token="t0k", capabilities=["entries", "something-new"])
    assert not hasattr(msg, "future_flag")


def test_missing_fields_take_defaults() -> None:
    (msg,) = FrameDecoder().feed(frame(wire.Subscribe.TYPE, packed({"filter": "http"})))
    assert msg == wire.Subscribe(filter="http")
    assert (msg.req, msg.since, msg.detail, msg.newest_first, msg.limit, msg.follow) == (
        0, 0.0, False, False, 0, True,
    )  # fmt: skip
    (hello,) = FrameDecoder().feed(frame(wire.Hello.TYPE, packed({})))
    assert hello == wire.Hello() and hello.version == wire.VERSION and hello.token == ""


def test_defaults_are_not_shared_between_messages() -> None:
    a, b = FrameDecoder().feed(frame(wire.Hello.TYPE, b"\x80") + frame(wire.Hello.TYPE, b"\x80"))
    assert isinstance(a, wire.Hello) and isinstance(b, wire.Hello)
    a.capabilities.append("x")
    assert b.capabilities == [] and wire.Hello().capabilities == []


def test_never_pickle() -> None:
    class Evil:
        def __reduce__(self) -> Any:
            return (print, ("pwned",))

    with pytest.raises(TypeError):
        encode(wire.EntriesAppended(entries=[{"x": Evil()}]))
    pickled = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94."
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(frame(wire.Subscribe.TYPE, pickled))
