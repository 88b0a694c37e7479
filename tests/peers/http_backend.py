"""A small aiohttp HTTP/1.1 backend for the real-peer tests and benchmarks.

Run as a script: ``python tests/peers/http_backend.py --host 127.0.0.1 --port 0``. It binds,
then prints ``listening HOST PORT`` on stdout (so port 0 works without races) and serves until
killed. Keep-alive is on (aiohttp's default, 75 s).

Routes (every GET route also answers HEAD):

- ``GET /status/{code}`` JSON ``{"status": code, ...}`` with that status.
- ``GET /chunked?n=5&delay_ms=0`` ``n`` chunks ``"chunk i\\n"`` with chunked transfer encoding.
- ``GET /gzip?size=2000`` a text body compressed with gzip (``Content-Encoding: gzip``, a
  ``Content-Length``); the decoded body is ``pattern_text(size)``.
- ``POST /echo`` (any method) JSON ``{"method", "path", "query", "headers", "body"}`` with the
  request's headers as ``[[name, value], ...]`` and its body as latin-1 text; ``?raw=1`` answers
  the request body itself with the request's content type.
- ``GET /big?size=200000`` ``pattern_text(size)`` as ``text/plain`` with a ``Content-Length``.
- ``GET /slow?ms=50`` JSON after sleeping ``ms`` milliseconds.
- ``GET /nocontent`` 204; ``GET /notmodified`` 304.
- anything else: JSON ``{"method", "path", "query"}``, status from ``?status=`` (default 200).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import socket
import sys

from aiohttp import web


def pattern_text(size: int) -> bytes:
    """``size`` bytes of deterministic, line-structured ASCII text (shared with the tests)."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-shark-tui-\n"
    reps = size // len(line) + 1
    return (line * reps)[:size]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if code in (204, 304):
        return web.Response(status=code)
    return _json({"status": code, "path": request.path}, status=code)


async def chunked(request: web.Request) -> web.StreamResponse:
    n = int(request.query.get("n", "5"))
    delay = float(request.query.get("delay_ms", "0")) / 1000
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(n):
        await resp.write(f"chunk {i}\n".encode())
        if delay:
            await asyncio.sleep(delay)
    await resp.write_eof()
    return resp


async def gzipped(request: web.Request) -> web.Response:
    size = int(request.query.get("size", "2000"))
    body = gzip.compress(pattern_text(size), mtime=0)
    return web.Response(
        body=body,
        headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"},
    )


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    if request.query.get("raw"):
        ctype = request.headers.get("Content-Type", "application/octet-stream")
        return web.Response(body=body, headers={"Content-Type": ctype})
    return _json(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
        }
    )


async def big(request: web.Request) -> web.Response:
    size = int(request.query.get("size", "200000"))
    return web.Response(body=pattern_text(size), content_type="text/plain")


async def slow(request: web.Request) -> web.Response:
    ms = float(request.query.get("ms", "50"))
    await asyncio.sleep(ms / 1000)
    return _json({"slept_ms": ms})


async def nocontent(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def notmodified(request: web.Request) -> web.Response:
    return web.Response(status=304, headers={"ETag": '"v1"'})


async def fallback(request: web.Request) -> web.Response:
    await request.read()
    code = int(request.query.get("status", "200"))
    return _json(
        {"method": request.method, "path": request.path, "query": request.query_string},
        status=code,
    )


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/gzip", gzipped)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/nocontent", nocontent)
    app.router.add_get("/notmodified", notmodified)
    app.router.add_route("*", "/{tail:.*}", fallback)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    print(f"listening {args.host} {sock.getsockname()[1]}", flush=True)
    web.run_app(make_app(), sock=sock, print=None, access_log=None, handle_signals=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
