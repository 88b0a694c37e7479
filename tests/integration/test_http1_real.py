"""``shark-tui dissect`` on real HTTP/1.x traffic: aiohttp behind nginx on loopback, captured by
tcpdump, checked against what the clients themselves sent and received and against tshark.

The main scenario (one capture on ``lo`` and one on ``any``, taken at the same time) is driven
once per module; the other cases make their own small captures. The clients' records are the
truth; tshark is a second opinion where it is known to be right (RECIPES.md).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import io
import itertools
import json
import socket
import struct
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dpkt
import pytest

from tests import realpeers
from tests.integration import oracle
from tests.realpeers import DissectResult, capture, pattern_text, run_dissect

Endpoint = tuple[str, int]
Entry = dict[str, Any]

BODY_CAP = 64 * 1024  # dissect's default --max-body
BIG = 200_000  # beyond the default body cap
NGINX_ONLY = ("/static/", "/nocontent", "/notmodified", "/redirect", "/teapot")


# --------------------------------------------------------------------------------------------
# what the clients did


@dataclass
class Call:
    """One request/response as the client saw it."""

    local: Endpoint
    remote: Endpoint
    method: str
    target: str
    status: int
    req_headers: dict[str, str] = field(default_factory=dict)  # lower-case names we set
    req_body: bytes = b""
    resp_headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    resp_body: bytes = b""  # as the application got it (gzip decoded)
    resp_wire_body: bytes | None = None  # before content decoding, when known
    t_start: float = 0.0
    t_end: float = 0.0
    req_bytes: bytes | None = None  # exact request bytes on the wire, when known (raw sockets)
    resp_bytes: bytes | None = None  # exact response bytes on the wire, when known
    version: str = "HTTP/1.1"

    @property
    def via_nginx_only(self) -> bool:
        return self.target.startswith(NGINX_ONLY)

    def upstream_target(self) -> str:
        return self.target[len("/gz") :] if self.target.startswith("/gz/") else self.target


class PyClient:
    """``http.client`` on one keep-alive connection, recording every call."""

    def __init__(self, host: str, port: int, calls: list[Call]) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=10)
        self.conn.connect()
        self.calls = calls
        self.remote = (host, port)

    @property
    def local(self) -> Endpoint:
        assert self.conn.sock is not None
        name = self.conn.sock.getsockname()
        return (name[0], name[1])

    def call(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Call:
        headers = dict(headers or {})
        t0 = time.time()
        local = self.local
        self.conn.request(method, target, body=body or None, headers=headers)
        resp = self.conn.getresponse()
        wire = resp.read()
        t1 = time.time()
        rh = {k.lower(): v for k, v in resp.getheaders()}
        decoded = gzip.decompress(wire) if rh.get("content-encoding") == "gzip" else wire
        c = Call(local, self.remote, method, target, resp.status,
                 req_headers={k.lower(): v for k, v in headers.items()}, req_body=body,
                 resp_headers=rh, resp_body=decoded, resp_wire_body=wire, t_start=t0, t_end=t1)
        self.calls.append(c)
        return c

    def call_chunked(self, method: str, target: str, parts: list[bytes]) -> Call:
        """A request whose body goes with ``Transfer-Encoding: chunked``."""
        t0 = time.time()
        local = self.local
        self.conn.request(method, target, body=iter(parts), encode_chunked=True,
                          headers={"Transfer-Encoding": "chunked", "Content-Type": "text/plain"})
        resp = self.conn.getresponse()
        wire = resp.read()
        c = Call(local, self.remote, method, target, resp.status,
                 req_headers={"transfer-encoding": "chunked"}, req_body=b"".join(parts),
                 resp_headers={k.lower(): v for k, v in resp.getheaders()}, resp_body=wire,
                 resp_wire_body=wire, t_start=t0, t_end=time.time())
        self.calls.append(c)
        return c

    def close(self) -> None:
        self.conn.close()


async def _aiohttp_calls(host: str, port: int, calls: list[Call]) -> None:
    """Several calls on one aiohttp client connection (limit=1 keeps them on one socket)."""
    local = ("127.0.0.1", realpeers.free_port())  # bound by us: the client's end is known
    connector = aiohttp.TCPConnector(limit=1, force_close=False, local_addr=local)
    async with aiohttp.ClientSession(connector=connector) as session:
        base = f"http://{host}:{port}"
        binary = bytes(range(256)) * 4
        plan: list[tuple[str, str, bytes, dict[str, str]]] = [
            ("GET", "/status/201", b"", {"X-Trace": "aio-1"}),
            ("POST", "/echo?raw=1", binary, {"Content-Type": "application/octet-stream"}),
            ("GET", "/gzip?size=3000", b"", {}),
            ("PUT", "/items/7?status=500", b'{"name":"seven"}',
             {"Content-Type": "application/json"}),
        ]
        for method, target, body, headers in plan:
            t0 = time.time()
            async with session.request(method, base + target, data=body or None,
                                       headers=headers) as resp:
                data = await resp.read()
                calls.append(Call(local, (host, port), method, target, resp.status,
                                  req_headers={k.lower(): v for k, v in headers.items()},
                                  req_body=body,
                                  resp_headers={k.lower(): v for k, v in resp.headers.items()},
                                  resp_body=data, t_start=t0, t_end=time.time()))


class _NoCloseReader(io.BufferedReader):
    def close(self) -> None:  # http.client closes its file at the end of each response
        pass


class _FileSock:
    def __init__(self, f: io.BufferedReader) -> None:
        self.f = f

    def makefile(self, mode: str) -> io.BufferedReader:
        return self.f


def raw_pipeline(
    host: str, port: int, requests: list[tuple[str, str]], version: str = "HTTP/1.1"
) -> list[Call]:
    """Send every request in one write (HTTP/1.1 pipelining, the last with
    ``Connection: close``), read to EOF and split the responses, knowing which were HEADs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((host, port))
    name = sock.getsockname()
    local = (name[0], name[1])
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reqs = []
    for i, (method, target) in enumerate(requests):
        last = i == len(requests) - 1
        req = (f"{method} {target} {version}\r\nHost: {hostport}\r\nUser-Agent: pipeline/1\r\n"
               f"X-Seq: {i}\r\n" + ("Connection: close\r\n" if last else "") + "\r\n").encode()
        reqs.append(req)
    t0 = time.time()
    sock.sendall(b"".join(reqs))
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
    t1 = time.time()
    sock.close()
    stream = b"".join(chunks)
    f = _NoCloseReader(io.BytesIO(stream))  # type: ignore[arg-type]
    calls = []
    for (method, target), req in zip(requests, reqs):
        start = f.tell()
        resp = http.client.HTTPResponse(_FileSock(f), method=method)  # type: ignore[arg-type]
        resp.begin()
        body = resp.read()
        end = f.tell()
        calls.append(Call(local, (host, port), method, target, resp.status,
                          req_headers={}, resp_headers={k.lower(): v for k, v in resp.getheaders()},
                          resp_body=body, resp_wire_body=body, t_start=t0, t_end=t1,
                          req_bytes=req, resp_bytes=stream[start:end], version=version))
    assert f.tell() == len(stream), "bytes left after the last response"
    return calls


