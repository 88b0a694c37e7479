"""Schema-less protobuf decoding against messages serialized by the real protobuf runtime.

The ``.proto`` is compiled at test time with ``grpc_tools.protoc`` into a temporary directory.
"""

from __future__ import annotations

import base64
import importlib
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.proto.protobuf import decode

PROTO = """
syntax = "proto3";
package PACKAGE;

message Inner {
  string name = 1;
  int32 n = 2;
}

message Outer {
  int32 i32 = 1;
  int64 i64 = 2;
  uint64 u64 = 3;
  sint32 s32 = 4;
  bool flag = 5;
  double d = 6;
  float f = 7;
  fixed32 fx32 = 8;
  fixed64 fx64 = 9;
  sfixed32 sf32 = 10;
  string s = 11;
  bytes raw = 12;
  Inner inner = 13;
  repeated int32 packed = 14;
  repeated Inner items = 15;
  map<string, int32> tags = 16;
  sfixed64 sf64 = 17;
  int32 far = 536870911;
}

message Req { string who = 1; }
message Resp { string greeting = 1; repeated int64 nums = 2; }

service Greeter {
  rpc Hello (Req) returns (Resp);
}
"""


_COMPILED: dict[str, tuple[ModuleType, ModuleType]] = {}


def compile_proto(directory: Path, name: str = "sharktest") -> tuple[ModuleType, ModuleType]:
    """Compile ``PROTO`` as package ``name`` with grpc_tools.protoc into ``directory``;
    (messages, grpc stubs). Once per name and process: protobuf's descriptor pool is global."""
    if name in _COMPILED:
        return _COMPILED[name]
    from grpc_tools import protoc  # type: ignore[import-untyped]

    (directory / f"{name}.proto").write_text(PROTO.replace("PACKAGE", name))
    args = [
        "protoc",
        f"-I{directory}",
        f"--python_out={directory}",
        f"--grpc_python_out={directory}",
        f"{name}.proto",
    ]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(directory))
    try:
        for mod in (f"{name}_pb2", f"{name}_pb2_grpc"):
            sys.modules.pop(mod, None)
        mods = importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")
    finally:
        sys.path.remove(str(directory))
    _COMPILED[name] = mods
    return mods


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return compile_proto(tmp_path_factory.mktemp("proto"))[0]


def by_field(fields: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for f in fields:
        out.setdefault(f["field"], []).append(f)
    return out


def test_scalars_from_real_serialization(pb: ModuleType) -> None:
    msg = pb.Outer(
        i32=-5,
        i64=1 << 40,
        u64=(1 << 64) - 2,
        s32=-3,
        flag=True,
        d=2.5,
        f=1.1,
        fx32=0xDEADBEEF,
        fx64=7,
        sf32=-2,
        sf64=-9,
        far=42,
    )
    fields = decode(msg.SerializeToString())
    assert fields is not None
    f = by_field(fields)
    # int32 -5 is a 10-byte varint: the raw unsigned value, plus its signed reading.
    assert f[1] == [{"field": 1, "wire_type": "varint", "value": (1 << 64) - 5, "signed": -5}]
    assert f[2][0]["value"] == 1 << 40 and "signed" not in f[2][0]
    assert f[3][0]["value"] == (1 << 64) - 2 and f[3][0]["signed"] == -2
    assert f[4][0]["value"] == 5  # zigzag(-3), shown raw
    assert f[5][0] == {"field": 5, "wire_type": "varint", "value": 1}
    assert f[6][0]["wire_type"] == "i64" and f[6][0]["double"] == 2.5
    assert f[7][0]["wire_type"] == "i32" and f[7][0]["float"] == 1.1
    assert f[8][0]["value"] == 0xDEADBEEF and f[8][0]["signed"] == 0xDEADBEEF - (1 << 32)
    assert f[9][0]["value"] == 7
    assert f[10][0]["signed"] == -2
    assert f[17][0]["signed"] == -9
    assert f[536870911][0]["value"] == 42
    assert [x["field"] for x in fields] == sorted(x["field"] for x in fields)


def test_strings_bytes_and_nested(pb: ModuleType) -> None:
    msg = pb.Outer(
        s="héllo wörld",
        raw=b"\x00\xff\xfe\x80",
        inner=pb.Inner(name="abc", n=3),
        items=[pb.Inner(name="x"), pb.Inner(n=1)],
        packed=[1, 2, 300],
        tags={"k": 1},
    )
    fields = decode(msg.SerializeToString())
    assert fields is not None
    f = by_field(fields)
    assert f[11] == [{"field": 11, "wire_type": "len", "encoding": "text", "value": "héllo wörld"}]
    assert f[12][0]["encoding"] == "base64"
    assert base64.b64decode(f[12][0]["value"]) == b"\x00\xff\xfe\x80"
    inner = f[13][0]
    assert inner["encoding"] == "message"
    assert inner["value"] == [
        {"field": 1, "wire_type": "len", "encoding": "text", "value": "abc"},
        {"field": 2, "wire_type": "varint", "value": 3},
    ]
    assert [i["value"] for i in f[15]] == [
        [{"field": 1, "wire_type": "len", "encoding": "text", "value": "x"}],
        [{"field": 2, "wire_type": "varint", "value": 1}],
    ]
    # A packed repeated field is one len value; 01 02 ac 02 is not a message nor text.
    assert f[14][0]["encoding"] == "base64"
    assert base64.b64decode(f[14][0]["value"]) == bytes([1, 2, 0xAC, 0x02])
    entry = f[16][0]["value"]
    assert entry == [
        {"field": 1, "wire_type": "len", "encoding": "text", "value": "k"},
        {"field": 2, "wire_type": "varint", "value": 1},
    ]


def test_printable_text_is_preferred_over_a_message_reading() -> None:
    # '"' is the tag of field 4 (len) and ' ' a length of 32: this text parses as a message.
    text = '" ' + "x" * 32
    assert decode(text.encode()) is not None
    wrapped = b"\x0a" + bytes([len(text)]) + text.encode()
    assert decode(wrapped) == [{"field": 1, "wire_type": "len", "encoding": "text", "value": text}]


def test_empty_message_and_empty_string(pb: ModuleType) -> None:
    assert decode(b"") == []
    assert decode(pb.Outer(inner=pb.Inner()).SerializeToString()) == [
        {"field": 13, "wire_type": "len", "encoding": "text", "value": ""}
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"\x08",  # varint cut
        b"\x0a\x05abc",  # length past the end
        b"\x00\x01",  # field number 0
        b"\x0b\x0c",  # group (wire type 3/4)
        b"\x0e\x00",  # wire type 6
        b"\x09\x00\x00",  # i64 cut
        b"\x08" + b"\xff" * 10 + b"\x01",  # varint over 64 bits
        b"hello",
    ],
)
def test_not_a_message(data: bytes) -> None:
    assert decode(data) is None


