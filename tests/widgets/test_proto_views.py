"""The detail pane's native Redis, Kafka and AMQP views, read as the user reads them.

Pilot tests over a real daemon (``protofixture.proto_daemon``) serving traffic recorded from
redis-server, RabbitMQ and the Tansu Kafka broker: each test filters the list by keystrokes down
to one entry, opens it with enter, and asserts the text of its Request / Response tab as drawn
(and the style of what must stand out). Then the views on their own, on the same real entries
with halves removed, values cut and objects broken: a note, never an exception.
"""

from __future__ import annotations

import asyncio
import copy
import io
import random
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import Input, Static, TabbedContent

from shark_tui.app import SharkApp
from shark_tui.widgets.detail import DetailScreen, side_view
from shark_tui.widgets.protoviews import proto_view, redis_quote, redis_reply
from tests.widgets import protofixture
from tests.widgets.appfixture import wait_for

WIDTH = 140


@pytest.fixture(scope="module")
def daemon() -> Iterator[tuple[str, str]]:
    with protofixture.proto_daemon() as found:
        yield found


def text(renderable: Any, width: int = WIDTH) -> str:
    c = Console(width=width, record=True, color_system=None, file=io.StringIO())
    c.print(renderable)
    return "\n".join(line.rstrip() for line in c.export_text().splitlines())


def style_of(renderable: Any, needle: str) -> Any:
    """The style of the drawn segment holding ``needle``."""
    c = Console(width=WIDTH, color_system="truecolor", file=io.StringIO())
    for seg in c.render(renderable):
        if needle in seg.text:
            return seg.style
    raise AssertionError(f"{needle!r} not drawn")


class Pane:
    """The app with the detail pane of one entry at a time."""

    def __init__(self, app: SharkApp, pilot: Any) -> None:
        self.app = app
        self.pilot = pilot

    async def open(self, flt: str, rows: int = 1) -> DetailScreen:
        """Filter the list with ``/`` down to ``rows`` rows and open the newest one."""
        app, pilot = self.app, self.pilot
        if isinstance(app.screen, DetailScreen):
            await pilot.press("escape")
        await pilot.press("slash")
        app.query_one("#filter-input", Input).value = flt  # typing is the filter bar's test
        await pilot.press("enter")
        await wait_for(lambda: app.links[0].sent[-1].filter == flt)  # type: ignore[attr-defined]
        await wait_for(lambda: len(app.store) == rows and app.store.rows[-1] is not None)
        await pilot.pause()
        await pilot.press("G", "enter")
        await wait_for(lambda: isinstance(app.screen, DetailScreen))
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        return app.screen

    @staticmethod
    def tab(screen: DetailScreen, side: str) -> str:
        return text(screen.query_one(f"#{side}-body", Static).content)


def run(daemon: tuple[str, str], body: Any, size: tuple[int, int] = (WIDTH + 10, 40)) -> None:
    async def main() -> None:
        app = SharkApp([daemon])
        async with app.run_test(size=size) as pilot:
            await wait_for(lambda: app.links[0].up and len(app.store) > 0)
            await body(Pane(app, pilot))

    asyncio.run(main())


# -- Redis -------------------------------------------------------------------------------------