# --------------------------------------------------------------------------------------------
# reading entries


def body_bytes(msg: dict[str, Any] | None) -> bytes:
    if msg is None or msg.get("body") is None:
        return b""
    if msg.get("body_encoding") == "base64":
        return base64.b64decode(msg["body"])
    return str(msg["body"]).encode("utf-8")


def header(msg: dict[str, Any], name: str) -> str | None:
    for k, v in msg.get("headers") or []:
        if k.lower() == name.lower():
            return str(v)
    return None


def conn_key(e: Entry) -> tuple[Endpoint, Endpoint]:
    return ((e["src"]["ip"], e["src"]["port"]), (e["dst"]["ip"], e["dst"]["port"]))


def by_connection(entries: list[Entry]) -> dict[tuple[Endpoint, Endpoint], list[Entry]]:
    out: dict[tuple[Endpoint, Endpoint], list[Entry]] = {}
    for e in entries:
        out.setdefault(conn_key(e), []).append(e)
    for lst in out.values():
        lst.sort(key=lambda e: int(e["id"].split(":")[1]))
    return out


def brief(e: Entry) -> tuple[Any, ...]:
    return (e.get("method"), e.get("summary"), e.get("status"), e.get("error"))


def without(e: Entry, *keys: str) -> Entry:
    return {k: v for k, v in e.items() if k not in keys}


def check_entry_matches_call(e: Entry, c: Call, *, hop: str = "client") -> None:
    """Everything a client record can vouch for, on the entry of the client's own hop."""
    where = f"{hop} entry {e.get('id')} for {c.method} {c.target}"
    assert e["proto"] == "http", where
    assert e["tls"] is False, where
    assert e["error"] is None, (where, e["error"])
    assert e["method"] == c.method, where
    assert e["summary"] == c.target, where
    assert e["status"] == c.status, where
    assert (e["src"]["ip"], e["src"]["port"]) == c.local, where
    assert (e["dst"]["ip"], e["dst"]["port"]) == c.remote, where
    assert c.t_start - 0.005 <= e["ts"] <= c.t_end + 0.005, (where, e["ts"], c.t_start, c.t_end)
    assert e["latency_ms"] is not None and 0 <= e["latency_ms"] <= (c.t_end - c.t_start) * 1000 + 5
    req, resp = e["request"], e["response"]
    assert req is not None and resp is not None, where
    assert req["version"] == c.version, where
    assert req["method"] == c.method, where
    assert req["target"] == c.target, where
    assert req["path"] == c.target.split("?")[0], where
    if "?" in c.target and isinstance(req.get("query"), str):
        assert req["query"] == c.target.split("?", 1)[1], where
    for name, value in c.req_headers.items():
        assert header(req, name) == value, (where, name, req["headers"])
    if req["body_truncated"]:
        assert len(c.req_body) > BODY_CAP, (where, "request truncated below the cap")
        assert c.req_body.startswith(body_bytes(req)), where
    else:
        assert body_bytes(req) == c.req_body, where
    assert req["body_size"] == len(c.req_body), where
    assert resp["version"] == "HTTP/1.1", where
    assert resp["status"] == c.status, where
    for name in ("content-type", "content-encoding", "content-length", "transfer-encoding",
                 "etag"):
        assert header(resp, name) == c.resp_headers.get(name), (where, name)
    got = body_bytes(resp)
    if c.resp_headers.get("content-encoding") == "gzip":
        assert resp["content_encoding"] == "gzip", where
    if resp["body_truncated"]:
        assert len(c.resp_body) > BODY_CAP, (where, "truncated below the cap")
        assert 0 < len(got) <= BODY_CAP, where
        assert c.resp_body.startswith(got), where
    else:
        assert got == c.resp_body, (where, got[:100], c.resp_body[:100])
    if c.resp_headers.get("content-encoding") is None:
        assert resp["body_size"] == len(c.resp_body), (where, resp["body_size"])
    if c.req_bytes is not None:
        assert e["request_size"] == len(c.req_bytes), where
    if c.resp_bytes is not None:
        assert e["response_size"] == len(c.resp_bytes), where
    assert e["response_size"] >= len(c.resp_wire_body or b""), where


# --------------------------------------------------------------------------------------------
# the main scenario


@dataclass
class Scenario:
    calls: list[Call]  # every client call, in order
    lo: Path
    any: Path
    lo_run: DissectResult
    any_run: DissectResult
    t_mark: float  # a quiet moment between two batches of calls
    nginx_port: int
    backend_port: int


def drive_main(ngx: realpeers.Nginx, be: realpeers.Peer, mark: list[float]) -> list[Call]:
    calls: list[Call] = []
    a = PyClient("127.0.0.1", ngx.port, calls)
    a.call("GET", "/status/200", headers={"X-Trace": "a-1", "Accept": "application/json"})
    a.call("GET", "/status/404")
    a.call("GET", "/status/500")
    a.call("GET", "/chunked?n=5")
    a.call("GET", "/gzip?size=2500", headers={"Accept-Encoding": "gzip"})
    a.call("GET", "/gz/big?size=5000", headers={"Accept-Encoding": "gzip"})  # nginx gzips
    a.call("POST", "/echo", body=b'{"hello":"world","n":[1,2,3]}',
           headers={"Content-Type": "application/json", "X-Trace": "a-post"})
    a.call("GET", f"/big?size={BIG}")
    a.call_chunked("POST", "/echo?raw=1", [b"part-one;", b"part-two;", b"end"])
    a.call("GET", "/static/hello.txt")
    a.call("GET", "/nocontent")
    a.call("GET", "/notmodified")
    a.call("GET", "/slow?ms=80")
    a.call("GET", "/anything/else?status=503&x=1")
    time.sleep(0.15)
    mark.append(time.time())
    time.sleep(0.15)
    asyncio.run(_aiohttp_calls("127.0.0.1", ngx.port, calls))
    c = PyClient("127.0.0.1", be.port, calls)  # straight to the backend
    c.call("GET", "/status/500")
    c.call("GET", "/chunked?n=3")
    c.call("DELETE", "/items/3")
    a.call("GET", "/status/200")  # the first connection again, after the others
    a.close()
    c.close()
    return calls