def test_non_finite_floats_stay_json() -> None:
    data = b"\x09" + struct.pack("<d", float("nan")) + b"\x15" + struct.pack("<f", float("-inf"))
    fields = decode(data)
    assert fields is not None
    assert fields[0]["double"] == "nan"
    assert fields[1]["float"] == "-inf"


def _nest(depth: int) -> bytes:
    data = b"\x08\x01"
    for _ in range(depth):
        data = b"\x0a" + _varint(len(data)) + data
    return data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _depth(fields: list[dict[str, Any]]) -> int:
    inner = [_depth(f["value"]) for f in fields if f.get("encoding") == "message"]
    return 1 + max(inner, default=0)


def _count(fields: list[dict[str, Any]]) -> int:
    return sum(1 + (_count(f["value"]) if f.get("encoding") == "message" else 0) for f in fields)


def test_depth_cap() -> None:
    fields = decode(_nest(20), max_depth=4)
    assert fields is not None
    assert _depth(fields) == 5  # the top level and four nested ones; the rest is bytes
    deepest = fields
    for _ in range(4):
        deepest = deepest[0]["value"]
    assert deepest[0]["encoding"] == "base64"


def test_field_cap() -> None:
    data = b"\x08\x01" * 50 + b"\x12\x04\x08\x01\x08\x02"
    fields = decode(data, max_fields=10)
    assert fields is not None and len(fields) == 10
    assert decode(data + b"\x08", max_fields=10) is None  # still checked to the end
    nested = b"\x0a\x06" + b"\x08\x01" * 3
    fields = decode(nested, max_fields=2)
    assert fields is not None and fields[0]["encoding"] == "base64"
    assert _count(decode(b"\x0a\x06" + b"\x08\x01" * 3, max_fields=4) or []) == 4


@settings(max_examples=300)
@given(st.binary(max_size=400), st.integers(0, 10), st.integers(0, 50))
def test_random_bytes_never_raise_and_caps_hold(data: bytes, depth: int, cap: int) -> None:
    fields = decode(data, max_depth=depth, max_fields=cap)
    if fields is not None:
        assert _count(fields) <= cap
        assert _depth(fields) <= depth + 1


@settings(max_examples=100)
@given(
    st.integers(-(1 << 31), (1 << 31) - 1),
    st.integers(0, (1 << 64) - 1),
    st.text(max_size=40),
    st.lists(st.text(max_size=10), max_size=5),
)
def test_real_messages_round_trip(
    pb: ModuleType, i32: int, u64: int, text: str, names: list[str]
) -> None:
    msg = pb.Outer(i32=i32, u64=u64, s=text, items=[pb.Inner(name=n, n=1) for n in names])
    fields = decode(msg.SerializeToString())
    assert fields is not None
    f = by_field(fields)
    if i32:
        assert f[1][0].get("signed", f[1][0]["value"]) == i32
    if u64:
        assert f[3][0]["value"] == u64
    if text:
        v = f[11][0]
        if v["encoding"] == "text":
            assert v["value"] == text
        elif v["encoding"] == "base64":
            assert base64.b64decode(v["value"]) == text.encode()
    assert len(f.get(15, [])) == len(names)
    for item, name in zip(f.get(15, []), names):
        assert item["encoding"] == "message"
        inner = by_field(item["value"])
        if name:
            got = inner[1][0]
            assert got["encoding"] != "text" or got["value"] == name
        assert inner[2][0]["value"] == 1
