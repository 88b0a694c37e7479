"""Body views of the detail pane, by priority, rendered to text: what a user reads."""

from __future__ import annotations

import json

from rich.console import Console

from shark_tui.widgets.bodyview import body_view
from shark_tui.widgets.detail import message_view


def text(renderable: object) -> str:
    c = Console(width=100, record=True, color_system=None)
    c.print(renderable)
    return c.export_text()


def lines(renderable: object) -> list[str]:
    return [line.rstrip() for line in text(renderable).splitlines()]


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


def graphql_request(query: str, **op: object) -> dict[str, object]:
    return {
        "method": "POST", "target": "/graphql", "version": "HTTP/1.1",
        "headers": [["Content-Type", "application/json"]],
        "body": json.dumps({"query": query}), "body_encoding": "text",
        "graphql": {"batched": False, "operations": [{
            "query": query, "operation_type": "query", "operation_name": "Q",
            "variables": {"id": 1}, "error": None, **op}]},
    }  # fmt: skip


def test_graphql_query_pretty_printed_with_its_variables() -> None:
    out = lines(message_view(graphql_request("query Q($id: ID) { a(id: $id) { b c } }")))
    at = out.index("GraphQL query Q")
    assert out[at + 1 : at + 7] == [
        "query Q($id: ID) {", "  a(id: $id) {", "    b", "    c", "  }", "}"]  # fmt: skip
    assert out[at + 7 : at + 10] == ["variables", "{", '  "id": 1']
    # the GraphQL view is the body's view: the JSON it came in is not shown again
    assert not any('"query"' in line for line in out)


def test_graphql_that_does_not_parse_is_shown_as_sent_and_says_why() -> None:
    query = "query Q { a { b }"
    why = "Syntax Error: Expected Name, found <EOF>. (1:18)"
    out = text(message_view(graphql_request(query, operation_type=None, error=why)))
    assert f"failed to parse as GraphQL: {why}" in out
    assert query in out
    # a document that parses but lacks the operation named: pretty, and the dissector's note
    shown = lines(message_view(graphql_request("query A { a }", error="no operation named Q")))
    at = shown.index("GraphQL query Q")
    assert shown[at + 1 : at + 5] == ["query A {", "  a", "}", "GraphQL: no operation named Q"]
    assert not any("failed to parse" in line for line in shown)


def test_form_body_one_decoded_field_a_line() -> None:
    out = lines(message_view({
        "method": "POST", "target": "/login", "version": "HTTP/1.1",
        "headers": [["Content-Type", "application/x-www-form-urlencoded; charset=utf-8"]],
        "body": "user=J%C3%B6rg&remember=&next=%2Fhome%3Fa%3D1&q=tea+and+cake",
        "body_encoding": "text",
    }))  # fmt: skip
    at = out.index("form: 4 fields")
    assert out[at + 1 : at + 5] == [
        "user = Jörg", "remember =", "next = /home?a=1", "q = tea and cake"]  # fmt: skip


def test_a_body_that_claims_form_but_is_not_says_so_and_shows_the_text() -> None:
    out = text(body_view("just some words", "text", "application/x-www-form-urlencoded"))
    assert "failed to parse as form: bad query field: 'just some words'" in out
    assert "just some words" in out.splitlines()[-1]
    # binary with a form type: hex, no parse attempted
    assert text(body_view("AAEC", "base64", "application/x-www-form-urlencoded")).startswith(
        "00000000  00 01 02"
    )


def test_priority_json_before_form_text_last() -> None:
    # JSON wins over the content type when the body is JSON
    assert '"a": 1' in text(body_view('{"a": 1}', "text", "application/x-www-form-urlencoded"))
    # a body that looks like JSON but is a form: both tried, in order, each failure said
    out = text(body_view("[x=1", "text", "application/x-www-form-urlencoded"))
    assert "failed to parse as JSON" in out and "form: 1 field" in out and "[x = 1" in out
    assert text(body_view("plain words", "text", "text/plain")).strip() == "plain words"


def test_grpc_messages_decoded_like_decode_raw_or_hex_with_the_reason() -> None:
    fields = [
        {"field": 1, "wire_type": "len", "encoding": "text", "value": "tea \"01\""},
        {"field": 3, "wire_type": "varint", "value": 18446744073709551615, "signed": -1},
        {"field": 4, "wire_type": "len", "encoding": "base64", "value": "AAEC"},
        {"field": 5, "wire_type": "len", "encoding": "message", "value": [
            {"field": 1, "wire_type": "i64", "value": 4609434218613702656, "double": 1.5}]},
    ]  # fmt: skip
    out = lines(message_view({
        "version": "HTTP/2", "status": 200, "headers": [[":status", "200"]],
        "body": "AAAAAAUKA2hp", "body_encoding": "base64",
        "messages": [
            {"size": 5, "compressed": False, "fields": fields},
            {"size": 3, "compressed": False, "fields": None, "data": "AAEC",
             "decode_error": "truncated"},
        ],
    }))  # fmt: skip
    at = out.index("gRPC messages: 2")
    assert out[at + 1 :] == [
        "#0 5 bytes",
        '  1: "tea \\"01\\""',
        "  3: 18446744073709551615 (signed -1)",
        "  4: (bytes, base64) AAEC",
        "  5 {",
        "    1: 4609434218613702656 (double 1.5)",
        "  }",
        "#1 3 bytes",
        "failed to parse as protobuf: truncated",
        "00000000  00 01 02",
    ]
    # the messages are the body's view: the frames' bytes are not shown again as hex
    assert not any(line.startswith("00000000  00 00 00 00 05") for line in out)


def test_other_protocols_as_their_objects() -> None:
    out = text(message_view({"command": ["SET", "k", "v"], "args": 2}))
    assert '"SET"' in out
    assert "(not seen)" in text(message_view(None))


def test_websocket_message_cut_or_deflated_says_so() -> None:
    msg = {"opcode": "text", "fin": True, "masked": False, "fragments": 3, "body": "x" * 10,
           "body_encoding": "text", "body_truncated": True, "body_size": 70000,
           "content_encoding": "permessage-deflate"}  # fmt: skip
    assert lines(message_view(msg)) == [
        "text message · 70,000 bytes · 3 fragments · not masked",
        "(message cut at 10 of 70,000 bytes; f: show full)",
        "(decoded from permessage-deflate for display)",
        "xxxxxxxxxx",
    ]
    bad = {**msg, "body_truncated": False, "body_decode_error": "failed to decode deflate: x"}
    assert lines(message_view(bad))[1] == "failed to decode deflate: x"


def test_tcp_half_with_bytes_lost_and_trailers_of_http() -> None:
    out = lines(message_view({"size": 5000, "lost_bytes": 1200, "first_bytes": "AAEC",
                              "first_bytes_encoding": "base64"}))  # fmt: skip
    assert out == ["5,000 bytes (1,200 lost to the capture); the first 3:", "00000000  00 01 02"]
    out = lines(message_view({
        "version": "HTTP/1.1", "status": 200, "reason": "OK", "headers": [], "body": "ok",
        "body_encoding": "text", "trailers": [["X-Checksum", "abc"]], "stream_id": 3,
    }))  # fmt: skip
    at = out.index("trailers")
    assert out[at + 1] == "X-Checksum: abc" and '  "stream_id": 3' in out
