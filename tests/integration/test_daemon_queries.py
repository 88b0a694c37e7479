"""Queries to a running daemon, on real traffic between namespace-pods (root needed; CI runs as
root).

One node of five pods (``tests.netpods``): an aiohttp HTTP server and a raw TCP responder in
pod 0, a grpcio server in pod 1, redis-server in pod 2, and two client pods, A and B, that talk
to them over IPv4 and IPv6 (``tests.daemonpeers``). One ``shark-tui daemon`` captures the five
host-side veths from the root namespace (so every packet is seen twice) and serves queries on
loopback. Every client logs each request it makes; that log — not the daemon — is the truth:
each filter must give exactly the entries of the logged requests it selects. tcpdump on the
client pods' veths is the oracle for exports (each connection crosses exactly one of them).

Everything starts once per module; traffic is made in rounds (`World.round`), after which the
daemon must show every logged request and have stored every packet the oracle saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shark_tui.engine import wire
from shark_tui.engine.client import Client, ClientError, RequestFailed
from tests.daemonpeers import (
    GRPC_PORT,
    GRPC_SERVICE,
    HTTP_PORT,
    REDIS_PORT,
    SHARK,
    TCP_PORT,
    Daemon,
    Pkt,
    Record,
    Servers,
    Tcpdump,
    norm_ip,
    run_clients,
    start_servers,
    tshark_packets,
)
from tests.netpods import Node, Pod, cleanup_stale
from tests.realpeers import free_port

Entry = dict[str, Any]
Key = tuple[Any, ...]
SECRET = "s3cr3t-" + secrets.token_hex(6)
ORDER_BODY = '{"item": "widget", "qty": 3}'
HTTP_PROTOS = {"http", "http2", "grpc", "graphql", "websocket"}
LIVE_PAUSE = 1.5  # seconds a live round's first HTTP connection stays idle after a request


def key(e: Entry) -> Key:
    """What a client's record and the daemon's entry for one request have in common."""
    return (e["proto"], norm_ip(e["src"]["ip"]), e["src"]["port"], norm_ip(e["dst"]["ip"]),
            e["dst"]["port"], e["method"], e["summary"], e["status"])  # fmt: skip


def keys(items: list[Entry]) -> Counter[Key]:
    return Counter(key(e) for e in items)


def conn_of(e: Entry) -> tuple[tuple[str, int], tuple[str, int]]:
    a = (norm_ip(e["src"]["ip"]), e["src"]["port"])
    b = (norm_ip(e["dst"]["ip"]), e["dst"]["port"])
    return (a, b) if a <= b else (b, a)


def diff(got: Counter[Key], want: Counter[Key]) -> str:
    extra, missing = got - want, want - got
    return f"unexpected: {sorted(extra.elements())}\nmissing: {sorted(missing.elements())}"


# --------------------------------------------------------------------------------------------
# the world: pods, servers, daemon, and what the clients logged


class World:
    def __init__(self, node: Node, servers: Servers, daemon: Daemon, addr: str, token_file: str,
                 stubs: str, tmp: Path) -> None:  # fmt: skip
        self.node = node
        self.servers = servers
        self.daemon = daemon
        self.addr = addr
        self.token_file = token_file
        self.token = Path(token_file).read_text().strip()
        self.stubs = stubs
        self.tmp = tmp
        self.a: Pod = node.pods[3]
        self.b: Pod = node.pods[4]
        self.records: list[Record] = []
        self.oracle: list[Pkt] = []  # every packet of every round, once
        self._rounds = 0

    # -- traffic ---------------------------------------------------------------------------------

    def round(self, plans: list[tuple[Pod, dict[str, Any]]], settle: bool = True) -> list[Record]:
        """Run the clients with tcpdump on their veths, then (with ``settle``) wait until the
        daemon shows it all. Settling queries the backlog, and a backlog query dissects what
        it reads and hands new entries to live subscribers: a test of the live path alone
        settles only after its checks."""
        self._rounds += 1
        paths = [str(self.tmp / f"oracle-{self._rounds}-{p.name}.pcap") for p in (self.a, self.b)]
        oracles = [Tcpdump(p.host_veth, path) for p, path in zip((self.a, self.b), paths)]
        try:
            new = run_clients(plans)
        finally:
            time.sleep(0.2)  # the last ACKs
            for o in oracles:
                o.stop()
        self.records += new
        for path in paths:
            self.oracle += tshark_packets(path)
        if settle:
            self.settle()
        return new

    def settle(self, timeout: float = 15.0) -> None:
        """Every logged request is an entry and every packet is stored (and flushed)."""
        want = keys(self.records)
        deadline = time.monotonic() + timeout
        while True:
            got, stats = asyncio.run(self._everything())
            if got == want and stats["packets"] == len(self.oracle):
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the daemon never showed exactly what the clients did; "
                    f"{stats['packets']} packets stored, the oracle saw {len(self.oracle)}\n"
                    + diff(got, want)
                )
            time.sleep(0.15)
        time.sleep(0.25)  # stored packets are flushed within 200 ms: exports read the files

    async def _everything(self) -> tuple[Counter[Key], dict[str, Any]]:
        async with self.client() as c:
            entries, _ = await subscribe(c, "")
            return keys(entries), await c.get_stats()

    # -- queries ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def client(self) -> Any:
        c = await Client.connect(self.addr, self.token)
        try:
            yield c
        finally:
            await c.close()

    def query(self, flt: str, **kw: Any) -> list[Entry]:
        async def run() -> list[Entry]:
            async with self.client() as c:
                return (await subscribe(c, flt, **kw))[0]

        return asyncio.run(run())

    def matching(self, pred: Callable[[Record], bool]) -> list[Record]:
        return [r for r in self.records if pred(r)]

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SHARK, *args, "--attach", self.addr, "--token-file", self.token_file],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


async def subscribe(c: Client, flt: str, **kw: Any) -> tuple[list[Entry], int]:
    """The backlog of one subscription (follow=False) and the count CaughtUp announced."""
    entries: list[Entry] = []
    caught = -1
    async for m in c.subscribe(flt, follow=False, **kw):
        if isinstance(m, wire.EntriesAppended):
            assert m.backlog
            entries += m.entries
        else:
            caught = m.entries
    assert caught == len(entries)
    return entries, caught


def phase1_plans(w: World) -> list[tuple[Pod, dict[str, Any]]]:
    h, g, r = w.servers.http, w.servers.grpc, w.servers.redis
    return [
        (w.a, {"sessions": [
            {"kind": "http", "host": h.ip, "port": HTTP_PORT, "ops": [
                {"method": "GET", "path": "/api/users/1"},
                {"method": "GET", "path": "/api/users/404?status=404"},
                {"method": "POST", "path": "/api/orders?status=201", "body": ORDER_BODY,
                 "headers": {"Content-Type": "application/json", "X-Secret": SECRET}},
                {"method": "DELETE", "path": "/api/orders/9?status=500"},
            ]},
            {"kind": "http", "host": h.ip, "port": HTTP_PORT, "ops": [
                {"method": "GET", "path": "/status/503"},
            ]},
            {"kind": "redis", "host": r.ip, "port": REDIS_PORT, "ops": [
                ["SET", "user:1", "alice"], ["GET", "user:1"], ["GET", "user:missing"],
                ["INCR", "user:1"], ["HSET", "h:1", "f", "v"], ["DEL", "user:1"],
            ]},
            {"kind": "grpc", "host": g.ip, "port": GRPC_PORT, "stubs": w.stubs, "ops": [
                {"call": "Unary", "text": "hello A"}, {"call": "Unary", "text": "missing"},
            ]},
            {"kind": "tcp", "host": h.ip, "port": TCP_PORT, "hex": "0001ffee" + "ab" * 40},
        ]}),
        (w.b, {"sessions": [
            {"kind": "http", "host": h.ip6, "port": HTTP_PORT, "ops": [
                {"method": "GET", "path": "/health"},
                {"method": "PUT", "path": "/api/items/5?status=202", "body": "x=1"},
                {"method": "POST", "path": "/echo", "body": "ping"},
                {"method": "GET", "path": "/api/orders/7"},
            ]},
            {"kind": "redis", "host": r.ip6, "port": REDIS_PORT, "ops": [
                ["LPUSH", "q:jobs", "a", "b"], ["LRANGE", "q:jobs", "0", "-1"],
                ["SET", "user:2", "bob"], ["GET", "user:2"],
            ]},
            {"kind": "grpc", "host": g.ip, "port": GRPC_PORT, "stubs": w.stubs, "ops": [
                {"call": "Unary", "text": "hello B"},
                {"call": "ServerStream", "text": "tick", "n": 3},
                {"call": "ClientStream", "text": "w", "n": 3},
            ]},
        ]}),
    ]  # fmt: skip


def live_plans(w: World, pause: float) -> list[tuple[Pod, dict[str, Any]]]:
    """A round for the followers; with ``pause``, A's first HTTP connection idles that long
    after its 500 (its entry must come while the connection is open)."""
    h, g, r = w.servers.http, w.servers.grpc, w.servers.redis
    return [
        (w.a, {"sessions": [
            {"kind": "http", "host": h.ip, "port": HTTP_PORT, "ops": [
                {"method": "GET", "path": "/api/live/1?status=500"},
                {"sleep": pause},
                {"method": "POST", "path": "/api/live?status=201", "body": '{"n": "needle"}'},
                {"method": "POST", "path": "/api/live?status=201", "body": '{"n": "hay"}'},
            ]},
            {"kind": "redis", "host": r.ip, "port": REDIS_PORT, "ops": [
                ["SET", "live:1", "x"], ["GET", "live:1"],
            ]},
            {"kind": "grpc", "host": g.ip, "port": GRPC_PORT, "stubs": w.stubs, "ops": [
                {"call": "Unary", "text": "live"},
            ]},
        ]}),
        (w.b, {"sessions": [
            {"kind": "http", "host": h.ip6, "port": HTTP_PORT, "ops": [
                {"method": "GET", "path": "/api/live/2"},
            ]},
            {"kind": "redis", "host": r.ip6, "port": REDIS_PORT, "ops": [
                ["SET", "live:2", "y"],
            ]},
            {"kind": "tcp", "host": h.ip6, "port": TCP_PORT, "hex": "00" * 7},
        ]}),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.fail("the daemon query tests need root (network namespaces, live capture)")
    cleanup_stale()
    from tests.realpeers2 import STUBS_DIR, grpc_stubs

    grpc_stubs()
    tmp = tmp_path_factory.mktemp("daemon-queries")
    with Node(pods=5) as node:
        servers = start_servers(node, str(STUBS_DIR), tmp)
        token_file = str(tmp / "token")
        addr = f"127.0.0.1:{free_port()}"
        args = ["--listen", addr, "--token-file", token_file]
        for pod in node.pods:
            args += ["--iface", pod.host_veth]
        daemon = Daemon(str(tmp / "store"), *args)
        try:
            daemon.wait_for(f"serving queries on {addr}")
            daemon.wait_for("capturing on")
            w = World(node, servers, daemon, addr, token_file, str(STUBS_DIR), tmp)
            w.round(phase1_plans(w))
            yield w
        finally:
            rc = daemon.stop()
        assert rc == 0, daemon.lines
        assert not [line for line in daemon.lines if "failed" in line], daemon.lines


# --------------------------------------------------------------------------------------------
# filters of every kind: exactly the logged requests they select


def _either(r: Record, field: str, value: Any) -> bool:
    return bool(r["src"][field] == value or r["dst"][field] == value)


def _in_net(ip: str, net: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(net)


def _num(r: Record) -> int | None:
    s = r["status"]
    return s if isinstance(s, int) and not isinstance(s, bool) else None


def _ge(r: Record, n: int) -> bool:
    s = _num(r)
    return s is not None and s >= n


Case = tuple[str, Callable[[World], str], Callable[[World, Record], bool]]
CASES: list[Case] = [
    # addresses
    ("ip", lambda w: f"ip == {w.a.ip}", lambda w, r: _either(r, "ip", w.a.ip)),
    ("src.ip-v6", lambda w: f"src.ip == {w.b.ip6}", lambda w, r: r["src"]["ip"] == w.b.ip6),
    ("dst.ip", lambda w: f"dst.ip == {w.servers.redis.ip}",
     lambda w, r: r["dst"]["ip"] == w.servers.redis.ip),
    ("cidr-v6", lambda w: f"ip == {w.node.subnet6}",
     lambda w, r: _in_net(r["src"]["ip"], w.node.subnet6)),
    ("cidr-v4-not-host",
     lambda w: f"src.ip == {w.node.subnet} and not ip == {w.servers.http.ip}/32",
     lambda w, r: _in_net(r["src"]["ip"], w.node.subnet)
     and not _either(r, "ip", w.servers.http.ip)),
    # ports
    ("port", lambda w: f"port == {REDIS_PORT}", lambda w, r: _either(r, "port", REDIS_PORT)),
    ("dst.port", lambda w: f"dst.port == {HTTP_PORT}", lambda w, r: r["dst"]["port"] == HTTP_PORT),
    ("port-in", lambda w: f"port in [{REDIS_PORT}, {TCP_PORT}]",
     lambda w, r: r["dst"]["port"] in (REDIS_PORT, TCP_PORT)),
    # protocol macros
    ("http", lambda w: "http", lambda w, r: r["proto"] in HTTP_PROTOS),
    ("grpc", lambda w: "grpc", lambda w, r: r["proto"] == "grpc"),
    ("redis", lambda w: "redis", lambda w, r: r["proto"] == "redis"),
    ("tcp", lambda w: "tcp", lambda w, r: r["proto"] == "tcp"),
    # L7 predicates
    ("status", lambda w: "status >= 400", lambda w, r: _ge(r, 400)),
    ("method", lambda w: 'method == "POST"', lambda w, r: r["method"] == "POST"),
    ("path", lambda w: 'path ~ "^/API/orders"',
     lambda w, r: r["proto"] == "http" and r["path"].startswith("/api/orders")),
    ("redis-command", lambda w: 'redis and method == "GET"',
     lambda w, r: r["proto"] == "redis" and r["method"] == "GET"),
    ("redis-key", lambda w: 'method == "SET" and summary ~ "^user:"',
     lambda w, r: r["method"] == "SET" and r["summary"].startswith("user:")),
    ("redis-error", lambda w: 'redis and status ~ "not an integer"',
     lambda w, r: r["proto"] == "redis" and "not an integer" in (r["error_text"] or "")),
    ("grpc-method", lambda w: f'method == "{GRPC_SERVICE}/Unary"',
     lambda w, r: r["method"] == f"{GRPC_SERVICE}/Unary"),
    ("grpc-status", lambda w: "grpc and status != 0", lambda w, r: r["proto"] == "grpc"
     and r["status"] != 0),
    ("grpc-path", lambda w: 'path == "/shark.test.Echo/ServerStream"',
     lambda w, r: r["path"] == "/shark.test.Echo/ServerStream"),
    # combinations
    ("and-or-not", lambda w: f"(http or redis) and ip == {w.a.ip} and not status >= 400",
     lambda w, r: r["proto"] in HTTP_PROTOS | {"redis"} and _either(r, "ip", w.a.ip)
     and not _ge(r, 400)),
    ("not-macros", lambda w: "not (http or redis)",
     lambda w, r: r["proto"] not in HTTP_PROTOS | {"redis"}),
    ("or-of-ands", lambda w: f"(grpc and src.ip == {w.b.ip}) or (redis and dst.ip == "
     f"{w.servers.redis.ip6})", lambda w, r: (r["proto"] == "grpc" and r["src"]["ip"] == w.b.ip)
     or (r["proto"] == "redis" and r["dst"]["ip"] == w.servers.redis.ip6)),
    ("nothing", lambda w: "ip == 192.0.2.1 or port == 1", lambda w, r: False),
    # into requests (the daemon dissects again: summaries cannot answer)
    ("header", lambda w: f'request.headers.x-secret == "{SECRET}"',
     lambda w, r: ["X-Secret", SECRET] in r["headers"]),
    ("body", lambda w: 'http and request.body contains "WIDGET"',
     lambda w, r: r["proto"] == "http" and "widget" in (r["body"] or "")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_filter_selects_exactly_the_matching_requests(world: World, case: Case) -> None:
    _, text, pred = case
    flt = text(world)
    want = keys(world.matching(lambda r: pred(world, r)))
    for detail in (False, True):
        got = world.query(flt, detail=detail)
        assert keys(got) == want, f"{flt} (detail={detail}):\n" + diff(keys(got), want)
        # the backlog comes in ts order (ties by id)
        assert [e["ts"] for e in got] == sorted(e["ts"] for e in got)
        # summaries carry no response and at most a slim request (path, Host headers)
        assert all(("response" in e) == detail for e in got)
        assert detail or all(set(e.get("request") or {}) <= {"path", "headers"} for e in got)
    if case[0] != "nothing":
        assert want, "a case that selects nothing proves little"


def test_every_request_once_with_its_time(world: World) -> None:
    """Each logged request is one entry, stamped between the client's send and its answer."""
    entries = world.query("")
    assert keys(entries) == keys(world.records)
    assert len({e["id"] for e in entries}) == len(entries)
    by_key: dict[Key, list[Record]] = {}
    for r in world.records:
        by_key.setdefault(key(r), []).append(r)
    for e in entries:
        assert any(r["t0"] - 0.01 <= e["ts"] <= r["t1"] + 0.01 for r in by_key[key(e)]), e


