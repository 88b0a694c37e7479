"""The filter bar's history, kept across runs in ``$XDG_STATE_HOME/shark-tui/filter_history``
(default ``~/.local/state``): one filter a line, oldest first, each once, at most `MAX_ENTRIES`.

No Textual here. A file that cannot be read (not text, too big, a directory, no permission) is
ignored and said in one line by the caller; the app never fails over it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "history_path", "load_history", "remember", "save_history"]

#: Filters kept: the newest this many.
MAX_ENTRIES = 200
#: A history file bigger than this is not a history this program wrote: it is not read.
MAX_BYTES = 1 << 20


def history_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "shark-tui", "filter_history")


def remember(history: Iterable[str], text: str, cap: int = MAX_ENTRIES) -> list[str]:
    """``history`` with ``text`` as the newest entry (an earlier copy of it removed), the
    oldest dropped past ``cap``. Empty or multi-line texts are not remembered."""
    items = [h for h in history if h != text]
    if text.strip() and "\n" not in text and "\r" not in text:
        items.append(text)
    return items[-cap:]


def load_history(path: str, cap: int = MAX_ENTRIES) -> tuple[list[str], str | None]:
    """(filters oldest first, a one-line problem or None). A missing file is an empty history
    and no problem; an unreadable one is an empty history and its problem."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        return [], f"{path}: {exc.strerror or exc}: filter history not loaded"
    if len(data) > MAX_BYTES:
        return [], f"{path}: over {MAX_BYTES // 1024} KiB: filter history not loaded"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], f"{path}: not UTF-8 text: filter history not loaded"
    if "\0" in text:
        return [], f"{path}: binary data: filter history not loaded"
    items: dict[str, None] = {}  # each once, at its newest copy's place
    for line in text.splitlines():
        if line.strip():
            items.pop(line, None)
            items[line] = None
    return list(items)[-cap:], None


def save_history(path: str, history: Iterable[str]) -> str | None:
    """Write ``history`` (oldest first) to ``path``, replacing it whole (a reader never sees
    half a file); a one-line problem, or None when written."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(h + "\n" for h in history)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return f"{path}: {exc.strerror or exc}: filter history not saved"
    return None
