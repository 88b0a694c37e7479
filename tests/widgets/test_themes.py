"""Themes: shark-dark and shark-light registered beside Textual's, the protocol colours taken
from theme variables, and ``theme = "NAME"`` in $XDG_CONFIG_HOME/shark-tui/keys.toml applied
at start (an unknown name said in one line, the default kept)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from textual.color import Color

from shark_tui.app import SharkApp
from shark_tui.widgets.keymap import config_path, load_keymap
from shark_tui.widgets.themes import SHARK_DARK, SHARK_LIGHT, theme_setting
from tests.widgets.appfixture import fixture_daemon, notes, wait_for

DEFAULT = "textual-dark"  # Textual's, kept when nothing (or no theme) is named


def _write(tmp: Path, text: str) -> str:
    path = config_path({"XDG_CONFIG_HOME": str(tmp)})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(text)
    return path


def _proto_colour(app: SharkApp, proto: str) -> str:
    """The colour the entry list draws ``proto``'s name in."""
    style = app.entry_list.get_component_rich_style(f"entry-list--proto-{proto}")
    assert style.color is not None and style.color.triplet is not None
    return style.color.triplet.hex


def _drawn_colour(app: SharkApp) -> str:
    """The colour of the protocol cell on the list's first line, as drawn."""
    strip = app.entry_list.render_line(0)
    (seg,) = [s for s in strip if s.text.strip() == "http"]
    assert seg.style is not None and seg.style.color is not None
    assert seg.style.color.triplet is not None
    return seg.style.color.triplet.hex


def test_theme_setting(tmp_path: Path) -> None:
    assert theme_setting(str(tmp_path / "none.toml")) == (None, None)
    path = _write(tmp_path, 'theme = "shark-light"\n"app.save" = "ctrl+s"\n')
    assert theme_setting(path) == ("shark-light", None)
    # the key bindings read from the same file do not take `theme` for a binding id
    assert load_keymap(path, {"app.save"}) == ({"app.save": "ctrl+s"}, [])
    path = _write(tmp_path, "theme = 3\n")
    name, problem = theme_setting(path)
    assert name is None and problem is not None and "theme" in problem and "\n" not in problem
    path = _write(tmp_path, "theme = [\n")  # not TOML: said by load_keymap, once
    assert theme_setting(path) == (None, None)


def _run(check) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.pause()
                await check(app, pilot)

    asyncio.run(main())


@pytest.mark.parametrize("theme", [SHARK_LIGHT, SHARK_DARK])
def test_configured_theme_is_applied(
    theme, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    _write(tmp_path, f'theme = "{theme.name}"\nentry_list.mark = "m"\n')

    async def check(app: SharkApp, pilot) -> None:  # type: ignore[no-untyped-def]
        assert app.theme == theme.name
        assert not notes(app)  # `theme` is no unknown binding id
        assert app.screen.styles.background == Color.parse(theme.background)
        for proto in ("http", "grpc", "redis", "tcp"):
            assert _proto_colour(app, proto) == theme.variables[f"proto-{proto}"]
        assert _drawn_colour(app) == theme.variables["proto-http"]
        await pilot.press("m")  # the rest of the file still applies
        assert len(app.store.marked) == 1

    _run(check)


def test_unknown_theme_is_said_and_the_default_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = _write(tmp_path, 'theme = "shark-neon"\n')

    async def check(app: SharkApp, pilot) -> None:  # type: ignore[no-untyped-def]
        assert app.theme == DEFAULT
        said = [n for n in notes(app) if "theme" in n]
        assert len(said) == 1 and "\n" not in said[0]
        assert said[0].startswith(f"{path}: unknown theme 'shark-neon' (themes: ")
        assert "shark-dark" in said[0] and "shark-light" in said[0]
        assert _proto_colour(app, "http") == SHARK_DARK.variables["proto-http"]

    _run(check)


def test_default_theme_keeps_the_protocol_colours_and_themes_switch_live() -> None:
    async def check(app: SharkApp, pilot) -> None:  # type: ignore[no-untyped-def]
        assert app.theme == DEFAULT and not notes(app)
        assert {"shark-dark", "shark-light"} <= set(app.available_themes)
        assert _proto_colour(app, "http") == "#5fafff"  # what app.tcss said before themes
        assert _proto_colour(app, "kafka") == "#d7d75f"
        assert _drawn_colour(app) == "#5fafff"
        app.theme = "shark-light"  # as the command palette's theme picker does
        await pilot.pause()
        assert _proto_colour(app, "http") == SHARK_LIGHT.variables["proto-http"]
        assert _drawn_colour(app) == SHARK_LIGHT.variables["proto-http"]
        # not ours: our variables fall back to our colours for its background
        app.theme = "textual-light"
        await pilot.pause()
        assert _proto_colour(app, "http") == SHARK_LIGHT.variables["proto-http"]
        app.theme = "nord"
        await pilot.pause()
        assert _proto_colour(app, "http") == SHARK_DARK.variables["proto-http"]

    _run(check)
