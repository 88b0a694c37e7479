"""shark-tui's themes: ``shark-dark`` and ``shark-light``, beside Textual's own.

Each is a Textual `Theme` whose ``variables`` also give the colours the TCSS takes from
variables of ours: one per protocol of the entry list (``$proto-http`` …) and the two ends of
a stream in the Raw tab (``$stream-client``, ``$stream-server``). Under another theme (Textual's
default, or one picked from the command palette) they fall back to `variable_defaults`: our
dark theme's colours on a dark theme, our light theme's on a light one.

The theme is chosen in the key bindings' file (`keymap.config_path`), ``theme = "NAME"``; a
name that is no theme is said in one line and the default kept."""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from typing import Any

from textual.theme import Theme

__all__ = ["SHARK_DARK", "SHARK_LIGHT", "THEMES", "configured_theme", "theme_setting",
           "variable_defaults"]  # fmt: skip

#: For a dark background.
_ON_DARK = {
    "proto-http": "#5fafff",
    "proto-http2": "#5fd7ff",
    "proto-grpc": "#af87ff",
    "proto-graphql": "#ff5fd7",
    "proto-websocket": "#87d7af",
    "proto-amqp": "#ffaf5f",
    "proto-kafka": "#d7d75f",
    "proto-redis": "#ff5f5f",
    "proto-tcp": "#a8a8a8",
    "stream-client": "#5fafff",
    "stream-server": "#ffaf5f",
}

#: The same hues, dark enough to read on a light background.
_ON_LIGHT = {
    "proto-http": "#005fd7",
    "proto-http2": "#00819f",
    "proto-grpc": "#6a2fd0",
    "proto-graphql": "#b0007a",
    "proto-websocket": "#00805a",
    "proto-amqp": "#a85200",
    "proto-kafka": "#7a6e00",
    "proto-redis": "#c40000",
    "proto-tcp": "#5c5c5c",
    "stream-client": "#005fd7",
    "stream-server": "#a85200",
}


def variable_defaults(dark: bool) -> dict[str, str]:
    """Our variables' values under a theme that does not set them."""
    return dict(_ON_DARK if dark else _ON_LIGHT)


SHARK_DARK = Theme(
    name="shark-dark",
    primary="#2d8fd5",
    secondary="#4fb8e0",
    accent="#f2994a",
    warning="#f2c94c",
    error="#ff6b6b",
    success="#5fd38d",
    foreground="#d6e2ea",
    background="#0b141c",
    surface="#101e29",
    panel="#172b3a",
    dark=True,
    variables=dict(_ON_DARK),
)

SHARK_LIGHT = Theme(
    name="shark-light",
    primary="#1565c0",
    secondary="#00838f",
    accent="#c4500f",
    warning="#9a6200",
    error="#c62828",
    success="#2e7d32",
    foreground="#1b2631",
    background="#f3f6f8",
    surface="#ffffff",
    panel="#dde6ec",
    dark=False,
    variables=dict(_ON_LIGHT),
)

THEMES = (SHARK_DARK, SHARK_LIGHT)


def configured_theme(path: str, available: Collection[str]) -> tuple[str | None, str | None]:
    """(the theme ``path`` names, if it is one of ``available``; a one-line problem or None)."""
    name, problem = theme_setting(path)
    if name is not None and name not in available:
        problem = f"{path}: unknown theme {name!r} (themes: {', '.join(sorted(available))})"
        name = None
    return name, problem


def theme_setting(path: str) -> tuple[str | None, str | None]:
    """(the theme named in ``path``'s ``theme = "NAME"`` or None, a one-line problem or None).
    A missing or unreadable file names no theme and is no problem here (`keymap.load_keymap`
    reads the same file and says what is wrong with it)."""
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None, None
    name = data.get("theme")
    if name is None:
        return None, None
    if not isinstance(name, str) or not name.strip():
        return None, f"{path}: theme: a theme's name, not {name!r}"
    return name.strip(), None