def test_each_packet_stored_once(world: World) -> None:
    """Both veths of a pod-to-pod connection saw every packet: stored once, counted twice."""

    async def run() -> dict[str, Any]:
        async with world.client() as c:
            stats: dict[str, Any] = await c.get_stats()
            return stats

    stats = asyncio.run(run())
    assert stats["packets"] == len(world.oracle)
    assert stats["duplicates"] == len(world.oracle)
    assert stats["flows"] == len({p.conn for p in world.oracle})


async def _stats_with_wrong_token(world: World, pause: float) -> str:
    """What the client says when a call is made ``pause`` s after connecting with a bad token."""
    c = await Client.connect(world.addr, "not-the-token")
    try:
        await asyncio.sleep(pause)
        with pytest.raises(ClientError) as exc:
            await asyncio.wait_for(c.get_stats(), 5)
        return str(exc.value)
    finally:
        await c.close()


def test_wrong_token_is_refused(world: World, tmp_path: Path) -> None:
    asyncio.run(_stats_with_wrong_token(world, 0))
    bad = tmp_path / "token"
    bad.write_text("nope\n")
    res = subprocess.run(
        [SHARK, "dissect", "--json", "--attach", world.addr, "--token-file", str(bad)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 1 and "bad token" in res.stderr and not res.stdout, res


def test_wrong_token_is_named_after_the_refusal_arrived(world: World) -> None:
    """The daemon's reason survives the EOF that follows it (was lost before 97d6e47)."""
    assert "bad token" in asyncio.run(_stats_with_wrong_token(world, 0.3))


def test_bad_filter_is_refused_and_the_connection_stays_usable(world: World) -> None:
    async def run() -> None:
        async with world.client() as c:
            with pytest.raises(RequestFailed, match="filter"):
                await subscribe(c, "status >=")
            entries, _ = await subscribe(c, "redis")
            assert keys(entries) == keys(world.matching(lambda r: r["proto"] == "redis"))

    asyncio.run(run())


# --------------------------------------------------------------------------------------------
# newest first


def test_newest_first_with_limit(world: World) -> None:
    """The N newest matching entries, newest first (client A runs its requests one after the
    other, so its log orders them)."""
    flt = f'src.ip == {world.a.ip} and proto in ["http", "redis"]'
    mine = sorted(
        world.matching(lambda r: r["src"]["ip"] == world.a.ip and r["proto"] in ("http", "redis")),
        key=lambda r: r["t0"],
    )
    assert len(mine) > 5
    for limit in (1, 3, 5):
        got = world.query(flt, newest_first=True, limit=limit)
        assert [key(e) for e in got] == [key(r) for r in reversed(mine[-limit:])]
    got = world.query(flt, newest_first=True, limit=1000)
    assert [key(e) for e in got] == [key(r) for r in reversed(mine)]
    # a limit without newest_first: the newest N, oldest first
    got = world.query(flt, limit=3)
    assert [key(e) for e in got] == [key(r) for r in mine[-3:]]


# --------------------------------------------------------------------------------------------
# one entry in full


def _one(world: World, flt: str) -> Entry:
    got = world.query(flt)
    assert len(got) == 1, got
    return got[0]


def test_get_entry_has_the_headers_and_body_the_client_sent(world: World) -> None:
    summary = _one(world, 'method == "POST" and path == "/api/orders"')
    assert "response" not in summary and "body" not in (summary.get("request") or {})
    redis_entry = _one(world, 'redis and method == "SET" and summary == "user:1"')
    grpc_entry = _one(world, f"grpc and status == 5 and src.ip == {world.a.ip}")

    async def run() -> tuple[Entry, Entry, Entry]:
        async with world.client() as c:
            got = (await c.get_entry(summary["id"]), await c.get_entry(redis_entry["id"]),
                   await c.get_entry(grpc_entry["id"]))  # fmt: skip
            with pytest.raises(RequestFailed, match="no entry"):
                await c.get_entry("999999:1")
            with pytest.raises(RequestFailed):
                await c.get_entry("garbage")
            return got

    full, redis_full, grpc_full = asyncio.run(run())
    from shark_tui.engine.query import summary as summarize

    assert summarize(full) == summary
    req, resp = full["request"], full["response"]
    assert ["X-Secret", SECRET] in req["headers"]
    assert ["Content-Type", "application/json"] in req["headers"]
    assert req["body"] == ORDER_BODY and req["body_encoding"] == "text"
    assert not req["body_truncated"]
    assert full["status"] == 201 and full["method"] == "POST"
    assert json.loads(resp["body"]) == {"method": "POST", "path": "/api/orders",
                                        "query": "status=201"}  # fmt: skip
    assert full["request_size"] > len(ORDER_BODY)
    # redis: the command's arguments; gRPC: the message the client sent
    assert "alice" in json.dumps(redis_full["request"])
    assert "missing" in json.dumps(grpc_full["request"])
    assert grpc_full["status"] == 5


# --------------------------------------------------------------------------------------------
# live


def _live_filter(w: World) -> tuple[str, Callable[[Record], bool]]:
    """A follow filter whose last term looks into request bodies: live entries are tested in
    full and sent as summaries."""
    a = w.a.ip
    flt = (f'(redis and method == "SET") or status >= 500 or (grpc and src.ip == {a}) '
           'or request.body contains "needle"')  # fmt: skip

    def pred(r: Record) -> bool:
        return (
            (r["proto"] == "redis" and r["method"] == "SET")
            or _ge(r, 500)
            or (r["proto"] == "grpc" and r["src"]["ip"] == a)
            or (r["proto"] == "http" and "needle" in (r["body"] or ""))
        )

    return flt, pred


class Follow:
    """What one follow=True subscription received: backlog, then live entries with their
    arrival times; ``opened`` is the detail of the first live 500, fetched on arrival."""

    def __init__(self) -> None:
        self.backlog: list[Entry] = []
        self.live: list[tuple[float, Entry]] = []
        self.opened: list[tuple[float, Entry]] = []
        self.new: list[Record] = []


def follow_round(world: World, flt: str, want_of: Callable[[list[Record]], Counter[Key]],
                 plans: list[tuple[Pod, dict[str, Any]]], settle: bool,
                 before_traffic: Callable[[], None] = lambda: None) -> Follow:  # fmt: skip
    """Subscribe with follow, wait for CaughtUp, make a round of traffic, collect until the
    live entries are ``want_of(new records)`` (5 s at most) and half a second more.

    With ``settle`` the round waits for the daemon's backlog to show everything; those backlog
    queries dissect what they read and hand new entries to live subscriptions on the way. Without
    it nothing but the live path can bring the entries."""
    f = Follow()

    async def run() -> None:
        async with world.client() as c:
            it = c.subscribe(flt, follow=True).__aiter__()
            while True:
                m = await asyncio.wait_for(it.__anext__(), 20)
                if isinstance(m, wire.CaughtUp):
                    assert m.entries == len(f.backlog)
                    break
                assert m.backlog
                f.backlog += m.entries

            async def collect() -> None:
                while True:
                    m = await it.__anext__()
                    assert isinstance(m, wire.EntriesAppended) and not m.backlog, m
                    f.live.extend((time.time(), e) for e in m.entries)
                    for e in m.entries:
                        if e["status"] == 500 and not f.opened:
                            f.opened.append((time.time(), await c.get_entry(e["id"])))

            task = asyncio.create_task(collect())
            try:
                await asyncio.to_thread(before_traffic)
                f.new = await asyncio.to_thread(world.round, plans, settle)
                want = want_of(f.new)
                deadline = time.monotonic() + 5
                while keys([e for _, e in f.live]) != want and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # nothing else comes
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    try:
        asyncio.run(run())
    finally:
        if not settle:
            world.settle()  # what the round made is there for the other tests
    return f


def test_follow_delivers_live_entries_within_seconds(world: World) -> None:
    """Subscribed with follow first, then traffic, and no other client querying: every new
    matching entry arrives within seconds of its answer — also the one whose keep-alive
    connection then stays idle (it comes, and its detail can be fetched, before the client's
    next request on it) — and nothing else arrives."""
    flt, pred = _live_filter(world)
    f = follow_round(world, flt, lambda new: keys([r for r in new if pred(r)]),
                     live_plans(world, pause=LIVE_PAUSE), settle=False)  # fmt: skip
    old = [r for r in world.records if r not in f.new]
    assert keys(f.backlog) == keys([r for r in old if pred(r)])
    want = keys([r for r in f.new if pred(r)])
    got = keys([e for _, e in f.live])
    assert got == want, diff(got, want)
    t1 = {key(r): r["t1"] for r in f.new}
    lag = max(t - t1[key(e)] for t, e in f.live)
    assert lag < 3.0, lag
    first = next(r for r in f.new if r["summary"] == "/api/live/1?status=500")
    after = next(r for r in f.new if conn_of(r) == conn_of(first) and r["t0"] > first["t0"])
    assert len(f.opened) == 1
    got_at, detail = f.opened[0]
    assert got_at < after["t0"], (got_at - first["t1"], LIVE_PAUSE)
    assert detail["status"] == 500 and detail["response"]["body"].startswith("{")
    assert ["Host", f"{world.servers.http.ip}:{HTTP_PORT}"] in detail["request"]["headers"]


def test_follow_streams_only_matching_entries(world: World) -> None:
    """Followers (the library, summaries; ``dissect --attach --follow``, full entries) get
    their backlog, then exactly the new entries that match, nothing else.

    The round settles (see `follow_round`): the entries may reach the followers through that
    path; the pure live path is `test_follow_delivers_live_entries_within_seconds`."""
    flt, pred = _live_filter(world)
    cli_flt = 'redis and method == "SET"'
    cli_backlog = len(world.matching(lambda r: r["proto"] == "redis" and r["method"] == "SET"))
    cli = subprocess.Popen(
        [SHARK, "dissect", "--attach", world.addr, "--token-file", world.token_file, "--json",
         "--follow", "--filter", cli_flt],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    cli_lines: list[Entry] = []

    def read_cli() -> None:
        assert cli.stdout is not None
        for line in cli.stdout:
            cli_lines.append(json.loads(line))

    reader = threading.Thread(target=read_cli, daemon=True)
    reader.start()

    def cli_caught_up() -> None:
        deadline = time.monotonic() + 20
        while len(cli_lines) < cli_backlog and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(cli_lines) == cli_backlog, cli_lines

    def want_of(new: list[Record]) -> Counter[Key]:
        return keys([r for r in new if pred(r)])

    try:
        f = follow_round(world, flt, want_of, live_plans(world, pause=0), settle=True,
                         before_traffic=cli_caught_up)  # fmt: skip
        time.sleep(0.3)
    finally:
        cli.terminate()
        cli.wait(10)
        reader.join(5)
    old = [r for r in world.records if r not in f.new]
    assert keys(f.backlog) == keys([r for r in old if pred(r)])
    want = want_of(f.new)
    assert any(r["method"] == "POST" for r in f.new if pred(r))  # found by its body
    assert sum(1 for r in f.new if not pred(r)) >= 4  # there was traffic to leave out
    got = keys([e for _, e in f.live])
    assert got == want, diff(got, want)
    t1 = {key(r): r["t1"] for r in f.new}
    assert max(t - t1[key(e)] for t, e in f.live) < 5.0
    assert all("response" not in e for _, e in f.live)  # summaries (no detail asked)
    assert len(f.opened) == 1 and f.opened[0][1]["status"] == 500
    # the headless follower: backlog, then exactly the new SETs, full entries
    want_cli = keys([r for r in f.new if r["proto"] == "redis" and r["method"] == "SET"])
    got_cli = keys(cli_lines[cli_backlog:])
    assert got_cli == want_cli, diff(got_cli, want_cli)
    assert all(e["request"] is not None for e in cli_lines)
    # since: only what came after
    since = min(r["t0"] for r in f.new)
    got = keys(world.query("", since=since))
    assert got == keys(f.new), diff(got, keys(f.new))
    got = keys(world.query("redis", since=since, newest_first=True, limit=2))
    want = keys(sorted((r for r in f.new if r["proto"] == "redis"), key=lambda r: r["t0"])[-2:])
    assert got == want, diff(got, want)


# --------------------------------------------------------------------------------------------
# export


def check_export(world: World, path: str, conns: set[Any]) -> list[Pkt]:
    """tshark reads ``path``: exactly the oracle's packets of ``conns``, each once (the daemon
    saw each on two veths), in time order, every connection from its SYN."""
    assert conns
    pkts = tshark_packets(path)
    want = [p for p in world.oracle if p.conn in conns]
    assert {p.conn for p in pkts} == conns
    got_ids, want_ids = Counter(p.ident for p in pkts), Counter(p.ident for p in want)
    assert got_ids == want_ids, (
        f"extra: {sorted((got_ids - want_ids).elements())}\n"
        f"missing: {sorted((want_ids - got_ids).elements())}"
    )
    ts = [p.ts for p in pkts]
    assert ts == sorted(ts), "not in time order"
    syns = {p.conn for p in pkts if p.flags & 0x12 == 0x02}
    assert syns == conns, "a connection without its handshake"
    return pkts


def _conns(records: list[Record]) -> set[Any]:
    return {conn_of(r) for r in records}


def _export(world: World, flt: str = "", ids: list[str] | None = None) -> tuple[bytes, Any]:
    async def run() -> tuple[bytes, Any]:
        async with world.client() as c:
            data = b"".join([chunk async for chunk in c.export(flt, ids)])
            return data, c.last_export

    return asyncio.run(run())


EXPORTS: list[tuple[str, Callable[[World], str], Callable[[World, Record], bool]]] = [
    ("redis", lambda w: "redis", lambda w, r: r["proto"] == "redis"),
    ("grpc-or-tcp", lambda w: "grpc or tcp", lambda w, r: r["proto"] in ("grpc", "tcp")),
    # whole connections: the other requests on a 500's keep-alive connection go along
    ("status", lambda w: f"status >= 500 and ip == {w.a.ip}",
     lambda w, r: _ge(r, 500) and r["src"]["ip"] == w.a.ip),
    ("header", lambda w: f'request.headers.x-secret == "{SECRET}"',
     lambda w, r: ["X-Secret", SECRET] in r["headers"]),
]  # fmt: skip


@pytest.mark.parametrize("case", EXPORTS, ids=[c[0] for c in EXPORTS])
def test_export_by_filter(world: World, case: Any, tmp_path: Path) -> None:
    _, text, pred = case
    conns = _conns(world.matching(lambda r: pred(world, r)))
    data, done = _export(world, text(world))
    path = tmp_path / "out.pcapng"
    path.write_bytes(data)
    assert data[:4] == b"\x0a\x0d\x0d\x0a"  # pcapng
    pkts = check_export(world, str(path), conns)
    assert done is not None and (done.connections, done.packets) == (len(conns), len(pkts))


def test_export_by_ids(world: World, tmp_path: Path) -> None:
    post = _one(world, 'method == "POST" and path == "/api/orders"')
    lrange = _one(world, 'method == "LRANGE"')
    data, done = _export(world, ids=[post["id"], lrange["id"]])
    path = tmp_path / "ids.pcapng"
    path.write_bytes(data)
    conns = {conn_of(post), conn_of(lrange)}
    pkts = check_export(world, str(path), conns)
    assert (done.connections, done.packets) == (2, len(pkts))


# --------------------------------------------------------------------------------------------
# the headless commands on the same daemon


def test_cli_dissect_attach_json(world: World) -> None:
    res = world.cli("dissect", "--json")
    assert res.returncode == 0, res.stderr
    entries = [json.loads(line) for line in res.stdout.splitlines()]
    assert keys(entries) == keys(world.records)
    assert [e["ts"] for e in entries] == sorted(e["ts"] for e in entries)
    assert all(e["request"] is not None for e in entries)  # full entries, as dissect FILE
    flt = f"redis or tcp or (http and src.ip == {world.b.ip6})"
    res = world.cli("dissect", "--json", "--filter", flt)
    assert res.returncode == 0, res.stderr
    got = keys([json.loads(line) for line in res.stdout.splitlines()])
    want = keys(
        world.matching(
            lambda r: (
                r["proto"] in ("redis", "tcp")
                or (r["proto"] == "http" and r["src"]["ip"] == world.b.ip6)
            )
        )
    )
    assert got == want, diff(got, want)
    # a bad filter is a usage error, said in one line
    res = world.cli("dissect", "--json", "--filter", "port ==")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr


def test_cli_export_attach(world: World, tmp_path: Path) -> None:
    out = tmp_path / "grpc.pcapng"
    res = world.cli("export", "--filter", "grpc", "-o", str(out))
    assert res.returncode == 0, res.stderr
    conns = _conns(world.matching(lambda r: r["proto"] == "grpc"))
    pkts = check_export(world, str(out), conns)
    assert f"{len(pkts)} packets of {len(conns)} connections written" in res.stderr
    tcp = _one(world, f"tcp and src.ip == {world.a.ip}")
    out = tmp_path / "one.pcapng"
    res = world.cli("export", "--ids", tcp["id"], "-o", str(out))
    assert res.returncode == 0, res.stderr
    check_export(world, str(out), {conn_of(tcp)})
    # to stdout
    raw = subprocess.run(
        [SHARK, "export", "--attach", world.addr, "--token-file", world.token_file,
         "--ids", tcp["id"], "-o", "-"], capture_output=True, timeout=30,
    )  # fmt: skip
    assert raw.returncode == 0 and raw.stdout == out.read_bytes()


def test_cli_export_attach_classic_pcap(world: World, tmp_path: Path) -> None:
    out = tmp_path / "redis.pcap"
    res = world.cli("export", "--filter", "redis", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    check_export(world, str(out), _conns(world.matching(lambda r: r["proto"] == "redis")))