@pytest.fixture(scope="module")
def main(
    http_backend: realpeers.Peer,
    nginx_proxy: realpeers.Nginx,
    tmp_path_factory: pytest.TempPathFactory,
) -> Scenario:
    d = tmp_path_factory.mktemp("main")
    ports = [http_backend.port, nginx_proxy.port]
    mark: list[float] = []
    with capture("lo", ports=ports, path=d / "lo.pcap") as lo, \
            capture("any", ports=ports, path=d / "any.pcap") as anyc:
        calls = drive_main(nginx_proxy, http_backend, mark)
    assert lo.stats.get("dropped") == 0 and anyc.stats.get("dropped") == 0, (lo.stats, anyc.stats)
    return Scenario(calls, lo.path, anyc.path, run_dissect(lo.path), run_dissect(anyc.path),
                    mark[0], nginx_proxy.port, http_backend.port)


def client_hop_entries(sc: Scenario) -> dict[tuple[Endpoint, Endpoint], list[Entry]]:
    conns = by_connection(sc.lo_run.check().entries)
    locals_ = {c.local for c in sc.calls}
    return {k: v for k, v in conns.items() if k[0] in locals_}


# 1 ------------------------------------------------------------------------------------------


def test_keepalive_calls_match_the_clients(main: Scenario) -> None:
    run = main.lo_run.check()
    assert run.stderr_lines == [], run.stderr
    ts = [e["ts"] for e in run.entries]
    assert ts == sorted(ts), "entries not in ts order"
    assert len({e["id"] for e in run.entries}) == len(run.entries), "duplicate ids"
    conns = client_hop_entries(main)
    calls_by_conn: dict[tuple[Endpoint, Endpoint], list[Call]] = {}
    for c in main.calls:
        calls_by_conn.setdefault((c.local, c.remote), []).append(c)
    assert set(conns) == set(calls_by_conn)
    for key, calls in calls_by_conn.items():
        entries = conns[key]
        assert [brief(e) for e in entries] == [(c.method, c.target, c.status, None) for c in calls]
        for e, c in zip(entries, calls):
            check_entry_matches_call(e, c)
        # one flow per connection, exchanges numbered from the start
        assert len({e["id"].split(":")[0] for e in entries}) == 1


def test_special_bodies(main: Scenario) -> None:
    conns = client_hop_entries(main)
    entries = {(e["method"], e["summary"]): e for lst in conns.values() for e in lst}
    big = entries[("GET", f"/big?size={BIG}")]
    assert big["response"]["body_truncated"] is True
    assert big["response"]["body_size"] == BIG
    assert big["response_size"] > BIG
    assert pattern_text(BIG).startswith(body_bytes(big["response"]))

    gz = entries[("GET", "/gzip?size=2500")]
    assert gz["response"]["content_encoding"] == "gzip"
    assert body_bytes(gz["response"]) == pattern_text(2500)
    assert gz["response"]["body_truncated"] is False
    ngz = entries[("GET", "/gz/big?size=5000")]  # gzip by nginx, chunked
    assert ngz["response"]["content_encoding"] == "gzip"
    assert header(ngz["response"], "transfer-encoding") == "chunked"
    assert body_bytes(ngz["response"]) == pattern_text(5000)

    ch = entries[("GET", "/chunked?n=5")]
    assert body_bytes(ch["response"]) == b"".join(f"chunk {i}\n".encode() for i in range(5))

    echo = entries[("POST", "/echo")]
    assert body_bytes(echo["request"]) == b'{"hello":"world","n":[1,2,3]}'
    echoed = json.loads(body_bytes(echo["response"]))
    assert echoed["body"] == '{"hello":"world","n":[1,2,3]}'

    raw = entries[("POST", "/echo?raw=1")]  # binary both ways
    assert body_bytes(raw["request"]) == bytes(range(256)) * 4
    assert raw["request"]["body_encoding"] == "base64"
    assert body_bytes(raw["response"]) == bytes(range(256)) * 4

    for target in ("/nocontent", "/notmodified"):
        e = entries[("GET", target)]
        assert body_bytes(e["response"]) == b"" and e["response"]["body_size"] == 0
    slow = entries[("GET", "/slow?ms=80")]
    assert slow["latency_ms"] >= 75


def test_matches_tshark(main: Scenario) -> None:
    ports = [main.nginx_port, main.backend_port]
    ex = oracle.http_exchanges(main.lo, ports)
    want: dict[tuple[Endpoint, Endpoint], list[tuple[Any, ...]]] = {}
    for x in ex:
        want.setdefault((x.client, x.server), []).append((x.method, x.uri, x.status))
    got = {k: [(e["method"], e["summary"], e["status"]) for e in v]
           for k, v in by_connection(main.lo_run.check().entries).items()}
    assert got == want
    streams = oracle.tcp_connections(main.lo)
    assert {conn_key(e) for e in main.lo_run.entries} == set(streams.values())


# 2 ------------------------------------------------------------------------------------------


def test_both_hops_once_each(main: Scenario) -> None:
    entries = main.lo_run.check().entries
    locals_ = {c.local for c in main.calls}
    upstream = [e for e in entries if (e["src"]["ip"], e["src"]["port"]) not in locals_]
    assert all(e["dst"]["port"] == main.backend_port for e in upstream)
    assert all(e["src"]["port"] not in (main.nginx_port, main.backend_port) for e in upstream)
    proxied = [c for c in main.calls if c.remote[1] == main.nginx_port and not c.via_nginx_only]
    assert Counter((e["method"], e["summary"], e["status"]) for e in upstream) == Counter(
        (c.method, c.upstream_target(), c.status) for c in proxied
    )
    assert len(entries) == len(main.calls) + len(proxied)
    # the upstream hop is a different connection from every client one
    assert not {conn_key(e) for e in upstream} & {conn_key(e) for e in entries
                                                  if e not in upstream}
    for e in upstream:
        assert e["error"] is None and e["request"]["version"] == "HTTP/1.1"
    big = [e for e in upstream if e["summary"] == f"/big?size={BIG}"]
    assert big[0]["response"]["body_size"] == BIG and big[0]["response"]["body_truncated"]


