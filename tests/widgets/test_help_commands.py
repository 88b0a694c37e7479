"""`?` help generated from the bindings, the `:` command line (ns/pod narrow the filter in the
daemon, save, q) and esc closing the topmost bar or dialog, over a real daemon socket."""

from __future__ import annotations

import asyncio
import os
import tempfile

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.command_bar import CommandError, filter_term, parse
from shark_tui.widgets.help import HelpScreen
from tests.widgets.appfixture import fixture_daemon, wait_for


def _filters(link) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.filter for m in link.sent if isinstance(m, wire.Subscribe)]


def test_help_lists_every_binding_with_its_key() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 40)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("question_mark")
                assert isinstance(app.screen, HelpScreen)
                rows = app.screen.rows()
                groups = app.binding_groups()
                assert len(rows) == sum(len(b) for _, b in groups)
                ids = {r[3] for r in rows}
                for _, bindings in groups:
                    assert {b.id for b in bindings} <= ids
                    assert all(b.id for b in bindings)  # every binding can be rebound
                by_id = {r[3]: r for r in rows}
                assert by_id["app.save"][:3] == (
                    "main", "w", "Save the marked entries (or all shown) as pcapng")  # fmt: skip
                assert by_id["app.help"][1] == "?"
                assert by_id["app.command"][1] == ":"
                assert by_id["entry_list.mark"][1:3] == ("space", "Mark or unmark the entry")
                assert by_id["entry_list.down"][1] == "j ↓"
                assert by_id["app.toggle_redis"][1] == "7"
                assert by_id["app.toggle_redis"][2].startswith("Show redis entries")
                assert by_id["filter.history_back"][1:3] == ("↑", "older filter")
                # one titled table per group, then commands and the filter language
                titles = [str(w.render()) for w in app.screen.query(".help-group")]
                assert titles == [t for t, _ in groups] + ["commands (:)", "filter language (/)"]
                await pilot.press("escape")
                assert not isinstance(app.screen, HelpScreen)

    asyncio.run(main())


def test_command_line_narrows_the_filter_saves_and_quits() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token), tempfile.TemporaryDirectory() as tmp:
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)

                await pilot.press("colon", *"ns default", "enter")
                await wait_for(lambda: len(_filters(link)) == 2)
                assert _filters(link)[-1] == 'ns == "default"'
                assert not app.command_bar.display
                await wait_for(lambda: app.links[0].filter == 'ns == "default"')
                await asyncio.sleep(0.3)
                assert len(app.store) == 0  # the fixture's pods are unknown

                # esc on the bare list clears it; then a typed filter is narrowed
                await pilot.press("escape")
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("slash", *"status >= 500", "enter")
                await pilot.press("colon", *"pod 10\\.0\\.0\\.[12]", "enter")
                await wait_for(lambda: len(_filters(link)) == 5)
                assert _filters(link)[-1] == '(status >= 500) and pod ~ "10\\\\.0\\\\.0\\\\.[12]"'

                # the toggles stay beside it
                await pilot.press("1")
                await wait_for(lambda: len(_filters(link)) == 6)
                assert _filters(link)[-1].startswith("(http) and ((status >= 500) and pod ~")

                # mistakes stay in the bar, said; nothing is sent
                n = len(link.sent)
                await pilot.press("colon", *"frob", "enter")
                assert app.command_bar.display
                assert "unknown command" in str(app.query_one("#command-error").render())
                await pilot.press("ctrl+u", *"pod (", "enter")
                assert "invalid regex" in str(app.query_one("#command-error").render())
                await pilot.press("escape")  # closes the bar only
                assert not app.command_bar.display and app.filter_text
                assert len(link.sent) == n

                # :save writes what w would
                out = os.path.join(tmp, "cmd.pcapng")
                await pilot.press("escape")
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("colon", *f"save {out}", "enter")
                await wait_for(lambda: os.path.exists(out))
                assert isinstance(link.sent[-1], wire.Export)
                newest = app.store.rows[-1].ts
                assert link.sent[-1].filter == f"ts <= {newest!r}" and link.sent[-1].ids == []

                await pilot.press("colon", "q", "enter")
                await pilot.pause()
            assert app.return_code == 0

    asyncio.run(main())


def test_esc_closes_the_topmost_first() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("slash", *"status >= 500", "enter")
                await wait_for(lambda: len(app.store) == 4)
                await pilot.press("slash")
                assert app.filter_bar.display
                await pilot.press("escape")
                assert not app.filter_bar.display and app.filter_text == "status >= 500"
                await pilot.press("question_mark")
                await pilot.press("escape")
                assert not isinstance(app.screen, HelpScreen)
                assert app.filter_text == "status >= 500"
                await pilot.press("escape")
                assert app.filter_text == ""
                await wait_for(lambda: len(app.store) == 16)

    asyncio.run(main())


def test_parse_and_terms() -> None:
    assert parse(":ns  kube-system ") == ("ns", "kube-system")
    assert parse("namespace x") == ("ns", "x")
    assert parse("q") == ("q", "")
    assert parse("w out.pcap") == ("save", "out.pcap")
    assert filter_term("ns", 'a"b\\c') == 'ns == "a\\"b\\\\c"'
    for bad in ("", "frob", "ns", "q now", "pod"):
        try:
            parse(bad)
        except CommandError:
            continue
        raise AssertionError(bad)
