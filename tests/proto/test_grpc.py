"""gRPC framing, decompression and status, with messages from the real protobuf runtime."""

from __future__ import annotations

import base64
import gzip
import struct
import zlib
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.proto.grpc import is_grpc, method_of, parse_messages, percent_decode, status_from
from tests.proto.test_protobuf import compile_proto


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return compile_proto(tmp_path_factory.mktemp("grpcproto"), "sharkgrpc")


def frame(payload: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(payload)) + payload


@pytest.mark.parametrize(
    ("ct", "expected"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("application/grpc+json", True),
        ("Application/GRPC; charset=utf-8", True),
        ("application/grpc-web", False),
        ("application/grpc-web+proto", False),
        ("application/json", False),
        ("", False),
        (None, False),
    ],
)
def test_is_grpc(ct: str | None, expected: bool) -> None:
    assert is_grpc(ct) is expected


def test_method_of(stubs: tuple[ModuleType, ModuleType]) -> None:
    pb, _ = stubs
    service = pb.DESCRIPTOR.services_by_name["Greeter"]
    full = service.methods_by_name["Hello"].full_name  # sharkgrpc.Greeter.Hello
    path = "/" + full.rsplit(".", 1)[0] + "/" + full.rsplit(".", 1)[1]
    assert path == "/sharkgrpc.Greeter/Hello"
    assert method_of(path) == "sharkgrpc.Greeter/Hello"
    assert method_of("pkg.Svc/M") == "pkg.Svc/M"


def test_path_in_generated_stub(stubs: tuple[ModuleType, ModuleType]) -> None:
    """The :path the generated client stub uses is what method_of expects."""
    _, grpc_mod = stubs

    class Channel:
        def __init__(self) -> None:
            self.paths: list[str] = []

        def unary_unary(self, path: str, *args: object, **kwargs: object) -> None:
            self.paths.append(path)

    ch = Channel()
    grpc_mod.GreeterStub(ch)
    assert [method_of(p) for p in ch.paths] == ["sharkgrpc.Greeter/Hello"]


def test_messages_from_real_serialization(stubs: tuple[ModuleType, ModuleType]) -> None:
    pb, _ = stubs
    a = pb.Resp(greeting="hi there", nums=[1, 2, 3]).SerializeToString()
    b = pb.Resp().SerializeToString()  # an empty message: zero-length frame
    messages, truncated = parse_messages(frame(a) + frame(b), encoding=None)
    assert not truncated
    assert len(messages) == 2
    first = messages[0]
    assert first["size"] == len(a) and first["compressed"] is False
    assert base64.b64decode(first["data"]) == a
    assert first["fields"][0] == {
        "field": 1,
        "wire_type": "len",
        "encoding": "text",
        "value": "hi there",
    }
    assert "decode_error" not in first
    assert messages[1] == {"size": 0, "compressed": False, "fields": [], "data": ""}


def test_gzip_and_deflate(stubs: tuple[ModuleType, ModuleType]) -> None:
    pb, _ = stubs
    raw = pb.Req(who="world" * 50).SerializeToString()
    gz = gzip.compress(raw)
    messages, truncated = parse_messages(frame(gz, True) + frame(raw), encoding="gzip")
    assert not truncated
    assert messages[0]["size"] == len(gz) and messages[0]["compressed"] is True
    assert base64.b64decode(messages[0]["data"]) == raw
    assert messages[0]["fields"][0]["value"] == "world" * 50
    assert messages[1]["fields"] == messages[0]["fields"]  # uncompressed one in the same body
    for packed in (zlib.compress(raw), zlib.compress(raw)[2:-4]):  # zlib, then raw deflate
        got, _ = parse_messages(frame(packed, True), encoding="deflate")
        assert got[0]["fields"] == messages[0]["fields"]


