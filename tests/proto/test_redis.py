"""The Redis dissector on byte streams captured from a real redis-server.

A redis-server 7.0 runs on loopback; a tiny TCP relay between redis-py (or a raw socket) and the
server records the exact bytes each side sent, in order. Those bytes are then fed to the
dissector and what it made of them is compared with what redis-py returned.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from shark_tui.proto.base import (
    CLIENT,
    NO_REQUEST,
    NO_RESPONSE,
    SERVER,
    TRUNCATED,
    Desynced,
    Event,
    Exchange,
    ExchangeCompleted,
)
from shark_tui.proto.redis import RedisDissector

# -- a real server and a recording relay ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Conn:
    """The bytes one relayed TCP connection carried: (direction, data, ts) in causal order."""

    chunks: list[tuple[int, bytes, float]] = field(default_factory=list)

    def data(self, direction: int) -> bytes:
        return b"".join(d for dr, d, _ in self.chunks if dr == direction)


class Relay:
    """Listens on loopback; each accepted connection is relayed to ``upstream`` and recorded."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.conns: list[Conn] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._stopped = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                down, _ = self._sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            conn = Conn()
            with self._lock:
                self.conns.append(conn)
            for src, dst, direction in ((down, up, CLIENT), (up, down, SERVER)):
                t = threading.Thread(
                    target=self._pump, args=(src, dst, direction, conn), daemon=True
                )
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: int, conn: Conn) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            with self._lock:  # recorded before it is forwarded: causal order
                conn.chunks.append((direction, data, time.time()))
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._stopped = True
        self._sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    exe = shutil.which("redis-server")
    assert exe is not None, "redis-server is needed (Debian package redis-server)"
    port = _free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 10
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def record(port: int, scenario: Callable[[int], Any]) -> tuple[list[Conn], Any]:
    """Run ``scenario(relay_port)``; returns the recorded connections and what it returned."""
    relay = Relay(port)
    try:
        result = scenario(relay.port)
        time.sleep(0.05)
    finally:
        relay.close()
    return relay.conns, result


def dissect(conn: Conn, **kw: Any) -> tuple[list[Exchange], list[Event], RedisDissector]:
    d = RedisDissector(**kw)
    events: list[Event] = []
    last = 0.0
    for direction, data, ts in conn.chunks:
        events += d.feed(direction, data, ts)
        last = ts
    events += d.finish(last + 1)
    exchanges = [e.exchange for e in events if isinstance(e, ExchangeCompleted)]
    assert d.stats["internal_errors"] == 0
    return exchanges, events, d


def plain(node: dict[str, Any] | None) -> Any:
    """A typed reply as redis-py (decode_responses=True) returns it, before its callbacks."""
    if node is None:
        return None
    t = node["type"]
    v: Any = node.get("value")
    if t in ("bulk", "verbatim", "blob_error") and node.get("encoding") == "base64":
        return base64.b64decode(v)
    if t in ("array", "push"):
        return [plain(x) for x in v]
    if t == "set":
        return {plain(x) for x in v}
    if t in ("map", "attribute"):
        return {plain(k): plain(x) for k, x in v}
    if t == "big_number":
        return int(v)
    return v


def req(e: Exchange) -> dict[str, Any]:
    assert e.request is not None
    return e.request


def res(e: Exchange) -> dict[str, Any]:
    assert e.response is not None
    return e.response


def user_exchanges(exchanges: list[Exchange]) -> list[Exchange]:
    """Without redis-py's connection set-up (CLIENT SETINFO, HELLO)."""
    return [
        e
        for e in exchanges
        if not (e.method == "CLIENT" and e.summary in ("SETINFO", "SETNAME", "MAINT_NOTIFICATIONS"))
        and e.method != "HELLO"
    ]


def check_sizes(conn: Conn, exchanges: list[Exchange]) -> None:
    """Every wire byte belongs to exactly one entry (when nothing was skipped)."""
    assert sum(e.request_size or 0 for e in exchanges) == len(conn.data(CLIENT))
    assert sum(e.response_size or 0 for e in exchanges) == len(conn.data(SERVER))


# -- tests ---------------------------------------------------------------------------------


def _pipeline(port: int) -> list[Any]:
    r: Any = redis.Redis(port=port, decode_responses=True, protocol=2)
    r.flushall()
    p = r.pipeline(transaction=False)
    for i in range(50):
        k = f"key:{i % 7}"
        match i % 5:
            case 0:
                p.set(k, f"value {i}")
            case 1:
                p.get(k)
            case 2:
                p.incr(f"n:{i % 3}")
            case 3:
                p.rpush(f"list:{i % 2}", i, "é")
            case _:
                p.lrange(f"list:{i % 2}", 0, -1)
    out: list[Any] = p.execute(raise_on_error=False)
    r.close()
    return out


