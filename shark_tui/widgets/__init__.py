"""The terminal UI: Textual widgets, the screens and the app's messages (STYLE.md: one widget per
module, styles in ``app.tcss``, the daemon connection as an async worker)."""
