"""A call seen by two nodes' daemons (the client's and the server's) is one row: RowStore drops
another node's copy of a call held — same proto, client end (ip:port), method, summary and
status, at a time within TWIN_SECONDS — and counts it, whatever the destination looked like
from each node (a Service's ClusterIP on the client's, the pod's address on the server's);
rows of one node are never merged. Whatever order
the copies come in (backlogs newest first, live rows, a daemon that reconnects and sends its
backlog again), with the cap and `clear`; and in the app over two real daemons."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.rows import TWIN_SECONDS, Row, RowStore, client_end, row_of
from tests.engine.fixtures_pcap import LINKTYPE_ETHERNET, pcap_bytes
from tests.engine.test_dissect import connection
from tests.widgets.appfixture import serve_capture, wait_for

T0 = 1_700_000_000.0


def call(ts: float, node: str, n: int, *, port: int = 40000, summary: str = "/users",
         status: str = "200", dst: str = "10.1.0.1:80") -> Row:  # fmt: skip
    """Node ``node``'s copy of call ``n``, a GET from 10.0.0.1:``port`` (its id says which call
    it is: the same in both nodes' copies, unlike a daemon's)."""
    return Row(ts, node, f"{port}:{n}", "http", "GET", summary, status, 1.0, 10, 20, False, "",
               "default/web-0", dst, client_end({"ip": "10.0.0.1", "port": port}))  # fmt: skip


def settle(store: RowStore, *batches: list[Row]) -> None:
    for b in batches:
        store.add(b)
    store.settle()


def held(store: RowStore) -> set[tuple[str, str]]:
    return {(r.node, r.id) for r in store.rows}


def registered(store: RowStore) -> int:
    """Rows standing for their call in the store's lookup (one per row held or pending)."""
    calls = store._calls or {}
    return sum(len(v) if type(v) is list else 1 for v in calls.values())


def test_row_of_keeps_the_client_end_as_on_the_wire() -> None:
    """What the daemons call the pods does not matter, nor where the call was sent (a Service's
    ClusterIP, the pod's address); the client end's ip and port do."""
    e: dict[str, Any] = {
        "id": "3:1", "proto": "http", "ts": T0, "method": "GET", "summary": "/", "status": 200,
        "src": {"ip": "10.0.0.1", "port": 40000, "pod": "web-0", "ns": "default"},
        "dst": {"ip": "10.1.0.1", "port": 80, "pod": None, "ns": None},
    }  # fmt: skip
    r = row_of("a", e)
    assert (r.src, r.dst) == ("default/web-0", "10.1.0.1:80") and r.client
    unnamed = {**e, "src": {"ip": "10.0.0.1", "port": 40000, "pod": None, "ns": None}}
    assert row_of("b", unnamed).client == r.client
    pod = {"ip": "10.244.1.7", "port": 8080, "pod": "api-0", "ns": "default"}
    assert row_of("b", {**e, "dst": pod}).client == r.client
    for other in ({**e["src"], "port": 40001}, {**e["src"], "ip": "fd00::1"}):
        assert row_of("a", {**e, "src": other}).client not in (r.client, 0)
    reverse = {**e, "src": e["dst"], "dst": e["src"]}
    assert row_of("a", reverse).client != r.client
    assert row_of("a", {**e, "src": None}).client == 0  # client unknown: never merged
    assert row_of("a", {**e, "src": {"ip": "10.0.0.1"}}).client == 0


def test_two_nodes_same_call_one_row_the_first_copy_stays() -> None:
    store = RowStore(twins=True)
    settle(store, [call(T0, "a", 1)])
    settle(store, [call(T0 + 0.004, "b", 1)])
    assert held(store) == {("a", "40000:1")} and store.duplicates == 1
    # held or pending: the second copy may come before the first was merged
    store = RowStore(twins=True)
    settle(store, [call(T0 + 0.004, "b", 1)], [call(T0, "a", 1)])
    assert held(store) == {("b", "40000:1")} and store.duplicates == 1
    # another call: another client end, summary or status
    settle(store, [call(T0, "a", 2, port=40001)], [call(T0, "a", 3, summary="/x")],
           [call(T0, "a", 4, status="500")])  # fmt: skip
    assert len(store) == 4 and store.duplicates == 1