def test_redis_commands_as_typed_and_replies_typed_like_redis_cli(daemon: Any) -> None:
    async def body(p: Pane) -> None:
        d = await p.open("method == XRANGE")
        assert p.tab(d, "request").splitlines()[0] == '10.1.0.6:6379> XRANGE "stream" "-" "+"'
        assert p.tab(d, "response").splitlines() == [
            "RESP2 reply",
            '1) 1) "1-1"',
            '   2) 1) "sensor"',
            '      2) "7"',
            '      3) "temp"',
            '      4) "21.5"',
        ]
        d = await p.open("method == GET and summary == missing")
        assert p.tab(d, "response").splitlines()[1] == "(nil)"
        d = await p.open("method == INCR and summary == counter")
        assert p.tab(d, "response").splitlines()[1] == "(integer) 1"
        d = await p.open("method == SET and summary == greeting")
        assert p.tab(d, "request").splitlines()[0].endswith('SET "greeting" "hello world"')
        assert p.tab(d, "response").splitlines()[1] == "OK"
        # binary arguments escaped the way redis-cli does
        d = await p.open("method == SET and summary == bin")
        assert p.tab(d, "request").splitlines()[0].endswith('SET "bin" "\\x00\\x01\\xff\\n"')
        # an error reply stands out
        d = await p.open("method == LPUSH")
        shown = p.tab(d, "response")
        assert "(error) WRONGTYPE Operation against a key holding the wrong kind of value" in shown
        error = d.get_component_rich_style("detail--error", partial=True)
        got = style_of(d.query_one("#response-body", Static).content, "(error)")
        assert got.color == error.color and got.bold
        # MULTI/EXEC: EXEC's array of the queued commands' replies
        d = await p.open("method == EXEC")
        assert p.tab(d, "response").splitlines()[1:] == [
            "1) (integer) 1", '2) 1) "a"', '   2) "b"']  # fmt: skip

    run(daemon, body)


def test_redis_pipeline_is_shown_per_command(daemon: Any) -> None:
    async def body(p: Pane) -> None:
        # three commands sent in one write: three rows, each opening on its own reply
        d = await p.open('summary ~ "^pipe:"', rows=3)
        assert {r.method for r in p.app.store.rows} == {"SET", "INCR", "GET"}
        assert p.tab(d, "request").splitlines()[0].endswith('GET "pipe:1"')
        assert p.tab(d, "response").splitlines()[1] == '"one"'
        d = await p.open('method == INCR and summary == "pipe:n"')
        assert p.tab(d, "response").splitlines()[1] == "(integer) 1"
        d = await p.open('method == SET and summary == "pipe:1"')
        assert p.tab(d, "response").splitlines()[1] == "OK"

    run(daemon, body)


def test_redis_resp3_types(daemon: Any) -> None:
    async def body(p: Pane) -> None:
        d = await p.open("method == HGETALL")
        assert p.tab(d, "response").splitlines() == [
            "RESP3 reply", '1# "name" => "Ada"', '2# "lang" => "en"']  # fmt: skip
        d = await p.open("method == SMEMBERS")
        assert p.tab(d, "response").splitlines()[1:] == ['1~ "2"', '2~ "3"', '3~ "5"']
        d = await p.open("method == ZSCORE")
        assert p.tab(d, "response").splitlines()[1] == "(double) 1.5"
        d = await p.open("method == HELLO")
        assert '3# "proto" => (integer) 3' in p.tab(d, "response")
        assert '7# "modules" => (empty array)' in p.tab(d, "response")
        want = {
            "true": ["(true)"],
            "bignum": ["(big number) 1234567999999999999999999999999999999"],
            "verbatim": ["(verbatim txt) This is a verbatim", "               string"],
            "attrib": [
                '(attributes) 1| "key-popularity" => 1) "key:123"',
                "                                    2) (integer) 90",
                '"Some real reply following the attribute"',
            ],
        }
        for kind, lines in want.items():
            d = await p.open(f'method == DEBUG and request.args contains "{kind}"')
            assert p.tab(d, "response").splitlines()[1:] == lines, kind

    run(daemon, body)


def test_redis_cut_value_and_missing_reply_say_so(daemon: Any) -> None:
    async def body(p: Pane) -> None:
        d = await p.open("method == GET and summary == big")
        shown = p.tab(d, "response")
        assert shown.splitlines()[1].startswith("(values cut by the capture cap")
        assert '"0123456789abcdef0123' in shown
        assert "… (cut: 65,536 of 100,000 bytes kept)" in shown.replace("\n", "")
        d = await p.open("method == SET and summary == big")
        assert p.tab(d, "request").startswith("(argument 2 cut by the capture cap")
        # BLPOP that nothing answered before the client left
        d = await p.open("method == BLPOP")
        assert p.tab(d, "request").splitlines()[0].endswith('BLPOP "jobs" "0"')
        assert p.tab(d, "response").startswith("(no response seen:")

    run(daemon, body)


