"""A command-palette provider (ctrl+p): the actions of the main screen's bindings, by their
description, with the key each has now."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode


class ActionCommands(Provider):
    """Reads the app's ``palette_actions()``: (title, help, action, namespace) of each."""

    def _commands(self) -> Iterator[tuple[str, str, Callable[[], Any]]]:
        app: Any = self.app
        source: Callable[[], list[tuple[str, str, str, DOMNode]]] | None = getattr(
            app, "palette_actions", None
        )
        if source is None:
            return
        for title, help_text, action, namespace in source():
            yield title, help_text, partial(app.run_action, action, namespace)

    async def discover(self) -> Hits:
        for title, help_text, run in self._commands():
            yield DiscoveryHit(title, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, run in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), run, help=help_text)
