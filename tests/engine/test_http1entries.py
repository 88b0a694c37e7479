"""The C path of HTTP/1 entries (`_http1entries.Http1Entries`) against the Python reference.

The reference is what `dissect --json` wrote before the C path: `HttpDissector`'s exchanges
made entries by `EntryBuilder` and encoded by msgspec. The C path must give the same lines,
byte for byte, in the same order, with the same other events (desyncs, truncations), on any
input: what it follows itself (plain messages) and what it hands over to the Python dissector
(everything else, fed again from the connection's last idle point).
"""

from __future__ import annotations

import gzip
import io
import math
import random
import subprocess
import sys
import zlib
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shark_tui.engine import _http1entries
from shark_tui.engine.capfile import CaptureFile
from shark_tui.engine.dissect import Dissection, EntryBuilder
from shark_tui.engine.tcp import Flow
from shark_tui.proto.base import CLIENT, SERVER, ExchangeCompleted
from shark_tui.proto.http import HttpDissector
from tests.engine.test_dissect import capture
from tests.proto.test_http1_props import conversations, split_and_interleave

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODE = msgspec.json.Encoder().encode

#: (op, direction, data or size, ts); op: feed, gap, close, finish, expire.
Step = tuple[str, int, Any, float]


_V4 = (bytes([10, 0, 0, 1]), 40000, bytes([10, 0, 0, 2]), 80)
_V6 = (bytes(15) + b"\x01", 40000, bytes.fromhex("fd00000000000000000000000000beef"), 8080)


def _flow(addr: tuple[bytes, int, bytes, int] = _V4, client: int = 0) -> Flow:
    flow = Flow(7, addr, 1.0)
    flow.client = client
    return flow


def _call(d: Any, step: Step) -> list[Any]:
    op, direction, arg, ts = step
    if op == "feed":
        return d.feed(direction, arg, ts)  # type: ignore[no-any-return]
    if op == "gap":
        return d.gap(direction, arg, ts)  # type: ignore[no-any-return]
    if op == "close":
        return d.close(direction, ts)  # type: ignore[no-any-return]
    if op == "finish":
        return d.finish(ts)  # type: ignore[no-any-return]
    return d.expire(ts)  # type: ignore[no-any-return]


def reference(
    steps: list[Step], cap: int, flow: Flow | None = None
) -> tuple[list[bytes], Counter[str], list[Any]]:
    """The lines the Python dissector's exchanges make, and its other events."""
    flow, builder = flow or _flow(), EntryBuilder()
    d = HttpDissector(body_cap=cap)
    lines: list[bytes] = []
    other: Counter[str] = Counter()
    pending = []
    for step in steps:
        for ev in _call(d, step):
            if isinstance(ev, ExchangeCompleted):
                lines.append(ENCODE(builder.build(flow, ev.exchange)))
            else:
                other[repr(ev)] += 1
        pending.append(d.oldest_pending())
    return lines, other, pending


def fast(
    steps: list[Step], cap: int, flow: Flow | None = None
) -> tuple[list[bytes], Counter[str], list[Any], _http1entries.Http1Entries]:
    """The same through the C path: its own lines, and the Python dissector's after a hand-over."""
    flow, builder = flow or _flow(), EntryBuilder()
    d = Dissection(lambda item: None, body_cap=cap)
    d.json_lines = True
    d.render = lambda entry, out: None
    c = d._fast_http1(flow)
    assert isinstance(c, _http1entries.Http1Entries)
    lines: list[bytes] = []
    other: Counter[str] = Counter()
    pending = []
    for step in steps:
        for ev in _call(c, step):
            if type(ev) is tuple:
                flow.n += 1
                ts, framed = ev
                assert framed.endswith(b"\n")
                line = bytes(framed[:-1])
                assert ENCODE(ts) == line.split(b'"ts":', 1)[1].split(b",", 1)[0]
                lines.append(line)
            elif isinstance(ev, ExchangeCompleted):
                lines.append(ENCODE(builder.build(flow, ev.exchange)))
            else:
                other[repr(ev)] += 1
        pending.append(c.oldest_pending())
    return lines, other, pending, c


def assert_same(steps: list[Step], cap: int = 65536) -> _http1entries.Http1Entries:
    want, want_other, want_pending = reference(steps, cap)
    got, got_other, got_pending, c = fast(steps, cap)
    assert got == want
    assert got_other == want_other
    assert got_pending == want_pending
    return c


