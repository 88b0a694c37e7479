"""``shark-tui dissect`` on real GraphQL traffic: graphql-core behind aiohttp (HTTP/1.1) and
behind hypercorn (h2c, prior knowledge, driven by the ``h2`` library), captured by tcpdump;
entries (docs/ENTRIES.md, "graphql") checked against what the client sent and received, with
the expected operation type/name/first field computed by graphql-core's own parser.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import graphql
import pytest

from tests.realpeers import DissectResult, capture, run_dissect
from tests.realpeers2 import (
    Entry,
    H2Client,
    body_bytes,
    by_connection,
    graphql_server,
    header_of,
)

BOOK_Q = "query GetBook($id: ID!) { book(id: $id) { title author } }"
ADD_M = "mutation AddBook($title: String!, $author: String) { addBook(title: $title, author: $author) { id } }"  # noqa: E501


@dataclass
class Op:
    query: str
    variables: dict[str, Any] | None = None
    operation_name: str | None = None


@dataclass
class Call:
    """One GraphQL request as the client made it."""

    kind: str  # post-json, batch, get, graphql
    ops: list[Op]
    method: str
    target: str
    body: bytes
    content_type: str | None
    status: int = 0
    resp_body: bytes = b""
    t_start: float = 0.0
    t_end: float = 0.0

    @property
    def batched(self) -> bool:
        return self.kind == "batch"


def plan() -> list[Call]:
    def post(ops: list[Op], batch: bool = False) -> Call:
        docs = [{k: v for k, v in (("query", o.query), ("variables", o.variables),
                                   ("operationName", o.operation_name)) if v is not None}
                for o in ops]
        body = json.dumps(docs if batch else docs[0]).encode()
        return Call("batch" if batch else "post-json", ops, "POST", "/graphql", body,
                    "application/json")

    calls = [
        post([Op(BOOK_Q, {"id": "1"}, "GetBook")]),
        post([Op("{ hello books { title } }")]),
        post([Op("query A { hello(name: \"shark\") }"),
              Op(ADD_M, {"title": "Dune", "author": "Herbert"})], batch=True),
        post([Op(ADD_M, {"title": "Emma", "author": None}, "AddBook")]),
        post([Op("{ hello ")]),  # syntax error
        post([Op("subscription OnBook { bookAdded { id } }")]),  # no subscription type: 400
    ]
    q = "{ books { id title } }"
    calls.append(Call("get", [Op(q)], "GET", "/graphql?query=" + quote(q), b"", None))
    m = 'mutation { addBook(title: "Persuasion") { id title } }'
    calls.append(Call("graphql", [Op(m)], "POST", "/graphql", m.encode(), "application/graphql"))
    return calls


def expected_op(op: Op) -> dict[str, Any]:
    """What graphql-core makes of one operation (the oracle for the entry's ``operations``)."""
    try:
        doc = graphql.parse(op.query)
    except graphql.GraphQLError:
        return {"query": op.query, "operation_type": None, "operation_name": None,
                "first_field": None, "variables": op.variables, "error": True}
    defs = [d for d in doc.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    d = defs[0]
    if op.operation_name:
        d = next(x for x in defs if x.name and x.name.value == op.operation_name)
    first = next(s for s in d.selection_set.selections if isinstance(s, graphql.FieldNode))
    return {"query": op.query, "operation_type": d.operation.value,
            "operation_name": op.operation_name or (d.name.value if d.name else None),
            "first_field": first.name.value, "variables": op.variables, "error": None}


def drive_http1(port: int, calls: list[Call]) -> tuple[str, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    assert conn.sock is not None
    local = conn.sock.getsockname()
    for c in calls:
        headers = {"Content-Type": c.content_type} if c.content_type else {}
        c.t_start = time.time()
        conn.request(c.method, c.target, body=c.body or None, headers=headers)
        resp = conn.getresponse()
        c.resp_body, c.status, c.t_end = resp.read(), resp.status, time.time()
    conn.close()
    return (local[0], local[1])


def drive_h2(port: int, calls: list[Call]) -> tuple[str, int]:
    client = H2Client("127.0.0.1", port)
    for c in calls:
        headers = [("content-type", c.content_type)] if c.content_type else []
        st = client.request(c.method, c.target, c.body, headers)
        c.status, c.resp_body, c.t_start, c.t_end = st.status or 0, st.resp_body, st.t_start, \
            st.t_end
    client.close()
    return client.local


@dataclass
class Scenario:
    path: Path
    run: DissectResult
    calls: dict[str, list[Call]]  # "http1" / "h2c"
    local: dict[str, tuple[str, int]]


@pytest.fixture(scope="module")
def main(capture_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    d = tmp_path_factory.mktemp("graphql")
    calls = {"http1": plan(), "h2c": plan()}
    local = {}
    with graphql_server() as s1, graphql_server(h2c=True) as s2, \
            capture("lo", ports=[s1.port, s2.port], path=d / "gql.pcap") as cap:
        local["http1"] = drive_http1(s1.port, calls["http1"])
        local["h2c"] = drive_h2(s2.port, calls["h2c"])
    assert cap.stats.get("dropped") == 0, cap.stats
    return Scenario(cap.path, run_dissect(cap.path), calls, local)


def entries_of(sc: Scenario, which: str) -> list[Entry]:
    conns = by_connection(sc.run.check().entries)
    mine = [v for k, v in conns.items() if k[0] == sc.local[which]]
    assert len(mine) == 1, (which, list(conns))
    return mine[0]


def summary_of(exp: dict[str, Any]) -> str | None:
    return exp["operation_name"] or exp["first_field"]


# --------------------------------------------------------------------------------------------


def test_server_answers_as_planned(main: Scenario) -> None:
    """The harness itself: statuses the servers gave (no shark-tui involved)."""
    for which in ("http1", "h2c"):
        st = [c.status for c in main.calls[which]]
        assert st == [200, 200, 200, 200, 400, 400, 200, 200], (which, st)
        assert json.loads(main.calls[which][2].resp_body)[1]["data"]["addBook"]["id"]


@pytest.mark.parametrize("which", ["http1", "h2c"])
def test_entries_match_the_client(main: Scenario, which: str) -> None:
    run = main.run.check()
    assert run.stderr_lines == [], run.stderr
    entries = entries_of(main, which)
    calls = main.calls[which]
    assert len(entries) == len(calls), [(e["proto"], e["summary"]) for e in entries]
    for e, c in zip(entries, calls):
        where = f"{which} {e['id']} {c.kind} {c.ops[0].query[:40]!r}"
        exp = [expected_op(o) for o in c.ops]
        assert e["proto"] == "graphql", (where, e["proto"])
        assert e["status"] == c.status, (where, e["status"])
        assert e["error"] is None, (where, e["error"])
        req, resp = e["request"], e["response"]
        assert req["version"] == ("HTTP/2" if which == "h2c" else "HTTP/1.1"), where
        assert req["method"] == c.method, where
        if exp[0]["error"] is None:
            assert e["method"] == exp[0]["operation_type"], (where, e["method"])
            assert e["summary"] == summary_of(exp[0]), (where, e["summary"])
        g = req["graphql"]
        assert g["batched"] is c.batched, where
        assert len(g["operations"]) == len(exp), where
        for got, want in zip(g["operations"], exp):
            for k in ("query", "operation_type", "operation_name", "first_field", "variables"):
                assert got[k] == want[k], (where, k, got[k], want[k])
            if want["error"]:
                assert isinstance(got["error"], str) and got["error"], (where, got["error"])
            else:
                assert got["error"] is None, (where, got["error"])
        assert body_bytes(req) == c.body, where
        assert body_bytes(resp) == c.resp_body, where
        assert header_of(resp, "content-type") == "application/json", where
        assert c.t_start - 0.005 <= e["ts"] <= c.t_end + 0.005, where


def test_syntax_error_entry(main: Scenario) -> None:
    for which in ("http1", "h2c"):
        e = entries_of(main, which)[4]
        assert e["proto"] == "graphql" and e["status"] == 400 and e["error"] is None
        op = e["request"]["graphql"]["operations"][0]
        assert op["operation_type"] is None and op["error"], op


def test_subscription_recognized_even_when_refused(main: Scenario) -> None:
    for which in ("http1", "h2c"):
        e = entries_of(main, which)[5]
        assert (e["method"], e["summary"], e["status"]) == ("subscription", "OnBook", 400)


def test_filter_graphql(main: Scenario) -> None:
    run = run_dissect(main.path, "--filter", 'graphql and method == "mutation"').check()
    assert sorted(e["summary"] for e in run.entries) == sorted(["AddBook", "addBook"] * 2)
