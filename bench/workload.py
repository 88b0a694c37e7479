"""Record the seed capture: real nginx and aiohttp traffic on loopback, captured by tcpdump.

Run by ``bench.mkcapture`` as ``unshare -n python -m bench.workload OUTDIR ...``: in a private
network namespace whose ``lo`` has MTU 1500 and no segmentation offload, so the capture has
Ethernet-sized segments (like a real NIC) and the servers can use the ports tshark decodes as
HTTP without decode-as (nginx on 80, the aiohttp backend on 8080). Nothing leaves the namespace.

The workload (seeded, so the same request mix each time):

- aiohttp client sessions: one keep-alive connection each with 1–20 sequential requests and
  some think time, to nginx or straight to the backend;
- raw-socket pipelines: 2–10 requests written at once (in 1–3 bursts), the last one with
  ``Connection: close``; some hold a ``HEAD`` that is not last (tshark loses the responses after
  it: the bench explains those differences with the flags written here);
- raw HTTP/1.0 one-shot connections;
- methods GET/HEAD/POST/PUT/PATCH/DELETE/OPTIONS, POST bodies from 0 to 100 kB (some sent
  chunked), chunked streaming responses, gzip (nginx's on proxied JSON and static text, and
  aiohttp's own), statuses 200/201/204/301/404/500, nginx->backend over upstream keep-alive.

Every URI holds the placeholder ``q000000``; the replicator rewrites its digits per copy.

The truth (``truth.json``): every exchange as ``[server_port, client_port, method, uri,
status]`` from the servers' own records — nginx's access log (client port, method, request URI,
status) and the backend's response hook (peer port, method, raw path, status) — plus the flags
of the raw connections. It is independent of both dissectors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PLACEHOLDER = b"q000000"
TAG = PLACEHOLDER.decode()
NGINX_PORT = 80
BACKEND_PORT = 8080
HOST = "127.0.0.1"

# ---------------------------------------------------------------------------------------------
# backend (aiohttp, in this process)


def backend_app(log: list[list[Any]]) -> Any:
    from aiohttp import web

    async def on_prepare(request: Any, response: Any) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        log.append([BACKEND_PORT, peer[1] if peer else 0, request.method, request.raw_path,
                    response.status])

    words = " ".join(f"{w}{i}" for i, w in enumerate(
        ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"] * 40))

    def pad(n: int) -> str:
        return (words * (n // len(words) + 1))[:n]

    def item_size(iid: int) -> int:
        h = (iid * 7919) % 1000  # mostly small bodies, some medium, a few large
        if h < 700:
            return h
        if h < 950:
            return 1000 + (h - 700) * 28
        return 8000 + (h - 950) * 640

    async def get_item(request: Any) -> Any:
        iid = int(request.match_info["id"])
        size = item_size(iid)
        return web.json_response({"id": iid, "path": request.raw_path, "pad": pad(size)})

    async def post_item(request: Any) -> Any:
        body = await request.read()
        return web.json_response({"created": len(body), "path": request.raw_path}, status=201)

    async def put_item(request: Any) -> Any:
        body = await request.read()
        return web.json_response({"updated": len(body), "id": request.match_info["id"]})

    async def delete_item(request: Any) -> Any:
        return web.Response(status=204)

    async def options_items(request: Any) -> Any:
        return web.Response(status=204, headers={"Allow": "GET, HEAD, POST, OPTIONS"})

    async def stream(request: Any) -> Any:
        n = int(request.match_info["n"])
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(n):
            await resp.write(f"line {i} {pad(20 + (i * 331) % 1200)}\n".encode())
            if i % 3 == 2:
                await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    async def gz(request: Any) -> Any:
        n = int(request.match_info["n"])
        resp = web.Response(text=pad(n), content_type="text/plain")
        resp.enable_compression()
        return resp

    async def old(request: Any) -> Any:
        return web.Response(
            status=301, headers={"Location": f"/r/{request.match_info['tag']}/items/"
                                              f"{request.match_info['id']}"})

    async def nope(request: Any) -> Any:
        return web.Response(status=404, text="no such thing\n")

    async def boom(request: Any) -> Any:
        await request.read()
        return web.Response(status=500, text="internal error: the bench asked for it\n")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.on_response_prepare.append(on_prepare)
    r = app.router
    r.add_get("/r/{tag}/items/{id:\\d+}", get_item)
    r.add_post("/r/{tag}/items", post_item)
    r.add_put("/r/{tag}/items/{id:\\d+}", put_item)
    r.add_patch("/r/{tag}/items/{id:\\d+}", put_item)
    r.add_delete("/r/{tag}/items/{id:\\d+}", delete_item)
    r.add_route("OPTIONS", "/r/{tag}/items", options_items)
    r.add_get("/r/{tag}/stream/{n:\\d+}", stream)
    r.add_get("/r/{tag}/gz/{n:\\d+}", gz)
    r.add_get("/r/{tag}/old/{id:\\d+}", old)
    r.add_get("/r/{tag}/nope/{x}", nope)
    r.add_route("*", "/r/{tag}/boom", boom)
    return app


# ---------------------------------------------------------------------------------------------
# nginx (own config: access log with the client port, gzip, static files, upstream keep-alive)

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 2048; }}
http {{
    log_format bench '$remote_port $request_method $request_uri $status';
    access_log {w}/access.log bench;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    types {{ text/plain txt; application/json json; text/html html; }}
    default_type application/octet-stream;
    keepalive_requests 10000;
    keepalive_timeout 120s;
    client_max_body_size 16m;
    gzip on;
    gzip_types text/plain application/json;
    gzip_proxied any;
    gzip_min_length 256;
    upstream backend {{
        server {host}:{backend};
        keepalive 8;
    }}
    server {{
        listen {host}:{port};
        server_name _;
        location /r/ {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Via nginx;
        }}
        location /s/ {{
            rewrite ^/s/q[0-9]+/(.*)$ /$1 break;
            root {w}/www;
        }}
        location /m/ {{
            return 301 /s$uri;
        }}
    }}
}}
"""