def test_a_call_through_a_service_one_row_whatever_each_node_saw_as_its_destination() -> None:
    """The client's node sees the call go to the Service (ClusterIP:port, no pod), the server's
    node sees it arrive at the pod (podIP:targetPort): one call, one row. From another client
    port it is another connection, so another call."""

    def entry(n: int, port: int, dst: dict[str, Any], ts: float) -> dict[str, Any]:
        return {
            "id": f"{n}:1", "proto": "http", "ts": ts, "method": "GET", "summary": "/users",
            "status": 200, "src": {"ip": "10.244.0.5", "port": port, "pod": "web-0",
                                   "ns": "shop"}, "dst": dst,
        }  # fmt: skip

    service = {"ip": "10.96.0.10", "port": 80, "pod": None, "ns": None, "service": "api"}
    pod = {"ip": "10.244.1.7", "port": 8080, "pod": "api-0", "ns": "shop"}
    store = RowStore(twins=True)
    settle(store, [row_of("node-a", entry(1, 40000, service, T0))])
    settle(store, [row_of("node-b", entry(7, 40000, pod, T0 + 0.03))])
    assert held(store) == {("node-a", "1:1")} and store.duplicates == 1
    # the server's copy first, and the client's copy of a call from another port
    store = RowStore(twins=True)
    settle(store, [row_of("node-b", entry(7, 40000, pod, T0 + 0.03))])
    settle(store, [row_of("node-a", entry(1, 40001, service, T0))])
    assert held(store) == {("node-b", "7:1"), ("node-a", "1:1")} and store.duplicates == 0


def test_one_node_never_merges() -> None:
    """A client that sends the same request twice made two calls; with one daemon attached
    (no ``twins``) nothing is even looked for."""
    store = RowStore(twins=True)
    settle(store, [call(T0, "a", 1), call(T0 + 0.001, "a", 2)], [call(T0, "a", 3)])
    assert len(store) == 3 and store.duplicates == 0 and registered(store) == 3
    settle(store, [call(T0 + 0.002, "b", 1), call(T0 + 0.002, "b", 2)])  # b's copies
    assert len(store) == 3 and store.duplicates == 2
    settle(store, [call(T0 + 5, "b", 3), call(T0 + 5, "b", 4)])  # b's own, twice
    assert len(store) == 5
    store = RowStore()
    settle(store, [call(T0, "a", 1)], [call(T0, "b", 1)])
    assert len(store) == 2 and store.duplicates == 0 and store._calls is None


def test_rows_without_a_client_end_are_never_merged() -> None:
    store = RowStore(twins=True)
    settle(store, [call(T0, "a", 1)._replace(client=0)], [call(T0, "b", 1)._replace(client=0)])
    assert len(store) == 2 and store.duplicates == 0


@pytest.mark.parametrize("skew", [0.0, 0.3, -0.3, 0.99, -0.99, 1.01, -1.01, 5.0])
def test_skew_within_and_over_the_tolerance(skew: float) -> None:
    """Within TWIN_SECONDS one call, over it two — wherever the times fall between the
    buckets the lookup uses."""
    rng = random.Random(int(skew * 100))
    store = RowStore(twins=True)
    for i in range(400):
        ts = T0 + rng.uniform(0, 100)
        settle(store, [call(ts, "a", i, port=i)], [call(ts + skew, "b", i, port=i)])
    twins = abs(skew) <= TWIN_SECONDS
    assert store.duplicates == (400 if twins else 0)
    assert len(store) == (400 if twins else 800)


