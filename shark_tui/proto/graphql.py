"""GraphQL over HTTP: is this request a GraphQL request, and which operations does it carry?

``recognize(method, path, query, content_type, body)`` looks at one HTTP request (HTTP/1 or
HTTP/2) and returns the ``graphql`` object of docs/ENTRIES.md, or None when it is not GraphQL:

- POST with a JSON body (``application/json``, ``application/graphql-response+json``...,
  or no/``text/plain`` content type when the body looks like JSON): an object with a string
  ``query`` (single), or a non-empty array of such objects (batched);
- POST ``application/graphql``: the body is the query text;
- GET with ``?query=`` (plus ``operationName`` and JSON ``variables`` in the query string).

A request that only names an Apollo persisted query (``extensions.persistedQuery`` with a hash,
no query text) is recognised when its path ends in ``/graphql``: ``query`` is "", and the
operation has ``persisted_query`` (the hash) and the ``operationName`` it was sent with.

Ordinary JSON APIs are not claimed: the ``query`` value must parse as GraphQL, or begin like
GraphQL (``{``, ``query``, ``mutation``, ``subscription``, ``fragment``, after blanks and
comments), or the path must end in ``/graphql``.

Each query is parsed with graphql-core (at most ``MAX_QUERY`` characters and ``MAX_TOKENS``
tokens; no exception escapes): the operation selected by ``operationName`` (else the first one)
gives ``operation_type``, ``operation_name`` and ``first_field`` (the first field of its
selection set, through fragments). A syntax error leaves ``operation_type`` null and puts
graphql-core's message with ``line:column`` in ``error``.

``entry_fields(g)`` gives the entry's (method, summary).
"""

from __future__ import annotations

import json
from typing import Any

from graphql.error import GraphQLError
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)

#: Longest query text that is parsed (a longer one gets ``error`` and is kept cut to this).
MAX_QUERY = 256 * 1024
#: Token limit handed to graphql-core's parser (bounds parse time).
MAX_TOKENS = 100_000
#: Largest body read as JSON.
MAX_BODY = 4 * 1024 * 1024
#: Operations listed of a batch.
MAX_OPERATIONS = 64
#: Fragment spreads followed while looking for the first field.
_MAX_SPREADS = 32

_STARTS = ("{", "query", "mutation", "subscription", "fragment")


def recognize(
    method: str,
    path: str,
    query: list[list[str]],
    content_type: str | None,
    body: bytes,
) -> dict[str, Any] | None:
    """The ``graphql`` object of a request, or None when it is not GraphQL."""
    try:
        return _recognize(method, path, query, content_type, body)
    except Exception:  # never let a strange request break the dissector
        return None


def entry_fields(g: dict[str, Any]) -> tuple[str | None, str]:
    """(method, summary) of a graphql entry: the first operation's type, and its name, else
    its first field, else ""."""
    try:
        ops = g.get("operations") or []
        if not ops:
            return None, ""
        op = ops[0]
        kind = op.get("operation_type")
        summary = op.get("operation_name") or op.get("first_field") or ""
        return (kind if isinstance(kind, str) else None), str(summary)
    except Exception:
        return None, ""


def _recognize(
    method: str,
    path: str,
    query: list[list[str]],
    content_type: str | None,
    body: bytes,
) -> dict[str, Any] | None:
    verb = method.upper()
    media = (content_type or "").split(";", 1)[0].strip().lower()
    graphql_path = path.split("?", 1)[0].rstrip("/").lower().endswith("/graphql")
    params = _params(query)
    if verb == "GET":
        text = params.get("query")
        if text is None:
            return _persisted_get(params, graphql_path)
        if not _claim(text, graphql_path):
            return None
        variables = _json_object(params.get("variables"))
        op = _operation(text, params.get("operationName"), variables)
        return {"batched": False, "operations": [op]}
    if verb != "POST":
        return None
    if media == "application/graphql":
        if len(body) > MAX_BODY:
            body = body[:MAX_BODY]
        text = body.decode("utf-8", "replace")
        if not _claim(text, True):
            return None
        variables = _json_object(params.get("variables"))
        return {
            "batched": False,
            "operations": [_operation(text, params.get("operationName"), variables)],
        }
    if not _jsonish(media, body) or len(body) > MAX_BODY:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(doc, dict):
        single = _from_object(doc, graphql_path)
        return None if single is None else {"batched": False, "operations": [single]}
    if isinstance(doc, list) and doc:
        ops: list[dict[str, Any]] = []
        for item in doc[:MAX_OPERATIONS]:  # the rest of a long batch is not looked at
            if not isinstance(item, dict):
                return None
            one = _from_object(item, graphql_path)
            if one is None:
                return None
            ops.append(one)
        return {"batched": True, "operations": ops}
    return None


