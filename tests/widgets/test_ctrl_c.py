"""ctrl+c quits the app from anywhere (k9s and mitmproxy users press it; `shark-tui tap` then
leaves the cluster as it found it): on the list, in the filter bar with text selected (where
Textual's Input would copy it), in a dialog; it replaces Textual's own ctrl+c ("press q to
quit"), is listed by `?` and can be rebound by its id."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shark_tui.app import SharkApp
from shark_tui.widgets.help import HelpScreen
from shark_tui.widgets.keymap import config_path
from tests.widgets.appfixture import fixture_daemon, wait_for


@pytest.mark.parametrize("where", ["list", "filter bar", "dialog"])
def test_ctrl_c_quits_from_anywhere(where: str) -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                (binding,) = [b for b in app.active_bindings.values() if b.binding.key == "ctrl+c"]
                assert (binding.binding.action, binding.binding.priority) == ("quit", True)
                assert binding.binding.id == "app.quit_anywhere"  # not Textual's help_quit
                if where == "filter bar":
                    await pilot.press("slash", *"status", "shift+home")
                    assert app.filter_bar.input.has_focus
                    assert app.filter_bar.input.selected_text == "status"  # Input's copy is off
                elif where == "dialog":
                    await pilot.press("question_mark")
                    assert isinstance(app.screen, HelpScreen)
                assert app.return_code is None
                await pilot.press("ctrl+c")
                await pilot.pause()
                assert app.return_code == 0
                assert app.filter_text == ""  # quit, nothing submitted on the way
            assert not app.is_running

    asyncio.run(main())


def test_ctrl_c_is_listed_and_rebound_by_its_id(tmp_path: Path) -> None:
    path = config_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write('"app.quit_anywhere" = "ctrl+x"\n')

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("question_mark")
                assert isinstance(app.screen, HelpScreen)
                rows = {r[3]: r for r in app.screen.rows()}
                assert rows["app.quit_anywhere"][:3] == (
                    "main",
                    app.key_display("ctrl+x"),
                    "Quit shark-tui, from a text field or a dialog too",
                )
                await pilot.press("escape", "ctrl+c")  # no longer quits (nor is Textual's)
                await pilot.pause()
                assert app.return_code is None and app.is_running
                await pilot.press("ctrl+x")
                await pilot.pause()
                assert app.return_code == 0

    asyncio.run(main())