# -- generated conversations --------------------------------------------------------------

_TARGETS = [
    b"/",
    b"/a/b?x=1&y=two",
    b"/s?q=a+b&&flag&e=",
    b"/p?name=%41%2F%zz&z=%e2%82%ac",
    b"/graphql",
    b"/api/graphql/?query=1",
    b"/g?query={a}",
    b"http://example.test/x?y=1",
    b"example.test:443",
    b"*",
    b'/quote"back\\slash',
]
_BODIES = [
    b"",
    b"plain text\r\n\tand a form feed \x0c",
    b'{"name":"widget","tags":["a","b"]}',
    b'  {"query":"{ a }"}',
    "caf\u00e9 \u20ac".encode(),
    b"\x00\x01\x02binary\xff",
    b"ctl \x1b[0m \x7f",
    ("x" * 100 + "\u00e9").encode(),
]


@st.composite
def messages(draw: st.DrawFn) -> tuple[bool, list[tuple[int, bytes, float]]]:
    """Keep-alive exchanges with the variety the C path must render or hand over; half of them
    (``wild`` False) only of what the C path follows itself."""
    wild = draw(st.booleans())

    def pick(plain: list[Any], odd: list[Any]) -> Any:
        return draw(st.sampled_from(plain + odd if wild else plain))

    out: list[tuple[int, bytes, float]] = []
    ts = pick([1.0, 1795704324.789999], [0.00001, 3e15])
    for _ in range(draw(st.integers(1, 4))):
        eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
        method = pick([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS"], [b"CONNECT"])
        target = pick(_TARGETS[:4] + _TARGETS[-2:], _TARGETS[4:-2])
        version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
        body = draw(st.sampled_from(_BODIES)) if method in (b"POST", b"PUT") else b""
        headers = [b"Host: h.test"] if draw(st.booleans()) else []
        plain_headers = [
            b"Accept: */*",
            b"Content-Type: application/json",
            b"X-Odd:   spaced value \t",
            b"Host: second.test",
            b"X-Ctl: a\x01b",
        ]
        odd_headers = [
            b"Content-Type: application/graphql",
            b"Upgrade: websocket",
            b"X-Latin: caf\xe9",
            b" folded",
        ]
        choices = plain_headers + odd_headers if wild else plain_headers
        headers += draw(st.lists(st.sampled_from(choices), max_size=3))
        if body and draw(st.booleans()):
            headers.append(b"Transfer-Encoding: chunked")
            wire = b"%x" % len(body) + eol + body + eol + b"0" + eol + eol
        else:
            wire = body
            if body or draw(st.booleans()):
                headers.append(b"Content-Length: %d" % len(body))
        head = method + b" " + target + b" HTTP/" + version + eol
        out.append((CLIENT, head + b"".join(h + eol for h in headers) + eol + wire, ts))
        status = pick([200, 200, 201, 204, 304, 404, 500], [100, 101, 999])
        reason = pick([b" OK", b"", b" ", b" Not Found  ", b"\tTab"], [b" R\xe9"])
        rbody = draw(st.sampled_from(_BODIES))
        rheaders: list[bytes] = []
        coding = pick(["cl", "cl", "chunked", "gzip", "deflate", "raw", "br"], [])
        if coding == "gzip":
            rbody = gzip.compress(rbody, mtime=0)
            rheaders.append(b"Content-Encoding: gzip")
        elif coding == "deflate":
            rbody = zlib.compress(rbody)
            rheaders.append(b"Content-Encoding: deflate")
        elif coding == "br":
            rheaders.append(b"Content-Encoding: br")
        if coding == "chunked":
            rheaders.append(b"Transfer-Encoding: chunked")
            trailer = pick([b""], [b"X-T: 1" + eol])
            rwire = b"%x;ext=1" % len(rbody) + eol + rbody + eol if rbody else b""
            rwire += b"0" + eol + trailer + eol
        elif coding == "raw":
            rwire = rbody  # close-delimited
        else:
            rheaders.append(b"Content-Length: %d" % len(rbody))
            rwire = rbody
        if method == b"HEAD" or status in (204, 304):
            rwire = b""
        rhead = b"HTTP/1.1 %d" % status + reason + eol + b"".join(h + eol for h in rheaders)
        ts += draw(st.sampled_from([0.0, 0.0004, 0.0123, 1.5]))
        out.append((SERVER, rhead + eol + rwire, ts))
        ts += 0.001
    return wild, out


@st.composite
def steps_from(draw: st.DrawFn, wild: bool, msgs: list[tuple[int, bytes, float]]) -> list[Step]:
    """The messages cut into segments, with damage now and then, and the connection's end."""
    steps: list[Step] = []
    for direction, data, ts in msgs:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=3))))
        bounds = [0, *[c for c in cuts if c < len(data)], len(data)]
        for a, b in pairwise(bounds):
            piece = data[a:b]
            damage = draw(st.sampled_from(["none"] * 12 + ["gap", "flip", "garbage", "expire"]))
            if not wild:
                damage = "none"
            if damage == "gap":
                steps.append(("gap", direction, len(piece), ts))
                continue
            if damage == "flip" and piece:
                i = draw(st.integers(0, len(piece) - 1))
                piece = piece[:i] + bytes([piece[i] ^ 0x5A]) + piece[i + 1 :]
            elif damage == "garbage":
                piece += draw(st.binary(min_size=1, max_size=8))
            elif damage == "expire":
                steps.append(("expire", 0, None, ts + 120.0))
            steps.append(("feed", direction, piece, ts))
    end = draw(st.sampled_from(["finish", "close-server", "close-both"]))
    last = (msgs[-1][2] if msgs else 0.0) + 1.0
    if end != "finish":
        steps.append(("close", SERVER, None, last))
    if end == "close-both":
        steps.append(("close", CLIENT, None, last))
    steps.append(("finish", 0, None, last + 1.0))
    return steps