def test_the_same_call_again_pairs_one_copy_each() -> None:
    """A poller on a keep-alive connection: the same call five times within a second. Each
    copy absorbs one copy of the other node's, the nearest, so the count is right — also
    when one daemon missed some."""
    rng = random.Random(4)
    times = [T0 + i * 0.15 for i in range(5)]
    for a_saw, b_saw in [(range(5), range(5)), (range(5), [0, 2]), ([1, 3], range(5))]:
        a = [call(times[i], "a", i) for i in a_saw]
        b = [call(times[i] + 0.02, "b", i) for i in b_saw]
        store = RowStore(twins=True)
        mixed = a + b
        rng.shuffle(mixed)
        for r in mixed:
            settle(store, [r])
        assert len(store) == 5, (list(a_saw), list(b_saw))
        assert store.duplicates == len(set(a_saw) & set(b_saw))


def traffic(seed: int, calls: int = 3000) -> tuple[list[Row], list[Row], int]:
    """Both nodes' rows of ``calls`` calls over ten minutes (many repeated within a second on
    one connection), each seen by a, b or both, b's clock 40 ms ahead; and the calls both saw."""
    rng = random.Random(seed)
    a: list[Row] = []
    b: list[Row] = []
    both = 0
    for i in range(calls):
        port = 40000 + rng.randrange(calls // 10)  # about ten calls per connection
        ts = T0 + rng.uniform(0, 600)
        path = rng.choice(["/users", "/orders", "/health"])
        seen = rng.choices(["a", "b", "ab"], [1, 1, 8])[0]
        if "a" in seen:
            a.append(call(ts, "a", i, port=port, summary=path))
        if "b" in seen:
            b.append(call(ts + 0.04 + rng.uniform(0, 0.01), "b", i, port=port, summary=path))
        both += seen == "ab"
    return a, b, both


def backlog_then_live(a: list[Row], b: list[Row], start: float) -> list[list[Row]]:
    """Batches as two links deliver them: each node's rows before ``start`` newest first in
    batches of 100, the two backlogs interleaved, then the later rows oldest first in small
    batches, the two nodes interleaved."""
    rng = random.Random(len(a))
    out: list[list[Row]] = []
    queues = []
    for rows in (a, b):
        old = sorted((r for r in rows if r.ts < start), key=lambda r: r.ts, reverse=True)
        queues.append([old[i : i + 100] for i in range(0, len(old), 100)])
    while any(queues):
        q = rng.choice([q for q in queues if q])
        out.append(q.pop(0))
    live = sorted((r for r in a + b if r.ts >= start), key=lambda r: r.ts)
    i = 0
    while i < len(live):
        n = rng.choice([1, 2, 7, 30])
        out.append(live[i : i + n])
        i += n
    return out


def test_backlogs_newest_first_interleaved_with_live_rows() -> None:
    a, b, both = traffic(11)
    rng = random.Random(11)
    store = RowStore(twins=True)
    for batch in backlog_then_live(a, b, T0 + 400):
        store.add(batch)
        if rng.random() < 0.5:
            store.settle()
    store.settle()
    assert len(store) == len(a) + len(b) - both and store.duplicates == both
    assert store.rows == sorted(store.rows, key=lambda r: (r.ts, r.node, r.id))
    assert registered(store) == len(store)
    assert len({r.id for r in store.rows}) == len(store)  # each call once


def test_the_cap_takes_rows_out_of_the_lookup() -> None:
    a, b, _ = traffic(12)
    store = RowStore(cap=500, twins=True)
    for batch in backlog_then_live(a, b, T0 + 300):
        store.add(batch)
        store.settle()
        assert registered(store) == len(store) <= 500
    assert len({r.id for r in store.rows}) == len(store) == 500  # each call once
    when: dict[str, float] = {}
    for r in a + b:
        when[r.id] = max(when.get(r.id, 0.0), r.ts)
    assert set(sorted(when, key=when.__getitem__)[-400:]) <= {r.id for r in store.rows}
    # a copy of a call that left by the cap is not taken for a twin of anything held
    store = RowStore(cap=2, twins=True)
    settle(store, [call(T0, "a", 1), call(T0 + 0.5, "a", 2, port=2), call(T0 + 9, "b", 3)])
    assert store.dropped == 1 and registered(store) == 2
    settle(store, [call(T0 + 0.01, "b", 1)])  # older than everything held: capped at once
    assert len(store) == 2 and store.duplicates == 0 and registered(store) == 2


def test_clear_forgets_the_calls() -> None:
    store = RowStore(twins=True)
    settle(store, [call(T0, "a", 1)], [call(T0, "b", 1)])
    assert store.duplicates == 1
    store.clear()
    assert store.duplicates == 0 and registered(store) == 0
    settle(store, [call(T0 + 0.01, "b", 1)])  # a new list (another filter): shown
    assert held(store) == {("b", "40000:1")}
    settle(store, [call(T0, "a", 1)])
    assert len(store) == 1 and store.duplicates == 1
    assert store.reap() == 0 and not store._dead_calls


def test_resume_of_one_node_while_the_other_nodes_copies_are_held() -> None:
    """A daemon that reconnects sends its backlog again: its rows held are not doubled (that
    is `resume`), and neither are its copies that were dropped as twins — whichever node's
    copy stayed, and the count stays as it was."""
    a, b, both = traffic(13, 600)
    store = RowStore(twins=True)
    settle(store, a[:300])
    settle(store, b)
    settle(store, a[300:])
    before = list(store.rows)
    twice = store.duplicates
    assert twice == both and {r.node for r in store.rows} == {"a", "b"}
    for node, rows in (("a", a), ("b", b)):
        store.resume(node)
        for i in range(len(rows), 0, -100):  # the whole backlog again, newest first
            store.add(sorted(rows, key=lambda r: r.ts)[max(0, i - 100) : i][::-1])
            store.settle()
        store.resumed(node)
        assert store.rows == before and store.duplicates == twice
    # what a daemon stored while away, and what comes live, still pairs with the other's
    store.resume("b")
    store.add([call(T0 + 700, "b", 9001, port=1)])  # b stored it while away
    store.resumed("b")
    settle(store, [call(T0 + 700.01, "a", 9001, port=1)], [call(T0 + 800, "b", 9002, port=2)])
    settle(store, [call(T0 + 800.02, "a", 9002, port=2)])
    assert len(store) == len(before) + 2 and store.duplicates == twice + 2


# -- the app over two daemons -------------------------------------------------------------------


def two_captures() -> tuple[bytes, bytes]:
    """The same four HTTP connections seen by two nodes (b's clock 250 ms ahead, its packets
    cut elsewhere), and a fifth connection that only b saw."""
    start = 1_700_000_000_000_000_000
    rng_a, rng_b = random.Random(7), random.Random(8)
    a = [p for i in range(4) for p in connection(i, rng_a, start + i * 10**9)]
    b = [p for i in range(5) for p in connection(i, rng_b, start + 250_000_000 + i * 10**9)]
    return pcap_bytes(LINKTYPE_ETHERNET, a), pcap_bytes(LINKTYPE_ETHERNET, b)


def test_two_daemons_serving_the_same_calls_show_each_once() -> None:
    data_a, data_b = two_captures()

    async def main() -> None:
        with serve_capture(data_a, "node-a") as a, serve_capture(data_b, "node-b") as b:
            app = SharkApp([a, b])
            async with app.run_test(size=(160, 30)):
                store = app.store
                await wait_for(lambda: len(store) == 20 and store.duplicates == 16)
                await asyncio.sleep(0.3)  # nothing more comes
                assert len(store) == 20 and store.duplicates == 16
                for link in app.links:
                    assert [type(m) for m in link.sent] == [wire.Subscribe]
                assert len({(r.src, r.method, r.summary) for r in store.rows}) == 20  # each once
                assert {r.node for r in store.rows if r.src == "10.0.0.5:40004"} == {"node-b"}
                await wait_for(lambda: "entries 20 (16 seen twice)" in app.header.text)

    asyncio.run(main())