def test_decompression_errors() -> None:
    (m,), _ = parse_messages(frame(b"not gzip", True), encoding="gzip")
    assert m["fields"] is None and m["decode_error"].startswith("failed to decode gzip")
    assert base64.b64decode(m["data"]) == b"not gzip"
    (m,), _ = parse_messages(frame(b"xx", True), encoding="snappy")
    assert m["decode_error"] == "failed to decode snappy: grpc-encoding not supported"
    (m,), _ = parse_messages(frame(b"\x08\x01", True), encoding=None)
    assert m["decode_error"] == "compressed flag set without grpc-encoding"
    (m,), _ = parse_messages(frame(gzip.compress(b"\x08\x01")[:-6], True), encoding="gzip")
    assert "incomplete" in m["decode_error"]


def test_zip_bomb_is_capped() -> None:
    bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024))
    (m,), truncated = parse_messages(frame(bomb, True), encoding="gzip", cap=4096)
    assert not truncated
    assert len(base64.b64decode(m["data"])) == 4096
    assert m["fields"] is None and m["data_truncated"] is True
    assert "larger than 4096" in m["decode_error"]


def test_data_cap_on_plain_message() -> None:
    payload = b"\x0a\x90\x4e" + b"a" * 10000
    (m,), _ = parse_messages(frame(payload), encoding=None, cap=100)
    assert base64.b64decode(m["data"]) == payload[:100]
    assert m["data_truncated"] is True
    assert m["fields"] is not None  # decoded from the whole message
    assert m["size"] == len(payload)


def test_partial_trailing_message() -> None:
    body = frame(b"\x08\x01") + frame(b"\x08\x02\x08\x03")[:-2]
    messages, truncated = parse_messages(body, encoding=None)
    assert truncated
    assert messages[0]["fields"] == [{"field": 1, "wire_type": "varint", "value": 1}]
    assert messages[1]["size"] == 4 and messages[1]["fields"] is None
    assert messages[1]["decode_error"] == "incomplete message: 2 of 4 bytes seen"
    messages, truncated = parse_messages(frame(b"\x08\x01") + b"\x00\x00", encoding=None)
    assert truncated and len(messages) == 1


def test_max_messages() -> None:
    body = frame(b"\x08\x01") * 70
    messages, truncated = parse_messages(body, encoding=None)
    assert truncated and len(messages) == 64
    messages, truncated = parse_messages(frame(b"\x08\x01") * 64, encoding=None)
    assert not truncated and len(messages) == 64


def test_bad_flag_stops() -> None:
    messages, truncated = parse_messages(frame(b"\x08\x01") + b"\x07" + b"\x00" * 8, encoding=None)
    assert truncated and len(messages) == 1


def test_status_from() -> None:
    assert status_from([["grpc-status", "0"]]) == (0, None)
    assert status_from(
        [
            ["content-type", "application/grpc"],
            ["Grpc-Status", "5"],
            ["grpc-message", "not%20found"],
        ]
    ) == (5, "not found")
    assert status_from([]) == (None, None)
    assert status_from([["grpc-status", "x"]]) == (None, None)
    # UTF-8 percent-encoded, as the spec says; a bad escape stays as it is.
    assert status_from([["grpc-message", "caf%C3%A9 %zz 100%"]]) == (None, "café %zz 100%")
    assert percent_decode("%E2%82%AC") == "€"
    assert percent_decode("%ff") == "\ufffd"


@settings(max_examples=300)
@given(st.binary(max_size=600), st.integers(0, 8), st.integers(0, 64))
def test_random_bodies_never_raise(data: bytes, max_messages: int, cap: int) -> None:
    for encoding in (None, "gzip", "deflate", "zstd"):
        messages, truncated = parse_messages(
            data, encoding=encoding, max_messages=max_messages, cap=cap
        )
        assert len(messages) <= max_messages
        assert truncated or sum(5 + m["size"] for m in messages) == len(data)
        for m in messages:
            assert len(base64.b64decode(m["data"])) <= cap


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=50), max_size=10), st.booleans())
def test_framed_messages_come_back(payloads: list[bytes], compress: bool) -> None:
    body = b"".join(frame(gzip.compress(p) if compress else p, compress) for p in payloads)
    messages, truncated = parse_messages(body, encoding="gzip")
    assert not truncated
    assert [base64.b64decode(m["data"]) for m in messages] == payloads
