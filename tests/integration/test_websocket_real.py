"""``shark-tui dissect`` on real WebSocket traffic: an aiohttp server, an aiohttp client and a
raw-socket client (a real ``101`` upgrade, then hand-made frames: fragmented messages, a ping
between fragments, a close with a reason), captured by tcpdump; entries (docs/ENTRIES.md,
"websocket") checked against the frames each side sent and against tshark.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import realpeers
from tests.integration import oracle2
from tests.realpeers import DissectResult, capture, run_dissect
from tests.realpeers2 import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Entry,
    body_bytes,
    by_connection,
    ws_connect_raw,
    ws_server,
)

BODY_CAP = 64 * 1024
OPNAMES = {OP_TEXT: "text", OP_BINARY: "binary", OP_CLOSE: "close"}


@dataclass
class Msg:
    """One WebSocket message (fragments assembled) as its sender or receiver knew it."""

    from_client: bool
    opcode: int
    payload: bytes
    fragments: int = 1
    wire_size: int | None = None  # bytes of all its frames on the wire, when known
    close_code: int | None = None
    close_reason: str | None = None


@dataclass
class Conn:
    local: tuple[str, int]
    msgs: list[Msg] = field(default_factory=list)


def frame_size(n: int, masked: bool) -> int:
    return 2 + (0 if n < 126 else 2 if n < 65536 else 8) + (4 if masked else 0) + n


def close_msg(from_client: bool, payload: bytes, wire: int | None) -> Msg:
    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    reason = payload[2:].decode() if len(payload) > 2 else ""
    return Msg(from_client, OP_CLOSE, payload, 1, wire, code, reason)


async def aiohttp_client(port: int) -> Conn:
    local = ("127.0.0.1", realpeers.free_port())
    conn = Conn(local)
    connector = aiohttp.TCPConnector(local_addr=local)
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.ws_connect(f"http://127.0.0.1:{port}/ws", compress=0,
                               autoclose=False) as ws:

        def sent(op: int, data: bytes) -> None:
            conn.msgs.append(Msg(True, op, data, 1, frame_size(len(data), True)))

        async def got() -> Any:
            m = await ws.receive(timeout=10)
            if m.type == aiohttp.WSMsgType.TEXT:
                data = m.data.encode()
                conn.msgs.append(Msg(False, OP_TEXT, data, 1, frame_size(len(data), False)))
            elif m.type == aiohttp.WSMsgType.BINARY:
                conn.msgs.append(Msg(False, OP_BINARY, m.data, 1,
                                     frame_size(len(m.data), False)))
            elif m.type == aiohttp.WSMsgType.CLOSE:
                payload = struct.pack("!H", m.data) + (m.extra or "").encode()
                conn.msgs.append(close_msg(False, payload, frame_size(len(payload), False)))
            return m

        await ws.send_str("hello ws ☃")
        sent(OP_TEXT, "hello ws ☃".encode())
        await got()
        blob = bytes(range(256)) * 2
        await ws.send_bytes(blob)
        sent(OP_BINARY, blob)
        await got()
        await ws.send_str("bin 70000")
        sent(OP_TEXT, b"bin 70000")
        await got()
        await ws.ping(b"are you there")  # the pong is counted, not listed
        long_text = "long " + "x" * 300
        await ws.send_str(long_text)
        sent(OP_TEXT, long_text.encode())
        await got()
        await ws.send_str("close 4000 bye now")
        sent(OP_TEXT, b"close 4000 bye now")
        m = await got()
        assert m.type == aiohttp.WSMsgType.CLOSE, m
        await ws.close(code=4000, message=b"ok then")  # the client's answer to the close
        conn.msgs.append(close_msg(True, struct.pack("!H", 4000) + b"ok then",
                                   frame_size(9, True)))
    return conn


def raw_client(port: int) -> Conn:
    ws = ws_connect_raw("127.0.0.1", port, "/ws")
    conn = Conn(ws.local)

    def recv_msg() -> None:
        f = ws.read_frame()
        while f.opcode == OP_PONG:
            f = ws.read_frame()
        if f.opcode == OP_CLOSE:
            conn.msgs.append(close_msg(False, f.payload, len(f.wire)))
        else:
            conn.msgs.append(Msg(False, f.opcode, f.payload, 1, len(f.wire)))

    # a text message in three fragments, with a ping between two of them
    w = [ws.send_frame(OP_TEXT, b"frag", fin=False),
         ws.send_frame(OP_CONT, b"ment", fin=False)]
    ws.send_frame(OP_PING, b"mid-message ping")
    w.append(ws.send_frame(OP_CONT, b"ed!", fin=True))
    conn.msgs.append(Msg(True, OP_TEXT, b"fragmented!", 3, sum(map(len, w))))
    pong = ws.read_frame()
    assert pong.opcode == OP_PONG and pong.payload == b"mid-message ping"
    recv_msg()
    # a binary message in two fragments, one of them empty
    data = bytes([0, 255, 1, 254]) * 100
    w = [ws.send_frame(OP_BINARY, data, fin=False), ws.send_frame(OP_CONT, b"", fin=True)]
    conn.msgs.append(Msg(True, OP_BINARY, data, 2, sum(map(len, w))))
    recv_msg()
    # a normal close with a reason
    payload = struct.pack("!H", 1000) + b"done here"
    wire = ws.send_frame(OP_CLOSE, payload)
    conn.msgs.append(close_msg(True, payload, len(wire)))
    recv_msg()
    ws.close()
    return conn


@dataclass
class Scenario:
    path: Path
    run: DissectResult
    conns: list[Conn]
    port: int


@pytest.fixture(scope="module")
def main(capture_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    d = tmp_path_factory.mktemp("ws")
    with ws_server() as srv, capture("lo", ports=[srv.port], path=d / "ws.pcap") as cap:
        a = asyncio.run(aiohttp_client(srv.port))
        b = raw_client(srv.port)
    assert cap.stats.get("dropped") == 0, cap.stats
    return Scenario(cap.path, run_dissect(cap.path), [a, b], srv.port)


def ws_entries(sc: Scenario, conn: Conn) -> tuple[list[Entry], list[Entry]]:
    """(http entries, websocket entries) of the connection."""
    conns = by_connection(sc.run.check().entries)
    mine = [v for k, v in conns.items() if k[0] == conn.local]
    assert len(mine) == 1, (conn.local, list(conns))
    return ([e for e in mine[0] if e["proto"] != "websocket"],
            [e for e in mine[0] if e["proto"] == "websocket"])


# --------------------------------------------------------------------------------------------


def test_upgrade_stays_http(main: Scenario) -> None:
    run = main.run.check()
    assert run.stderr_lines == [], run.stderr
    for conn in main.conns:
        http, _ = ws_entries(main, conn)
        assert [(e["proto"], e["method"], e["summary"], e["status"]) for e in http] == [
            ("http", "GET", "/ws", 101)]


@pytest.mark.parametrize("which", [0, 1], ids=["aiohttp-client", "raw-client"])
def test_messages_match_what_was_sent(main: Scenario, which: int) -> None:
    conn = main.conns[which]
    http, entries = ws_entries(main, conn)
    got = [(e["request"] is not None, e["method"]) for e in entries]
    want = [(m.from_client, OPNAMES[m.opcode]) for m in conn.msgs]
    assert got == want
    for e, m in zip(entries, conn.msgs):
        where = f"{e['id']} {OPNAMES[m.opcode]} from {'client' if m.from_client else 'server'}"
        assert e["error"] is None and e["latency_ms"] is None, where
        assert e["path"] == "/ws", where
        assert e["host"] == f"127.0.0.1:{main.port}", (where, e.get("host"))
        msg = e["request"] if m.from_client else e["response"]
        other = e["response"] if m.from_client else e["request"]
        assert other is None, where
        assert msg["opcode"] == OPNAMES[m.opcode], where
        assert msg["fin"] is True, where
        assert msg["masked"] is m.from_client, where
        assert msg["fragments"] == m.fragments, (where, msg["fragments"])
        got_body = body_bytes(msg)
        if m.opcode == OP_CLOSE:
            assert e["status"] == m.close_code, where
            assert msg["close_code"] == m.close_code, where
            assert msg["close_reason"] == m.close_reason, where
            assert e["summary"].rstrip() == f"close {m.close_code} {m.close_reason}".rstrip(), (
                where, e["summary"])
            continue
        assert e["status"] is None, where
        assert msg["body_size"] == len(m.payload), where
        if len(m.payload) > BODY_CAP:
            assert msg["body_truncated"] and m.payload.startswith(got_body), where
        else:
            assert got_body == m.payload, (where, got_body[:60], m.payload[:60])
        if m.opcode == OP_TEXT:
            assert e["summary"] == m.payload.decode()[:200], where
        else:
            assert e["summary"] == f"{len(m.payload)} bytes", where
        size = e["request_size"] if m.from_client else e["response_size"]
        assert size == m.wire_size, (where, size, m.wire_size)
        assert http[0]["ts"] <= e["ts"], where


def test_matches_tshark(main: Scenario) -> None:
    frames = oracle2.ws_frames(main.path, [main.port])
    for conn in main.conns:
        _, entries = ws_entries(main, conn)
        mine = [f for f in frames if conn.local in (f.src, f.dst)]
        msgs = []  # assemble tshark's frames into messages, dropping control frames
        for f in mine:
            if f.opcode in (OP_PING, OP_PONG):
                continue
            if f.opcode != OP_CONT:
                msgs.append([f.src == conn.local, f.opcode, 1, f])
            else:
                msgs[-1][2] += 1
                msgs[-1][3] = f
        want = [(fc, OPNAMES[op], n) for fc, op, n, _ in msgs]
        got = [(e["request"] is not None, e["method"],
                (e["request"] or e["response"])["fragments"]) for e in entries]
        assert got == want
        for e, (_, op, _, last) in zip(entries, msgs):
            if op == OP_TEXT and last.text is not None:
                assert body_bytes(e["request"] or e["response"]).decode() == last.text
            if op == OP_CLOSE:
                assert e["status"] == last.close_code


def test_harness_tshark_agrees_with_the_clients(main: Scenario) -> None:
    """No shark-tui involved: tshark's frames match the clients' records."""
    frames = oracle2.ws_frames(main.path, [main.port])
    for conn in main.conns:
        mine = [f for f in frames if conn.local in (f.src, f.dst) and f.opcode not in
                (OP_PING, OP_PONG, OP_CONT)]
        assert [(f.src == conn.local, f.opcode) for f in mine] == [
            (m.from_client, m.opcode) for m in conn.msgs]
        for f, m in zip(mine, conn.msgs):
            assert f.masked is m.from_client
            if m.opcode == OP_CLOSE:
                assert (f.close_code, f.close_reason or "") == (m.close_code, m.close_reason)


def test_filter_websocket(main: Scenario) -> None:
    run = run_dissect(main.path, "--filter", 'proto == "websocket" and method == "close"').check()
    assert sorted(e["status"] for e in run.entries) == sorted(
        m.close_code for c in main.conns for m in c.msgs if m.opcode == OP_CLOSE)
