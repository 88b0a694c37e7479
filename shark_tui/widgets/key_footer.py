"""Textual's Footer, whose redraw can be held back while the list fills.

The stock footer recomposes (a widget per key, each styled) every time the focus moves: on a
filter keystroke's ``enter`` the filter bar closes and the list takes the focus, and that
recompose (~25 ms, more on a busy machine) landed in the middle of the first screen of the new
filter. The app calls `KeyFooter.hold` when it asks for new rows: a change of bindings during
the hold is drawn when it ends, so the rows come first. Otherwise it redraws as the stock one.
"""

from __future__ import annotations

import time

from textual.screen import Screen
from textual.widgets import Footer

#: Seconds a filter change holds back the footer's redraw.
HOLD = 0.25


class KeyFooter(Footer):
    _held_until = 0.0
    _pending = False

    def hold(self, seconds: float = HOLD) -> None:
        self._held_until = time.monotonic() + seconds

    def bindings_changed(self, screen: Screen) -> None:  # type: ignore[type-arg]
        self._bindings_ready = True
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen:
            return
        wait = self._held_until - time.monotonic()
        if wait <= 0:
            self.call_after_refresh(self.recompose)
        elif not self._pending:
            self._pending = True
            self.set_timer(wait, self._redraw)

    async def _redraw(self) -> None:
        self._pending = False
        await self.recompose()