# 3 ------------------------------------------------------------------------------------------


PIPELINE = [("GET", "/status/200"), ("HEAD", "/big?size=5000"), ("GET", "/chunked?n=3"),
            ("GET", "/status/404")]


@pytest.mark.parametrize("hop", ["nginx", "aiohttp"])
def test_pipelined_with_head(
    hop: str, http_backend: realpeers.Peer, nginx_proxy: realpeers.Nginx, tmp_path: Path
) -> None:
    port = nginx_proxy.port if hop == "nginx" else http_backend.port
    with capture("lo", ports=[port], path=tmp_path / "p.pcap") as cap:
        calls = raw_pipeline("127.0.0.1", port, PIPELINE)
    assert [c.status for c in calls] == [200, 200, 200, 404]
    assert calls[1].resp_headers["content-length"] == "5000" and calls[1].resp_body == b""
    run = run_dissect(cap.path).check()
    conns = by_connection(run.entries)
    entries = conns[(calls[0].local, calls[0].remote)]
    assert [brief(e) for e in entries] == [(c.method, c.target, c.status, None) for c in calls]
    for e, c in zip(entries, calls):
        check_entry_matches_call(e, c)
    head = entries[1]
    assert head["response"]["body_size"] == 0 and body_bytes(head["response"]) == b""


# 4 ------------------------------------------------------------------------------------------


def test_mid_stream_capture(
    http_backend: realpeers.Peer, nginx_proxy: realpeers.Nginx, tmp_path: Path
) -> None:
    calls: list[Call] = []
    via = PyClient("127.0.0.1", nginx_proxy.port, calls)
    direct = PyClient("127.0.0.1", http_backend.port, calls)
    via.call("GET", "/status/200")
    direct.call("GET", "/status/200")
    time.sleep(0.1)
    before = len(calls)
    ports = [nginx_proxy.port, http_backend.port]
    with capture("lo", ports=ports, path=tmp_path / "m.pcap") as cap:
        for client in (via, direct):
            client.call("GET", "/status/404")
            client.call("POST", "/echo", body=b"mid=stream", headers={"Content-Type": "text/plain"})
            client.call("GET", "/chunked?n=2")
    via_local, direct_local = via.local, direct.local
    via.close()
    direct.close()
    seen = calls[before:]
    run = run_dissect(cap.path).check()
    conns = by_connection(run.entries)
    for local in (via_local, direct_local):
        mine = [c for c in seen if c.local == local]
        assert len(mine) == 3
        key = (mine[0].local, mine[0].remote)
        assert key in conns, (key, list(conns))
        entries = conns[key]
        assert [brief(e) for e in entries] == [(c.method, c.target, c.status, None) for c in mine]
        for e, c in zip(entries, mine):
            check_entry_matches_call(e, c)
    # the upstream keep-alive connection was also joined midway: nginx is still its src
    up = [e for k, v in conns.items() if k[1][1] == http_backend.port
          and k[0] != direct_local for e in v]
    assert [brief(e) for e in up] == [("GET", "/status/404", 404, None),
                                      ("POST", "/echo", 200, None),
                                      ("GET", "/chunked?n=2", 200, None)]


# 5 ------------------------------------------------------------------------------------------


