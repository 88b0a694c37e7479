r"""The filter language: one grammar, compiled once into nested closures over entry dicts.

The daemon evaluates filters on entries (the JSON-ready dicts of DESIGN.md, one line of
``dissect --json``); the TUI calls :func:`validate` on every keystroke and builds its help screen
and completion from :data:`HELP` and :func:`completions`.

Grammar (``not`` binds tighter than ``and``, which binds tighter than ``or``)::

    expr       := and_expr (("or" | "||") and_expr)*
    and_expr   := unary (("and" | "&&") unary)*
    unary      := ("not" | "!") unary | "(" expr ")" | test
    test       := MACRO | field [op value | "contains" value | "in" "[" [value ("," value)*] "]"]
    field      := WORD ("[" (STRING | WORD) "]")*
    op         := "==" | "!=" | "<" | "<=" | ">" | ">=" | "~"
    value      := STRING | NUMBER | "true" | "false" | "null" | WORD

Semantics chosen where DESIGN.md is silent:

- A path that does not exist is null. Every comparison with null is false, except ``== null``
  and ``!= null``; ``x != v`` (v not null) is "x exists and is not equal to v", so
  ``status != 200`` skips the ``tcp`` rows whose status is null.
- ``==`` is exact and case-sensitive for strings; ``~`` (regex search) and ``contains``
  (substring) are case-insensitive. Numbers compare numerically, and a numeric string on either
  side is converted when the other side is a number (``status == "200"``, ``version == 1.1``);
  a quoted literal against a string field stays a string comparison. Any other type mismatch is
  false, never an exception. ``true``/``false`` only equal booleans.
- Lists are existential: ``x == v``, ``<``, ``~`` hold if any element does; ``x != v`` holds if
  no element equals v; ``list contains v`` is membership (case-insensitive for strings).
- ``request.headers.NAME`` and ``request.headers["NAME"]`` are every value of that header
  (name matched case-insensitively); ``request.headers`` alone is the names and values, so
  ``request.headers contains "x-debug"`` and ``request.headers ~ "gzip"`` search both. Any
  path segment after ``headers`` belongs to the header name (``request.headers.x.y`` is the
  header ``x.y``). A digit segment indexes a list (``request.messages.0``).
- Shorthands ``ip``, ``port``, ``pod``, ``ns`` test both ends and hold if EITHER end does, for
  every operator except ``!=``, which means NEITHER end equals: ``port != 80`` is the same as
  ``not port == 80`` (unlike Wireshark's ``ip.addr != x``, which is true whenever one end
  differs). With ``!= v`` at least one end must be non-null; ``pod != null`` means both ends
  have a pod.
- ``ip`` fields (``src.ip``, ``dst.ip``, ``ip``, any path ending in ``.ip``) compare as
  strings, except that a CIDR literal (``10.0.0.0/8``, ``fd00::/8``) with ``==``/``!=``/``in``
  tests network membership, and an address literal is normalised (``::01`` -> ``::1``).
- ``path`` is ``request.path`` (else the ``:path`` header, else the summary of http, http2 and
  grpc entries) cut at ``?``; ``host`` is the entry's ``host`` key, else the ``Host`` or
  ``:authority`` request header.
- A field alone (``tls``, ``error``, ``request.body``, ``pod``) means "exists and is truthy"
  (0, "" and empty lists are false). Protocol macros take no operator.
- Bare words are values when unambiguous: they stop at white space and at any of
  ``( ) [ ] , " ' = < > ~ ! & |``; quote a value that contains one (``"/a?b=1"``). A bare
  word that reads as a number is a number. In quoted strings ``\\ \" \' \n \r \t \xHH \uXXXX``
  are escapes and any other backslash is kept as is, so regexes like ``"\d+"`` need no
  doubling.
- Keywords (``and``, ``or``, ``not``, ``contains``, ``in``, ``true``, ``false``, ``null``) are
  case-insensitive; field names and macros are not.

Pushdown: :attr:`Filter.pushdown` (a :class:`Pushdown`, called like
``flow_may_match(proto_guess, src_ip, src_port, dst_ip, dst_port)``) answers, from what the flow
index knows before dissection (protocol guess and the two ends), whether any entry of the flow
could match. It is conservative: it returns False only when the proto/ip/port predicates rule
the flow out for every possible entry; every other predicate counts as "maybe". A guess
constrains the entry's proto through :data:`GUESS_PROTOS` (pass None for no guess, or when
``--decode`` overrides it). Because an entry's ``src`` is the end that opened the connection
(or sent the first request), which the index may see the other way round, both orientations of
the flow are tried.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "GUESS_PROTOS",
    "HELP",
    "MAX_DEPTH",
    "PROTOS",
    "Filter",
    "FilterError",
    "Pushdown",
    "compile_filter",
    "completions",
    "validate",
]

Entry = Mapping[str, Any]
Pred = Callable[[Entry], bool]
Test = Callable[[object], bool]
Getter = Callable[[Entry], object]
# The pushdown's three-valued predicate: True, False or None ("can't tell before dissection").
_Tri = Callable[[Entry, bool], "bool | None"]

#: Every ``proto`` an entry can have (DESIGN.md).
PROTOS: Final = (
    "http", "http2", "grpc", "graphql", "websocket", "amqp", "kafka", "redis", "tcp",
)  # fmt: skip
_HTTP_PROTOS: Final = frozenset({"http", "http2", "grpc", "graphql", "websocket"})

#: Deepest nesting of parentheses and ``not`` accepted (the compiled closures nest as deep).
MAX_DEPTH: Final = 64


class FilterError(ValueError):
    """A malformed filter. ``column`` is the 0-based offset of the problem in the text."""

    def __init__(self, column: int, reason: str) -> None:
        super().__init__(f"column {column}: {reason}")
        self.column = column
        self.reason = reason


# --------------------------------------------------------------------------------------------
# The vocabulary, each term with its own help text: HELP and completions() come from here.

_OPERATORS: Final[tuple[tuple[str, str], ...]] = (
    ("==", "equal: exact for strings, numeric for numbers; `ip == 10.0.0.0/8` tests a network"),
    ("!=", "not equal: the field exists and differs; for ip/port/pod/ns, neither end equals"),
    ("<", "less than: numbers numerically, strings lexicographically"),
    ("<=", "less than or equal"),
    (">", "greater than"),
    (">=", "greater than or equal"),
    ("~", "regex search, case-insensitive: `pod ~ ^api-`"),
    (
        "contains",
        "substring, case-insensitive; for a list, membership; for headers, names and values",
    ),
    ("in", "one of a list: `method in [GET, POST]`, `ip in [10.0.0.0/8, 192.168.1.5]`"),
    ("and", "both (alias &&); binds tighter than or"),
    ("or", "either (alias ||)"),
    ("not", "negation (alias !); binds tighter than and"),
    ("( )", "grouping"),
    ("null", "the value of a missing field: `response == null`"),
    ("true", "boolean true: `tls == true` (or just `tls`)"),
    ("false", "boolean false"),
)

_MACROS: Final[dict[str, tuple[frozenset[str], str]]] = {
    "http": (_HTTP_PROTOS, "any HTTP: proto is http, http2, grpc, graphql or websocket"),
    "http1": (frozenset({"http"}), "HTTP/1.x: proto == http"),
    "http2": (frozenset({"http2"}), "HTTP/2 (not gRPC or GraphQL): proto == http2"),
    "grpc": (frozenset({"grpc"}), "gRPC: proto == grpc"),
    "graphql": (frozenset({"graphql"}), "GraphQL over HTTP: proto == graphql"),
    "websocket": (frozenset({"websocket"}), "WebSocket messages: proto == websocket"),
    "amqp": (frozenset({"amqp"}), "AMQP 0-9-1: proto == amqp"),
    "kafka": (frozenset({"kafka"}), "Kafka: proto == kafka"),
    "redis": (frozenset({"redis"}), "Redis RESP2/3: proto == redis"),
    "tcp": (frozenset({"tcp"}), "TCP not recognised as any protocol: proto == tcp"),
}

_SHORTHANDS: Final[dict[str, str]] = {
    "ip": "src.ip or dst.ip (either end; `!=` means neither end)",
    "port": "src.port or dst.port (either end; `port != 80`: neither end is 80)",
    "pod": "src.pod or dst.pod (either end)",
    "ns": "src.ns or dst.ns (either end)",
    "path": "HTTP path without the query",
    "host": "HTTP host: the Host or :authority header",
}

_END_KEYS: Final = ("ip", "port", "pod", "ns")

_FIELDS: Final[dict[str, str]] = {
    "id": "entry id, `<flow>:<n>`",
    "proto": "protocol: " + ", ".join(PROTOS),
    "src": "the end that opened the connection: src.ip, src.port, src.pod, src.ns",
    "dst": "the other end: dst.ip, dst.port, dst.pod, dst.ns",
    "src.ip": "client address",
    "src.port": "client port",
    "src.pod": "client pod (null when unknown)",
    "src.ns": "client namespace (null when unknown)",
    "dst.ip": "server address",
    "dst.port": "server port",
    "dst.pod": "server pod (null when unknown)",
    "dst.ns": "server namespace (null when unknown)",
    "ts": "time of the first message, epoch seconds",
    "latency_ms": "response time in milliseconds (null without a response)",
    "method": "HTTP method, gRPC method, AMQP method, Kafka API, Redis command",
    "summary": "the list's summary column: path, topics, key, ...",
    "status": "HTTP status, grpc-status, reply code, Kafka error code, Redis reply",
    "request_size": "L7 request bytes on the wire",
    "response_size": "L7 response bytes on the wire",
    "tls": "true when the plaintext came from TLS uprobes",
    "error": "no_response, no_request, truncated, desynced, header_state_unknown, partial",
    "request": "the request object (any path below it: request.version, ...)",
    "response": "the response object (null when not seen)",
    "request.headers": 'request headers; .NAME or ["NAME"] for one header\'s values',
    "response.headers": 'response headers; .NAME or ["NAME"] for one header\'s values',
    "request.body": "request body (text, or base64 per request.body_encoding)",
    "response.body": "response body",
    "request.path": "HTTP request path with its query",
    "request.version": "HTTP version",
    "response.version": "HTTP version",
}

_ENTRY_KEYS: Final = frozenset(
    {
        "id",
        "proto",
        "src",
        "dst",
        "ts",
        "latency_ms",
        "method",
        "summary",
        "status",
        "request_size",
        "response_size",
        "tls",
        "request",
        "response",
        "error",
        "host",
    }
)

_KEYWORDS: Final = frozenset({"and", "or", "not", "contains", "in", "true", "false", "null"})

#: (term, help) for the help screen: operators, then macros, shorthands and fields.
HELP: Final[list[tuple[str, str]]] = [
    *_OPERATORS,
    *((name, text) for name, (_, text) in _MACROS.items()),
    *_SHORTHANDS.items(),
    *_FIELDS.items(),
]

_COMPLETABLE: Final = tuple(
    sorted(
        {*_FIELDS, *_SHORTHANDS, *_MACROS, *(t for t, _ in _OPERATORS if t != "( )"), "&&", "||"}
    )
)


def completions(prefix: str) -> list[str]:
    """Field names, shorthands, macros and operators starting with ``prefix`` (the word being
    typed), sorted; case-insensitive. An empty prefix lists everything."""
    low = prefix.lower()
    return [term for term in _COMPLETABLE if term.lower().startswith(low)]


# --------------------------------------------------------------------------------------------
# Lexer


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "(" ")" "[" "]" "," "op" "and" "or" "not" "str" "word" "end"
    text: str  # the source text
    value: str  # decoded string for "str", the symbol for "op", else the text
    col: int


_WORD_STOP: Final = frozenset(" \t\r\n\f\v()[],\"'=<>~!&|")
_TWO_CHAR: Final = {"==": "op", "!=": "op", "<=": "op", ">=": "op", "&&": "and", "||": "or"}
_ONE_CHAR: Final = {"<": "op", ">": "op", "~": "op", "!": "not"}
_LONE_HINT: Final = {
    "=": "unexpected '=' (use '==' to compare; quote a value that contains '=')",
    "&": "unexpected '&' (use 'and' or '&&')",
    "|": "unexpected '|' (use 'or' or '||'; quote a regex that contains '|')",
}
_SIMPLE_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "()[],":
            toks.append(_Tok(c, c, c, i))
            i += 1
            continue
        two = text[i : i + 2]
        if two in _TWO_CHAR:
            toks.append(_Tok(_TWO_CHAR[two], two, two, i))
            i += 2
            continue
        if c in _ONE_CHAR:
            toks.append(_Tok(_ONE_CHAR[c], c, c, i))
            i += 1
            continue
        if c in _LONE_HINT:
            raise FilterError(i, _LONE_HINT[c])
        if c in "\"'":
            j, value = _lex_string(text, i)
            toks.append(_Tok("str", text[i:j], value, i))
            i = j
            continue
        j = i
        while j < n and text[j] not in _WORD_STOP and not text[j].isspace():
            j += 1
        word = text[i:j]
        low = word.lower()
        kind = low if low in ("and", "or", "not") else "word"
        toks.append(_Tok(kind, word, word, i))
        i = j
    toks.append(_Tok("end", "", "", n))
    return toks


def _lex_string(text: str, start: int) -> tuple[int, str]:
    """Decode the string literal opening at ``start``; return (end offset, value)."""
    quote = text[start]
    out: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c == quote:
            return i + 1, "".join(out)
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            break
        e = text[i + 1]
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e in "xu":
            width = 2 if e == "x" else 4
            digits = text[i + 2 : i + 2 + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise FilterError(i, f"bad escape '\\{e}': expected {width} hex digits")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:  # kept as is: regexes such as "\d+" need no doubling
            out.append("\\" + e)
            i += 2
    raise FilterError(start, "unterminated string")


# --------------------------------------------------------------------------------------------
# Values and tests


_INT_RE: Final = re.compile(r"[-+]?\d+")
_NUM_RE: Final = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _num(s: str) -> int | float | None:
    """The number a numeric string spells, else None."""
    if _NUM_RE.fullmatch(s) is None:
        return None
    try:
        return int(s) if _INT_RE.fullmatch(s) else float(s)
    except ValueError:  # more digits than int() accepts
        return None


class _Multi(list[object]):
    """Several values of one field (a repeated header): tests hold if any value does, and
    ``contains`` is a substring test on each value rather than membership."""

    __slots__ = ()


def _is_num(v: object) -> bool:
    t = type(v)
    return t is int or t is float


def _lift(scalar: Test) -> Test:
    """Make a test on one value existential over lists (the slow path of the tests below,
    which inline their common case)."""

    def test(v: object) -> bool:
        if isinstance(v, list):
            return any(map(scalar, v))
        return scalar(v)

    return test


def _is_none(v: object) -> bool:
    return v is None


def _eq_scalar(lit: object) -> Test:
    if lit is None:
        return _is_none
    if isinstance(lit, bool):
        return lambda v: v is lit
    if isinstance(lit, int | float):
        n = lit

        def eq_num(v: object) -> bool:
            tv = type(v)
            if tv is int or tv is float:
                return v == n
            if tv is str:
                m = _num(v)  # type: ignore[arg-type]
                return m is not None and m == n
            return False

        return eq_num
    assert isinstance(lit, str)
    s, sn = lit, _num(lit)

    def eq_str(v: object) -> bool:
        tv = type(v)
        if tv is str:
            return v == s
        return sn is not None and (tv is int or tv is float) and v == sn

    return eq_str


def _fast(scalar: Test, fast_type: type) -> Test:
    """``_lift(scalar)`` with one less call when the value has the literal's usual type."""
    lifted = _lift(scalar)
    if fast_type is str:

        def test_str(v: object) -> bool:
            if type(v) is str:
                return scalar(v)
            return lifted(v)

        return test_str
    return lifted


