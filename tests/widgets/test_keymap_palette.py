"""Bindings rebound from $XDG_CONFIG_HOME/shark-tui/keys.toml (by binding id), and the
command palette's actions."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from textual.command import CommandPalette

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.help import HelpScreen
from shark_tui.widgets.keymap import config_path, load_keymap
from shark_tui.widgets.save_dialog import SaveScreen
from tests.widgets.appfixture import fixture_daemon, notes, wait_for

KNOWN = {"app.save", "app.quit", "entry_list.mark"}


def _write(tmp: Path, text: str) -> str:
    path = config_path({"XDG_CONFIG_HOME": str(tmp)})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_load_keymap(tmp_path: Path) -> None:
    assert config_path({"XDG_CONFIG_HOME": "/x"}) == "/x/shark-tui/keys.toml"
    assert config_path({"HOME": "/h"}).endswith("/.config/shark-tui/keys.toml")
    assert load_keymap(str(tmp_path / "none.toml"), KNOWN) == ({}, [])
    path = _write(tmp_path, '"app.save" = "ctrl+s"\nentry_list.mark = "m"\n'
                            'app.quit = ["q", "ctrl+q"]\napp.nope = "z"\n'
                            '[app]\n')  # fmt: skip
    # "[app]" after dotted app.* keys is a TOML error: said, nothing applied
    keymap, problems = load_keymap(path, KNOWN)
    assert keymap == {} and len(problems) == 1 and path in problems[0]
    path = _write(tmp_path, '"app.save" = "ctrl+s"\nentry_list.mark = "m"\n'
                            'app.quit = ["q", "ctrl+q"]\napp.nope = "z"\n'
                            '"app.save " = 3\n')  # fmt: skip
    keymap, problems = load_keymap(path, KNOWN)
    assert keymap == {"app.save": "ctrl+s", "entry_list.mark": "m", "app.quit": "q,ctrl+q"}
    assert len(problems) == 2 and "unknown binding id 'app.nope'" in problems[0]


def test_rebound_keys_work_and_show_in_help(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    _write(tmp_path, '"app.save" = "ctrl+s"\nentry_list.mark = "m"\napp.nope = "z"\n')

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                assert any("unknown binding id 'app.nope'" in n for n in notes(app))
                await pilot.press("space")  # no longer mark
                assert not app.store.marked
                await pilot.press("m")
                assert len(app.store.marked) == 1
                await pilot.press("w")  # no longer save
                await pilot.pause()
                assert not isinstance(app.screen, SaveScreen)
                await pilot.press("ctrl+s")
                await wait_for(lambda: isinstance(app.screen, SaveScreen))
                await pilot.press("escape")
                await pilot.press("question_mark")
                assert isinstance(app.screen, HelpScreen)
                by_id = {r[3]: r for r in app.screen.rows()}
                assert by_id["app.save"][1] == "^s"
                assert by_id["entry_list.mark"][1] == "m"

    asyncio.run(main())


def test_palette_lists_and_runs_the_actions() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                actions = {a[2]: a for a in app.palette_actions()}
                # every main-screen binding but esc, with its key
                assert "escape" not in actions and "toggle_follow" in actions
                assert actions["save"][1] == "w · app.save"
                assert actions["mark"][3] is app.entry_list

                await pilot.press("ctrl+p")
                await wait_for(lambda: isinstance(app.screen, CommandPalette))
                await pilot.press(*"show redis")
                await asyncio.sleep(0.5)  # the palette searches in the background
                await pilot.press("enter")
                await wait_for(lambda: link.sent[-1] == wire.Subscribe(
                    filter="(redis)", newest_first=True, limit=link.sent[-1].limit))  # fmt: skip

                # an entry-list action runs on the list
                await pilot.press("ctrl+p")
                await wait_for(lambda: isinstance(app.screen, CommandPalette))
                await pilot.press(*"show only the marked")
                await asyncio.sleep(0.5)
                await pilot.press("enter")
                await wait_for(lambda: app.store.only_marked)

    asyncio.run(main())
