"""The daemon's query server.

Fine-grained behaviour runs a `Server` in this process over a `Recorder` fed with synthetic
packets (`Recorder.add`); the faults a hostile or broken peer can cause run against the real
``shark-tui daemon`` capturing ``lo`` (root), with raw sockets for the peers and `Client` for
the good one that checks the daemon afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shark_tui.engine import server as server_mod
from shark_tui.engine import wire
from shark_tui.engine.client import Client, ClientError, RequestFailed
from shark_tui.engine.filter import compile_filter
from shark_tui.engine.query import QueryEngine, summary
from shark_tui.engine.server import Server, ensure_token, parse_listen
from shark_tui.engine.store import Recorder
from tests.engine import fixtures_pcap as fx
from tests.engine.http_traffic import (
    REQ,
    T0,
    DaemonProc,
    http_server,
    make_traffic,
    synthetic_flow,
)

T = TypeVar("T")
TOKEN = "t0k"
HEAD = struct.Struct(">BI")


def arun(coro: Awaitable[T], timeout: float = 20.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


async def with_client(address: str, fn: Callable[[Client], Awaitable[T]], token: str = TOKEN) -> T:
    c = await Client.connect(address, token)
    try:
        return await fn(c)
    finally:
        await c.close()


async def collect(
    c: Client, text: str = "", **kw: Any
) -> tuple[list[dict[str, Any]], list[wire.Message]]:
    """A non-following subscription: its entries and every message it got."""
    entries: list[dict[str, Any]] = []
    msgs: list[wire.Message] = []
    async for m in c.subscribe(text, follow=False, **kw):
        msgs.append(m)
        if isinstance(m, wire.EntriesAppended):
            entries += m.entries
    return entries, msgs


class Raw:
    """A peer on a plain socket: sends what it is told, reads frames until the server closes."""

    def __init__(self, address: str, rcvbuf: int = 0) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # set before connecting: no autotuning, the kernel holds little for us
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, int(port)))
        self.sock.settimeout(10)
        self.decoder = wire.FrameDecoder()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def hello(self, token: str = TOKEN, version: int = wire.VERSION) -> None:
        self.send(wire.encode(wire.Hello(version=version, token=token)))

    def read_until_closed(self, timeout: float = 10.0) -> list[wire.Message]:
        """Every message until EOF (a reset counts as closed too); fail if still open."""
        out: list[wire.Message] = []
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return out
            except TimeoutError:
                raise AssertionError(f"the server kept the connection open; got {out}") from None
            if not data:
                return out
            out += self.decoder.feed(data)

    def close(self) -> None:
        self.sock.close()


def frame(mtype: int, payload: bytes) -> bytes:
    return HEAD.pack(mtype, len(payload)) + payload


# ----------------------------------------------------------------------------------------------
# in-process server over a synthetic store


class Store:
    """A Recorder fed like the daemon's writer does (under the lock, flushed)."""

    def __init__(self, directory: Path) -> None:
        self.rec = Recorder(str(directory), 1 << 40, 1 << 62)
        self.lock = threading.Lock()
        self.sid = self.rec.source("eth0", fx.LINKTYPE_ETHERNET)
        self.next_port = 40000
        self.t = T0

    def add_flow(self, exchanges: list[tuple[bytes, bytes]], keep_open: bool = False) -> int:
        cport = self.next_port
        self.next_port += 1
        packets = synthetic_flow(cport, exchanges, self.t)
        if keep_open:
            packets = packets[:-3]
        self.t = packets[-1][0] + 1_000_000
        self.add(packets)
        return cport

    def add(self, packets: list[tuple[int, bytes]]) -> None:
        with self.lock:
            for ts, frame_ in packets:
                self.rec.add(self.sid, ts, frame_, len(frame_))
            self.rec.flush()

    def status(self) -> dict[str, Any]:
        with self.lock:
            return self.rec.status()


