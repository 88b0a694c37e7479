"""User key bindings: ``$XDG_CONFIG_HOME/shark-tui/keys.toml`` (default ``~/.config``), one
``binding_id = "key"`` a line — ids as the help screen (`?`) lists them::

    "app.save" = "ctrl+s"          # quoted: the id as one key
    entry_list.mark = "m"          # or dotted: TOML reads it as a table, flattened back
    app.quit = ["q", "ctrl+q"]     # several keys

The same file holds the settings of `SETTINGS` (``theme = "shark-light"``, read by `themes`),
which are not binding ids.

No Textual here: `load_keymap` returns the keymap for `App.set_keymap` and the problems found
(unknown ids, values that are not keys), which the app shows instead of failing."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["SETTINGS", "config_path", "load_keymap"]

#: Top-level keys of the file that are settings, not binding ids.
SETTINGS = frozenset({"theme"})


def config_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "shark-tui", "keys.toml")


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_keymap(path: str, known_ids: Collection[str]) -> tuple[dict[str, str], list[str]]:
    """(binding id → keys, problems). A missing file is no keymap and no problem."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}, []
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return {}, [f"{path}: {exc}"]
    keymap: dict[str, str] = {}
    problems: list[str] = []
    for bid, value in _flatten(data).items():
        if bid in SETTINGS:
            continue
        if bid not in known_ids:
            problems.append(f"{path}: unknown binding id {bid!r} (? lists them)")
            continue
        keys = value if isinstance(value, list) else [value]
        if not keys or not all(isinstance(k, str) and k.strip() for k in keys):
            problems.append(f"{path}: {bid}: a key or a list of keys, not {value!r}")
            continue
        keymap[bid] = ",".join(k.strip() for k in keys)
    return keymap, problems