def _read_pcap(path: Path) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(global header, [(record header, data)]) of a classic pcap."""
    raw = path.read_bytes()
    assert raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"), "little-endian pcap expected"
    out = []
    off = 24
    while off + 16 <= len(raw):
        incl = struct.unpack_from("<I", raw, off + 8)[0]
        out.append((raw[off : off + 16], raw[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return raw[:24], out


def _write_pcap(path: Path, head: bytes, records: list[tuple[bytes, bytes]]) -> None:
    path.write_bytes(head + b"".join(h + d for h, d in records))


def _tcp(data: bytes) -> dpkt.tcp.TCP:
    eth = dpkt.ethernet.Ethernet(data)
    return eth.data.data


@pytest.fixture(scope="module")
def loss_capture(http_backend: realpeers.Peer, tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Path, list[Call], DissectResult]:
    d = tmp_path_factory.mktemp("loss")
    calls: list[Call] = []
    with capture("lo", ports=[http_backend.port], path=d / "orig.pcap") as cap:
        c = PyClient("127.0.0.1", http_backend.port, calls)
        c.call("GET", "/status/200")
        c.call("GET", "/big?size=300000")
        c.call("GET", "/status/404")
        c.call("GET", "/chunked?n=5&delay_ms=5")
        c.call("GET", "/status/201")
        c.close()
    return cap.path, calls, run_dissect(cap.path).check()


def _server_segments(records: list[tuple[bytes, bytes]], port: int) -> list[int]:
    return [i for i, (_, d) in enumerate(records)
            if (t := _tcp(d)).sport == port and len(t.data) > 0]


def test_reordered_segments_change_nothing(
    loss_capture: tuple[Path, list[Call], DissectResult], http_backend: realpeers.Peer
) -> None:
    path, _calls, orig = loss_capture
    head, recs = _read_pcap(path)
    segs = _server_segments(recs, http_backend.port)
    payloads = [_tcp(recs[i][1]).data for i in segs]
    big_start = next(k for k, p in enumerate(payloads) if b"Content-Length: 300000" in p)
    ch_start = next(k for k, p in enumerate(payloads) if b"Transfer-Encoding: chunked" in p)
    # Swap two data segments that follow each other in the file with no ACK between them:
    # reordering as a receiver-side capture sees it. (A swap across the ACK of the late
    # segment makes it "acknowledged but unseen", which the tool rightly reports as a gap.)
    body = [segs[k] for k in range(big_start + 1, ch_start)]
    chunks = [segs[k] for k in range(ch_start + 1, len(segs))
              if payloads[k].endswith(b"\n\r\n")]
    swaps = []
    for group in (body, chunks):
        pair = next(((i, j) for i, j in itertools.pairwise(group) if j == i + 1), None)
        assert pair is not None, "no two adjacent data segments to swap"
        swaps.append(pair)
    for i, j in swaps:  # packets change places, timestamps stay in file order
        (hi, di), (hj, dj) = recs[i], recs[j]
        recs[i], recs[j] = (hi[:8] + hj[8:], dj), (hj[:8] + hi[8:], di)
    out = path.with_name("reordered.pcap")
    _write_pcap(out, head, recs)
    assert out.read_bytes() != path.read_bytes()
    run = run_dissect(out, "--stats").check()
    assert json.loads(run.stderr_lines[-1])["tcp"]["out_of_order"] >= 2, run.stderr
    assert run.entries == orig.entries


def test_lost_segment_truncates_that_exchange_only(
    loss_capture: tuple[Path, list[Call], DissectResult], http_backend: realpeers.Peer
) -> None:
    path, calls, orig = loss_capture
    head, recs = _read_pcap(path)
    segs = _server_segments(recs, http_backend.port)
    payloads = [_tcp(recs[i][1]).data for i in segs]
    big_start = next(k for k, p in enumerate(payloads) if b"Content-Length: 300000" in p)
    assert not payloads[big_start + 2].startswith(b"HTTP/1.1"), "body too short for the test"
    drop = segs[big_start + 2]
    out = path.with_name("lost.pcap")
    _write_pcap(out, head, recs[:drop] + recs[drop + 1 :])
    run = run_dissect(out).check()
    assert len(run.entries) == len(orig.entries) == len(calls)
    for before, after in zip(orig.entries, run.entries):
        if before["summary"] == "/big?size=300000":
            assert after["error"] == "truncated", after["error"]
            assert brief(after)[:3] == brief(before)[:3]
            assert after["id"] == before["id"]
        else:
            assert after == before


# 6 ------------------------------------------------------------------------------------------


def comparable(e: Entry) -> Entry:
    """An entry without what may legitimately differ between two captures of the same
    packets (the flow number, and timestamps by a few microseconds)."""
    out = without(e, "id", "ts", "latency_ms")
    out["n"] = e["id"].split(":")[1]
    return out


def test_any_capture_equals_lo_capture(main: Scenario) -> None:
    lo, anyr = main.lo_run.check(), main.any_run.check()
    assert anyr.stderr_lines == []
    assert len(anyr.entries) == len(lo.entries)
    key = lambda e: (conn_key(e), int(e["id"].split(":")[1]))  # noqa: E731
    a = sorted(lo.entries, key=key)
    b = sorted(anyr.entries, key=key)
    for x, y in zip(a, b):
        assert comparable(x) == comparable(y)
        assert abs(x["ts"] - y["ts"]) < 0.001


def test_ipv6_lo_and_any(tmp_path: Path, capture_tools: None) -> None:
    with realpeers.aiohttp_backend(host="::1") as be, \
            realpeers.nginx(backend_port=be.port, host="::1") as ngx:
        ports = [be.port, ngx.port]
        calls: list[Call] = []
        with capture("lo", ports=ports, path=tmp_path / "lo6.pcap") as lo, \
                capture("any", ports=ports, path=tmp_path / "any6.pcap",
                        linktype="LINUX_SLL2") as anyc:
            c = PyClient("::1", ngx.port, calls)
            c.call("GET", "/status/200")
            c.call("GET", "/status/500")
            c.call("POST", "/echo", body=b"v6=yes", headers={"Content-Type": "text/plain"})
            c.call("GET", "/static/hello.txt")
            c.close()
    r_lo, r_any = run_dissect(lo.path).check(), run_dissect(anyc.path).check()
    for run in (r_lo, r_any):
        assert all(e["src"]["ip"] == "::1" and e["dst"]["ip"] == "::1" for e in run.entries)
        mine = by_connection(run.entries)[(calls[0].local, calls[0].remote)]
        assert [brief(e) for e in mine] == [(c.method, c.target, c.status, None) for c in calls]
        for e, call in zip(mine, calls):
            check_entry_matches_call(e, call)
        assert len(run.entries) == len(calls) + 3  # three were proxied
    assert sorted(map(comparable, r_lo.entries), key=repr) == sorted(
        map(comparable, r_any.entries), key=repr)
    ex = oracle.http_exchanges(lo.path, ports)
    assert sorted((x.method, x.uri, x.status) for x in ex) == sorted(
        (e["method"], e["summary"], e["status"]) for e in r_lo.entries)


# 7 ------------------------------------------------------------------------------------------


def test_pcapng_mixed_link_types(nginx_proxy: realpeers.Nginx, tmp_path: Path) -> None:
    calls: list[Call] = []
    with capture("lo", ports=[nginx_proxy.port], path=tmp_path / "a.pcap") as a:
        c = PyClient("127.0.0.1", nginx_proxy.port, calls)
        c.call("GET", "/status/202")
        c.call("GET", "/teapot")
        c.close()
    with capture("any", ports=[nginx_proxy.port], path=tmp_path / "b.pcap",
                 linktype="LINUX_SLL2") as b:
        c = PyClient("127.0.0.1", nginx_proxy.port, calls)
        c.call("GET", "/static/index.html")
        c.call("POST", "/echo", body=b"x=1", headers={"Content-Type": "text/plain"})
        c.close()
    merged = tmp_path / "merged.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(merged), str(a.path), str(b.path)],
                   check=True, capture_output=True)
    info = oracle.tshark(merged, "-T", "fields", "-e", "frame.interface_id", "-e",
                         "frame.encap_type")
    assert len(set(info.split())) >= 3, "expected two interfaces with two link types"
    run = run_dissect(merged).check()
    ra, rb = run_dissect(a.path).check(), run_dissect(b.path).check()
    assert len(run.entries) == len(calls) == len(ra.entries) + len(rb.entries)
    assert sorted(map(brief, run.entries)) == sorted(
        (c.method, c.target, c.status, None) for c in calls)
    for e in run.entries:
        call = next(c for c in calls if c.local == (e["src"]["ip"], e["src"]["port"])
                    and c.target == e["summary"])
        check_entry_matches_call(e, call)
    assert sorted(map(comparable, run.entries), key=repr) == sorted(
        map(comparable, ra.entries + rb.entries), key=repr)


# 8 ------------------------------------------------------------------------------------------


def test_truncated_file(main: Scenario, tmp_path: Path) -> None:
    full = main.lo_run.check()
    _head, recs = _read_pcap(main.lo)
    off = 24
    for h, d in recs:
        sec, usec = struct.unpack_from("<II", h)
        if sec + usec / 1e6 > main.t_mark:
            break
        off += 16 + len(d)
    else:
        pytest.fail("no packet after the mark")
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(main.lo.read_bytes()[: off + 16 + 20])  # inside the first packet after it
    run = run_dissect(cut)
    assert run.returncode == 0, run.stderr
    assert len(run.stderr_lines) == 1, run.stderr
    want = [e for e in full.entries if e["ts"] < main.t_mark]
    assert want, "nothing before the mark"
    assert run.entries == want


def test_stdin_equals_file(main: Scenario) -> None:
    run = run_dissect(None, stdin=main.lo.read_bytes()).check()
    assert run.entries == main.lo_run.entries


def test_not_a_capture_file(tmp_path: Path) -> None:
    bad = tmp_path / "entries.json"
    bad.write_text(json.dumps({"id": "1:1", "proto": "http"}) + "\n")
    run = run_dissect(bad)
    assert run.returncode == 2
    assert len(run.stderr_lines) == 1, run.stderr
    assert run.entries == []
    missing = run_dissect(tmp_path / "nope.pcap")
    assert missing.returncode == 2 and len(missing.stderr_lines) == 1, missing.stderr


# 9 ------------------------------------------------------------------------------------------


def test_filter_status(main: Scenario) -> None:
    full = main.lo_run.check()
    run = run_dissect(main.lo, "--filter", "status >= 500").check()
    assert run.entries == [e for e in full.entries if (e["status"] or 0) >= 500]
    assert {e["status"] for e in run.entries} == {500, 503}
    # 3 client calls answered 5xx through nginx (x2 hops), 1 direct to the backend
    n5xx = sum(1 for c in main.calls if c.status >= 500)
    assert len(run.entries) == n5xx + sum(
        1 for c in main.calls if c.status >= 500 and c.remote[1] == main.nginx_port)


def _free_well_known(ports: list[int]) -> int | None:
    for p in ports:
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p))
                return p
        except OSError:
            continue
    return None


def test_decode_and_inference(tmp_path: Path, capture_tools: None) -> None:
    port = _free_well_known([5432, 6379, 9092, 5672])
    assert port is not None, "no well-known port free"
    with realpeers.aiohttp_backend(port=port) as be:
        calls: list[Call] = []
        weird: list[Call] = []
        with capture("lo", ports=[port], path=tmp_path / "d.pcap") as cap:
            c = PyClient("127.0.0.1", be.port, calls)
            c.call("GET", "/status/200")
            c.call("PUT", "/pot?status=418", body=b"coffee")
            c.close()
            # a first request line whose method inference does not list (llhttp accepts it)
            w = PyClient("127.0.0.1", be.port, weird)
            w.call("LINK", "/kettle", body=b"tea")
            w.call("GET", "/status/204")
            w.close()
    assert [c.status for c in weird] == [200, 204]
    plain = run_dissect(cap.path).check()
    conns = by_connection(plain.entries)
    # an HTTP server on a port that belongs to another protocol is still found by inference
    mine = conns[(calls[0].local, calls[0].remote)]
    assert [brief(e) for e in mine] == [("GET", "/status/200", 200, None),
                                        ("PUT", "/pot?status=418", 418, None)]
    # ... and the unknown method is recognised from the server's status line
    assert [brief(e) for e in conns[(weird[0].local, weird[0].remote)]] == [
        ("LINK", "/kettle", 200, None), ("GET", "/status/204", 204, None)]
    decoded = run_dissect(cap.path, "--decode", f"{port}=http").check()
    entries = by_connection(decoded.entries)[(weird[0].local, weird[0].remote)]
    assert [brief(e) for e in entries] == [("LINK", "/kettle", 200, None),
                                           ("GET", "/status/204", 204, None)]
    for e, call in zip(entries, weird):
        check_entry_matches_call(e, call)
    # --decode wins over inference: forced to raw TCP, each connection is one tcp row
    as_tcp = run_dissect(cap.path, "--decode", f"{port}=tcp").check()
    assert [e["proto"] for e in as_tcp.entries] == ["tcp", "tcp"]
    assert {conn_key(e) for e in as_tcp.entries} == {(calls[0].local, calls[0].remote),
                                                     (weird[0].local, weird[0].remote)}
    bad = run_dissect(cap.path, "--decode", "notaport")
    assert bad.returncode == 2 and len(bad.stderr_lines) == 1, bad.stderr


def test_unknown_tcp_is_a_tcp_entry(tmp_path: Path, capture_tools: None) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    with capture("lo", ports=[port], path=tmp_path / "t.pcap") as cap:
        cli = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        cli.sendall(b"\x00\x01\x02binary-hello\xff" * 3)
        conn.recv(100)
        conn.sendall(b"\x07\x08reply\x00")
        cli.recv(100)
        cli.close()
        conn.close()
    srv.close()
    run = run_dissect(cap.path).check()
    assert len(run.entries) == 1
    e = run.entries[0]
    assert e["proto"] == "tcp" and e["method"] is None and e["status"] is None
    assert e["src"]["port"] == cli_port(cap.path, port)
    assert e["dst"]["port"] == port
    assert e["request_size"] == 48 and e["response_size"] == 8


def cli_port(path: Path, server_port: int) -> int:
    conns = oracle.tcp_connections(path)
    (client, server), = conns.values()
    assert server[1] == server_port
    return client[1]


# more HTTP/1.x shapes ------------------------------------------------------------------------


def test_http10_close_delimited_body(nginx_proxy: realpeers.Nginx, tmp_path: Path) -> None:
    """An HTTP/1.0 client gets the backend's chunked body from nginx delimited by the close."""
    with capture("lo", ports=[nginx_proxy.port], path=tmp_path / "h10.pcap") as cap:
        (call,) = raw_pipeline("127.0.0.1", nginx_proxy.port, [("GET", "/chunked?n=4")],
                               version="HTTP/1.0")
    assert "content-length" not in call.resp_headers
    assert "transfer-encoding" not in call.resp_headers
    assert call.resp_body == b"".join(f"chunk {i}\n".encode() for i in range(4))
    run = run_dissect(cap.path).check()
    (e,) = run.entries
    check_entry_matches_call(e, call)


