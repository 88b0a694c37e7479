"""Marks (`space`, `M`) and saving (`w`) over a real daemon socket: what the daemon was asked
to export, and the file on disk as tshark reads it."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.save_dialog import SaveScreen
from shark_tui.widgets.saver import Selection
from tests.engine.fixtures_pcap import LINKTYPE_ETHERNET, pcap_bytes
from tests.widgets.appfixture import fixture_daemon, notes, serve_capture, tshark, wait_for

NOW = 1_700_000_000.0


def _line(app: SharkApp, y: int) -> str:
    return app.entry_list.render_line(y).text


def test_mark_only_marked_and_save_marked() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token), tempfile.TemporaryDirectory() as tmp:
            app = SharkApp([(address, token)], clock=lambda: NOW)
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                rows = list(app.store.rows)

                # space marks the cursor row (the newest), g + space the oldest
                await pilot.press("space")
                await pilot.press("g", "space")
                assert set(app.store.marked) == {("fixture", rows[0].id), ("fixture", rows[15].id)}
                assert _line(app, 0).startswith("● ")
                assert _line(app, 1).startswith("  ")
                assert "marked 2" in app.header.text
                # space again unmarks; once more marks
                await pilot.press("space")
                assert ("fixture", rows[0].id) not in app.store.marked
                await pilot.press("space")

                # M: only the marked rows, from the same store: nothing new asked of the daemon
                sent = len(link.sent)
                await pilot.press("M")
                assert [r.id for r in app.store.shown] == [rows[0].id, rows[15].id]
                assert len(link.sent) == sent
                assert _line(app, 0).startswith("● ") and _line(app, 2).strip() == ""
                # unmarking in this view takes the row out of it
                await pilot.press("g", "space")
                assert [r.id for r in app.store.shown] == [rows[15].id]
                await pilot.press("M")
                assert len(app.store.shown) == 16
                await pilot.press("g", "space")

                # w: the dialog, its default name from the (frozen) clock
                await pilot.press("w")
                await wait_for(lambda: isinstance(app.screen, SaveScreen))
                dialog = app.screen
                assert isinstance(dialog, SaveScreen)
                assert dialog.input.value == "shark-tui-20231114-221320.pcapng"
                assert "2 marked entries" in str(dialog.query_one("#save-what").render())
                out = os.path.join(tmp, "marked.pcapng")
                await pilot.press(*out, "enter")  # the selected default is replaced
                await wait_for(lambda: not isinstance(app.screen, SaveScreen))
                export = link.sent[-1]
                assert isinstance(export, wire.Export)
                assert export.ids == [rows[0].id, rows[15].id] and export.filter == ""
                assert os.path.exists(out) and not os.path.exists(out + ".part")
                # each marked entry's whole connection, handshake included
                streams = set(tshark(out, "-T", "fields", "-e", "tcp.stream"))
                assert len(streams) == 2
                uris = tshark(out, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri")
                assert len(uris) == 8
                assert any("connections written to " + out in n for n in notes(app))
                assert any(" 2 connections" in n for n in notes(app))

    asyncio.run(main())


def test_save_all_shown_as_classic_pcap_and_overwrite() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token), tempfile.TemporaryDirectory() as tmp:
            app = SharkApp([(address, token)], clock=lambda: NOW)
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("slash", *"status >= 500", "enter")
                await wait_for(lambda: len(app.store) == 4)

                # nothing marked: all shown = the filter in force when w was pressed
                await pilot.press("w")
                await wait_for(lambda: isinstance(app.screen, SaveScreen))
                what = str(app.screen.query_one("#save-what").render())
                assert "all 4 entries shown (matching status >= 500)" in what
                out = os.path.join(tmp, "errors.pcap")
                with open(out, "wb") as f:
                    f.write(b"old")
                await pilot.press(*out, "enter")
                await pilot.pause()
                # it exists: the dialog asks for a second enter
                assert isinstance(app.screen, SaveScreen)
                assert "exists" in str(app.screen.query_one("#save-status").render())
                assert not isinstance(link.sent[-1], wire.Export)
                await pilot.press("enter")
                await wait_for(lambda: not isinstance(app.screen, SaveScreen))
                export = link.sent[-1]
                assert isinstance(export, wire.Export)
                # bounded by the newest entry shown: what a live daemon adds later is not saved
                newest = app.store.rows[-1].ts
                assert export.filter == f"(status >= 500) and ts <= {newest!r}"
                assert export.ids == []
                with open(out, "rb") as f:
                    assert f.read(4) == bytes.fromhex("d4c3b2a1")  # classic pcap, LE
                streams = set(tshark(out, "-T", "fields", "-e", "tcp.stream"))
                assert len(streams) == 4
                codes = tshark(out, "-Y", "http.response", "-T", "fields", "-e",
                               "http.response.code")  # fmt: skip
                assert codes.count("500") == 4

                # a bad directory is said in the dialog, nothing is sent
                n = len(link.sent)
                await pilot.press("w")
                await wait_for(lambda: isinstance(app.screen, SaveScreen))
                await pilot.press(*os.path.join(tmp, "nope", "x.pcapng"), "enter")
                await pilot.pause()
                assert "no such directory" in str(app.screen.query_one("#save-status").render())
                await pilot.press("escape")
                assert not isinstance(app.screen, SaveScreen)
                assert len(link.sent) == n

    asyncio.run(main())


def test_save_with_two_daemons_writes_one_file_per_node() -> None:
    async def main() -> None:
        with (
            fixture_daemon(node="node-a") as (a, ta),
            fixture_daemon(conns=2, seed=3, node="node-b", first=4) as (b, tb),
            tempfile.TemporaryDirectory() as tmp,
        ):
            app = SharkApp([(a, ta), (b, tb)], clock=lambda: NOW)
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 24)
                await pilot.press("w")
                await wait_for(lambda: isinstance(app.screen, SaveScreen))
                hint = str(app.screen.query_one("#save-hint").render())
                assert "one file per node" in hint and "-node-a.pcapng" in hint
                out = os.path.join(tmp, "all.pcapng")
                await pilot.press(*out, "enter")
                await wait_for(lambda: not isinstance(app.screen, SaveScreen))
                for node, conns in (("node-a", 4), ("node-b", 2)):
                    path = os.path.join(tmp, f"all-{node}.pcapng")
                    assert len(set(tshark(path, "-T", "fields", "-e", "tcp.stream"))) == conns
                assert all(isinstance(link.sent[-1], wire.Export) for link in app.links)

    asyncio.run(main())


def test_all_shown_stops_at_the_newest_entry_shown() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token), tempfile.TemporaryDirectory() as tmp:
            app = SharkApp([(address, token)], clock=lambda: NOW)
            async with app.run_test(size=(160, 30)):
                await wait_for(lambda: len(app.store) == 16)
                # as if the list had been shown when only the first two connections existed
                out = os.path.join(tmp, "early.pcapng")
                app.save_to(out, Selection("", until={"fixture": app.store.rows[7].ts}))
                await wait_for(lambda: os.path.exists(out))
                assert len(set(tshark(out, "-T", "fields", "-e", "tcp.stream"))) == 2
                # a node that showed nothing is not asked
                n = len(app.links[0].sent)
                app.save_to(os.path.join(tmp, "none.pcapng"), Selection("", until={}))
                await wait_for(lambda: any("nothing to save" in m for m in notes(app)))
                assert len(app.links[0].sent) == n

    asyncio.run(main())


def big_download(size: int) -> bytes:
    """A capture of one HTTP GET answered with ``size`` bytes of body (in 1400-byte segments)."""
    from tests.widgets.protofixture import _packets

    body = bytes(range(256)) * (size // 256)
    conn = [
        (0, b"GET /big HTTP/1.1\r\nHost: api\r\n\r\n"),
        (1, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body),
    ]
    return pcap_bytes(LINKTYPE_ETHERNET, _packets(0, ("10.1.0.1", 80), conn, int(NOW * 1e9)))


def test_save_shows_progress_while_a_large_export_runs() -> None:
    """The daemon sends an export in 1 MiB chunks: the dialog says how much has come in after
    each one, while it is still open, before the file is complete."""

    async def main() -> None:
        with (
            serve_capture(big_download(4 << 20)) as (address, token),
            tempfile.TemporaryDirectory() as tmp,
        ):
            app = SharkApp([(address, token)], clock=lambda: NOW)
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 1)
                await pilot.press("w")
                await wait_for(lambda: isinstance(app.screen, SaveScreen))
                dialog = app.screen
                assert isinstance(dialog, SaveScreen)
                shown: list[tuple[str, bool, bool]] = []  # (status drawn, dialog open, file done)
                out = os.path.join(tmp, "big.pcapng")
                status = dialog.status

                def spy(text: str, *, error: bool = False) -> None:
                    status(text, error=error)
                    drawn = str(dialog.query_one("#save-status").render())
                    shown.append((drawn, app.screen is dialog, os.path.exists(out)))

                dialog.status = spy  # type: ignore[method-assign]
                await pilot.press(*out, "enter")
                await wait_for(lambda: not isinstance(app.screen, SaveScreen), timeout=30)
                assert shown[0] == ("saving…", True, False)
                progress = shown[1:]
                assert len(progress) >= 4, shown  # 4 MiB of body: at least 4 chunks
                assert all(is_open and not done for _, is_open, done in progress), shown
                kib = []
                for text, _, _ in progress:
                    m = re.fullmatch(r"saving… fixture: ([\d,]+) KiB received", text)
                    assert m, text
                    kib.append(int(m.group(1).replace(",", "")))
                # growing as chunks come in (the section header first, then 1 MiB at a time)
                assert kib == sorted(set(kib)) and len([k for k in kib if k >= 1024]) >= 4, kib
                assert kib[-1] == round(os.path.getsize(out) / 1024), kib  # all of it, at the end
                assert len(set(tshark(out, "-T", "fields", "-e", "tcp.stream"))) == 1

    asyncio.run(main())