# -- Kafka -------------------------------------------------------------------------------------


RECORDS = [
    "records: 3 in 1 batch (183 bytes)",
    "batch 1 · base offset 0 · 3 records · compression none · create time",
    "offset 0  2023-11-14 22:13:20.123 UTC",
    '  key     "order-1"',
    '  headers trace-id = "abc123"',
    "  value   34 bytes",
    "    {",
    '      "id": 1,',
    '      "item": "tea",',
    '      "qty": 2',
    "    }",
    "offset 1  2023-11-14 22:13:20.123 UTC",
    '  key     "order-2"',
    "  value   16 bytes",
    "    plain text value",
    "offset 2  2023-11-14 22:13:20.123 UTC",
    "  key     null",
    "  headers bin = hex 00 01",
    "  value   14 bytes",
    "    00000000  00 03 06 09 0c 0f 12 15 18 1b 1e 21 24 27",
]


def _records_in(shown: str) -> list[str]:
    """The records block of a tab (as long as RECORDS), indented from its heading."""
    lines = shown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("records:"))
    base = len(lines[start]) - len(lines[start].lstrip())
    block = [line[base:] for line in lines[start : start + len(RECORDS)]]
    out = [block[0]] + [line[2:] for line in block[1:]]  # under the heading: two more
    out[1] = out[1][: len(RECORDS[1])]  # the batch line goes on with the producer
    return out


def test_kafka_produce_and_fetch_records(daemon: Any) -> None:
    async def body(p: Pane) -> None:
        d = await p.open("method == Produce and summary == orders")
        req = p.tab(d, "request")
        head = req.splitlines()[0]
        assert head.startswith("Produce v") and " request  correlation id " in head
        assert head.endswith('client id "shop-producer"')
        assert "  acks              -1 (all in-sync replicas)" in req
        assert '  topic "orders"\n    partition 0\n' in req
        assert _records_in(req) == RECORDS
        resp = p.tab(d, "response")
        assert resp.splitlines()[0].startswith("Produce v")
        assert "error_code          0" in resp and "base_offset         0" in resp

        d = await p.open("method == Fetch and summary == orders")
        resp = p.tab(d, "response")
        assert resp.splitlines()[0].startswith("Fetch v") and " response  " in resp
        assert "high_watermark          3" in resp
        assert _records_in(resp) == RECORDS
        assert "fetch_offset          0" in p.tab(d, "request")

    run(daemon, body)


def test_kafka_error_codes_named_and_cut_values_noted(daemon: Any) -> None:
    async def body(p: Pane) -> None:
        d = await p.open('method == Metadata and summary == "no-such-topic"')
        resp = p.tab(d, "response")
        assert '  topic "no-such-topic"' in resp
        line = next(x for x in resp.splitlines() if "error_code" in x)
        assert line.split() == ["error_code", "3", "UNKNOWN_TOPIC_OR_PARTITION"]
        error = d.get_component_rich_style("detail--error", partial=True)
        got = style_of(d.query_one("#response-body", Static).content, "UNKNOWN_TOPIC")
        assert got.color == error.color
        d = await p.open("method == Produce and summary == blobs")
        req = p.tab(d, "request")
        assert "value   100,000 bytes" in req
        assert "(cut: 65,536 of 100,000 bytes kept)" in req

    run(daemon, body)


# -- AMQP --------------------------------------------------------------------------------------