def test_pipeline_of_50(server: int) -> None:
    conns, results = record(server, _pipeline)
    (conn,) = conns
    exchanges, events, _ = dissect(conn)
    assert not [e for e in events if isinstance(e, Desynced)]
    check_sizes(conn, exchanges)
    ex = user_exchanges(exchanges)
    assert ex[0].method == "FLUSHALL"
    ex = ex[1:]
    assert len(ex) == 50 == len(results)
    methods = ["SET", "GET", "INCRBY", "RPUSH", "LRANGE"]
    for i, (e, want) in enumerate(zip(ex, results)):
        assert e.proto == "redis" and e.error is None
        assert e.method == methods[i % 5] or (i % 5 == 2 and e.method == "INCR")
        assert e.summary == req(e)["args"][1]
        assert req(e)["inline"] is False
        assert e.latency_ms is not None and e.latency_ms >= 0
        got = plain(res(e)["reply"])
        if want is True:
            assert e.status == "OK" and got == "OK"
        else:
            assert got == want
            assert (
                e.status
                == {int: "integer", str: "bulk", list: "array", type(None): "null"}[type(want)]
            )
    # pipelined: all commands share the first command's ts order, replies pair by order
    assert [e.ts for e in ex] == sorted(e.ts for e in ex)


def _resp3(port: int) -> dict[str, Any]:
    r: Any = redis.Redis(port=port, protocol=3, decode_responses=True)
    other: Any = redis.Redis(port=port, decode_responses=True)
    out: dict[str, Any] = {}
    r.delete("h", "s", "z", "tracked")
    r.hset("h", mapping={"a": "1", "b": "2"})
    out["hgetall"] = r.hgetall("h")
    r.sadd("s", "x", "y", "z")
    out["smembers"] = r.smembers("s")
    r.zadd("z", {"m": 1.5})
    out["zscore"] = r.zscore("z", "m")
    out["bignum"] = r.execute_command("DEBUG", "PROTOCOL", "bignum")
    out["verbatim"] = r.execute_command("DEBUG", "PROTOCOL", "verbatim")
    out["true"] = r.execute_command("DEBUG", "PROTOCOL", "true")
    out["null"] = r.execute_command("DEBUG", "PROTOCOL", "null")
    r.execute_command("CLIENT", "TRACKING", "on")
    r.set("tracked", "1")
    r.get("tracked")
    other.set("tracked", "2")  # the server pushes an invalidation to r
    time.sleep(0.1)
    out["ping"] = r.ping()
    other.close()
    r.close()
    return out


def test_resp3_types_and_pushes(server: int) -> None:
    conns, out = record(server, _resp3)
    conn = next(c for c in conns if b"HELLO" in c.data(CLIENT))
    exchanges, events, d = dissect(conn)
    assert not [e for e in events if isinstance(e, Desynced)]
    check_sizes(conn, exchanges)
    hello = next(e for e in exchanges if e.method == "HELLO")
    assert hello.status == "map" and res(hello)["resp"] == 3
    assert plain(res(hello)["reply"])["proto"] == 3
    assert d.resp == 3
    by: dict[str, Exchange] = {}
    for e in exchanges:
        key = e.method if e.method != "DEBUG" else req(e)["args"][2]
        by.setdefault(str(key), e)
    assert by["HGETALL"].status == "map"
    assert plain(res(by["HGETALL"])["reply"]) == out["hgetall"]
    assert by["SMEMBERS"].status == "set"
    assert plain(res(by["SMEMBERS"])["reply"]) == out["smembers"]
    assert by["ZSCORE"].status == "double"
    assert plain(res(by["ZSCORE"])["reply"]) == out["zscore"] == 1.5
    assert by["bignum"].status == "big_number"
    assert plain(res(by["bignum"])["reply"]) == int(out["bignum"])
    verb = res(by["verbatim"])["reply"]
    assert verb["type"] == "verbatim" and verb["format"] == "txt"
    assert verb["value"] == out["verbatim"]
    assert by["true"].status == "boolean" and res(by["true"])["reply"]["value"] is True
    assert by["null"].status == "null"
    pushes = [e for e in exchanges if e.request is None]
    assert [p.method for p in pushes] == ["invalidate"]
    assert pushes[0].summary == "tracked" and pushes[0].error is None
    assert pushes[0].status == "push" and res(pushes[0])["push"] is True
    ping = [e for e in exchanges if e.method == "PING"]
    assert ping[-1].status == "simple" and plain(res(ping[-1])["reply"]) == "PONG"
    assert all(e.error is None for e in exchanges)


