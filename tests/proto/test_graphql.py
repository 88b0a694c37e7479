"""GraphQL recognition on HTTP requests: every transport, batches, variables, syntax errors,
and ordinary JSON APIs that must not be claimed."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.proto.graphql import MAX_QUERY, entry_fields, recognize

JSON_CT = "application/json"


def post(body: Any, path: str = "/graphql", ct: str | None = JSON_CT) -> dict[str, Any] | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return recognize("POST", path, [], ct, raw)


def only(g: dict[str, Any] | None) -> dict[str, Any]:
    assert g is not None
    assert g["batched"] is False and len(g["operations"]) == 1
    op: dict[str, Any] = g["operations"][0]
    return op


def test_post_json_named_query_with_variables() -> None:
    q = "query GetUser($id: ID!) { user(id: $id) { name } }"
    g = post({"query": q, "variables": {"id": "7"}, "operationName": "GetUser"}, path="/api")
    assert g == {
        "batched": False,
        "operations": [
            {
                "query": q,
                "operation_type": "query",
                "operation_name": "GetUser",
                "first_field": "user",
                "variables": {"id": "7"},
                "error": None,
            }
        ],
    }
    assert entry_fields(g) == ("query", "GetUser")


def test_anonymous_shorthand_query() -> None:
    g = post({"query": "{ viewer { login } }"}, path="/v1/api")
    op = only(g)
    assert op["operation_type"] == "query"
    assert op["operation_name"] is None
    assert op["first_field"] == "viewer"
    assert op["variables"] is None
    assert entry_fields(g or {}) == ("query", "viewer")


def test_mutation_and_subscription() -> None:
    op = only(post({"query": "mutation { addStar(id: 1) { ok } }"}))
    assert (op["operation_type"], op["first_field"]) == ("mutation", "addStar")
    op = only(post({"query": "subscription OnMsg { messageAdded { id } }"}))
    assert (op["operation_type"], op["operation_name"]) == ("subscription", "OnMsg")


def test_operation_name_selects_among_several() -> None:
    q = "query A { a } mutation B { b } fragment F on T { x }"
    op = only(post({"query": q, "operationName": "B"}))
    assert (op["operation_type"], op["operation_name"], op["first_field"]) == (
        "mutation",
        "B",
        "b",
    )
    op = only(post({"query": q}))  # none named: the first
    assert op["operation_name"] == "A"
    op = only(post({"query": q, "operationName": "Nope"}))
    assert op["operation_type"] is None and op["error"] == "no operation named Nope"


def test_first_field_through_fragments_and_aliases() -> None:
    q = "query Q { ...F } fragment F on Query { ... on Query { alias: realField } }"
    assert only(post({"query": q}))["first_field"] == "realField"
    assert only(post({"query": "{ a: b }"}))["first_field"] == "b"


def test_syntax_error_keeps_the_operation() -> None:
    g = post({"query": "query { user(id: ) }"})
    op = only(g)
    assert op["operation_type"] is None
    assert op["error"] == "Syntax Error: Unexpected ')'. (1:18)"
    assert op["query"] == "query { user(id: ) }"
    assert entry_fields(g or {}) == (None, "")
    op = only(post({"query": "{\n  a\n  b(\n"}))
    assert op["error"].endswith("(4:1)")


def test_batched() -> None:
    body = [
        {"query": "query A { a }", "operationName": "A"},
        {"query": "mutation M($x: Int) { m(x: $x) }", "variables": {"x": 1}},
        {"query": "{ broken"},
    ]
    g = post(body, path="/api")
    assert g is not None and g["batched"] is True
    ops = g["operations"]
    assert [o["operation_type"] for o in ops] == ["query", "mutation", None]
    assert ops[1]["variables"] == {"x": 1}
    assert ops[2]["error"] is not None
    assert entry_fields(g) == ("query", "A")


def test_variables_as_json_string() -> None:
    op = only(post({"query": "{ a }", "variables": '{"k": [1, 2]}'}))
    assert op["variables"] == {"k": [1, 2]}
    op = only(post({"query": "{ a }", "variables": "not json"}))
    assert op["variables"] is None


def test_get_query_string() -> None:
    query = [
        ["query", "query Q($n: Int) { items(first: $n) { id } }"],
        ["operationName", "Q"],
        ["variables", '{"n": 5}'],
    ]
    op = only(recognize("GET", "/graphql", query, None, b""))
    assert op["operation_type"] == "query"
    assert op["operation_name"] == "Q"
    assert op["first_field"] == "items"
    assert op["variables"] == {"n": 5}
    op = only(recognize("GET", "/anything", [["query", "{ me { id } }"]], None, b""))
    assert op["first_field"] == "me"


def test_application_graphql_body() -> None:
    g = recognize("POST", "/gql", [], "application/graphql; charset=utf-8", b"mutation { x }")
    op = only(g)
    assert op["operation_type"] == "mutation" and op["first_field"] == "x"


def test_persisted_query() -> None:
    ext = {"persistedQuery": {"version": 1, "sha256Hash": "abc123"}}
    op = only(post({"operationName": "Feed", "variables": {}, "extensions": ext}))
    assert op["persisted_query"] == "abc123"
    assert op["operation_name"] == "Feed" and op["query"] == ""
    assert op["operation_type"] is None and op["error"] is None
    params = [["operationName", "Feed"], ["extensions", json.dumps(ext)]]
    op = only(recognize("GET", "/graphql", params, None, b""))
    assert op["persisted_query"] == "abc123"
    assert post({"operationName": "Feed", "extensions": ext}, path="/api") is None


def test_content_type_variants() -> None:
    body = {"query": "{ a }"}
    assert post(body, ct="application/json; charset=utf-8") is not None
    assert post(body, ct=None) is not None
    assert post(body, ct="text/plain") is not None
    assert post(body, ct="application/x-www-form-urlencoded") is None
    assert post(body, ct="application/vnd.api+json") is not None


def test_ordinary_json_apis_are_not_claimed() -> None:
    assert post({"query": "select * from users"}, path="/api/search") is None
    assert post({"query": "shoes"}, path="/search") is None
    assert post({"q": "{ a }"}, path="/api") is None
    assert post({"query": 5}, path="/graphql") is None
    assert post([{"query": "{ a }"}, {"other": 1}], path="/api") is None
    assert post([], path="/graphql") is None
    assert post([1, 2], path="/graphql") is None
    assert post(b"{not json", path="/graphql") is None
    assert recognize("GET", "/search", [["query", "red shoes"]], None, b"") is None
    assert recognize("GET", "/search", [["query", "queryable"]], None, b"") is None
    assert recognize("PUT", "/graphql", [], JSON_CT, b'{"query": "{ a }"}') is None
    assert recognize("GET", "/graphql", [], None, b"") is None
    # A query-looking value on a non-GraphQL path is claimed, and parsed.
    assert post({"query": "query { a }"}, path="/api") is not None
    # On a /graphql path even a bad query is GraphQL (with its syntax error).
    assert only(post({"query": "shoes"}))["error"] is not None


def test_leading_comments_and_blanks() -> None:
    op = only(post({"query": "# get me\n\n  query Me { me }"}, path="/x"))
    assert op["operation_name"] == "Me"


def test_caps() -> None:
    huge = "{ " + "a " * (MAX_QUERY // 2) + "}"
    op = only(post({"query": huge}))
    assert op["operation_type"] is None
    assert "longer than" in op["error"]
    assert len(op["query"]) == MAX_QUERY
    deep = "{" + "a {" * 5000 + "b" + "}" * 5001
    op = only(post({"query": deep}))
    assert op["operation_type"] is None and op["error"]
    many = "{ " + "a " * 150_000 + "}"
    op = only(post({"query": many[: MAX_QUERY - 10] + "}"}))
    assert op["error"] is not None and "tokens" in op["error"]
    batch = [{"query": "{ a }"}] * 200
    g = post(batch)
    assert g is not None and len(g["operations"]) == 64


def test_entry_fields_edge_cases() -> None:
    assert entry_fields({"batched": False, "operations": []}) == (None, "")
    assert entry_fields({}) == (None, "")


@settings(max_examples=200)
@given(
    st.sampled_from(["GET", "POST"]),
    st.sampled_from(["/graphql", "/api", "/"]),
    st.sampled_from([None, JSON_CT, "application/graphql", "text/plain"]),
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(lambda t: json.dumps({"query": t}).encode()),
        st.text(alphabet="{}()[]:$!@#.,=\"' \nqueryabc", max_size=80).map(str.encode),
    ),
    st.lists(st.lists(st.text(max_size=20), min_size=2, max_size=2), max_size=3),
)
def test_never_raises(
    method: str, path: str, ct: str | None, body: bytes, query: list[list[str]]
) -> None:
    g = recognize(method, path, query, ct, body)
    if g is not None:
        assert g["operations"]
        for op in g["operations"]:
            assert set(op) >= {
                "query",
                "operation_type",
                "operation_name",
                "first_field",
                "variables",
                "error",
            }
            assert op["operation_type"] in (None, "query", "mutation", "subscription")
        kind, summary = entry_fields(g)
        assert kind == g["operations"][0]["operation_type"]
        assert isinstance(summary, str)
