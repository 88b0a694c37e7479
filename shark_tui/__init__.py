"""shark-tui: API calls between pods, from packets, in the terminal."""

__version__ = "0.1.0"