def _raw(port: int, payload: bytes, ends: bytes) -> bytes:
    """Send ``payload`` on a raw socket; read until the server's bytes end with ``ends``."""
    data = b""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(payload)
        while not data.endswith(ends):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    return data


def test_resp3_attribute_is_attached(server: int) -> None:
    # redis-py cannot read attributes (InvalidResponse: Protocol Error: b'|1'): raw socket.
    payload = b"HELLO 3\r\nDEBUG PROTOCOL attrib\r\nPING\r\n"
    conns, data = record(server, lambda port: _raw(port, payload, b"+PONG\r\n"))
    (conn,) = conns
    assert b"|1\r\n" in data
    exchanges, _, _ = dissect(conn)
    check_sizes(conn, exchanges)
    assert [e.method for e in exchanges] == ["HELLO", "DEBUG", "PING"]
    attrib = res(exchanges[1])["reply"]
    assert attrib["type"] == "bulk" and attrib["value"].startswith("Some real reply")
    ((key, value),) = attrib["attributes"]
    assert plain(key) == "key-popularity"
    assert plain(value)[0] == "key:123"
    assert exchanges[2].status == "simple"


def _pubsub(port: int, protocol: int) -> list[Any]:
    r: Any = redis.Redis(port=port, decode_responses=True, protocol=protocol)
    p = r.pubsub()
    p.subscribe("a", "b", "c")
    p.psubscribe("p*")
    got: list[Any] = []
    deadline = time.time() + 5
    while len([m for m in got if m["type"] in ("subscribe", "psubscribe")]) < 4:
        m = p.get_message(timeout=0.5)
        if m:
            got.append(m)
        assert time.time() < deadline
    r.publish("a", "one")
    r.publish("b", "two")
    r.publish("px", "three")
    while len([m for m in got if m["type"] in ("message", "pmessage")]) < 3:
        m = p.get_message(timeout=0.5)
        if m:
            got.append(m)
        assert time.time() < deadline
    p.unsubscribe()
    p.punsubscribe()
    while len([m for m in got if m["type"] in ("unsubscribe", "punsubscribe")]) < 4:
        m = p.get_message(timeout=0.5)
        if m:
            got.append(m)
        assert time.time() < deadline
    p.close()
    r.close()
    return got


@pytest.mark.parametrize("protocol", [2, 3])
def test_pubsub(server: int, protocol: int) -> None:
    conns, got = record(server, lambda port: _pubsub(port, protocol))
    conn = next(c for c in conns if b"SUBSCRIBE" in c.data(CLIENT))
    exchanges, events, _ = dissect(conn)
    assert not [e for e in events if isinstance(e, Desynced)]
    check_sizes(conn, exchanges)
    assert all(e.error is None for e in exchanges)
    sub = next(e for e in exchanges if e.method == "SUBSCRIBE")
    assert sub.summary == "a"
    assert [plain(x)[:2] for x in res(sub)["replies"]] == [
        ["subscribe", "a"],
        ["subscribe", "b"],
        ["subscribe", "c"],
    ]
    assert sub.status == ("array" if protocol == 2 else "push")
    psub = next(e for e in exchanges if e.method == "PSUBSCRIBE")
    assert len(res(psub)["replies"]) == 1
    pushes = [e for e in exchanges if e.request is None]
    want = [(m["type"], m["channel"], m["data"]) for m in got if "message" in m["type"]]
    assert [(p.method, p.summary, plain(res(p)["reply"])[-1]) for p in pushes] == want
    assert {p.method for p in pushes} == {"message", "pmessage"}
    unsub = next(e for e in exchanges if e.method == "UNSUBSCRIBE")
    assert req(unsub)["args"] == ["UNSUBSCRIBE"]
    assert sorted(plain(x)[1] for x in res(unsub)["replies"]) == ["a", "b", "c"]
    punsub = next(e for e in exchanges if e.method == "PUNSUBSCRIBE")
    assert [plain(x)[1] for x in res(punsub)["replies"]] == ["p*"]


def _multi(port: int) -> tuple[list[Any], str]:
    r: Any = redis.Redis(port=port, decode_responses=True, protocol=2)
    r.delete("m", "ml")
    r.set("s", "text")
    p = r.pipeline(transaction=True)
    p.set("m", "1").incr("m").lpush("s", "x").rpush("ml", "a", "b")
    out = p.execute(raise_on_error=False)
    try:
        r.lpush("s", "y")
        raise AssertionError("WRONGTYPE expected")
    except redis.ResponseError as exc:
        err = str(exc)
    r.close()
    return out, err