def exchanges(n: int, body: int = 2, tag: str = "p") -> list[tuple[bytes, bytes]]:
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % body + b"b" * body
    return [(REQ.replace(b"/abc", f"/{tag}{i}".encode()), resp) for i in range(n)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    for k in range(4):
        s.add_flow(exchanges(5, tag=f"f{k}-"))
    return s


@pytest.fixture
def srv(store: Store) -> Iterator[Server]:
    server = Server(store.rec, store.lock, TOKEN, ("127.0.0.1", 0), store.status, node="n1")
    server.start()
    yield server
    server.stop()


def want_entries(store: Store, text: str = "") -> list[dict[str, Any]]:
    q = QueryEngine(store.rec, store.lock)
    out = [e for b in q.backlog(compile_filter(text), detail=True) for e in b]
    q.close()
    return out


def test_address_and_hello(srv: Server) -> None:
    host, _, port = srv.address.rpartition(":")
    assert host == "127.0.0.1" and 0 < int(port) < 65536
    raw = Raw(srv.address)
    raw.sock.settimeout(5)
    got: list[wire.Message] = []
    while not got:
        got += raw.decoder.feed(raw.sock.recv(4096))
    hello = got[0]
    assert isinstance(hello, wire.Hello)
    assert hello.version == wire.VERSION and hello.node == "n1" and "entries" in hello.capabilities
    assert hello.token == "", "the daemon never sends a token"
    raw.close()


def test_subscribe_backlog_and_live(srv: Server, store: Store) -> None:
    want = want_entries(store)
    assert len(want) == 20

    async def main(c: Client) -> None:
        entries, msgs = await collect(c)
        assert entries == [summary(e) for e in want]
        assert isinstance(msgs[-1], wire.CaughtUp) and msgs[-1].entries == 20
        assert all(m.backlog for m in msgs if isinstance(m, wire.EntriesAppended))
        full, _ = await collect(c, detail=True)
        assert full == want
        newest, _ = await collect(c, "status == 200", newest_first=True, limit=3)
        assert [e["id"] for e in newest] == [e["id"] for e in want[::-1][:3]]
        # follow: the backlog, CaughtUp, then what arrives later, matching the filter only
        sub = c.subscribe('summary ~ "^/live"', follow=True)
        first = await anext(sub)
        assert isinstance(first, wire.CaughtUp) and first.entries == 0
        await asyncio.to_thread(store.add_flow, exchanges(3, tag="live"))
        await asyncio.to_thread(store.add_flow, exchanges(2, tag="other"))
        live: list[dict[str, Any]] = []
        while len(live) < 3:
            m = await anext(sub)
            assert isinstance(m, wire.EntriesAppended) and not m.backlog
            live += m.entries
        assert [e["summary"] for e in live] == ["/live0", "/live1", "/live2"]
        assert "response" not in live[0]

    arun(with_client(srv.address, main))


def test_get_entry_and_unknown_id(srv: Server, store: Store) -> None:
    want = want_entries(store)

    async def main(c: Client) -> None:
        assert await c.get_entry(want[7]["id"]) == want[7]
        for bad in ("99:1", "1:99", "nonsense", ""):
            with pytest.raises(RequestFailed, match="no entry"):
                await c.get_entry(bad)
        # the connection is still usable
        assert await c.get_entry(want[0]["id"]) == want[0]
        st = await c.get_stats()
        assert st["server"]["requests"] >= 6

    arun(with_client(srv.address, main))


def test_get_entry_max_body_within_the_frame_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GetEntry's ``max_body`` (the detail pane's "show full"): bodies kept up to it, 0 = the
    daemon's cap; at most MAX_ASKED_BODY; an answer past the frame limit is made again with a
    quarter of the cap, down to the daemon's own. The connection's facts come with it."""
    from shark_tui.engine.dissect import DEFAULT_BODY_CAP

    store = Store(tmp_path / "store")
    size = 300_000
    store.add_flow(exchanges(1, body=size, tag="big"))
    server = Server(store.rec, store.lock, TOKEN, ("127.0.0.1", 0), store.status, node="n1")
    server.start()
    (eid,) = [e["id"] for e in want_entries(store)]

    def body(e: dict[str, Any]) -> tuple[int, bool]:
        return len(e["response"]["body"]), e["response"]["body_truncated"]

    async def main(c: Client) -> None:
        assert body(await c.get_entry(eid)) == (DEFAULT_BODY_CAP, True)
        detail = await c.entry_detail(eid, max_body=1 << 20)
        assert body(detail.entry) == (size, False)
        assert detail.entry["response"]["body"] == "b" * size
        assert detail.connection["packets"] == {"client": 5, "server": 7}  # reply in 5 segments
        assert body(await c.get_entry(eid, max_body=100_000)) == (100_000, True)
        monkeypatch.setattr(server_mod, "MAX_ASKED_BODY", 150_000)
        assert body(await c.get_entry(eid, max_body=1 << 20)) == (150_000, True)
        # 1 MiB would not fit: a quarter (256 KiB) neither; the daemon's own cap does
        monkeypatch.setattr(server_mod, "MAX_ASKED_BODY", 1 << 20)
        monkeypatch.setattr(server_mod, "MAX_ENTRY_BYTES", 200_000)
        assert body(await c.get_entry(eid, max_body=1 << 20)) == (DEFAULT_BODY_CAP, True)
        monkeypatch.setattr(server_mod, "MAX_ENTRY_BYTES", 290_000)
        assert body(await c.get_entry(eid, max_body=1 << 20)) == (262_144, True)

    try:
        arun(with_client(server.address, main))
    finally:
        server.stop()


def test_bad_filter_names_the_column(srv: Server, store: Store) -> None:
    async def main(c: Client) -> None:
        with pytest.raises(RequestFailed, match="stauts"):
            await collect(c, "stauts == 200")
        with pytest.raises(RequestFailed, match="filter"):
            await collect(c, "status ==")
        with pytest.raises(RequestFailed, match="stauts"):
            async for _ in c.export("stauts == 1"):
                pass
        entries, _ = await collect(c, "status == 200")  # still usable
        assert len(entries) == 20

    arun(with_client(srv.address, main))


def test_export(srv: Server, store: Store) -> None:
    q = QueryEngine(store.rec, store.lock)
    want_all = b"".join(q.export(q.flows_of(compile_filter(""), [])))
    want_one = b"".join(q.export({2}))

    async def main(c: Client) -> None:
        got = b"".join([chunk async for chunk in c.export()])
        assert got == want_all
        assert c.last_export is not None and c.last_export.connections == 4
        assert c.last_export.packets == store.rec.stats["packets"]
        got = b"".join([chunk async for chunk in c.export(ids=["2:3"])])
        assert got == want_one
        got = b"".join([chunk async for chunk in c.export('summary == "/f1-4"')])
        assert got == want_one

    arun(with_client(srv.address, main))


def test_stats(srv: Server, store: Store) -> None:
    async def main(c: Client) -> None:
        st = await c.get_stats()
        assert st["flows"] == 4 and st["store_bytes"] > 0
        assert st["sources"][0]["name"] == "eth0" and st["sources"][0]["packets"] > 0
        assert st["server"]["clients"] == 1 and st["server"]["bad_tokens"] == 0
        assert "entries" in st["query"] and st["version"]
        # asked once, pushed every second after
        t0 = time.monotonic()
        while c.stats is st or not c.stats:
            await asyncio.sleep(0.05)
            assert time.monotonic() - t0 < 3, "no StatsChanged pushed"

    arun(with_client(srv.address, main))


def test_detail_backlog_larger_than_a_frame(tmp_path: Path) -> None:
    """Full entries with 60 kB bodies: 400 of them are ~25 MB, over the 16 MiB frame limit;
    the server must cut batches by size, not only by count."""
    s = Store(tmp_path / "store")
    for _ in range(4):
        s.add_flow(exchanges(100, body=60_000))
    server = Server(s.rec, s.lock, TOKEN, ("127.0.0.1", 0), s.status)
    server.start()
    try:

        async def main(c: Client) -> None:
            entries, _ = await collect(c, detail=True)
            assert len(entries) == 400
            assert all(len(e["response"]["body"]) == 60_000 for e in entries)

        arun(with_client(server.address, main), timeout=60)
    finally:
        server.stop()


def test_slow_reader_gets_a_backlog_many_times_its_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that reads, slowly, is never cut off during a backlog: the query thread waits
    for it (counting the frames it posted that the network thread has not written yet)."""
    monkeypatch.setattr(server_mod, "CLIENT_BUFFER", 1 << 20)
    s = Store(tmp_path / "store")
    for _ in range(4):
        s.add_flow(exchanges(100, body=20_000))  # 400 entries, ~8 MiB
    server = Server(s.rec, s.lock, TOKEN, ("127.0.0.1", 0), s.status)
    server.start()
    try:

        async def main(c: Client) -> int:
            n = 0
            async for m in c.subscribe("", follow=False, detail=True):
                if isinstance(m, wire.EntriesAppended):
                    n += len(m.entries)
                    await asyncio.sleep(0.02)
            return n

        assert arun(with_client(server.address, main), timeout=60) == 400
        assert server.counters["clients_cut"] == 0
    finally:
        server.stop()


