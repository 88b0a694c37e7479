"""Percent-decoding shared by the HTTP dissectors (HTTP/1 targets, HTTP/2 ``:path``)."""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")


def unquote_plus(text: str) -> str:
    """Form-style percent-decoding (``+`` is a space); bad escapes stay as they are."""
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    parts = text.split("%")
    out = bytearray(parts[0].encode("utf-8"))
    for part in parts[1:]:
        code = part[:2]
        if len(code) == 2 and all(c in _HEX for c in code):
            out.append(int(code, 16))
            out += part[2:].encode("utf-8")
        else:
            out += b"%" + part.encode("utf-8")
    return out.decode("utf-8", "replace")


def query_pairs(query: str) -> list[list[str]]:
    """``a=1&b=x%20y`` -> ``[["a", "1"], ["b", "x y"]]`` (order and repeats kept)."""
    pairs: list[list[str]] = []
    for piece in query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append([unquote_plus(name), unquote_plus(value)])
    return pairs