@SETTINGS
@given(st.data())
def test_generated_conversations_give_the_reference_lines(data: st.DataObject) -> None:
    wild, msgs = data.draw(messages())
    steps = data.draw(steps_from(wild, msgs))
    assert_same(steps, cap=data.draw(st.sampled_from([65536, 65536, 20, 0])))


@SETTINGS
@given(st.data())
def test_pipelined_and_interleaved_conversations(data: st.DataObject) -> None:
    """The HTTP/1 property tests' conversations (pipelining, 100-continue, chunked requests),
    cut and interleaved in any causal order."""
    ops = data.draw(split_and_interleave(data.draw(conversations())))
    steps: list[Step] = [("feed", op.direction, op.data, op.ts) for op in ops]
    steps += [("close", SERVER, None, 99.0), ("finish", 0, None, 100.0)]
    assert_same(steps, cap=data.draw(st.sampled_from([16, 65536])))


# -- what the C path follows itself ---------------------------------------------------------


def _keepalive(n: int, body: bytes = b'{"ok":true}') -> list[Step]:
    steps: list[Step] = []
    for i in range(n):
        ts = 1795704324.5 + i
        req = b"GET /items/%d?page=2&q=a+b HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\n\r\n" % i
        resp = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        ) + body
        steps += [("feed", CLIENT, req, ts), ("feed", SERVER, resp[:30], ts + 0.002)]
        for at in range(30, len(resp), 16384):
            steps.append(("feed", SERVER, resp[at : at + 16384], ts + 0.003))
    return [*steps, ("close", CLIENT, None, 1795704400.0), ("finish", 0, None, 1795704400.0)]


def test_plain_keepalive_stays_in_c() -> None:
    c = assert_same(_keepalive(5))
    assert not c.handed_over


@pytest.mark.parametrize("addr", [_V4, _V6])
@pytest.mark.parametrize("client", [0, 1])
def test_endpoints_as_msgspec_writes_them(addr: tuple[bytes, int, bytes, int], client: int) -> None:
    """The endpoints part of the line, made without msgspec per connection, is msgspec's."""
    steps = _keepalive(2)
    want = reference(steps, 65536, _flow(addr, client))[0]
    got, _, _, c = fast(steps, 65536, _flow(addr, client))
    assert got == want and len(got) == 2 and not c.handed_over