def test_non_reading_backlog_does_not_stall_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that asks for a big backlog and never reads is cut off after the drain timeout
    (and counted); meanwhile and after, another client is served."""
    monkeypatch.setattr(server_mod, "CLIENT_BUFFER", 1 << 20)
    monkeypatch.setattr(server_mod, "DRAIN_TIMEOUT", 1.0)
    s = Store(tmp_path / "store")
    for _ in range(4):
        s.add_flow(exchanges(100, body=20_000))
    server = Server(s.rec, s.lock, TOKEN, ("127.0.0.1", 0), s.status)
    server.start()
    try:
        raw = Raw(server.address, rcvbuf=4096)
        raw.hello()
        raw.send(wire.encode(wire.Subscribe(req=1, detail=True)))

        async def main(c: Client) -> None:
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            entries, _ = await collect(c)
            assert len(entries) == 400
            assert time.monotonic() - t0 < 8
            deadline = time.monotonic() + 10
            while (await c.get_stats())["server"]["clients_cut"] < 1:
                assert time.monotonic() < deadline, "the stuck client was never cut"
                await asyncio.sleep(0.1)

        arun(with_client(server.address, main), timeout=40)
        raw.read_until_closed()  # (after what the kernel still held for it)
        raw.close()
    finally:
        server.stop()


def test_hello_timeout(srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "HELLO_TIMEOUT", 0.3)
    raw = Raw(srv.address)
    t0 = time.monotonic()
    msgs = raw.read_until_closed(5)
    assert [type(m) for m in msgs] == [wire.Hello]
    assert time.monotonic() - t0 < 3
    raw.close()
    assert srv.counters["protocol_errors"] == 1


def test_unix_socket(store: Store, tmp_path: Path) -> None:
    path = str(tmp_path / "d.sock")
    server = Server(store.rec, store.lock, TOKEN, path, store.status)
    server.start()
    try:
        assert server.address == f"unix:{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

        async def main(c: Client) -> int:
            return len((await collect(c))[0])

        assert arun(with_client(server.address, main)) == 20
    finally:
        server.stop()
    assert not os.path.exists(path)


def test_bind_error_raises(srv: Server, store: Store) -> None:
    host, _, port = srv.address.rpartition(":")
    other = Server(store.rec, store.lock, TOKEN, (host, int(port)), store.status)
    with pytest.raises(OSError):
        other.start()


# -- the token file -----------------------------------------------------------------------------


def test_token_file_created_0600_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "run" / "shark-tui" / "token"
    token = ensure_token(str(path))
    assert len(token) >= 32
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # reused when present
    assert ensure_token(str(path)) == token
    path.write_text("  my-own-token\n")
    path.chmod(0o640)
    assert ensure_token(str(path)) == "my-own-token"
    # an empty file gets a fresh token (and 0600 again)
    path.write_text("")
    fresh = ensure_token(str(path))
    assert fresh and fresh != token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # two fresh files never share a token
    assert ensure_token(str(tmp_path / "other")) != fresh


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8898") == ("127.0.0.1", 8898)
    assert parse_listen("[::1]:9") == ("::1", 9)
    assert parse_listen(":9") == ("127.0.0.1", 9)
    assert parse_listen("unix:/run/x.sock") == "/run/x.sock"
    for bad in ("8898", "host:", "host:0", "host:70000", "unix:", "host:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# ----------------------------------------------------------------------------------------------
# the real daemon: faults


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    if os.geteuid() != 0:
        pytest.fail("the daemon fault tests need root (the daemon captures on lo)")
    d = DaemonProc(tmp_path_factory.mktemp("daemon"))
    yield d
    rc = d.stop()
    assert rc == 0, d.lines


def server_counters(d: DaemonProc) -> dict[str, int]:
    async def main(c: Client) -> dict[str, int]:
        return dict((await c.get_stats())["server"])

    return arun(with_client(d.address, main, d.token))


def expect_closed(d: DaemonProc, counter: str, send: Callable[[Raw], None]) -> list[wire.Message]:
    before = server_counters(d)
    raw = Raw(d.address)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        send(raw)
    msgs = raw.read_until_closed()
    raw.close()
    after = server_counters(d)
    assert after[counter] == before[counter] + 1, (counter, before, after)
    assert after["clients"] == 1  # only the one asking
    assert d.proc.poll() is None
    return msgs


def test_daemon_stats_and_token_file(daemon: DaemonProc, tmp_path: Path) -> None:
    assert stat.S_IMODE(os.stat(daemon.token_file).st_mode) == 0o600
    with http_server() as port:
        make_traffic(port, conns=1, per_conn=2)
    time.sleep(0.5)

    async def main(c: Client) -> dict[str, Any]:
        return await c.get_stats()

    st = arun(with_client(daemon.address, main, daemon.token))
    (lo,) = [s for s in st["sources"] if s["name"] == "lo"]
    assert {"received", "dropped", "ifdropped", "queue_dropped", "packets", "bytes"} <= set(lo)
    assert lo["received"] > 0 and lo["packets"] > 0 and lo["dropped"] == 0
    assert st["store_bytes"] > 0 and st["flows"] >= 1 and st["capturing"] == ["lo"]
    assert st["server"]["clients"] == 1 and st["pid"] == daemon.proc.pid
    # a second daemon given an existing token file uses that token
    (tmp_path / "token").write_text("preset-token\n")
    other = DaemonProc(tmp_path)
    try:
        assert other.token == "preset-token"
        got = arun(with_client(other.address, main, "preset-token"))
        assert got["server"]["bad_tokens"] == 0
    finally:
        assert other.stop() == 0


def test_wrong_token(daemon: DaemonProc) -> None:
    msgs = expect_closed(daemon, "bad_tokens", lambda r: r.hello(token=daemon.token + "x"))
    assert [type(m) for m in msgs] == [wire.Hello, wire.Failed]
    assert msgs[1].fatal and "token" in msgs[1].error  # type: ignore[attr-defined]
    # a prefix of the right token, the empty token: the same
    expect_closed(daemon, "bad_tokens", lambda r: r.hello(token=daemon.token[:-1]))
    expect_closed(daemon, "bad_tokens", lambda r: r.hello(token=""))
    # and the client library says so
    with pytest.raises(ClientError, match="token"):

        async def main() -> None:
            c = await Client.connect(daemon.address, "wrong")
            try:
                await c.get_stats()
            finally:
                await c.close()

        arun(main())


def test_wrong_token_then_requests_in_the_same_write(daemon: DaemonProc) -> None:
    def send(r: Raw) -> None:
        r.send(
            wire.encode(wire.Hello(token="nope"))
            + wire.encode(wire.Subscribe(req=1))
            + wire.encode(wire.Export(req=2))
        )

    msgs = expect_closed(daemon, "bad_tokens", send)
    assert [type(m) for m in msgs] == [wire.Hello, wire.Failed], "nothing served after it"


def test_wrong_version(daemon: DaemonProc) -> None:
    msgs = expect_closed(
        daemon, "bad_versions", lambda r: r.hello(token=daemon.token, version=wire.VERSION + 1)
    )
    assert [type(m) for m in msgs] == [wire.Hello, wire.Failed]
    assert msgs[1].fatal and "version" in msgs[1].error  # type: ignore[attr-defined]


def test_request_before_hello(daemon: DaemonProc) -> None:
    msgs = expect_closed(
        daemon, "protocol_errors", lambda r: r.send(wire.encode(wire.Stats(req=1)))
    )
    assert [type(m) for m in msgs] == [wire.Hello]


@pytest.mark.parametrize(
    "data",
    [
        os.urandom(4096),
        b"\x01" + struct.pack(">I", 3) + b"\xc1\xc1\xc1",  # a Hello that is not msgpack
        b"\x01" + struct.pack(">I", 2) + b"\x91\x01",  # a Hello that is a list
        b"\xfe\x00\x00\x00\x00",  # an unknown type before Hello
    ],
    ids=["random", "bad-msgpack", "hello-list", "unknown-type"],
)
def test_garbage(daemon: DaemonProc, data: bytes) -> None:
    msgs = expect_closed(daemon, "protocol_errors", lambda r: r.send(data))
    assert [type(m) for m in msgs] == [wire.Hello]


def test_garbage_after_authenticating(daemon: DaemonProc) -> None:
    def send(r: Raw) -> None:
        r.hello(token=daemon.token)
        r.send(wire.encode(wire.Stats(req=1)))
        got: list[wire.Message] = []
        while len(got) < 2:  # served: the daemon's Hello, then the stats
            got += r.decoder.feed(r.sock.recv(1 << 16))
        r.send(frame(wire.GetEntry.TYPE, b"\xc1"))

    msgs = expect_closed(daemon, "protocol_errors", send)
    assert not any(isinstance(m, wire.Failed) for m in msgs)


def test_truncated_frame_then_close(daemon: DaemonProc) -> None:
    def send(r: Raw) -> None:
        r.hello(token=daemon.token)
        r.send(wire.encode(wire.Subscribe(req=1, filter="http"))[:-3])
        r.sock.shutdown(socket.SHUT_WR)

    expect_closed(daemon, "protocol_errors", send)


def test_oversized_frame_header(daemon: DaemonProc) -> None:
    def before_auth(r: Raw) -> None:
        r.send(HEAD.pack(wire.Hello.TYPE, wire.MAX_FRAME + 1))

    def after_auth(r: Raw) -> None:
        r.hello(token=daemon.token)
        r.send(HEAD.pack(wire.Subscribe.TYPE, 0xFFFFFFFF))

    expect_closed(daemon, "protocol_errors", before_auth)
    expect_closed(daemon, "protocol_errors", after_auth)


def test_http_request_to_the_daemon_port(daemon: DaemonProc) -> None:
    msgs = expect_closed(
        daemon,
        "protocol_errors",
        lambda r: r.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\n\r\n"),
    )
    assert [type(m) for m in msgs] == [wire.Hello]
    assert any("over the" in line and "closed" in line for line in daemon.lines)


def test_faults_leave_the_daemon_serving(daemon: DaemonProc) -> None:
    """Runs after the fault tests in this module: the daemon is alive and answers."""
    with http_server() as port:
        calls = make_traffic(port, conns=2, per_conn=3)
    time.sleep(0.6)

    async def main(c: Client) -> list[dict[str, Any]]:
        return (await collect(c, f"dst.port == {port}"))[0]

    entries = arun(with_client(daemon.address, main, daemon.token))
    assert [(e["src"]["port"], e["summary"], e["status"]) for e in entries] == [
        (c.cport, c.target, c.status) for c in calls
    ]


def test_twenty_clients_that_never_read(daemon: DaemonProc) -> None:
    """Twenty clients subscribe (full entries, follow) and never read while lots of traffic is
    captured: each is cut off once its buffer passes CLIENT_BUFFER; the daemon keeps capturing
    and, afterwards, a good client gets every entry."""
    before = server_counters(daemon)
    packets_before = daemon.status()["packets"]
    stuck = []
    for _ in range(20):
        r = Raw(daemon.address, rcvbuf=4096)
        r.hello(token=daemon.token)
        r.send(wire.encode(wire.Subscribe(req=1, detail=True, follow=True, filter="http")))
        stuck.append(r)
    time.sleep(0.5)
    # entries of ~60 kB each: 20 clients x (32 MiB + kernel buffers) is passed after ~700
    body = 60_000
    calls = []
    stored = [packets_before]
    with http_server() as port:
        deadline = time.monotonic() + 60
        cut = 0
        while time.monotonic() < deadline:
            calls += make_traffic(port, conns=4, per_conn=50, big=body)
            st = server_counters(daemon)
            cut = st["clients_cut"] - before["clients_cut"]
            stored.append(daemon.status()["packets"])
            if cut >= 20:
                break
        assert cut == 20, f"only {cut} of the 20 stuck clients were cut ({len(calls)} calls)"
        assert stored == sorted(stored) and stored[-1] > stored[0], stored
        # still capturing: more traffic is stored after the cut
        last = daemon.status()["packets"]
        calls += make_traffic(port, conns=2, per_conn=5, big=100)
        t0 = time.monotonic()
        while daemon.status()["packets"] <= last:
            assert time.monotonic() - t0 < 5, "the daemon stopped storing packets"
            time.sleep(0.1)
    for r in stuck:
        r.close()
    time.sleep(0.5)

    async def main(c: Client) -> list[dict[str, Any]]:
        return (await collect(c, f"dst.port == {port}"))[0]

    entries = arun(with_client(daemon.address, main, daemon.token), timeout=60)
    assert len(entries) == len(calls)
    assert [(e["src"]["port"], e["summary"], e["status"]) for e in entries] == [
        (c.cport, c.target, c.status) for c in calls
    ]
    status = daemon.status()
    lo = next(s for s in status["sources"] if s["name"] == "lo")
    assert lo["dropped"] == 0 and lo["queue_dropped"] == 0
    assert status["queue_dropped_batches"] == 0
    assert server_counters(daemon)["clients"] == 1


def test_frames_before_the_hello_are_small(daemon: DaemonProc) -> None:
    """A stranger cannot make the daemon buffer a 16 MiB frame: before its Hello is checked a
    client's frames are capped at HELLO_MAX_FRAME; after it, big requests pass, also when they
    come in the same write as the Hello."""

    def big_hello(r: Raw) -> None:
        r.send(wire.encode(wire.Hello(token="x" * (server_mod.HELLO_MAX_FRAME + 10))))

    expect_closed(daemon, "protocol_errors", big_hello)

    ids = [f"{n}:1" for n in range(1, 20_000)]  # an Export by ids over the pre-Hello cap
    big = wire.encode(wire.Export(req=7, ids=ids))
    assert len(big) > server_mod.HELLO_MAX_FRAME
    raw = Raw(daemon.address)
    try:
        raw.send(wire.encode(wire.Hello(token=daemon.token)) + big)
        raw.sock.settimeout(10)
        dec = wire.FrameDecoder()
        got: list[wire.Message] = []
        while not any(isinstance(m, wire.ExportDone) for m in got):
            data = raw.sock.recv(1 << 16)
            assert data, f"closed; got {got}"
            got += dec.feed(data)
        assert not any(isinstance(m, wire.Failed) for m in got)
    finally:
        raw.close()


def test_token_file_readable_by_others_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    path.chmod(0o644)
    assert ensure_token(str(path)) == "s3cret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