def _params(query: list[list[str]]) -> dict[str, str]:
    """The first value of each query-string parameter."""
    out: dict[str, str] = {}
    for pair in query:
        if len(pair) >= 2 and isinstance(pair[0], str) and isinstance(pair[1], str):
            out.setdefault(pair[0], pair[1])
    return out


def _jsonish(media: str, body: bytes) -> bool:
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return True
    if media in ("", "text/plain"):
        return body.lstrip()[:1] in (b"{", b"[")
    return False


def _from_object(doc: dict[str, Any], graphql_path: bool) -> dict[str, Any] | None:
    text = doc.get("query")
    name = doc.get("operationName")
    name = name if isinstance(name, str) else None
    variables = doc.get("variables")
    if isinstance(variables, str):
        variables = _json_object(variables)
    elif not isinstance(variables, dict):
        variables = None
    if isinstance(text, str):
        if not _claim(text, graphql_path):
            return None
        return _operation(text, name, variables)
    if text is None and graphql_path:
        digest = _persisted_hash(doc.get("extensions"))
        if digest is not None:
            return _persisted(digest, name, variables)
    return None


def _persisted_get(params: dict[str, str], graphql_path: bool) -> dict[str, Any] | None:
    if not graphql_path:
        return None
    digest = _persisted_hash(_json_object(params.get("extensions")))
    if digest is None:
        return None
    op = _persisted(digest, params.get("operationName"), _json_object(params.get("variables")))
    return {"batched": False, "operations": [op]}


def _persisted_hash(extensions: Any) -> str | None:
    if not isinstance(extensions, dict):
        return None
    pq = extensions.get("persistedQuery")
    if not isinstance(pq, dict):
        return None
    digest = pq.get("sha256Hash")
    return digest if isinstance(digest, str) else None


def _persisted(digest: str, name: str | None, variables: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "query": "",
        "operation_type": None,
        "operation_name": name,
        "first_field": None,
        "variables": variables,
        "error": None,
        "persisted_query": digest,
    }


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text or len(text) > MAX_BODY:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _claim(text: str, graphql_path: bool) -> bool:
    """Whether a ``query`` value is GraphQL enough to claim the request."""
    if graphql_path:
        return True
    start = _skip_ignored(text)
    if not start:
        return False
    if start.startswith("{"):
        return True
    word = start[:13]
    return any(
        word.startswith(w) and (len(word) == len(w) or not _name_char(word[len(w)]))
        for w in _STARTS[1:]
    )


def _skip_ignored(text: str) -> str:
    """``text`` without leading blanks, commas and ``#`` comments (GraphQL's ignored tokens)."""
    pos = 0
    n = min(len(text), 4096)
    while pos < n:
        c = text[pos]
        if c in " \t\r\n,\ufeff":
            pos += 1
        elif c == "#":
            nl = text.find("\n", pos)
            if nl < 0:
                return ""
            pos = nl + 1
        else:
            return text[pos : pos + 64]
    return ""


def _name_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _operation(text: str, name: str | None, variables: dict[str, Any] | None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "query": text[:MAX_QUERY],
        "operation_type": None,
        "operation_name": name,
        "first_field": None,
        "variables": variables,
        "error": None,
    }
    if len(text) > MAX_QUERY:
        op["error"] = f"query not parsed: longer than {MAX_QUERY} characters"
        return op
    try:
        document = parse(text, no_location=False, max_tokens=MAX_TOKENS)
    except GraphQLError as exc:
        op["error"] = _syntax_error(exc)
        return op
    except RecursionError:
        op["error"] = "query not parsed: nested too deeply"
        return op
    selected = _select(document, name)
    if selected is None:
        op["error"] = (
            f"no operation named {name}" if name is not None else "document has no operation"
        )
        return op
    op["operation_type"] = selected.operation.value
    op["operation_name"] = selected.name.value if selected.name is not None else name
    op["first_field"] = _first_field(document, selected.selection_set)
    return op


def _syntax_error(exc: GraphQLError) -> str:
    locations = exc.locations or []
    if locations:
        loc = locations[0]
        return f"{exc.message} ({loc.line}:{loc.column})"
    return exc.message


def _select(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if not ops:
        return None
    if name:
        for op in ops:
            if op.name is not None and op.name.value == name:
                return op
        if len(ops) > 1:
            return None
    return ops[0]


def _first_field(document: DocumentNode, selection_set: SelectionSetNode | None) -> str | None:
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    current = selection_set
    for _ in range(_MAX_SPREADS):
        if current is None or not current.selections:
            return None
        first = current.selections[0]
        if isinstance(first, FieldNode):
            return first.name.value
        if isinstance(first, InlineFragmentNode):
            current = first.selection_set
        elif isinstance(first, FragmentSpreadNode):
            fragment = fragments.get(first.name.value)
            current = fragment.selection_set if fragment is not None else None
        else:
            return None
    return None
