"""An aiohttp WebSocket server for the real-peer tests.

Run as a script: ``python tests/peers/ws_server.py --host 127.0.0.1 --port 0``; it prints
``listening HOST PORT`` and serves until killed. ``GET /ws`` upgrades (no compression
negotiated); on each message from the client:

- text ``T``: answers text ``"echo: T"``; text ``"close <code> <reason>"`` makes the server close
  with that code and reason; text ``"bin <n>"`` makes it send ``n`` binary bytes
  ``bytes(i % 256 for i in range(n))``.
- binary ``B``: answers binary ``B`` reversed.
- close from the client: aiohttp answers the close (echoing the code).
"""

from __future__ import annotations

import argparse
import socket
import sys

from aiohttp import WSMsgType, web


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, autoping=True)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            text = msg.data
            if text.startswith("close "):
                _, code, reason = text.split(" ", 2)
                await ws.close(code=int(code), message=reason.encode())
                break
            if text.startswith("bin "):
                n = int(text.split()[1])
                await ws.send_bytes(bytes(i % 256 for i in range(n)))
                continue
            await ws.send_str(f"echo: {text}")
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(bytes(reversed(msg.data)))
    return ws


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
    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    web.run_app(app, sock=sock, print=None, access_log=None)
    sys.exit(0)


if __name__ == "__main__":
    main()