def test_multi_exec_and_errors(server: int) -> None:
    conns, (results, err) = record(server, _multi)
    (conn,) = conns
    exchanges, _, _ = dissect(conn)
    check_sizes(conn, exchanges)
    ex = user_exchanges(exchanges)
    names = [e.method for e in ex]
    i = names.index("MULTI")
    assert names[i : i + 6] == ["MULTI", "SET", "INCRBY", "LPUSH", "RPUSH", "EXEC"] or names[
        i : i + 6
    ] == ["MULTI", "SET", "INCR", "LPUSH", "RPUSH", "EXEC"]
    assert ex[i].status == "OK"
    for e in ex[i + 1 : i + 5]:
        assert e.status == "simple" and plain(res(e)["reply"]) == "QUEUED"
    exec_ = ex[i + 5]
    assert exec_.status == "array"
    reply = plain(res(exec_)["reply"])
    assert reply[0] == "OK" and results[0] is True
    assert reply[1] == results[1] == 2
    assert res(exec_)["reply"]["value"][2]["type"] == "error"
    assert reply[2] == str(results[2])
    assert reply[3] == results[3] == 2
    wrong = ex[-1]
    assert wrong.method == "LPUSH" and wrong.summary == "s"
    assert wrong.status == err
    assert err.startswith("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert wrong.error is None


def _big(port: int) -> int:
    r: Any = redis.Redis(port=port, protocol=2)
    value = bytes(range(256)) * 4096  # 1 MiB, not text
    r.set("big", value)
    got = r.get("big")
    r.close()
    assert got == value
    return len(value)


def test_one_megabyte_value(server: int) -> None:
    conns, size = record(server, _big)
    (conn,) = conns
    exchanges, _, _ = dissect(conn, body_cap=1000)
    check_sizes(conn, exchanges)
    ex = user_exchanges(exchanges)
    s, g = ex[-2], ex[-1]
    assert s.method == "SET" and s.status == "OK" and s.error is None
    assert req(s)["args_truncated"] == [2] and req(s)["args_base64"] == [2]
    assert len(base64.b64decode(req(s)["args"][2])) == 1000
    assert s.request_size == len(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n\r\n" % size) + size
    assert g.method == "GET" and g.status == "bulk" and g.error is None
    reply = res(g)["reply"]
    assert reply["size"] == size and reply["truncated"] is True
    assert base64.b64decode(reply["value"]) == bytes(range(256)) * 3 + bytes(range(232))
    assert g.response_size == len(b"$%d\r\n\r\n" % size) + size


def _inline(port: int) -> list[bytes]:
    lines = [b"PING\r\n", b'SET ik "hello world"\r\n', b"GET ik\r\n", b"\r\n", b"ECHO 'a b'\n"]
    out: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port)) as s:
        for line in lines:
            s.sendall(line)
            if line.strip():
                out.append(s.recv(1024))
    return out


def test_inline_commands(server: int) -> None:
    conns, replies = record(server, _inline)
    (conn,) = conns
    exchanges, _, d = dissect(conn)
    assert sum(e.request_size or 0 for e in exchanges) == len(conn.data(CLIENT)) - 2
    assert sum(e.response_size or 0 for e in exchanges) == len(conn.data(SERVER))
    assert [req(e)["args"] for e in exchanges] == [
        ["PING"],
        ["SET", "ik", "hello world"],
        ["GET", "ik"],
        ["ECHO", "a b"],
    ]
    assert all(req(e)["inline"] for e in exchanges)
    assert [e.status for e in exchanges] == ["simple", "OK", "bulk", "bulk"]
    assert (
        plain(res(exchanges[2])["reply"]) == "hello world" == replies[2].split(b"\r\n")[1].decode()
    )
    assert d.stats["ignored_commands"] == 1


def _client_reply(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"CLIENT REPLY SKIP\r\nSET a 1\r\nGET a\r\n")
        assert s.recv(100) == b"$1\r\n1\r\n"
        s.sendall(b"CLIENT REPLY OFF\r\nSET a 2\r\nGET a\r\nCLIENT REPLY ON\r\nGET a\r\n")
        data = b""
        while not data.endswith(b"$1\r\n2\r\n"):
            data += s.recv(100)
        assert data == b"+OK\r\n$1\r\n2\r\n"