def test_expect_100_continue(nginx_proxy: realpeers.Nginx, http_backend: realpeers.Peer,
                             tmp_path: Path) -> None:
    body = b"a=" + b"x" * 3000
    ports = [nginx_proxy.port, http_backend.port]
    with capture("lo", ports=ports, path=tmp_path / "c.pcap") as cap:
        results = []
        for port in ports:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            head = (f"POST /echo?raw=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                    "Expect: 100-continue\r\nConnection: close\r\n\r\n").encode()
            sock.sendall(head)
            interim = sock.recv(4096)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            sock.sendall(body)
            rest = b""
            while chunk := sock.recv(65536):
                rest += chunk
            results.append((sock.getsockname()[1] if False else port, interim, rest))
            sock.close()
    run = run_dissect(cap.path).check()
    client_side = [e for e in run.entries if e["method"] == "POST"]
    # two client connections, plus nginx's upstream request (no Expect, so no 100 there)
    assert len(client_side) == 3, [brief(e) for e in run.entries]
    for e in client_side:
        assert e["status"] == 200 and e["error"] is None, brief(e)
        assert body_bytes(e["request"]) == body
        assert body_bytes(e["response"]) == body
    with_100 = [e for e in client_side if header(e["request"], "expect")]
    assert len(with_100) == 2
    for e in with_100:
        info = e["response"].get("informational")
        assert info, f"no informational response recorded on {e['id']}: {e['response']}"
        assert "100" in json.dumps(info)


def test_big_request_body(nginx_proxy: realpeers.Nginx, tmp_path: Path) -> None:
    body = pattern_text(150_000)
    calls: list[Call] = []
    with capture("lo", ports=[nginx_proxy.port, nginx_proxy.backend_port],
                 path=tmp_path / "b.pcap") as cap:
        c = PyClient("127.0.0.1", nginx_proxy.port, calls)
        c.call("POST", "/echo?raw=1", body=body, headers={"Content-Type": "text/plain"})
        c.call("GET", "/status/200")
        c.close()
    assert calls[0].resp_body == body
    run = run_dissect(cap.path).check()
    mine = by_connection(run.entries)[(calls[0].local, calls[0].remote)]
    for e, call in zip(mine, calls, strict=True):
        check_entry_matches_call(e, call)
    post = mine[0]
    assert post["request"]["body_truncated"] is True
    assert post["request"]["body_size"] == len(body)
    assert post["request_size"] > len(body)
    assert len(run.entries) == 4  # both hops


def test_text_output_one_line_per_entry(main: Scenario) -> None:
    text = run_dissect(main.lo, json=False).check()
    lines = [line for line in text.stdout.splitlines() if line.strip()]
    assert len(lines) == len(main.lo_run.entries)
    for line, e in zip(lines, main.lo_run.entries):
        assert e["id"] in line and (e["summary"] or "") in line


@pytest.mark.parametrize(
    "expr",
    [
        "port == {backend}",
        "dst.port == {nginx} and method == POST",
        'path == "/echo"',
        'summary ~ "^/status/[45]"',
        'request.headers.x-trace == "a-1"',
        "status >= 400 and not dst.port == {backend}",
        "response.body_truncated",
        "not http",
    ],
)
def test_filters_match_python(main: Scenario, expr: str) -> None:
    expr = expr.format(backend=main.backend_port, nginx=main.nginx_port)
    full = main.lo_run.check().entries

    def ports(e: Entry) -> set[int]:
        return {e["src"]["port"], e["dst"]["port"]}

    def path(e: Entry) -> str:
        return str(e["request"]["path"])

    py = {
        "port == {backend}": lambda e: main.backend_port in ports(e),
        "dst.port == {nginx} and method == POST":
            lambda e: e["dst"]["port"] == main.nginx_port and e["method"] == "POST",
        'path == "/echo"': lambda e: path(e) == "/echo",
        'summary ~ "^/status/[45]"': lambda e: e["summary"].startswith(("/status/4", "/status/5")),
        'request.headers.x-trace == "a-1"': lambda e: header(e["request"], "x-trace") == "a-1",
        "status >= 400 and not dst.port == {backend}":
            lambda e: e["status"] >= 400 and e["dst"]["port"] != main.backend_port,
        "response.body_truncated": lambda e: e["response"]["body_truncated"],
        "not http": lambda e: False,
    }
    key = next(k for k in py if k.format(backend=main.backend_port, nginx=main.nginx_port)
               == expr)
    want = [e for e in full if py[key](e)]
    run = run_dissect(main.lo, "--filter", expr).check()
    assert [e["id"] for e in run.entries] == [e["id"] for e in want]
    assert run.entries == want


def test_bad_filter_is_a_usage_error(main: Scenario) -> None:
    run = run_dissect(main.lo, "--filter", "status >=")
    assert run.returncode == 2 and len(run.stderr_lines) == 1, run.stderr
    assert run.entries == []


def test_short_snaplen_keeps_what_was_seen(nginx_proxy: realpeers.Nginx, tmp_path: Path) -> None:
    """Packets cut at 200 bytes (``tcpdump -s 200``): each response's status line is in the
    file (tshark shows "HTTP/1.1 200 OK [Packet size limited during capture]"), its end is not.
    Each exchange should keep its status and say it is truncated, not claim no response."""
    calls: list[Call] = []
    with capture("lo", ports=[nginx_proxy.port], path=tmp_path / "s.pcap", snaplen=200) as cap:
        c = PyClient("127.0.0.1", nginx_proxy.port, calls)
        c.call("GET", "/status/200")
        c.call("GET", "/big?size=5000")
        c.call("GET", "/status/404")
        c.close()
    ex = oracle.http_exchanges(cap.path, [nginx_proxy.port])
    assert [(x.method, x.uri, x.status) for x in ex] == [
        (c.method, c.target, c.status) for c in calls]
    run = run_dissect(cap.path).check()
    assert [(e["method"], e["summary"], e["status"]) for e in run.entries] == [
        (c.method, c.target, c.status) for c in calls], [brief(e) for e in run.entries]
    for e in run.entries:
        assert e["error"] in ("truncated", "partial"), brief(e)
        assert e["response"] is not None


def test_port_reuse_gives_two_flows(http_backend: realpeers.Peer, tmp_path: Path) -> None:
    """The server closes first (``Connection: close``), so the client may bind the same port
    again at once: two connections with one 4-tuple, told apart by their SYNs."""
    local_port = realpeers.free_port()
    with capture("lo", ports=[http_backend.port], path=tmp_path / "r.pcap") as cap:
        for target in ("/status/200", "/status/404"):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", local_port))
            sock.connect(("127.0.0.1", http_backend.port))
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                         .encode())
            while sock.recv(65536):
                pass
            sock.close()
            time.sleep(0.05)
    assert len(oracle.tcp_connections(cap.path)) == 2
    run = run_dissect(cap.path).check()
    assert [brief(e) for e in run.entries] == [("GET", "/status/200", 200, None),
                                              ("GET", "/status/404", 404, None)]
    assert run.entries[0]["id"].split(":")[0] != run.entries[1]["id"].split(":")[0]
    assert all(e["src"]["port"] == local_port for e in run.entries)