@pytest.mark.parametrize("size", [16_000, 70_000])
def test_large_bodies_stay_in_c(size: int) -> None:
    """Bodies over many segments, the second over the body cap (cut, marked truncated)."""
    body = b'{"rows":[' + b'{"n":1,"s":"a\\"b"},' * (size // 17) + b"0]}"
    c = assert_same(_keepalive(3, body))
    assert not c.handed_over


def test_chunked_and_close_delimited_stay_in_c() -> None:
    steps: list[Step] = [
        ("feed", CLIENT, b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 10.0),
        ("feed", CLIENT, b"5\r\nhello\r\n0\r\n\r\n", 10.1),
        ("feed", SERVER, b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n", 10.2),
        ("feed", SERVER, b"3;x\r\n", 10.25),
        ("feed", SERVER, b"abc\r\n0\r\n\r\n", 10.3),
        ("feed", CLIENT, b"GET /stream HTTP/1.0\r\n\r\n", 11.0),
        ("feed", SERVER, b"HTTP/1.0 200 OK\r\n\r\nall until the close", 11.5),
        ("close", SERVER, None, 12.0),
        ("finish", 0, None, 12.0),
    ]
    c = assert_same(steps)
    assert not c.handed_over


def test_big_body_past_the_log_cap_is_handed_over_whole() -> None:
    """A body larger than what the C path keeps for a hand-over: the Python dissector takes the
    connection then, fed again from the last idle point — the entries do not change."""
    body = b"0123456789abcdef" * 40_000  # 640 KB, in 16 KB segments
    steps = _keepalive(1)[:3]
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    steps.append(("feed", CLIENT, b"GET /big HTTP/1.1\r\n\r\n", 1795704330.0))
    steps.append(("feed", SERVER, head, 1795704330.1))
    for i in range(0, len(body), 16384):
        steps.append(("feed", SERVER, body[i : i + 16384], 1795704330.2))
    steps.append(("finish", 0, None, 1795704331.0))
    c = assert_same(steps, cap=1000)
    assert c.handed_over


@pytest.mark.parametrize(
    ("why", "steps"),
    [
        ("gap", [("feed", CLIENT, b"GET / HTTP/1.1\r\n\r\n", 1.0), ("gap", SERVER, 10, 1.1)]),
        ("1xx", [("feed", CLIENT, b"GET / HTTP/1.1\r\n\r\n", 1.0),
                 ("feed", SERVER, b"HTTP/1.1 103 Early\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 1.1)]),
        ("upgrade", [("feed", CLIENT, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 1.0)]),
        ("graphql", [("feed", CLIENT, b"GET /graphql?query={a} HTTP/1.1\r\n\r\n", 1.0),
                     ("feed", SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1.1)]),
        ("non-ascii header", [("feed", CLIENT, b"GET / HTTP/1.1\r\nX: \xe9\r\n\r\n", 1.0)]),
        ("gzip body", [("feed", CLIENT, b"GET / HTTP/1.1\r\n\r\n", 1.0),
                       ("feed", SERVER, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                        b"Content-Length: 3\r\n\r\nabc", 1.1)]),
        ("response first", [("feed", SERVER, b"HTTP/1.1 200 OK\r\n\r\n", 1.0)]),
    ],
)  # fmt: skip
def test_what_is_handed_over(why: str, steps: list[Step]) -> None:
    c = assert_same([*steps, ("finish", 0, None, 5.0)])
    # A gzip body is rendered by the Python function, not handed over; the rest is.
    assert c.handed_over == (why != "gzip body")


# -- JSON numbers as msgspec writes them ----------------------------------------------------


def test_floats_are_written_as_msgspec_writes_them() -> None:
    rng = random.Random(7)
    values = [0.0, -0.0, 1e-4, 0.1, 9.99e14, 1795704324.789999, 123.456]
    values += [rng.uniform(0, 2e9) for _ in range(20_000)]
    values += [10 ** rng.uniform(-4, 14.9) for _ in range(20_000)]
    values += [rng.uniform(-5000, 5000) for _ in range(5_000)]
    for x in values:
        got = _http1entries.json_float(x)
        assert got == ENCODE(x), x
    for x in (1e-5, 1e15, 1e16, math.inf, math.nan, -1e-7):
        assert _http1entries.json_float(x) is None  # left to the Python code


def test_latency_is_rounded_as_python_rounds() -> None:
    rng = random.Random(11)
    values = [0.0005, 0.0015, 2.675, -0.0005, 1.0005, 0.1 + 0.2]
    values += [rng.uniform(-10, 10_000) for _ in range(50_000)]
    values += [rng.randrange(0, 10**7) / 10_000 + 0.0005 for _ in range(20_000)]
    for x in values:
        assert _http1entries.json_float(x, True) == ENCODE(round(x, 3)), x


# -- `dissect --json` end to end ------------------------------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_dissect_json_is_the_python_path_output(tmp_path: Path, jobs: str) -> None:
    """The command's output (C path, one or two processes) is the Python path's rendering of
    the same capture: keep-alive and pipelined connections, chunked, gzip, HEAD, 1xx."""
    data = capture(3, conns=6)[0] + capture(4, conns=6, pipelined=True, first=6)[0][24:]
    path = tmp_path / "c.pcap"
    path.write_bytes(data)
    want = bytearray()
    d = Dissection(lambda line: want.extend(line))
    d.render = lambda entry, buf: buf.extend(ENCODE(entry) + b"\n")
    d.run_file(CaptureFile(io.BytesIO(data)))
    cmd = [sys.executable, "-m", "shark_tui", "dissect", str(path), "--json", "--jobs", jobs]
    got = subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout
    assert want.count(b"\n") > 40
    assert got == bytes(want)


@SETTINGS
@given(
    body=st.text(
        alphabet=st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + list('\t\n\r\x0c"\\')),
        max_size=300,
    ),
    value=st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=40),
)
def test_strings_are_escaped_as_msgspec_escapes_them(body: str, value: str) -> None:
    """Bodies of every length around the 8- and 16-byte steps, dense in quotes and
    backslashes, and header values with any ASCII byte: written by the C path itself."""
    value = value.replace("\n", "").replace("\r", "").strip(" \t")
    req = b"GET / HTTP/1.1\r\nX-V: " + value.encode() + b"\r\n\r\n"
    data = body.encode()
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data
    steps: list[Step] = [
        ("feed", CLIENT, req, 1795704324.5),
        ("feed", SERVER, resp, 1795704324.6),
        ("finish", 0, None, 1795704325.0),
    ]
    assert not assert_same(steps).handed_over


_TEXT = b'{"a": "quote \\" and \\\\ backslash", "n": [1, 2, 3]}\n' * 3


@pytest.mark.parametrize(
    ("coding", "body", "cap"),
    [
        ("gzip", gzip.compress(_TEXT, mtime=0), 65536),
        ("x-gzip", gzip.compress(_TEXT, mtime=0), 65536),
        ("GZip", gzip.compress(_TEXT, mtime=0), 65536),
        ("deflate", zlib.compress(_TEXT), 65536),
        ("deflate", zlib.compress(_TEXT)[2:-4], 65536),  # raw deflate: the Python code
        ("identity", _TEXT, 65536),
        ("gzip", gzip.compress(_TEXT, mtime=0) + b"trailing", 65536),
        ("gzip", gzip.compress(_TEXT, mtime=0)[:-12], 65536),  # cut: incomplete stream
        ("gzip", gzip.compress("caf\u00e9".encode(), mtime=0), 65536),  # not ASCII
        ("gzip", gzip.compress(_TEXT, mtime=0), len(_TEXT)),  # exactly the cap
        ("gzip", gzip.compress(_TEXT, mtime=0), len(_TEXT) - 1),  # over the cap
        ("gzip", gzip.compress(_TEXT, mtime=0), 20),  # the compressed body itself cut
        ("br", b"\x0b\x02\x80", 65536),
        ("gzip", b"not gzip at all", 65536),
    ],
)
def test_compressed_bodies(coding: str, body: bytes, cap: int) -> None:
    req = b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
    steps: list[Step] = [
        ("feed", CLIENT, req, 1795704324.5),
        ("feed", SERVER, head % (coding.encode(), len(body)) + body, 1795704324.6),
        ("finish", 0, None, 1795704325.0),
    ]
    assert not assert_same(steps, cap).handed_over


@SETTINGS
@given(
    text=st.text(alphabet=st.sampled_from(list('ab "\\\t\n')), min_size=0, max_size=60),
    odd=st.sampled_from([0x00, 0x01, 0x08, 0x0B, 0x0E, 0x1F, 0x7F, 0x80, 0xC3, 0xFF]),
    at=st.integers(0, 60),
)
def test_one_byte_that_is_not_plain_text_anywhere(text: str, odd: int, at: int) -> None:
    """A body is written by the C path only when every byte is plain text; one other byte at
    any place (inside or after a 16-byte block) leaves it to render_body (base64, UTF-8)."""
    plain = text.encode()
    at = min(at, len(plain))
    for body in (plain, plain[:at] + bytes([odd]) + plain[at:], plain[:at] + "é".encode()):
        resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        steps: list[Step] = [
            ("feed", CLIENT, b"GET / HTTP/1.1\r\n\r\n", 1795704324.5),
            ("feed", SERVER, resp, 1795704324.6),
            ("finish", 0, None, 1795704325.0),
        ]
        assert_same(steps)
