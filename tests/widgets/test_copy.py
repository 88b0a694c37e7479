"""`x` copies the cursor row's full entry (GetEntry) as curl, HAR or JSON — to the clipboard
(OSC 52) or a file. The curl command is run against a real HTTP server and must send the same
request."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.copy_menu import CopyMenu
from tests.widgets.appfixture import fixture_daemon, notes, wait_for


class _Recorder(BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []

    def _any(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        headers = dict(self.headers.items())
        self.got.append({"method": self.command, "path": self.path, "headers": headers,
                         "body": body})  # fmt: skip
        self.send_response(204)
        self.end_headers()

    do_GET = do_POST = do_HEAD = _any

    def log_message(self, *args: Any) -> None:
        pass


def test_copy_curl_to_clipboard_replays_the_request() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.got = []

    async def main() -> str:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("k", "k")  # POST /orders of the last connection
                row = app.entry_list.selected
                assert row is not None and row.method == "POST"
                await pilot.press("x")
                await wait_for(lambda: isinstance(app.screen, CopyMenu))
                got = link.sent[-1]
                assert isinstance(got, wire.GetEntry) and got.id == row.id
                await pilot.press("enter")  # the first option: curl, to the clipboard
                await wait_for(lambda: not isinstance(app.screen, CopyMenu))
                assert any("copied to the clipboard" in n for n in notes(app))
                return app.clipboard

    try:
        cmd = asyncio.run(main())
        assert cmd.startswith("curl ") and "http://api/orders" in cmd
        port = server.server_address[1]
        args = [*shlex.split(cmd), "-s", "--connect-to", f"api:80:127.0.0.1:{port}"]
        subprocess.run(args, check=True, timeout=30, capture_output=True)
    finally:
        server.shutdown()
    (req,) = _Recorder.got
    assert req["method"] == "POST" and req["path"] == "/orders"
    assert req["headers"]["Host"] == "api"
    assert req["body"] == b'{"n": 12}'


def test_copy_har_and_json_to_files() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token), tempfile.TemporaryDirectory() as tmp:
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                row = app.entry_list.selected  # GET /missing → 500
                assert row is not None

                # HAR: type a file name, then h
                har = os.path.join(tmp, "entry.har")
                await pilot.press("x")
                await wait_for(lambda: isinstance(app.screen, CopyMenu))
                await pilot.press("tab", *har, "shift+tab", "h")
                await wait_for(lambda: not isinstance(app.screen, CopyMenu))
                with open(har) as f:
                    log = json.load(f)["log"]
                (entry,) = log["entries"]
                assert entry["request"]["method"] == "GET"
                assert entry["request"]["url"] == "http://api/missing"
                assert entry["response"]["status"] == 500
                assert entry["serverIPAddress"] == "10.1.0.1"
                assert any(f"written to {har}" in n for n in notes(app))

                # JSON: the entry as the daemon gave it (what dissect --json prints)
                out = os.path.join(tmp, "entry.json")
                await pilot.press("x")
                await wait_for(lambda: isinstance(app.screen, CopyMenu))
                await pilot.press("tab", *out, "shift+tab", "j")
                await wait_for(lambda: not isinstance(app.screen, CopyMenu))
                with open(out) as f:
                    assert json.load(f) == await link.get_entry(row.id)

                # esc closes the menu, nothing written
                await pilot.press("x")
                await wait_for(lambda: isinstance(app.screen, CopyMenu))
                await pilot.press("escape")
                assert not isinstance(app.screen, CopyMenu)
                assert sorted(os.listdir(tmp)) == ["entry.har", "entry.json"]

    asyncio.run(main())