def test_amqp_publish_method_properties_and_json_body(daemon: Any) -> None:
    async def body(p: Pane) -> None:
        d = await p.open("method == basic.publish and request.properties.priority == 5")
        assert p.tab(d, "request").splitlines() == [
            "Basic.Publish  channel 1  client → server",
            '  exchange     "" (the default exchange)',
            "  routing_key  orders",
            "  mandatory    false",
            "  immediate    false",
            "Properties",
            "  content_type    application/json",
            "  headers",
            "    x-tenant  acme",
            "    retry     1",
            "  delivery_mode   2 (persistent)",
            "  priority        5",
            "  correlation_id  c-42",
            "  reply_to        replies",
            "  message_id      m-1",
            "  timestamp       1700000000 (2023-11-14 22:13:20 UTC)",
            "  app_id          shop",
            "Body  39 bytes",
            "{",
            '  "order": 42,',
            '  "items": [',
            '    "tea",',
            '    "cake"',
            "  ]",
            "}",
        ]
        assert p.tab(d, "response") == (
            "(none: Basic.Publish is one-way, sent by the client; see Request)")  # fmt: skip
        # the Response tab is one key away
        await p.pilot.press("right")
        await wait_for(lambda: d.query_one(TabbedContent).active == "tab-response")

    run(daemon, body)


def test_amqp_get_ok_binary_and_cut_bodies_and_refusal(daemon: Any) -> None:
    async def body(p: Pane) -> None:
        d = await p.open('method == basic.publish and request.properties.content_type == '
                         '"application/octet-stream"')  # fmt: skip
        assert "Body  13 bytes\n00000000  00 05 0a 0f 14 19 1e 23 28 2d 32 37 3c" in p.tab(
            d, "request"
        )
        d = await p.open("method == basic.get and response.arguments.delivery_tag == 1")
        resp = p.tab(d, "response")
        assert resp.splitlines()[0] == "Basic.Get-Ok  channel 1  server → client"
        assert "  message_count  " in resp and "  correlation_id  c-42" in resp
        assert '  "order": 42,' in resp
        assert p.tab(d, "request").splitlines()[1:] == ["  queue   orders", "  no_ack  true"]
        d = await p.open("method == basic.get and response.properties.content_type == "
                         '"text/plain"')  # fmt: skip
        resp = p.tab(d, "response")
        assert "Body  100,000 bytes\n(cut: 65,536 of 100,000 bytes kept)\n0123456789abcdef" in resp
        d = await p.open("method == exchange.declare")
        resp = p.tab(d, "response")
        assert resp.splitlines()[:5] == [
            "Channel.Close  channel 1  server → client",
            "  reply_code  404 NOT_FOUND",
            "  reply_text  NOT_FOUND - no exchange 'nope' in vhost '/'",
            "  class_id    40 (Exchange)",
            "  method_id   10 (Exchange.Declare)",
        ]
        error = d.get_component_rich_style("detail--error", partial=True)
        got = style_of(d.query_one("#response-body", Static).content, "404 NOT_FOUND")
        assert got.color == error.color

    run(daemon, body)


# -- missing, cut and broken data: notes, never exceptions -------------------------------------


def _native() -> list[dict[str, Any]]:
    return [e for e in protofixture.entries() if e["proto"] in ("redis", "kafka", "amqp")]


def test_every_real_entry_renders_both_tabs() -> None:
    for e in _native():
        for side in ("request", "response"):
            shown = text(side_view(e, side))
            assert "failed to render" not in shown, (e["id"], side)
            assert shown.strip(), (e["id"], side)


def test_null_halves_say_why() -> None:
    def one(proto: str, method: str) -> dict[str, Any]:
        return next(e for e in _native() if e["proto"] == proto and e["method"] == method)

    for proto, method in (("redis", "GET"), ("kafka", "Produce"), ("amqp", "basic.get")):
        e = copy.deepcopy(one(proto, method))
        e.update(response=None, error="no_response", status=None)
        assert text(proto_view(e, "response")).startswith("(no response seen:"), proto
        e = copy.deepcopy(one(proto, method))
        e.update(request=None, error="no_request")
        assert text(proto_view(e, "request")).startswith("(request not seen:"), proto
    # one-way by design, not a loss
    e = copy.deepcopy(one("kafka", "Produce"))
    e["request"]["acks"] = 0
    e.update(response=None)
    assert text(proto_view(e, "response")) == "(none: Produce with acks=0 gets no response)"
    deliver = {"proto": "amqp", "error": None, "request": None,
               "response": {"class": "basic", "method": "deliver", "sender": "server",
                            "channel": 1, "arguments": {}}}  # fmt: skip
    assert "Basic.Deliver is one-way, sent by the server; see Response" in text(
        proto_view(deliver, "request")
    )
    push = {"proto": "redis", "error": None, "request": None, "response": {
        "reply": {"type": "push", "value": [{"type": "bulk", "value": "message"}], "count": 1},
        "resp": 3, "push": True}}  # fmt: skip
    assert "a push the server sent on its own" in text(proto_view(push, "request"))
    assert text(proto_view(push, "response")).splitlines()[1] == '1) "message"'
    no_reply = {"proto": "redis", "error": None, "response": None,
                "request": {"args": ["CLIENT", "REPLY", "OFF"], "no_reply": True}}  # fmt: skip
    assert "told the server not to reply" in text(proto_view(no_reply, "response"))