def test_joined_in_the_middle_of_a_response(http_backend: realpeers.Peer, tmp_path: Path) -> None:
    """tcpdump starts while a slow chunked response is streaming; the requests that follow on
    the same connection are still found, with the right ends."""
    import threading

    calls: list[Call] = []
    c = PyClient("127.0.0.1", http_backend.port, calls)
    t = threading.Thread(target=c.call, args=("GET", "/chunked?n=12&delay_ms=40"))
    t.start()
    time.sleep(0.15)
    with capture("lo", ports=[http_backend.port], path=tmp_path / "j.pcap") as cap:
        t.join()
        c.call("GET", "/status/404")
        c.call("POST", "/echo", body=b"after=join", headers={"Content-Type": "text/plain"})
    c.close()
    tail = oracle.packet_count(cap.path, f"tcp.srcport == {http_backend.port} && tcp.len > 0")
    assert tail > 2, "the capture did not start inside the streaming response"
    run = run_dissect(cap.path).check()
    later = [e for e in run.entries if e["request"] is not None]
    assert [brief(e) for e in later] == [("GET", "/status/404", 404, None),
                                         ("POST", "/echo", 200, None)]
    for e, call in zip(later, calls[1:]):
        check_entry_matches_call(e, call)
    partial = [e for e in run.entries if e["request"] is None]
    assert len(partial) <= 1
    for e in partial:  # the tail of the response already under way, if shown at all
        assert e["error"] in ("no_request", "partial", "desynced"), e["error"]
        assert conn_key(e) == (calls[0].local, calls[0].remote)