@functools.lru_cache(maxsize=4096)
def _ip(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        return None


def _ip_literal(lit: object) -> object:
    """An ip field's literal: a network for CIDR text, a normalised address, else unchanged."""
    if not isinstance(lit, str):
        return lit
    if "/" in lit:
        try:
            return ipaddress.ip_network(lit, strict=False)
        except ValueError:
            return lit
    addr = _ip(lit)
    return str(addr) if addr is not None else lit


_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def _ip_int(s: str) -> tuple[int, int] | None:
    """(version, integer value) of an address string, else None; cached: the same few
    addresses recur in every entry."""
    addr = _ip(s)
    return None if addr is None else (addr.version, int(addr))


def _net_scalar(net: _Net) -> Test:
    key, mask = (net.version, int(net.network_address)), int(net.netmask)

    def in_net(v: object) -> bool:
        if type(v) is not str:
            return False
        x = _ip_int(v)
        return x is not None and x[0] == key[0] and x[1] & mask == key[1]

    return in_net


def _eq_test(lit: object, ip: bool) -> Test:
    if ip:
        lit = _ip_literal(lit)
        if isinstance(lit, _Net):
            return _lift(_net_scalar(lit))
    if lit is None:
        return _is_none
    scalar = _eq_scalar(lit)
    if isinstance(lit, str):
        s = lit

        def eq_str(v: object) -> bool:
            if v == s:  # also rules out the other types quickly when it holds
                return type(v) is str
            if type(v) is str or v is None:
                return False
            if isinstance(v, list):
                return any(map(scalar, v))
            return scalar(v)

        return eq_str
    if isinstance(lit, int | float) and not isinstance(lit, bool):
        n = lit

        def eq_num(v: object) -> bool:
            tv = type(v)
            if tv is int or tv is float:
                return v == n
            if isinstance(v, list):
                return any(map(scalar, v))
            return scalar(v)

        return eq_num
    return _lift(scalar)


_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _order_test(op: str, lit: object) -> Test:
    cmp = _ORDER[op]
    if isinstance(lit, str):
        s, sn = lit, _num(lit)

        def order_str(v: object) -> bool:
            tv = type(v)
            if tv is str:
                return cmp(v, s)
            return sn is not None and (tv is int or tv is float) and cmp(v, sn)

        return _lift(order_str)
    n = lit

    def order_scalar(v: object) -> bool:
        tv = type(v)
        if tv is int or tv is float:
            return cmp(v, n)
        if tv is str:
            m = _num(v)  # type: ignore[arg-type]
            return m is not None and cmp(m, n)
        return False

    def order_num(v: object) -> bool:
        tv = type(v)
        if tv is int or tv is float:
            return cmp(v, n)
        if v is None:
            return False
        if isinstance(v, list):
            return any(map(order_scalar, v))
        return order_scalar(v)

    return order_num


def _regex_test(pattern: str, col: int) -> Test:
    try:
        search = re.compile(pattern, re.IGNORECASE).search
    except (re.error, OverflowError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, re.error) else str(exc)
        raise FilterError(col, f"invalid regex {pattern!r}: {reason}") from None

    def scalar(v: object) -> bool:
        tv = type(v)
        if tv is str:
            return search(v) is not None  # type: ignore[call-overload]
        if tv is bool:
            return search("true" if v else "false") is not None
        if tv is int or tv is float:
            return search(str(v)) is not None
        return False

    def matches(v: object) -> bool:
        if type(v) is str:
            return search(v) is not None
        if v is None:
            return False
        if isinstance(v, list):
            return any(map(scalar, v))
        return scalar(v)

    return matches


def _contains_test(lit: object, raw: str) -> Test:
    needle = lit.casefold() if isinstance(lit, str) else raw.casefold()
    member = _eq_scalar(lit)
    folded = needle if isinstance(lit, str) else None

    def is_member(x: object) -> bool:
        if folded is not None and type(x) is str:
            return x.casefold() == folded
        return member(x)

    def substring(x: object) -> bool:
        if type(x) is str:
            return needle in x.casefold()
        return _is_num(x) and not isinstance(lit, bool | None) and needle in str(x)

    def contains(v: object) -> bool:
        if type(v) is str:
            return needle in v.casefold()
        if type(v) is _Multi:
            return any(map(substring, v))
        if isinstance(v, list):
            return any(map(is_member, v))
        if isinstance(v, dict):
            return folded is not None and any(
                isinstance(k, str) and k.casefold() == folded for k in v
            )
        return substring(v)

    return contains


def _in_test(lits: list[object], ip: bool) -> Test:
    values = [_ip_literal(lit) if ip else lit for lit in lits]
    strs = frozenset(x for x in values if type(x) is str)
    nums = frozenset(x for x in values if type(x) is int or type(x) is float)
    # A string equals a string literal, or a number literal when numeric; a number equals a
    # number literal, or a numeric string literal. Anything else takes the general path.
    simple = all(type(x) in (str, int, float) for x in values)
    str_nums = frozenset(n for n in (_num(x) for x in strs) if n is not None)
    tests = [_eq_test(lit, ip) for lit in lits]

    def in_list(v: object) -> bool:
        tv = type(v)
        if tv is str:
            if v in strs:
                return True
            if simple:
                return bool(nums) and _num(v) in nums  # type: ignore[arg-type, operator]
        elif simple and (tv is int or tv is float):
            return v in nums or v in str_nums
        elif simple and v is None:
            return False
        return any(t(v) for t in tests)

    return in_list


# --------------------------------------------------------------------------------------------
# Getters


def _step(v: object, seg: str) -> object:
    if isinstance(v, dict):
        return v.get(seg)
    if isinstance(v, list) and seg.isdigit():
        i = int(seg)
        return v[i] if i < len(v) else None
    return None


def _path_getter(segs: tuple[str, ...]) -> Getter:
    first = segs[0]
    if len(segs) == 1:
        return lambda e: e.get(first)
    if len(segs) == 2:
        second = segs[1]

        def get2(e: Entry) -> object:
            v = e.get(first)
            if type(v) is dict:
                return v.get(second)
            return _step(v, second)

        return get2
    rest = segs[1:]

    def get_n(e: Entry) -> object:
        v = e.get(first)
        for seg in rest:
            if v is None:
                return None
            v = _step(v, seg)
        return v

    return get_n


def _header_values(headers: object, name: str) -> object:
    """Every value of header ``name`` (lower case) in a list of pairs or a dict, else None."""
    found = _Multi()
    if isinstance(headers, list):
        for pair in headers:
            if (
                isinstance(pair, list | tuple)
                and len(pair) >= 2
                and isinstance(pair[0], str)
                and pair[0].lower() == name
            ):
                found.append(pair[1])
    elif isinstance(headers, dict):
        for key, value in headers.items():
            if isinstance(key, str) and key.lower() == name:
                found.extend(value if isinstance(value, list) else [value])
    return found if found else None


def _headers_flat(headers: object) -> object:
    """Headers as one list of their names and values (for contains, ~ and truthiness)."""
    if isinstance(headers, list):
        flat = _Multi()
        for pair in headers:
            if isinstance(pair, list | tuple):
                flat.extend(pair)
            else:
                flat.append(pair)
        return flat
    if isinstance(headers, dict):
        flat = _Multi()
        for key, value in headers.items():
            flat.append(key)
            flat.extend(value if isinstance(value, list) else [value])
        return flat
    return headers


def _field_getter(segs: tuple[str, ...]) -> Getter:
    if "headers" in segs[1:]:
        at = segs.index("headers", 1)
        base = _path_getter(segs[: at + 1])
        if at == len(segs) - 1:
            return lambda e: _headers_flat(base(e))
        name = ".".join(segs[at + 1 :]).lower()
        return lambda e: _header_values(base(e), name)
    return _path_getter(segs)


_REQ_PATH: Final = _path_getter(("request", "path"))
_REQ_HEADERS: Final = _path_getter(("request", "headers"))
_SUMMARY_PATH_PROTOS: Final = frozenset({"http", "http2", "grpc"})
#: Protocols whose requests hold neither ``path`` nor ``headers`` (so ``path`` is null).
_NO_PATH_PROTOS: Final = frozenset({"redis", "kafka", "amqp", "tcp"})


def _first_str(v: object) -> str | None:
    if isinstance(v, list):
        v = v[0] if v else None
    return v if isinstance(v, str) else None


def _get_path(e: Entry) -> object:
    p = _REQ_PATH(e)
    if not isinstance(p, str):
        p = _first_str(_header_values(_REQ_HEADERS(e), ":path"))
    if p is None:
        proto = e.get("proto")
        if type(proto) is not str or proto not in _SUMMARY_PATH_PROTOS:
            return None
        p = e.get("summary")
        if not isinstance(p, str) or not p:
            return None
    return p.partition("?")[0]


def _get_host(e: Entry) -> object:
    h = e.get("host")
    if isinstance(h, str) and h:
        return h
    headers = _REQ_HEADERS(e)
    return _first_str(_header_values(headers, "host")) or _first_str(
        _header_values(headers, ":authority")
    )


# --------------------------------------------------------------------------------------------
# Parse tree (compile time only; evaluation runs the closures built from it)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    getters: tuple[Getter, ...]  # one, or (src, dst) for the either-end shorthands
    ip: bool  # CIDR literals mean network membership
    flow: str | None  # known to the flow index: "addr" (either end), "end" (src./dst.); or None
    # For inlining: a plain path of one or two keys, or the end key of a two-getter shorthand.
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Leaf:
    pred: Pred
    flow: str | None  # "proto", "addr", "end": decidable from the flow index; None: not


@dataclass(frozen=True, slots=True)
class _Not:
    item: _Node


@dataclass(frozen=True, slots=True)
class _And:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Or:
    items: tuple[_Node, ...]


_Node = _Leaf | _Not | _And | _Or


@dataclass(frozen=True, slots=True)
class _Lit:
    value: object
    raw: str
    col: int


_IDENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FLOW_PATHS: Final = frozenset({("src", "ip"), ("src", "port"), ("dst", "ip"), ("dst", "port")})


def _suggest(name: str) -> str:
    if "." in name and name.split(".", 1)[0] in ("src", "dst"):
        head = name.split(".", 1)[0]
        pool = [f"{head}.{k}" for k in _END_KEYS]
    else:
        pool = sorted(_ENTRY_KEYS | set(_SHORTHANDS) | set(_MACROS))
        name = name.split(".", 1)[0]
    best = difflib.get_close_matches(name.lower(), pool, n=1, cutoff=0.6)
    return f" (did you mean '{best[0]}'?)" if best else ""


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _lex(text)
        self.pos = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def parse(self) -> _Node:
        node = self.parse_or()
        tok = self.peek()
        if tok.kind != "end":
            raise FilterError(tok.col, self.after_test_reason(tok))
        return node

    def after_test_reason(self, tok: _Tok) -> str:
        prev = self.toks[self.pos - 1] if self.pos else None
        if tok.kind == ")":
            return "unmatched ')'"
        if prev is not None and prev.kind == "word" and tok.kind in ("word", "str"):
            return (
                f"expected an operator after '{prev.text}' "
                "(==, !=, <, <=, >, >=, ~, contains, in), 'and', 'or' or the end"
            )
        return f"expected 'and', 'or' or the end of the filter, found {_describe(tok)}"

    def parse_or(self) -> _Node:
        items = [self.parse_and()]
        while self.peek().kind == "or":
            self.take()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else _Or(tuple(items))

    def parse_and(self) -> _Node:
        items = [self.parse_unary()]
        while self.peek().kind == "and":
            self.take()
            items.append(self.parse_unary())
        return items[0] if len(items) == 1 else _And(tuple(items))

    def nest(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(tok.col, f"nested more than {MAX_DEPTH} deep")

    def parse_unary(self) -> _Node:
        tok = self.peek()
        if tok.kind == "not":
            self.take()
            self.nest(tok)
            item = self.parse_unary()
            self.depth -= 1
            return item.item if isinstance(item, _Not) else _Not(item)
        if tok.kind == "(":
            self.take()
            self.nest(tok)
            node = self.parse_or()
            close = self.peek()
            if close.kind != ")":
                raise FilterError(
                    close.col,
                    f"expected ')' to close the '(' at column {tok.col}, found {_describe(close)}",
                )
            self.take()
            self.depth -= 1
            return node
        return self.parse_test()

    def parse_test(self) -> _Node:
        tok = self.take()
        if tok.kind != "word" or tok.value.lower() in _KEYWORDS:
            raise FilterError(tok.col, f"expected a field, a macro or '(', found {_describe(tok)}")
        segs = tok.value.split(".")
        while self.peek().kind == "[":
            open_ = self.take()
            key = self.take()
            if key.kind not in ("str", "word"):
                raise FilterError(key.col, f"expected a key inside '[', found {_describe(key)}")
            close = self.take()
            if close.kind != "]":
                raise FilterError(
                    close.col,
                    f"expected ']' to close the '[' at column {open_.col}, "
                    f"found {_describe(close)}",
                )
            segs.append(key.value)
        after = self.peek()
        is_test = after.kind == "op" or (
            after.kind == "word" and after.value.lower() in ("contains", "in")
        )
        if segs[0] in _MACROS and len(segs) == 1:
            if is_test:
                raise FilterError(
                    after.col,
                    f"'{segs[0]}' is a protocol macro and takes no operator "
                    f"(use 'proto {after.text} ...' to compare the protocol)",
                )
            # a tuple, not a set: an odd entry's unhashable proto must not raise
            protos = tuple(p for p in PROTOS if p in _MACROS[segs[0]][0])
            return _Leaf(lambda e: e.get("proto") in protos, "proto")
        field = self.resolve(tok, tuple(segs))
        if not is_test:
            return _truthy_leaf(field)
        op_tok = self.take()
        op = op_tok.value.lower()
        if op == "in":
            return _leaf(field, "in", self.parse_list(op_tok))
        lit = self.parse_value(op_tok)
        if op in _ORDER and (lit.value is None or isinstance(lit.value, bool)):
            raise FilterError(lit.col, f"'{op}' compares numbers or strings, not {lit.raw}")
        return _leaf(field, op, [lit])

    def resolve(self, tok: _Tok, segs: tuple[str, ...]) -> _Field:
        name = ".".join(segs)
        head = segs[0]
        if _IDENT_RE.fullmatch(head) is None or not all(segs):
            if _num(tok.value) is not None:
                raise FilterError(
                    tok.col, f"expected a field, a macro or '(', found {_describe(tok)}"
                )
            raise FilterError(tok.col, f"unknown field '{name}'{_suggest(name)}")
        if len(segs) == 1 and head in _SHORTHANDS:
            return _shorthand(head)
        if head in ("src", "dst") and len(segs) > 1:
            if len(segs) > 2 or segs[1] not in _END_KEYS:
                raise FilterError(tok.col, f"unknown field '{name}'{_suggest(name)}")
            return _Field(
                name,
                (_path_getter(segs),),
                segs[1] == "ip",
                "end" if segs in _FLOW_PATHS else None,
                segs,
            )
        if head in _ENTRY_KEYS or (head in _MACROS and len(segs) > 1):
            getter = _field_getter(segs)
            keys = segs if len(segs) <= 2 and "headers" not in segs else ()
            if segs == ("proto",):
                return _Field(name, (getter,), False, "proto", keys)
            if segs in (("method",), ("status",)):  # the query engine keeps these per flow
                return _Field(name, (getter,), False, "facet", keys)
            if segs == ("latency_ms",):  # and its range per flow (see `_leaf`)
                return _Field(name, (getter,), False, "latency", keys)
            return _Field(name, (getter,), segs[-1] == "ip", None, keys)
        raise FilterError(tok.col, f"unknown field '{name}'{_suggest(name)}")

    def parse_value(self, op_tok: _Tok) -> _Lit:
        tok = self.take()
        if tok.kind == "str":
            return _Lit(tok.value, tok.value, tok.col)
        if tok.kind == "word":
            low = tok.value.lower()
            if low in ("true", "false", "null"):
                return _Lit({"true": True, "false": False, "null": None}[low], low, tok.col)
            if low not in _KEYWORDS:
                n = _num(tok.value)
                return _Lit(tok.value if n is None else n, tok.value, tok.col)
        raise FilterError(
            tok.col, f"expected a value after '{op_tok.text}', found {_describe(tok)}"
        )

    def parse_list(self, in_tok: _Tok) -> list[_Lit]:
        open_ = self.take()
        if open_.kind != "[":
            raise FilterError(open_.col, f"expected '[' after 'in', found {_describe(open_)}")
        lits: list[_Lit] = []
        while True:
            if self.peek().kind == "]":
                self.take()
                return lits
            lits.append(self.parse_value(in_tok))
            sep = self.take()
            if sep.kind == "]":
                return lits
            if sep.kind != ",":
                raise FilterError(
                    sep.col,
                    f"expected ',' or ']' in the list opened at column {open_.col}, "
                    f"found {_describe(sep)}",
                )


def _describe(tok: _Tok) -> str:
    if tok.kind == "end":
        return "the end of the filter"
    return f"'{tok.text}'"


def _shorthand(name: str) -> _Field:
    if name == "path":
        return _Field(name, (_get_path,), False, "path")
    if name == "host":
        return _Field(name, (_get_host,), False, None)
    getters = (_path_getter(("src", name)), _path_getter(("dst", name)))
    flow = "addr" if name in ("ip", "port") else None
    return _Field(name, getters, name == "ip", flow, (name,))


def _truthy_leaf(field: _Field) -> _Leaf:
    return _Leaf(_apply(field, bool), field.flow)


def _leaf(field: _Field, op: str, lits: list[_Lit]) -> _Leaf:
    flow = field.flow
    if flow == "latency":  # a flow's largest / smallest latency can rule out > / < tests
        flow = {">": "latency_max", ">=": "latency_max", "<": "latency_min",
                "<=": "latency_min"}.get(op)  # fmt: skip
    if op == "!=":
        return _Leaf(_not_equal(field, lits[0].value), field.flow)
    if op == "==":
        test = _eq_test(lits[0].value, field.ip)
    elif op in _ORDER:
        test = _order_test(op, lits[0].value)
    elif op == "~":
        lit = lits[0]
        pattern = lit.value if isinstance(lit.value, str) else lit.raw
        test = _regex_test(pattern, lit.col)
    elif op == "contains":
        test = _contains_test(lits[0].value, lits[0].raw)
    else:
        test = _in_test([lit.value for lit in lits], field.ip)
    return _Leaf(_apply(field, test), flow)


def _apply(field: _Field, test: Test) -> Pred:
    """``test`` on the field's value (either end's, for the two-end shorthands), with the
    common shapes inlined: this is the hot path of every filter."""
    keys = field.keys
    if len(field.getters) == 2:
        gs, gd = field.getters
        if not keys:
            return lambda e: test(gs(e)) or test(gd(e))
        k = keys[0]

        def either(e: Entry) -> bool:
            s = e.get("src")
            if test(s.get(k) if type(s) is dict else None):
                return True
            d = e.get("dst")
            return test(d.get(k) if type(d) is dict else None)

        return either
    if len(keys) == 1:
        k1 = keys[0]
        return lambda e: test(e.get(k1))
    if len(keys) == 2:
        k1, k2 = keys

        def two(e: Entry) -> bool:
            v = e.get(k1)
            if type(v) is dict:
                return test(v.get(k2))
            return test(_step(v, k2))

        return two
    get = field.getters[0]
    return lambda e: test(get(e))


def _is_not_none(v: object) -> bool:
    return v is not None


def _not_equal(field: _Field, lit: object) -> Pred:
    """``!=``: the value exists and differs; for the two-end shorthands, neither end equals
    and at least one end exists."""
    if len(field.getters) == 1:
        if lit is None:
            return _apply(field, _is_not_none)
        eq = _eq_test(lit, field.ip)
        return _apply(field, lambda v: v is not None and not eq(v))
    any_none = _apply(field, _is_none)
    if lit is None:
        return lambda e: not any_none(e)
    any_eq = _apply(field, _eq_test(lit, field.ip))
    any_present = _apply(field, _is_not_none)
    return lambda e: not any_eq(e) and any_present(e)


# --------------------------------------------------------------------------------------------
# Closures


def _compile(node: _Node) -> Pred:
    if isinstance(node, _Leaf):
        return node.pred
    if isinstance(node, _Not):
        inner = _compile(node.item)
        return lambda e: not inner(e)
    preds = tuple(_compile(item) for item in node.items)
    if isinstance(node, _And):
        if len(preds) == 2:
            a, b = preds
            return lambda e: a(e) and b(e)
        if len(preds) == 3:
            a, b, c = preds
            return lambda e: a(e) and b(e) and c(e)

        def all_of(e: Entry) -> bool:
            return all(p(e) for p in preds)

        return all_of
    if len(preds) == 2:
        a, b = preds
        return lambda e: a(e) or b(e)

    def any_of(e: Entry) -> bool:
        return any(p(e) for p in preds)

    return any_of


def _match_all(entry: Entry) -> bool:
    return True


# --------------------------------------------------------------------------------------------
# Pushdown

#: For each protocol guess of the flow index, the ``proto`` values its entries can have: the
#: guess itself, its relatives (an HTTP/1 connection may upgrade to h2c; gRPC and GraphQL are
#: recognised only by dissection) and ``tcp`` (what fails to dissect stays a tcp row). Any other
#: guess, or None, constrains nothing.
GUESS_PROTOS: Final[dict[str, tuple[str, ...]]] = {
    "http": ("http", "http2", "grpc", "graphql", "websocket", "tcp"),
    "http1": ("http", "http2", "grpc", "graphql", "websocket", "tcp"),
    "graphql": ("http", "http2", "grpc", "graphql", "tcp"),
    "websocket": ("http", "websocket", "tcp"),
    "http2": ("http2", "grpc", "graphql", "tcp"),
    "grpc": ("http2", "grpc", "graphql", "tcp"),
    "amqp": ("amqp", "tcp"),
    "kafka": ("kafka", "tcp"),
    "redis": ("redis", "tcp"),
}


def _tri(node: _Node) -> _Tri | None:
    """The pushdown form of a node: None when nothing in it is known before dissection."""
    if isinstance(node, _Leaf):
        pred = node.pred
        if node.flow in ("addr", "end"):
            return lambda w, proto_known: pred(w)
        if node.flow == "proto":
            return lambda w, proto_known: pred(w) if proto_known else None
        if node.flow == "facet":
            return lambda w, proto_known: pred(w) if "_facet" in w else None
        if node.flow == "path":
            # entries of these protocols never have a path: the test sees what it would see
            return lambda w, proto_known: (
                pred(w) if "_facet" in w and w.get("proto") in _NO_PATH_PROTOS else None
            )
        if node.flow in ("latency_max", "latency_min"):
            # the extreme latency of the flow's entries: if even it fails, every entry does;
            # if it passes, nothing is known of the others (so never True: `not` stays sound)
            k = 1 if node.flow == "latency_max" else 0

            def extreme(w: Entry, proto_known: bool) -> bool | None:
                if "_facet" not in w:
                    return None
                return None if pred({"latency_ms": w["_latency"][k]}) else False

            return extreme
        return None
    if isinstance(node, _Not):
        inner = _tri(node.item)
        if inner is None:
            return None
        inner_ = inner

        def negate(w: Entry, proto_known: bool) -> bool | None:
            r = inner_(w, proto_known)
            return None if r is None else not r

        return negate
    parts = [_tri(item) for item in node.items]
    known = tuple(p for p in parts if p is not None)
    if not known:
        return None
    some_unknown = len(known) < len(parts)
    if isinstance(node, _And):

        def conj(w: Entry, proto_known: bool) -> bool | None:
            result: bool | None = None if some_unknown else True
            for p in known:
                r = p(w, proto_known)
                if r is False:
                    return False
                if r is None:
                    result = None
            return result

        return conj

    def disj(w: Entry, proto_known: bool) -> bool | None:
        result: bool | None = None if some_unknown else False
        for p in known:
            r = p(w, proto_known)
            if r is True:
                return True
            if r is None:
                result = None
        return result

    return disj


class Pushdown:
    """What the flow index can check before dissection; see the module docstring.

    Call it (or :meth:`flow_may_match`) with a flow's protocol guess (None when unknown or
    overridden by ``--decode``) and its two ends. ``selective`` is False when it always
    answers True, so the caller can skip it.
    """

    __slots__ = ("_oriented", "_tri", "_uses_proto", "selective", "uses_facets")

    def __init__(self, tri: _Tri | None, kinds: frozenset[str] = frozenset()) -> None:
        self._tri = tri
        self._uses_proto = "proto" in kinds
        self._oriented = "end" in kinds
        #: the filter tests ``method`` or ``status``: `facets_may_match` can rule flows out
        facet_kinds = {"facet", "latency_max", "latency_min", "path"}
        self.uses_facets = tri is not None and bool(kinds & facet_kinds)
        self.selective = tri is not None and bool(kinds - facet_kinds)

    def flow_may_match(
        self, proto_guess: str | None, src_ip: str, src_port: int, dst_ip: str, dst_port: int
    ) -> bool:
        """False only when no entry of such a flow could match the filter."""
        tri = self._tri
        if tri is None:
            return True
        protos: tuple[str | None, ...] = (None,)
        if proto_guess is not None and self._uses_proto:
            protos = GUESS_PROTOS.get(proto_guess.lower(), (None,))
        for src, dst in self._ends(src_ip, src_port, dst_ip, dst_port):
            for proto in protos:
                world = {"proto": proto, "src": src, "dst": dst}
                if tri(world, proto is not None) is not False:
                    return True
        return False

    def _ends(
        self, src_ip: str, src_port: int, dst_ip: str, dst_port: int
    ) -> list[tuple[Entry, Entry]]:
        """The (src, dst) a flow's entries can have: as given, and swapped when the filter
        names an end (the index may have the client wrong)."""
        a = {"ip": src_ip, "port": src_port, "pod": None, "ns": None}
        b = {"ip": dst_ip, "port": dst_port, "pod": None, "ns": None}
        return [(a, b), (b, a)] if self._oriented else [(a, b)]

    __call__ = flow_may_match

    def facets_may_match(
        self,
        src_ip: str,
        src_port: int,
        dst_ip: str,
        dst_port: int,
        facets: Iterable[tuple[Any, Any, Any]],
        latency: tuple[float | None, float | None] = (None, None),
    ) -> bool:
        """False only when no entry of a flow whose entries' ``(proto, method, status)``
        values are all among ``facets`` could match the filter (each entry is one of those
        worlds, with every other field unknown; ``latency``: the smallest and largest
        latency of its entries)."""
        tri = self._tri
        if tri is None:
            return True
        for src, dst in self._ends(src_ip, src_port, dst_ip, dst_port):
            for proto, method, status in facets:
                world = {"proto": proto, "method": method, "status": status, "src": src,
                         "dst": dst, "_facet": True, "_latency": latency}  # fmt: skip
                if tri(world, True) is not False:
                    return True
        return False


class Filter:
    """A compiled filter: call it with an entry dict. ``predicate`` is the bare closure, for
    hot loops that want to skip one call."""

    __slots__ = ("predicate", "pushdown", "text")

    def __init__(self, text: str, predicate: Pred, pushdown: Pushdown) -> None:
        self.text = text
        self.predicate = predicate
        self.pushdown = pushdown

    def __call__(self, entry: Entry) -> bool:
        return self.predicate(entry)

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


def compile_filter(text: str) -> Filter:
    """Compile ``text``; raise :class:`FilterError` naming the column when it is malformed.
    Empty or blank text matches everything."""
    if not text.strip():
        return Filter(text, _match_all, Pushdown(None))
    node = _Parser(text).parse()
    return Filter(text, _compile(node), Pushdown(_tri(node), frozenset(_flow_kinds(node))))


def _flow_kinds(node: _Node) -> set[str]:
    if isinstance(node, _Leaf):
        return {node.flow} if node.flow else set()
    if isinstance(node, _Not):
        return _flow_kinds(node.item)
    return set().union(*map(_flow_kinds, node.items))


def validate(text: str) -> FilterError | None:
    """The error :func:`compile_filter` would raise for ``text``, or None."""
    try:
        compile_filter(text)
    except FilterError as exc:
        return exc
    return None