def test_client_reply_off_and_skip(server: int) -> None:
    conns, _ = record(server, _client_reply)
    (conn,) = conns
    exchanges, _, _ = dissect(conn)
    got = [(" ".join(req(e)["args"]), e.status, e.error) for e in exchanges]
    assert got == [
        ("CLIENT REPLY SKIP", None, None),
        ("SET a 1", None, None),
        ("GET a", "bulk", None),
        ("CLIENT REPLY OFF", None, None),
        ("SET a 2", None, None),
        ("GET a", None, None),
        ("CLIENT REPLY ON", "OK", None),
        ("GET a", "bulk", None),
    ]
    assert [bool(req(e).get("no_reply")) for e in exchanges] == [1, 1, 0, 1, 1, 1, 0, 0]


# -- hand-made streams ---------------------------------------------------------------------


def _ex(events: list[Event]) -> list[Exchange]:
    return [e.exchange for e in events if isinstance(e, ExchangeCompleted)]


def test_midstream_never_invents_pairings() -> None:
    d = RedisDissector(midstream=True)
    ev = d.feed(CLIENT, b"lo\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", 2.0)
    # the tail of an earlier reply, one whole earlier reply, then GET's reply
    ev += d.feed(SERVER, b"ld\r\n:5\r\n", 1.5)
    ev += d.feed(SERVER, b"$1\r\nv\r\n", 2.5)
    ev += d.finish(3.0)
    ex = _ex(ev)
    assert [(e.method, e.status, e.error) for e in ex] == [
        (None, "integer", NO_REQUEST),
        ("GET", "bulk", None),
    ]
    des = [e for e in ev if isinstance(e, Desynced)]
    assert {e.direction for e in des} == {CLIENT, SERVER}


def test_gap_inside_bulk_truncates_only_that_value() -> None:
    d = RedisDissector()
    ev = d.feed(CLIENT, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n", 1.0)
    ev += d.feed(SERVER, b"$10\r\nabc", 1.1)
    ev += d.gap(SERVER, 5, 1.1)
    ev += d.feed(SERVER, b"ij\r\n+PONG\r\n", 1.2)
    ex = _ex(ev)
    assert [(e.method, e.error) for e in ex] == [("GET", TRUNCATED), ("PING", None)]
    assert res(ex[0])["reply"]["truncated"] is True
    assert ex[0].response_size == 5 + 10 + 2


def test_gap_outside_bulk_desyncs_without_guessing() -> None:
    d = RedisDissector()
    ev = d.feed(CLIENT, b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n", 1.0)
    ev += d.gap(SERVER, 7, 1.1)  # the first +PONG was lost
    ev += d.feed(SERVER, b"+PONG\r\n", 1.2)
    ev += d.feed(CLIENT, b"*1\r\n$4\r\nPING\r\n", 1.3)
    ev += d.feed(SERVER, b"+PONG\r\n", 1.4)
    ex = _ex(ev)
    assert [(e.method, e.error) for e in ex] == [
        ("PING", NO_RESPONSE),
        ("PING", NO_RESPONSE),
        (None, NO_REQUEST),
        ("PING", None),
    ]
    assert any(isinstance(e, Desynced) and e.direction == SERVER for e in ev)


def test_expire_keeps_the_place_of_a_blocking_command() -> None:
    d = RedisDissector()
    ev = d.feed(CLIENT, b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n", 1.0)
    ev += d.expire(100.0)
    ev += d.feed(CLIENT, b"*1\r\n$4\r\nPING\r\n", 101.0)
    ev += d.feed(SERVER, b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n+PONG\r\n", 102.0)
    ex = _ex(ev)
    assert [(e.method, e.error, e.status) for e in ex] == [
        ("BLPOP", NO_RESPONSE, None),
        ("PING", None, "simple"),
    ]
    assert d.stats["late_replies"] == 1


def test_caps_hold() -> None:
    d = RedisDissector(body_cap=4)
    deep = b"*1\r\n" * 40 + b":1\r\n"
    ev = d.feed(CLIENT, b"*1\r\n$4\r\nPING\r\n", 1.0)
    ev += d.feed(SERVER, deep, 1.1)
    assert any(isinstance(e, Desynced) for e in ev + d.finish(2.0))
    d = RedisDissector(body_cap=4)
    many = b"*2000\r\n" + b":1\r\n" * 2000
    ev = d.feed(CLIENT, b"*1\r\n$4\r\nPING\r\n", 1.0) + d.feed(SERVER, many, 1.1)
    (e,) = _ex(ev)
    assert res(e)["reply"]["count"] == 2000 and res(e)["reply"]["truncated"] is True
    assert len(res(e)["reply"]["value"]) == 1024
    assert e.response_size == len(many)
