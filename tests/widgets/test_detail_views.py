"""Body views of the detail pane, by priority, rendered to text: what a user reads."""

from __future__ import annotations

from rich.console import Console

from shark_tui.widgets.detail import body_view, message_view


def text(renderable: object) -> str:
    c = Console(width=100, record=True, color_system=None)
    c.print(renderable)
    return c.export_text()


def test_http_message_json_body_and_headers() -> None:
    out = text(message_view({
        "method": "POST", "target": "/orders", "version": "HTTP/1.1",
        "headers": [["Host", "api"], ["Content-Type", "application/json"]],
        "body": '{"n": 12}', "body_encoding": "text",
    }))  # fmt: skip
    assert out.splitlines()[0] == "POST /orders HTTP/1.1"
    assert "Host: api" in out and '"n": 12' in out


def test_a_body_that_claims_json_but_is_not_says_so() -> None:
    out = text(body_view("{not json", "text", "application/json"))
    assert "failed to parse as JSON" in out and "{not json" in out


def test_binary_body_as_hex() -> None:
    assert "00000000  00 01 02" in text(body_view("AAEC", "base64"))


def test_graphql_query_and_variables() -> None:
    out = text(message_view({
        "method": "POST", "target": "/graphql", "version": "HTTP/1.1", "headers": [],
        "body": "", "graphql": {"batched": False, "operations": [{
            "query": "query Q { a { b } }", "operation_type": "query", "operation_name": "Q",
            "variables": {"id": 1}, "error": None}]},
    }))  # fmt: skip
    assert "GraphQL query Q" in out and "query Q { a { b } }" in out and '"id": 1' in out


def test_grpc_messages_decoded_or_hex_with_the_reason() -> None:
    out = text(message_view({
        "version": "HTTP/2", "status": 200, "headers": [[":status", "200"]], "body": "",
        "messages": [
            {"size": 5, "compressed": False, "fields": [{"field": 1, "value": "hi"}]},
            {"size": 3, "compressed": False, "fields": None, "data": "AAEC",
             "decode_error": "truncated"},
        ],
    }))  # fmt: skip
    assert "gRPC messages: 2" in out and '"value": "hi"' in out
    assert "failed to parse as protobuf: truncated" in out and "00 01 02" in out


def test_other_protocols_as_their_objects() -> None:
    out = text(message_view({"command": ["SET", "k", "v"], "args": 2}))
    assert '"SET"' in out
    assert "(not seen)" in text(message_view(None))
