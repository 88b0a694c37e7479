"""A cheap look at an HTTP request before graphql-core is asked (or even imported).

Most requests are not GraphQL; parsing every JSON body would cost the dissectors dearly, and
importing graphql-core costs ~75 ms at start. ``graphql.recognize`` still has the last word.
"""

from __future__ import annotations

from collections.abc import Sequence


def may_be_graphql(
    method: str | None,
    path: str | None,
    query: Sequence[Sequence[str]],
    content_type: str | None,
    body: bytes | bytearray,
) -> bool:
    if method not in ("GET", "POST"):
        return False
    if path and path.rstrip("/").endswith("graphql"):
        return True
    if method == "GET":
        return any(pair and pair[0] == "query" for pair in query)
    if content_type and "graphql" in content_type.lower():
        return True
    head = bytes(body[:64]).lstrip()
    return head[:1] in (b"{", b"[") and b'"query"' in body[:4096]