def test_request_dribbled_byte_by_byte(http_backend: realpeers.Peer, tmp_path: Path) -> None:
    req = (b"POST /echo?raw=1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
           b"Content-Length: 11\r\n\r\nhello world")
    with capture("lo", ports=[http_backend.port], path=tmp_path / "d.pcap") as cap:
        sock = socket.create_connection(("127.0.0.1", http_backend.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(req)):
            sock.send(req[i : i + 1])
            time.sleep(0.001)
        data = b""
        while b"hello world" not in data:
            data += sock.recv(65536)
        sock.close()
    segments = oracle.packet_count(cap.path, f"tcp.dstport == {http_backend.port} && tcp.len > 0")
    assert segments > 20, "the request was not split"
    run = run_dissect(cap.path).check()
    (e,) = run.entries
    assert brief(e) == ("POST", "/echo?raw=1", 200, None)
    assert body_bytes(e["request"]) == b"hello world" == body_bytes(e["response"])
    assert e["request_size"] == len(req)


def test_nanosecond_pcap_and_pcapng(nginx_proxy: realpeers.Nginx, tmp_path: Path) -> None:
    calls: list[Call] = []
    with capture("lo", ports=[nginx_proxy.port], path=tmp_path / "n.pcap",
                 extra_args=["--time-stamp-precision=nano"]) as cap:
        c = PyClient("127.0.0.1", nginx_proxy.port, calls)
        c.call("GET", "/status/200")
        c.call("GET", "/static/hello.txt")
        c.close()
    assert cap.path.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"  # nanosecond magic
    ng = tmp_path / "n.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(cap.path), str(ng)], check=True)
    a, b = run_dissect(cap.path).check(), run_dissect(ng).check()
    assert a.entries == b.entries
    for e, call in zip(a.entries, calls, strict=True):
        check_entry_matches_call(e, call)
    frames = oracle.tshark(cap.path, "-T", "fields", "-e", "frame.time_epoch").split()
    assert a.entries[0]["ts"] == pytest.approx(float(frames[3]), abs=2e-6)  # the GET's packet


def test_truncated_pcapng_and_stdin(main: Scenario, tmp_path: Path) -> None:
    ng = tmp_path / "main.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(main.lo), str(ng)], check=True)
    full = run_dissect(ng).check()
    assert full.entries == main.lo_run.entries
    raw = ng.read_bytes()
    cut = raw[: len(raw) * 2 // 3 + 7]
    piped = run_dissect(None, stdin=cut)
    assert piped.returncode == 0 and len(piped.stderr_lines) == 1, piped.stderr
    ids = {e["id"] for e in full.entries}
    by_id = full.by_id()
    complete = [e for e in piped.entries if e["error"] is None]
    assert complete and all(e["id"] in ids for e in piped.entries)
    for e in complete:
        assert e == by_id[e["id"]]


def test_same_packets_on_two_interfaces_count_once(main: Scenario, tmp_path: Path) -> None:
    """``mergecap`` of the ``lo`` and ``any`` captures of the same traffic: every packet twice,
    on two interfaces; each exchange still appears once."""
    merged = tmp_path / "dup.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(merged), str(main.lo), str(main.any)],
                   check=True)
    run = run_dissect(merged).check()
    lo = main.lo_run.entries
    assert [e["id"] for e in run.entries] == [e["id"] for e in lo]
    for x, y in zip(run.entries, lo):
        assert without(x, "ts", "latency_ms") == without(y, "ts", "latency_ms")
        assert abs(x["ts"] - y["ts"]) < 0.001


def test_header_only_and_empty_files(tmp_path: Path) -> None:
    only = tmp_path / "header.pcap"
    only.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    run = run_dissect(only)
    assert (run.returncode, run.entries, run.stderr_lines) == (0, [], [])
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    run = run_dissect(empty)
    assert run.returncode in (0, 2) and len(run.stderr_lines) <= 1 and run.entries == []


def test_pattern_text_agrees_with_backend() -> None:
    from tests.peers.http_backend import pattern_text as backend_pattern

    assert backend_pattern(12345) == pattern_text(12345)