def test_partial_kafka_and_entry_errors_are_noted() -> None:
    e = copy.deepcopy(next(x for x in _native() if x["method"] == "Fetch"))
    e["error"] = "partial"
    e["response"]["decode_error"] = "4 bytes left over"
    shown = text(proto_view(e, "response"))
    assert shown.startswith("partial: the body could not be decoded in full")
    assert "failed to parse as Fetch v" in shown and ": 4 bytes left over" in shown
    # a response whose request was not seen: only its correlation id
    orphan = {"proto": "kafka", "method": None, "error": "no_request", "request": None,
              "response": {"correlation_id": 9}}  # fmt: skip
    shown = text(proto_view(orphan, "response"))
    assert "response to an unseen request  correlation id 9" in shown
    assert "cannot be decoded" in shown
    # records cut short (normal in Fetch) and more records than listed
    part = e["response"]["topics"][0]["partitions"][0]
    part["records"].update(incomplete=True, records_truncated=True)
    shown = text(proto_view(e, "response"))
    assert "(the last batch is cut short" in shown and "(only 3 records listed" in shown


def test_broken_objects_never_raise() -> None:
    """Real entries with parts replaced by junk: every tab still renders (a note at worst)."""
    junk: list[Any] = [None, 0, -1, "", "x", [], {}, [1, [2]], {"type": "nope"}, 1.5, True,
                       {"body": 3, "body_encoding": "base64"}, {"base64": "!!"}]  # fmt: skip
    rng = random.Random(7)

    def paths(obj: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        yield at
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from paths(v, (*at, k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj[:4]):
                yield from paths(v, (*at, i))

    for e in _native():
        for side in ("request", "response"):
            every = list(paths(e.get(side)))
            for path in rng.sample(every, min(len(every), 12)):
                broken = copy.deepcopy(e)
                if not path:
                    broken[side] = rng.choice(junk)
                else:
                    node = broken[side]
                    for k in path[:-1]:
                        node = node[k]
                    node[path[-1]] = rng.choice(junk)
                shown = text(side_view(broken, side))  # never raises
                assert shown.strip()


def test_redis_quoting_and_reply_helpers() -> None:
    assert redis_quote("a b") == '"a b"'
    assert redis_quote('say "hi"\n') == '"say \\"hi\\"\\n"'
    assert redis_quote(b"\x00\xff") == '"\\x00\\xff"'
    assert redis_quote("café") == '"café"'
    assert text(redis_reply({"type": "array", "value": [], "count": 0})) == "(empty array)"
    ten = {"type": "array", "count": 10,
           "value": [{"type": "integer", "value": i} for i in range(10)]}  # fmt: skip
    lines = text(redis_reply(ten)).splitlines()
    assert lines[0] == " 1) (integer) 0" and lines[9] == "10) (integer) 9"
    cut = {"type": "array", "count": 2000, "truncated": True,
           "value": [{"type": "null", "value": None}]}  # fmt: skip
    assert "… 1,999 more not kept" in text(redis_reply(cut))
    assert text(redis_reply({"type": "boolean", "value": False})) == "(false)"
    assert text(redis_reply({"type": "double", "value": "inf"})) == "(double) inf"
    assert text(redis_reply({"type": "blob_error", "value": "SYNTAX bad"})) == (
        "(error) SYNTAX bad")  # fmt: skip
