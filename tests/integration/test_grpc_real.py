"""``shark-tui dissect`` on real gRPC traffic: a grpcio server and client (plaintext h2c on
127.0.0.1, stubs generated at test time from ``tests/peers/echo.proto``) captured by tcpdump;
entries (docs/ENTRIES.md, "grpc") checked against what the client sent and received and against
tshark's gRPC dissector.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration import oracle2
from tests.realpeers import DissectResult, capture, run_dissect
from tests.realpeers2 import Entry, by_connection, grpc_server, grpc_stubs, header_of, pairs

SERVICE = "shark.test.Echo"


@dataclass
class Rpc:
    """One call as the client saw it."""

    method: str  # "shark.test.Echo/Unary"
    requests: list[bytes]  # serialized messages
    replies: list[bytes] = field(default_factory=list)
    code: int = 0
    details: str | None = None
    compressed: bool = False  # request compressed by the client (gzip)
    t_start: float = 0.0
    t_end: float = 0.0


@dataclass
class Scenario:
    path: Path
    run: DissectResult
    rpcs: list[Rpc]
    port: int


def drive(port: int) -> list[Rpc]:
    pb2, pb2_grpc = grpc_stubs()
    rpcs: list[Rpc] = []
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb2_grpc.EchoStub(channel)

    def unary(req: Any, compression: Any = None) -> Rpc:
        r = Rpc(f"{SERVICE}/Unary", [req.SerializeToString()], t_start=time.time(),
                compressed=compression is not None)
        try:
            reply, call = stub.Unary.with_call(req, compression=compression, timeout=10)
            r.replies = [reply.SerializeToString()]
            r.code, r.details = call.code().value[0], call.details() or None
        except grpc.RpcError as exc:
            r.code, r.details = exc.code().value[0], exc.details()
        r.t_end = time.time()
        rpcs.append(r)
        return r

    unary(pb2.EchoRequest(text="wave hello", count=7, blob=b"\xff\xfe\x00\x01",
                          inner=pb2.Inner(name="ocean", id=42)))
    unary(pb2.EchoRequest(text="missing"))
    unary(pb2.EchoRequest(text="missing%"))
    # server streaming
    req = pb2.EchoRequest(text="go", count=5)
    r = Rpc(f"{SERVICE}/ServerStream", [req.SerializeToString()], t_start=time.time())
    call = stub.ServerStream(req, timeout=10)
    r.replies = [m.SerializeToString() for m in call]
    r.code, r.t_end = call.code().value[0], time.time()
    rpcs.append(r)
    # client streaming
    reqs = [pb2.EchoRequest(text=f"word{i}") for i in range(4)]
    r = Rpc(f"{SERVICE}/ClientStream", [m.SerializeToString() for m in reqs], t_start=time.time())
    reply, call = stub.ClientStream.with_call(iter(reqs), timeout=10)
    r.replies, r.code, r.t_end = [reply.SerializeToString()], call.code().value[0], time.time()
    rpcs.append(r)
    # bidi
    reqs = [pb2.EchoRequest(text=t) for t in ("west", "wind", "wave")]
    r = Rpc(f"{SERVICE}/Bidi", [m.SerializeToString() for m in reqs], t_start=time.time())
    call = stub.Bidi(iter(reqs), timeout=10)
    r.replies = [m.SerializeToString() for m in call]
    r.code, r.t_end = call.code().value[0], time.time()
    rpcs.append(r)
    # gzip both ways (the server compresses replies to texts starting with "gz")
    unary(pb2.EchoRequest(text="gz " + "wave " * 200, count=1), compression=grpc.Compression.Gzip)
    channel.close()
    return rpcs


@pytest.fixture(scope="module")
def main(capture_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    d = tmp_path_factory.mktemp("grpc")
    with grpc_server() as srv:
        with capture("lo", ports=[srv.port], path=d / "grpc.pcap") as cap:
            rpcs = drive(srv.port)
        port = srv.port
    assert cap.stats.get("dropped") == 0, cap.stats
    return Scenario(cap.path, run_dissect(cap.path), rpcs, port)


def grpc_entries(sc: Scenario) -> list[Entry]:
    conns = by_connection(sc.run.check().entries)
    mine = [v for k, v in conns.items() if k[1][1] == sc.port]
    assert len(mine) == 1, [(k, len(v)) for k, v in conns.items()]
    return mine[0]


def msg_data(m: dict[str, Any]) -> bytes:
    return base64.b64decode(m["data"])


def field_of(fields: list[dict[str, Any]], number: int) -> dict[str, Any]:
    got = [f for f in fields if f["field"] == number]
    assert len(got) == 1, (number, fields)
    return got[0]


# --------------------------------------------------------------------------------------------


def test_one_entry_per_rpc(main: Scenario) -> None:
    run = main.run.check()
    assert run.stderr_lines == [], run.stderr
    entries = grpc_entries(main)
    assert [(e["proto"], e["method"], e["status"]) for e in entries] == [
        ("grpc", r.method, r.code) for r in main.rpcs]
    for e, r in zip(entries, main.rpcs):
        where = f"{e['id']} {r.method}"
        assert e["summary"] == "/" + r.method, where
        assert e["error"] is None, (where, e["error"])
        assert e["stream_id"] == e["request"]["stream_id"], where
        assert e["request"]["version"] == "HTTP/2", where
        assert e["request"]["method"] == "POST" and e["request"]["path"] == "/" + r.method
        assert (header_of(e["request"], "content-type") or "").startswith("application/grpc"), where
        assert r.t_start - 0.005 <= e["ts"] <= r.t_end + 0.005, (where, e["ts"])
        assert e["latency_ms"] is not None and e["latency_ms"] >= 0


def test_status_and_message(main: Scenario) -> None:
    for e, r in zip(grpc_entries(main), main.rpcs):
        where = f"{e['id']} {r.method} {r.details}"
        resp = e["response"]
        assert resp is not None, where
        assert resp["grpc_status"] == r.code, where
        assert e["status"] == r.code, where
        if r.code != 0:
            assert resp["grpc_message"] == r.details, (where, resp["grpc_message"])
        else:
            assert resp["grpc_message"] in (None, ""), where


def test_message_counts_and_bytes(main: Scenario) -> None:
    for e, r in zip(grpc_entries(main), main.rpcs):
        where = f"{e['id']} {r.method}"
        req, resp = e["request"], e["response"]
        assert len(req["messages"]) == len(r.requests), (where, len(req["messages"]))
        assert len(resp.get("messages") or []) == len(r.replies), where
        for m, want in zip(req["messages"], r.requests):
            assert msg_data(m) == want, where
            assert m["compressed"] is r.compressed, where
            if not r.compressed:
                assert m["size"] == len(want), where
        for m, want in zip(resp.get("messages") or [], r.replies):
            assert msg_data(m) == want, where
            if not m["compressed"]:
                assert m["size"] == len(want), where


def test_schema_less_fields(main: Scenario) -> None:
    """ENTRIES.md: a ``len`` field carries ``encoding``: printable UTF-8 is text, else a nested
    decode when it parses as a message, else base64."""
    e = grpc_entries(main)[0]
    (m,) = e["request"]["messages"]
    fields = m["fields"]
    assert field_of(fields, 1) == {"field": 1, "wire_type": "len", "encoding": "text",
                                   "value": "wave hello"}
    assert field_of(fields, 2) == {"field": 2, "wire_type": "varint", "value": 7}
    blob = field_of(fields, 3)
    assert (blob["wire_type"], blob["encoding"]) == ("len", "base64"), blob
    assert base64.b64decode(blob["value"]) == b"\xff\xfe\x00\x01", blob
    inner = field_of(fields, 4)
    assert (inner["wire_type"], inner["encoding"]) == ("len", "message"), inner
    assert inner["value"] == [
        {"field": 1, "wire_type": "len", "encoding": "text", "value": "ocean"},
        {"field": 2, "wire_type": "varint", "value": 42}], inner
    (reply,) = e["response"]["messages"]
    assert field_of(reply["fields"], 1)["value"] == "wave hello"
    assert field_of(reply["fields"], 2)["value"] == 7
    assert field_of(reply["fields"], 3)["value"] == inner["value"]
    stream = next(x for x in grpc_entries(main) if x["method"].endswith("/ServerStream"))
    texts = [field_of(m["fields"], 1)["value"] for m in stream["response"]["messages"]]
    assert texts == [f"go-{i}" for i in range(5)]
    indexes = [[f["value"] for f in m["fields"] if f["field"] == 2]
               for m in stream["response"]["messages"]]
    assert indexes == [[], [1], [2], [3], [4]]  # proto3 leaves index 0 off the wire


def test_compression_decoded(main: Scenario) -> None:
    e = grpc_entries(main)[-1]
    r = main.rpcs[-1]
    assert r.compressed
    assert header_of(e["request"], "grpc-encoding") == "gzip"
    assert header_of(e["response"], "grpc-encoding") == "gzip"
    (q,) = e["request"]["messages"]
    (a,) = e["response"]["messages"]
    for m, want in ((q, r.requests[0]), (a, r.replies[0])):
        assert m["compressed"] is True, m
        assert m["size"] < len(want), (m["size"], len(want))  # the wire size, compressed
        assert msg_data(m) == want
        assert field_of(m["fields"], 1)["value"] == "gz " + "wave " * 200
        assert "decode_error" not in m


def test_trailers(main: Scenario) -> None:
    for e, r in zip(grpc_entries(main), main.rpcs):
        resp = e["response"]
        trailers = pairs(resp.get("trailers")) if resp.get("trailers") else []
        statuses = [v for k, v in pairs(resp["headers"]) + trailers if k == "grpc-status"]
        assert statuses == [str(r.code)], (e["id"], resp["headers"], resp.get("trailers"))
        if r.replies:  # a normal response: status in trailers, not in the headers
            assert "trailers" in resp and ("grpc-status", str(r.code)) in trailers


def test_matches_tshark(main: Scenario) -> None:
    msgs = oracle2.grpc_messages(main.path, [main.port])
    entries = grpc_entries(main)
    client = (entries[0]["src"]["ip"], entries[0]["src"]["port"])
    want_up = sorted((m.length, m.compressed) for m in msgs if m.src == client)
    want_down = sorted((m.length, m.compressed) for m in msgs if m.dst == client)
    got_up = sorted((m["size"], m["compressed"]) for e in entries for m in e["request"]["messages"])
    got_down = sorted((m["size"], m["compressed"]) for e in entries
                      for m in e["response"].get("messages") or [])
    assert got_up == want_up
    assert got_down == want_down
    streams = oracle2.h2_streams(main.path, [main.port])
    (ostreams,) = streams.values()
    assert [(e["stream_id"], e["summary"]) for e in entries] == [
        (sid, o.path) for sid, o in sorted(ostreams.items())]


def test_filter_grpc(main: Scenario) -> None:
    run = run_dissect(main.path, "--filter", "grpc and status == 5").check()
    assert [e["method"] for e in run.entries] == [f"{SERVICE}/Unary"] * 2


def test_harness_tshark_agrees_with_the_client(main: Scenario) -> None:
    """No shark-tui here: the oracle's message sizes equal the client's uncompressed ones."""
    msgs = oracle2.grpc_messages(main.path, [main.port])
    plain = [r for r in main.rpcs if not r.compressed]
    n_up = sum(len(r.requests) for r in main.rpcs)
    n_down = sum(len(r.replies) for r in main.rpcs)
    server = ("127.0.0.1", main.port)
    assert len([m for m in msgs if m.dst == server]) == n_up
    assert len([m for m in msgs if m.src == server]) == n_down
    want = sorted(len(b) for r in plain for b in r.requests + r.replies)
    got = sorted(m.length for m in msgs if not m.compressed)
    assert got == want
