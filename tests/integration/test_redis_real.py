"""``shark-tui dissect`` on real Redis traffic: redis-server 7 on loopback, redis-py clients,
tcpdump. Each scenario runs on its own connection(s) with its own key prefix; redis-py's record
(what it sent, what it got back) is the truth, tshark's RESP dissector a second opinion where it
can follow (RESP2, one command per segment). Where tshark 4.0 falls short (pipelines, RESP3), the
tests assert that it does, so the README's "we beat tshark" claim stays measured.

The whole scenario is driven once per module (one capture, one ``dissect``), ~5 s.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests import realpeers
from tests.integration import oracle3
from tests.realpeers import capture, run_dissect

Entry = dict[str, Any]
BODY_CAP = 64 * 1024  # dissect's default --max-body
BIG = 1_000_000


@dataclass
class Conn:
    """One client connection and the (method, first key) of every command sent on it."""

    name: str
    local: tuple[str, int]
    sent: list[tuple[str, str]] = field(default_factory=list)
    replies: list[Any] = field(default_factory=list)


@dataclass
class Scenario:
    port: int
    pcap: Path
    conns: dict[str, Conn]
    result: realpeers.DissectResult
    pubsub_messages: list[tuple[str, str]]

    def entries_of(self, name: str) -> list[Entry]:
        local = self.conns[name].local
        out = [e for e in self.result.entries
               if e["proto"] == "redis" and (e["src"]["ip"], e["src"]["port"]) == local]
        return sorted(out, key=lambda e: (e["ts"], _seq(e["id"])))


def _seq(entry_id: str) -> int:
    return int(entry_id.rsplit(":", 1)[1])


def _local(client: redis.Redis) -> tuple[str, int]:
    conns = client.connection_pool._connections  # type: ignore[attr-defined]
    socks = [c._sock for c in conns if c is not None and c._sock is not None]
    assert len(socks) == 1, socks
    name = socks[0].getsockname()
    return (name[0], name[1])


def _client(port: int, **kw: Any) -> redis.Redis:
    # a pool of one connection: every command and pipeline on one known socket
    pool = redis.BlockingConnectionPool(host="127.0.0.1", port=port, max_connections=1, **kw)
    r = redis.Redis(connection_pool=pool)
    r.ping()  # connect now (HELLO / CLIENT SETINFO ride along)
    return r


def _drive(port: int) -> tuple[dict[str, Conn], list[tuple[str, str]]]:
    conns: dict[str, Conn] = {}

    # 1. plain RESP2 commands, one per write: tshark can follow these
    r = _client(port)
    c = conns["plain"] = Conn("plain", _local(r))
    for method, args in [("SET", ("pl:a", "1")), ("GET", ("pl:a",)), ("INCR", ("pl:a",)),
                         ("LPUSH", ("pl:list", "x", "y")), ("LRANGE", ("pl:list", 0, -1)),
                         ("HSET", ("pl:h", "f", "v")), ("EXISTS", ("pl:nope",)),
                         ("GET", ("pl:nope",)), ("DEL", ("pl:a",))]:
        c.replies.append(r.execute_command(method, *args))
        c.sent.append((method, args[0]))
    # an error reply: WRONGTYPE
    r.set("er:str", "text")
    c.sent.append(("SET", "er:str"))
    with pytest.raises(redis.ResponseError) as wrong:
        r.lpush("er:str", "x")
    c.sent.append(("LPUSH", "er:str"))
    c.replies.append(str(wrong.value))
    # a 1 MB value, both ways
    big = bytes((i * 7) % 251 for i in range(BIG))
    r.set("big:1", big)
    c.sent.append(("SET", "big:1"))
    assert r.get("big:1") == big
    c.sent.append(("GET", "big:1"))
    r.close()

    # 2. a 50-command pipeline in one go (no MULTI)
    r = _client(port)
    c = conns["pipeline"] = Conn("pipeline", _local(r))
    pipe = r.pipeline(transaction=False)
    kinds = ["SET", "GET", "INCR", "RPUSH", "HSET", "EXPIRE", "EXISTS", "STRLEN", "SADD", "TYPE"]
    for i in range(50):
        m = kinds[i % len(kinds)]
        key = f"pp:{i // len(kinds)}:{m.lower()}"
        args: tuple[Any, ...] = {
            "SET": (key, f"v{i}"), "GET": (f"pp:{i // len(kinds)}:set",), "INCR": (key,),
            "RPUSH": (key, i), "HSET": (key, "f", i), "EXPIRE": (f"pp:{i // len(kinds)}:set", 100),
            "EXISTS": (key,), "STRLEN": (f"pp:{i // len(kinds)}:set",), "SADD": (key, i),
            "TYPE": (f"pp:{i // len(kinds)}:rpush",),
        }[m]
        pipe.execute_command(m, *args)
        c.sent.append((m, str(args[0])))
    c.replies = pipe.execute()
    assert len(c.replies) == 50
    r.close()

    # 3. MULTI/EXEC
    r = _client(port)
    c = conns["multi"] = Conn("multi", _local(r))
    tx = r.pipeline(transaction=True)
    tx.set("tx:a", "1")
    tx.incr("tx:a")
    tx.get("tx:a")
    c.replies = tx.execute()
    assert c.replies == [True, 2, b"2"]
    c.sent = [("MULTI", ""), ("SET", "tx:a"), ("INCRBY", "tx:a"),  # redis-py: INCR = INCRBY k 1
              ("GET", "tx:a"), ("EXEC", "")]
    r.close()

    # 4. RESP3: HELLO 3, a map, a set, a double
    r3 = _client(port, protocol=3)
    c = conns["resp3"] = Conn("resp3", _local(r3))
    r3.hset("r3:h", mapping={"a": "1", "b": "2"})
    c.replies.append(r3.hgetall("r3:h"))
    r3.sadd("r3:s", "x", "y", "z")
    c.replies.append(r3.smembers("r3:s"))
    r3.zadd("r3:z", {"m": 1.5})
    c.replies.append(r3.zscore("r3:z", "m"))
    assert c.replies == [{b"a": b"1", b"b": b"2"}, {b"x", b"y", b"z"}, 1.5]
    c.sent = [("HSET", "r3:h"), ("HGETALL", "r3:h"), ("SADD", "r3:s"), ("SMEMBERS", "r3:s"),
              ("ZADD", "r3:z"), ("ZSCORE", "r3:z")]
    r3.close()

    # 5. pub/sub, RESP2 and RESP3 subscribers; publishes from another client
    messages: list[tuple[str, str]] = []
    pub = _client(port)
    conns["publisher"] = Conn("publisher", _local(pub))
    for proto, chan in ((2, "ps:chan2"), (3, "ps:chan3")):
        sub = redis.Redis("127.0.0.1", port, protocol=proto)
        ps = sub.pubsub()
        ps.subscribe(chan)
        first = ps.get_message(timeout=5)
        assert first and first["type"] == "subscribe", first
        assert ps.connection is not None and ps.connection._sock is not None
        local = ps.connection._sock.getsockname()
        sc = conns[f"sub{proto}"] = Conn(f"sub{proto}", (local[0], local[1]))
        sc.sent.append(("SUBSCRIBE", chan))
        for i in range(3):
            payload = f"hello-{proto}-{i}"
            assert pub.publish(chan, payload) == 1
            conns["publisher"].sent.append(("PUBLISH", chan))
            got = ps.get_message(timeout=5)
            assert got and got["data"] == payload.encode(), got
            messages.append((chan, payload))
        ps.ping()  # a command while subscribed: its reply must pair after the pushes
        sc.sent.append(("PING", ""))
        pong = ps.get_message(timeout=5)
        assert pong is not None, "no PING reply in subscribed mode"
        ps.unsubscribe(chan)
        sc.sent.append(("UNSUBSCRIBE", chan))
        assert ps.get_message(timeout=5)["type"] == "unsubscribe"
        ps.close()
        sub.close()
    pub.close()
    return conns, messages


@pytest.fixture(scope="module")
def scenario(capture_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    pcap = tmp_path_factory.mktemp("redis") / "redis.pcap"
    with realpeers.redis_server() as srv:
        with capture(ports=[srv.port], path=pcap) as cap:
            conns, messages = _drive(srv.port)
        assert cap.stats.get("dropped", 0) == 0, cap.stats
        result = run_dissect(pcap, "--decode", f"{srv.port}=redis").check()
    return Scenario(srv.port, pcap, conns, result, messages)


def _cmd_entries(entries: list[Entry]) -> list[Entry]:
    """Entries of commands the test sent (not redis-py's connection preamble, not pushes)."""
    preamble = {"PING", "HELLO", "CLIENT"}
    out = []
    for e in entries:
        req = e.get("request")
        if req is None or (e["response"] or {}).get("push"):
            continue
        out.append(e)
    # redis-py's own setup commands come first on every connection
    while out and (out[0]["method"] or "").upper() in preamble:
        out.pop(0)
    return out


def _pairs(entries: list[Entry]) -> list[tuple[str, str]]:
    return [((e["method"] or "").upper(), e["summary"] or "") for e in entries]


def _explain(entries: list[Entry]) -> str:
    return "\n".join(
        f"  {e['id']} {e['method']} {e['summary']!r} status={e['status']!r} err={e['error']}"
        for e in entries)


# --------------------------------------------------------------------------------------------


def test_every_entry_is_redis_and_well_formed(scenario: Scenario) -> None:
    entries = scenario.result.entries
    assert entries, scenario.result.stderr
    assert Counter(e["proto"] for e in entries) == Counter({"redis": len(entries)})
    for e in entries:
        assert e["dst"]["port"] == scenario.port and e["dst"]["ip"] == "127.0.0.1", e
        assert e["error"] is None, _explain([e])
        assert e["tls"] is False


def test_plain_commands_methods_keys_statuses(scenario: Scenario) -> None:
    got = _cmd_entries(scenario.entries_of("plain"))
    sent = scenario.conns["plain"].sent
    assert _pairs(got) == sent, _explain(got)
    by = {(m, k): e for (m, k), e in zip(sent, got)}
    assert by[("SET", "pl:a")]["status"] == "OK"
    assert by[("SET", "pl:a")]["request"]["args"] == ["SET", "pl:a", "1"]
    assert by[("GET", "pl:a")]["response"]["reply"] == {"type": "bulk", "value": "1", "size": 1}
    assert by[("INCR", "pl:a")]["status"] == "integer"
    assert by[("INCR", "pl:a")]["response"]["reply"]["value"] == 2
    assert by[("LRANGE", "pl:list")]["status"] == "array"
    assert [x["value"] for x in by[("LRANGE", "pl:list")]["response"]["reply"]["value"]] == \
        ["y", "x"]
    assert by[("EXISTS", "pl:nope")]["response"]["reply"]["value"] == 0
    nil = by[("GET", "pl:nope")]["response"]["reply"]
    assert nil["type"] in ("null", "bulk") and nil.get("value") is None, nil
    for e in got:
        assert e["latency_ms"] is not None and e["latency_ms"] >= 0
        assert e["request_size"] > 0 and e["response_size"] > 0


def test_wrongtype_error_is_the_status(scenario: Scenario) -> None:
    got = [e for e in scenario.entries_of("plain") if e["summary"] == "er:str"]
    assert [e["method"] for e in got] == ["SET", "LPUSH"], _explain(got)
    err = got[1]
    assert err["status"].startswith("WRONGTYPE"), err["status"]
    assert err["status"] in scenario.conns["plain"].replies[-1] or \
        scenario.conns["plain"].replies[-1] in err["status"]
    assert err["response"]["reply"]["type"] == "error"
    assert err["error"] is None  # a Redis error reply is the status, not an entry error


def test_one_megabyte_value_capped_body_full_size(scenario: Scenario) -> None:
    got = {e["method"]: e for e in scenario.entries_of("plain") if e["summary"] == "big:1"}
    setr, getr = got["SET"], got["GET"]
    arg = setr["request"]
    assert setr["request_size"] >= BIG
    assert 2 in arg.get("args_truncated", []), arg.get("args_truncated")
    reply = getr["response"]["reply"]
    assert reply["size"] == BIG and reply.get("truncated") is True
    assert getr["response_size"] >= BIG
    kept = reply["value"]
    raw = (__import__("base64").b64decode(kept) if reply.get("encoding") == "base64"
           else kept.encode())
    assert 0 < len(raw) <= BODY_CAP
    big = bytes((i * 7) % 251 for i in range(BIG))
    assert big.startswith(raw)
    assert setr["status"] == "OK" and getr["status"] == "bulk"
    assert len(json.dumps(getr)) < 4 * BODY_CAP  # the JSON line itself stays bounded


def test_pipeline_of_50(scenario: Scenario) -> None:
    c = scenario.conns["pipeline"]
    got = _cmd_entries(scenario.entries_of("pipeline"))
    assert len(got) == 50, _explain(got)
    assert _pairs(got) == c.sent, _explain(got)
    for (m, _), e, reply in zip(c.sent, got, c.replies):
        assert e["error"] is None
        if m == "SET":
            assert e["status"] == "OK"
        elif m in ("INCR", "RPUSH", "HSET", "EXPIRE", "EXISTS", "STRLEN", "SADD"):
            assert e["status"] == "integer" and e["response"]["reply"]["value"] == reply, (e, reply)
        elif m == "GET":
            assert e["response"]["reply"]["value"] == reply.decode()
        elif m == "TYPE":
            assert e["response"]["reply"] == {"type": "simple", "value": reply.decode()}
    # the pipeline went out in very few segments: ts of all 50 within a few ms
    assert got[-1]["ts"] - got[0]["ts"] < 0.5


def test_multi_exec(scenario: Scenario) -> None:
    got = _cmd_entries(scenario.entries_of("multi"))
    assert _pairs(got) == scenario.conns["multi"].sent, _explain(got)
    statuses = [e["status"] for e in got]
    assert statuses[0] == "OK"  # MULTI
    assert all(e["response"]["reply"] == {"type": "simple", "value": "QUEUED"}
               for e in got[1:4]), _explain(got)
    exec_reply = got[4]["response"]["reply"]
    assert got[4]["status"] == "array" and exec_reply["count"] == 3
    assert [v["value"] for v in exec_reply["value"]] == ["OK", 2, "2"]


def test_resp3_types(scenario: Scenario) -> None:
    entries = scenario.entries_of("resp3")
    hello = [e for e in entries if e["method"] == "HELLO"]
    assert hello and hello[0]["request"]["args"][:2] == ["HELLO", "3"], _explain(entries)
    assert hello[0]["status"] == "map"
    got = _cmd_entries(entries)
    assert _pairs(got) == scenario.conns["resp3"].sent, _explain(got)
    by = {m: e for (m, _), e in zip(scenario.conns["resp3"].sent, got)}
    hg = by["HGETALL"]["response"]
    assert by["HGETALL"]["status"] == "map" and hg["resp"] == 3
    assert sorted((k["value"], v["value"]) for k, v in hg["reply"]["value"]) == \
        [("a", "1"), ("b", "2")]
    sm = by["SMEMBERS"]
    assert sm["status"] == "set"
    assert sorted(v["value"] for v in sm["response"]["reply"]["value"]) == ["x", "y", "z"]
    zs = by["ZSCORE"]
    assert zs["status"] == "double" and zs["response"]["reply"]["value"] == 1.5


@pytest.mark.parametrize("proto", [2, 3])
def test_pubsub_pushes_keep_pairing(scenario: Scenario, proto: int) -> None:
    chan = f"ps:chan{proto}"
    entries = scenario.entries_of(f"sub{proto}")
    cmds = [e for e in _cmd_entries(entries)]
    assert _pairs(cmds) == [("SUBSCRIBE", chan), ("PING", ""), ("UNSUBSCRIBE", chan)], \
        _explain(entries)
    pushes = [e for e in entries if (e["response"] or {}).get("push")]
    want = [p for c, p in scenario.pubsub_messages if c == chan]
    assert [e["method"] for e in pushes] == ["message"] * 3, _explain(entries)
    assert [e["summary"] for e in pushes] == [chan] * 3
    assert [e["response"]["reply"]["value"][2]["value"] for e in pushes] == want
    for e in pushes:
        assert e["request"] is None and e["error"] is None
        assert e["response"]["reply"]["type"] == ("push" if proto == 3 else "array")
    ping = cmds[1]
    # in subscribed mode PING answers ["pong", ""] (RESP2) / +PONG (RESP3)
    reply = ping["response"]["reply"]
    assert reply["type"] in ("array", "push", "simple"), reply
    assert cmds[0]["response"]["reply"]["value"][0]["value"] == "subscribe"
    assert cmds[2]["response"]["reply"]["value"][0]["value"] == "unsubscribe"
    pubs = [e for e in _cmd_entries(scenario.entries_of("publisher"))
            if e["summary"] == chan]
    assert [e["method"] for e in pubs] == ["PUBLISH"] * 3
    assert all(e["status"] == "integer" and e["response"]["reply"]["value"] == 1 for e in pubs)


def test_entry_endpoints_match_the_clients(scenario: Scenario) -> None:
    for name, c in scenario.conns.items():
        got = scenario.entries_of(name)
        assert got, f"no entries from {name} at {c.local}"
        for e in got:
            assert (e["dst"]["ip"], e["dst"]["port"]) == ("127.0.0.1", scenario.port)


# -- tshark -----------------------------------------------------------------------------------


def test_tshark_agrees_on_single_commands(scenario: Scenario) -> None:
    """One command per segment (the ``plain`` connection): tshark's first bulk string of every
    client packet is our entry's method, in order."""
    streams = {}
    for stream, word in oracle3.resp_first_words(scenario.pcap, [scenario.port]):
        streams.setdefault(stream, []).append(word)
    ours = [(e["method"] or "").upper() for e in scenario.entries_of("plain")]
    assert ours in list(streams.values()) or any(
        ours == words[: len(ours)] or words == ours[: len(words)] for words in streams.values()
    ), (ours, streams)
    assert any("WRONGTYPE" in e for e in oracle3.resp_errors(scenario.pcap, [scenario.port]))


def test_tshark_agrees_on_the_pipeline(scenario: Scenario) -> None:
    """tshark 4.0 splits a pipeline that fits one segment (measured: it does; RECIPES.md's
    "misses pipelines" holds for pipelines cut across segments): its client-side arrays on that
    connection are our request entries, one for one, first words equal."""
    pipe_port = scenario.conns["pipeline"].local[1]
    pk = [p for p in oracle3.resp_packets(scenario.pcap, [scenario.port])
          if p.to_server and p.src[1] == pipe_port]
    arrays = sum(len(p.get("resp.array.length")) for p in pk)
    ours = [e for e in scenario.entries_of("pipeline") if e["request"] is not None]
    assert arrays == len(ours), (arrays, len(ours))


def test_tshark_misses_resp3(scenario: Scenario) -> None:
    """Documented advantage: tshark 4.0 has no RESP3 types: a ``%`` map comes out as loose bulk
    strings with no aggregate, a ``,`` double as nothing at all. We type both (test_resp3_types).
    Fails if tshark catches up (then update RECIPES.md)."""
    r3_port = scenario.conns["resp3"].local[1]
    pk = oracle3.resp_packets(scenario.pcap, [scenario.port])
    conv = [p for p in pk if r3_port in (p.src[1], p.dst[1])]
    words = [(oracle3.hexbytes(p.get("resp.bulk_string.value")[0]).decode().upper()
              if p.to_server and p.get("resp.bulk_string.value") else None) for p in conv]
    reply_to = {w: conv[i + 1] for i, w in enumerate(words[:-1]) if w and not conv[i + 1].to_server}
    hgetall, zscore = reply_to["HGETALL"], reply_to["ZSCORE"]
    assert hgetall.get("resp.bulk_string.value") and not hgetall.get("resp.array.length"), \
        hgetall.fields
    assert not any(k.startswith("resp.") and k != "resp.fragment" for k in zscore.fields), \
        zscore.fields