STATIC_SIZES = [120, 700, 1500, 3000, 8000, 16000, 30000, 50000]


def _text(n: int, salt: int) -> bytes:
    line = f"static line {salt} abcdefghijklmnopqrstuvwxyz 0123456789\n".encode()
    return (line * (n // len(line) + 1))[:n]


# ---------------------------------------------------------------------------------------------
# requests


def rand_request(rng: random.Random, to_nginx: bool) -> tuple[str, str, bytes | None]:
    """(method, uri, body) of one request."""
    iid = rng.randint(1, 99999)
    q = rng.choice(["", "", "", f"?page={rng.randint(1, 50)}", f"?page={iid % 7}&sort=name",
                    f"?q=item{iid}&limit=20"])
    base = f"/r/{TAG}"
    choices: list[tuple[int, Any]] = [
        (30, lambda: ("GET", f"{base}/items/{iid}{q}", None)),
        (8, lambda: ("GET", f"{base}/stream/{rng.randint(1, 12)}{q}", None)),
        (4, lambda: ("GET", f"{base}/gz/{rng.choice([300, 2000, 9000, 30000])}", None)),
        (12, lambda: ("POST", f"{base}/items{q}", _body(rng))),
        (5, lambda: ("PUT", f"{base}/items/{iid}", _body(rng))),
        (3, lambda: ("PATCH", f"{base}/items/{iid}", _body(rng, small=True))),
        (5, lambda: ("DELETE", f"{base}/items/{iid}", None)),
        (5, lambda: ("HEAD", f"{base}/items/{iid}{q}", None)),
        (2, lambda: ("OPTIONS", f"{base}/items", None)),
        (4, lambda: ("GET", f"{base}/old/{iid}", None)),
        (5, lambda: ("GET", f"{base}/nope/x{iid}{q}", None)),
        (3, lambda: ("GET", f"{base}/boom{q}", None)),
        (1, lambda: ("POST", f"{base}/boom", _body(rng, small=True))),
    ]
    if to_nginx:
        choices += [
            (8, lambda: ("GET", f"/s/{TAG}/file{rng.randrange(len(STATIC_SIZES))}.txt{q}", None)),
            (2, lambda: ("GET", f"/s/{TAG}/missing{iid}.txt", None)),
            (2, lambda: ("GET", f"/m/{TAG}/file{iid % len(STATIC_SIZES)}.txt", None)),
        ]
    total = sum(w for w, _ in choices)
    x = rng.uniform(0, total)
    for w, f in choices:
        x -= w
        if x <= 0:
            return f()  # type: ignore[no-any-return]
    return choices[0][1]()  # type: ignore[no-any-return]


def _body(rng: random.Random, small: bool = False) -> bytes:
    n = rng.choice([0, 12, 90, 700, 1400, 5000] if small else
                   [0, 12, 12, 90, 90, 300, 700, 1400, 1400, 5000, 20000, 100000])
    rec = b'{"name":"widget","tags":["a","b"],"n":12345},'
    return b"[" + (rec * (n // len(rec) + 1))[: max(0, n - 2)] + b"]" if n else b""


# ---------------------------------------------------------------------------------------------
# clients


async def aiohttp_conn(rng: random.Random, port: int, nreq: int) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=1, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(nreq):
            method, uri, body = rand_request(rng, port == NGINX_PORT)
            headers = {}
            if rng.random() < 0.2:
                headers["Accept-Encoding"] = "identity"
            data: Any = body
            if body and rng.random() < 0.25:  # a chunked request body
                chunks = [body[i:i + 4000] for i in range(0, len(body), 4000)]

                async def gen(chunks: list[bytes] = chunks) -> Any:
                    for c in chunks:
                        yield c

                data = gen()
            elif body is not None and method in ("POST", "PUT", "PATCH"):
                headers["Content-Type"] = "application/json"
            async with session.request(method, f"http://{HOST}:{port}{uri}", data=data,
                                       headers=headers, allow_redirects=False) as resp:
                await resp.read()
            think = rng.choice([0, 0, 0, 0.001, 0.005, 0.02])
            if think:
                await asyncio.sleep(think)


def raw_request(method: str, uri: str, body: bytes | None, last: bool, gzip_ok: bool,
                version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {uri} {version}", f"Host: {HOST}", "User-Agent: bench-raw/1",
             "Accept: */*"]
    if gzip_ok:
        lines.append("Accept-Encoding: gzip")
    if body is not None and method in ("POST", "PUT", "PATCH"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if last and version == "HTTP/1.1":
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def raw_conn(rng: random.Random, port: int, nreq: int, flags: dict[str, Any],
                   version: str = "HTTP/1.1", head_in_pipeline: bool = False) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    local = writer.get_extra_info("sockname")[1]
    gzip_ok = rng.random() < 0.5
    reqs = []
    for i in range(nreq):
        method, uri, body = rand_request(rng, port == NGINX_PORT)
        if method == "HEAD" and i < nreq - 1 and not head_in_pipeline:
            method = "GET"
        reqs.append((method, uri, body))
    if head_in_pipeline and nreq >= 2:
        i = rng.randrange(nreq - 1)
        _, uri, _ = reqs[i]
        reqs[i] = ("HEAD", f"/r/{TAG}/items/{rng.randint(1, 99999)}", None)
    wire = [raw_request(m, u, b, i == nreq - 1, gzip_ok, version)
            for i, (m, u, b) in enumerate(reqs)]
    has_head = any(m == "HEAD" for m, _, _ in reqs[:-1])
    flags[f"{port}:{local}"] = {"kind": "pipeline" if nreq > 1 else "oneshot",
                                "requests": nreq, "head_in_pipeline": has_head}

    async def drain_reader() -> None:
        while await reader.read(65536):
            pass

    rtask = asyncio.create_task(drain_reader())
    bursts = rng.choice([1, 1, 2, 3])
    cut = sorted(rng.sample(range(1, nreq), min(bursts - 1, nreq - 1))) if nreq > 1 else []
    start = 0
    for c in [*cut, nreq]:
        writer.write(b"".join(wire[start:c]))
        await writer.drain()
        start = c
        if c != nreq:
            await asyncio.sleep(0.002)
    await asyncio.wait_for(rtask, 30)
    writer.close()
    await writer.wait_closed()


async def run_workload(conns: int, seed: int, flags: dict[str, Any], workers: int = 12) -> None:
    rng = random.Random(seed)
    specs: list[tuple[str, int, int, int]] = []
    for i in range(conns):
        x = rng.random()
        if x < 0.6:
            port = NGINX_PORT if rng.random() < 0.65 else BACKEND_PORT
            specs.append(("aiohttp", port, rng.randint(1, 20), i))
        elif x < 0.85:
            port = NGINX_PORT if rng.random() < 0.7 else BACKEND_PORT
            specs.append(("pipeline", port, rng.randint(2, 10), i))
        else:
            port = NGINX_PORT if rng.random() < 0.6 else BACKEND_PORT
            specs.append(("http10", port, 1, i))
    queue: asyncio.Queue[tuple[str, int, int, int]] = asyncio.Queue()
    for s in specs:
        queue.put_nowait(s)

    async def worker() -> None:
        while not queue.empty():
            kind, port, n, i = queue.get_nowait()
            crng = random.Random(seed * 1_000_003 + i)
            if kind == "aiohttp":
                await aiohttp_conn(crng, port, n)
            elif kind == "pipeline":
                await raw_conn(crng, port, n, flags, head_in_pipeline=crng.random() < 0.15)
            else:
                await raw_conn(crng, port, 1, flags, version="HTTP/1.0")

    await asyncio.gather(*(worker() for _ in range(workers)))


# ---------------------------------------------------------------------------------------------
# the recording, inside the namespace


def setup_netns_lo() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up", "mtu", "1500"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "gso_max_segs", "1", "gso_max_size", "1500"],
                   check=True)
    # no reuse of client ports within the recording: the truth is keyed by the client port
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("1024 65000\n")
    Path("/proc/sys/net/ipv4/tcp_tw_reuse").write_text("0\n")


async def record_async(out: Path, conns: int, seed: int) -> dict[str, Any]:
    from aiohttp import web

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.realpeers import capture, wait_for_port

    backend_log: list[list[Any]] = []
    flags: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    (work / "www").mkdir()
    for k, n in enumerate(STATIC_SIZES):
        (work / "www" / f"file{k}.txt").write_bytes(_text(n, k))
    (work / "nginx.conf").write_text(
        NGINX_CONF.format(w=work, host=HOST, port=NGINX_PORT, backend=BACKEND_PORT))
    pcap = out / "seed.pcap"
    runner = web.AppRunner(backend_app(backend_log), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, BACKEND_PORT)
    await site.start()
    ngx = subprocess.Popen(["nginx", "-p", str(work), "-c", str(work / "nginx.conf"),
                            "-e", str(work / "error.log")], stdin=subprocess.DEVNULL)
    stats: dict[str, int] = {}
    cleaned = False
    t0 = time.monotonic()
    try:
        await asyncio.to_thread(wait_for_port, HOST, NGINX_PORT, 15.0, ngx)
        with capture(ports=[NGINX_PORT, BACKEND_PORT], path=pcap, buffer_kib=131072) as cap:
            await run_workload(conns, seed, flags)
            await asyncio.sleep(0.2)
            ngx.send_signal(signal.SIGTERM)  # closes its upstream keep-alive connections
            await asyncio.to_thread(ngx.wait, 10)
            await runner.cleanup()
            cleaned = True
            await asyncio.sleep(0.2)
        stats = cap.stats
    finally:
        if ngx.poll() is None:
            ngx.kill()
            ngx.wait()
        if not cleaned:
            await runner.cleanup()
    records = list(backend_log)
    for line in (work / "access.log").read_text().splitlines():
        cport, method, uri, status = line.split(" ")
        records.append([NGINX_PORT, int(cport), method, uri, int(status)])
    shutil.rmtree(work, ignore_errors=True)
    truth = {"records": records, "flags": flags, "nginx_port": NGINX_PORT,
             "backend_port": BACKEND_PORT, "placeholder": TAG}
    (out / "truth.json").write_text(json.dumps(truth))
    meta = {"conns_requested": conns, "seed": seed, "tcpdump": stats,
            "seconds": round(time.monotonic() - t0, 2), "exchanges": len(records)}
    (out / "meta.json").write_text(json.dumps(meta))
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--conns", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-netns-setup", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_netns_setup:
        setup_netns_lo()
    meta = asyncio.run(record_async(args.out, args.conns, args.seed))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
