"""A small GraphQL server for the real-peer tests: graphql-core's ``graphql()`` over a tiny
schema, served by aiohttp (HTTP/1.1) or, with ``--h2c``, by hypercorn as an ASGI app (hypercorn
speaks h2c with prior knowledge and HTTP/1.1 on the same port).

Run as a script: ``python tests/peers/graphql_server.py --host 127.0.0.1 --port 0 [--h2c]``;
it prints ``listening HOST PORT`` once it accepts and serves until killed.

Endpoint ``/graphql``:

- ``POST`` ``application/json``: ``{"query", "variables", "operationName"}``, or a JSON list of
  those (batched: the answer is a list, status 200).
- ``POST`` ``application/graphql``: the body is the query.
- ``GET ?query=...&variables=<json>&operationName=...``.

Answers ``application/json`` ``{"data": ...}`` (200), or ``{"errors": [...]}`` with status 400
when a (single) query does not parse or validate. Anything else: 404.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from typing import Any
from urllib.parse import parse_qs

from graphql import build_schema, graphql, parse

SDL = """
type Book { id: ID!, title: String!, author: String }
type Query {
  hello(name: String): String!
  book(id: ID!): Book
  books: [Book!]!
}
type Mutation { addBook(title: String!, author: String): Book! }
"""

SCHEMA = build_schema(SDL)
BOOKS = [
    {"id": "1", "title": "Moby-Dick", "author": "Melville"},
    {"id": "2", "title": "Jaws", "author": "Benchley"},
]


class Root:
    def hello(self, info: Any, name: str | None = None) -> str:
        return f"hello {name or 'world'}"

    def book(self, info: Any, id: str) -> dict[str, Any] | None:
        return next((b for b in BOOKS if b["id"] == id), None)

    def books(self, info: Any) -> list[dict[str, Any]]:
        return BOOKS

    def addBook(self, info: Any, title: str, author: str | None = None) -> dict[str, Any]:
        return {"id": str(len(BOOKS) + 1), "title": title, "author": author}


ROOT = Root()


async def execute_one(op: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    query = op.get("query") or ""
    try:
        parse(query)
        bad = False
    except Exception:
        bad = True
    result = await graphql(SCHEMA, query, root_value=ROOT,
                           variable_values=op.get("variables"),
                           operation_name=op.get("operationName"))
    out: dict[str, Any] = {}
    if result.errors:
        out["errors"] = [e.formatted for e in result.errors]
    if result.data is not None or not result.errors:
        out["data"] = result.data
    return (400 if bad or result.data is None else 200), out


async def handle(method: str, path: str, query_string: str, content_type: str,
                 body: bytes) -> tuple[int, bytes]:
    """The whole endpoint: (status, JSON body)."""
    if path != "/graphql":
        return 404, b'{"error":"not found"}'
    if method == "GET":
        qs = {k: v[0] for k, v in parse_qs(query_string).items()}
        op: dict[str, Any] = {"query": qs.get("query", "")}
        if "variables" in qs:
            op["variables"] = json.loads(qs["variables"])
        if "operationName" in qs:
            op["operationName"] = qs["operationName"]
        status, out = await execute_one(op)
        return status, json.dumps(out).encode()
    if method != "POST":
        return 405, b'{"error":"method not allowed"}'
    if content_type.startswith("application/graphql"):
        status, out = await execute_one({"query": body.decode()})
        return status, json.dumps(out).encode()
    doc = json.loads(body)
    if isinstance(doc, list):
        outs = [(await execute_one(op))[1] for op in doc]
        return 200, json.dumps(outs).encode()
    status, out = await execute_one(doc)
    return status, json.dumps(out).encode()


# --- aiohttp (HTTP/1.1) -----------------------------------------------------------------------


def aiohttp_app() -> Any:
    from aiohttp import web

    async def endpoint(request: web.Request) -> web.Response:
        body = await request.read()
        status, out = await handle(request.method, request.path, request.query_string,
                                   request.headers.get("Content-Type", ""), body)
        return web.Response(body=out, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", endpoint)
    return app


# --- ASGI (hypercorn, h2c) ----------------------------------------------------------------------


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    status, out = await handle(scope["method"], scope["path"],
                               scope["query_string"].decode(), headers.get("content-type", ""),
                               body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--h2c", action="store_true")
    args = ap.parse_args()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    print(f"listening {args.host} {port}", flush=True)
    if args.h2c:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{sock.fileno()}"]
        config.accesslog = None
        config.errorlog = None
        config.keep_alive_timeout = 120
        asyncio.run(serve(asgi_app, config))  # type: ignore[arg-type]
    else:
        from aiohttp import web

        web.run_app(aiohttp_app(), sock=sock, print=None, access_log=None)
    sys.exit(0)


if __name__ == "__main__":
    main()
