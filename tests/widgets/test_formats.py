"""curl / HAR / JSON of entries of each kind (pure functions, no app)."""

from __future__ import annotations

import base64
import json
import shlex

import pytest

from shark_tui.widgets.formats import NotHttp, to_curl, to_har, to_json

H2 = {
    "id": "3:1", "proto": "grpc", "tls": False, "ts": 1_700_000_000.25, "latency_ms": 2.5,
    "src": {"ip": "10.0.0.1", "port": 5000}, "dst": {"ip": "10.0.0.2", "port": 50051},
    "request": {
        "version": "HTTP/2", "method": "POST", "path": "/pkg.Svc/Call", "query": [],
        "authority": "svc:50051", "scheme": "http",
        "headers": [[":method", "POST"], [":path", "/pkg.Svc/Call"], [":scheme", "http"],
                    [":authority", "svc:50051"], ["content-type", "application/grpc"],
                    ["te", "trailers"]],
        "body": base64.b64encode(b"\x00\x00\x00\x00\x02\x08\x01").decode(),
        "body_encoding": "base64", "body_size": 7,
    },
    "response": {"version": "HTTP/2", "status": 200,
                 "headers": [[":status", "200"], ["content-type", "application/grpc"]],
                 "body": "", "body_encoding": "text", "body_size": 0},
    "error": None,
}  # fmt: skip


def test_curl_of_a_grpc_call_pipes_its_binary_body() -> None:
    cmd = to_curl(H2)
    assert cmd.startswith("printf %s ") and "| base64 -d | curl" in cmd
    args = shlex.split(cmd.split(" | ")[-1])
    assert args[:4] == ["curl", "-X", "POST", "--http2-prior-knowledge"]
    assert args[4:6] == ["-H", "content-type: application/grpc"]
    assert not any(a.startswith(":") or a.startswith("te:") for a in args)
    assert args[-3:] == ["--data-binary", "@-", "http://svc:50051/pkg.Svc/Call"]
    payload = shlex.split(cmd.split(" | ")[0])[2]
    assert base64.b64decode(payload) == b"\x00\x00\x00\x00\x02\x08\x01"


def test_curl_quotes_and_falls_back_to_the_address() -> None:
    e = {"proto": "http", "tls": True, "dst": {"ip": "fd00::1", "port": 8443},
         "request": {"version": "HTTP/1.1", "method": "PUT", "target": "/a b?x='1'",
                     "headers": [["X-Note", "it's"], ["Content-Length", "3"]],
                     "body": "a'b", "body_encoding": "text", "body_truncated": True,
                     "body_size": 900}}  # fmt: skip
    cmd = to_curl(e)
    first, line = cmd.splitlines()
    assert first.startswith("# the body was cut") and "900" in first
    assert shlex.split(line) == ["curl", "-X", "PUT", "-H", "X-Note: it's", "--data-raw", "a'b",
                                 "https://[fd00::1]:8443/a b?x='1'"]  # fmt: skip


def test_head_uses_curl_head() -> None:
    e = {"proto": "http", "request": {"method": "HEAD", "target": "/h",
                                      "headers": [["Host", "x"]]}}  # fmt: skip
    assert shlex.split(to_curl(e)) == ["curl", "--head", "http://x/h"]


def test_har_of_a_grpc_call() -> None:
    log = json.loads(to_har(H2))["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "shark-tui"
    (e,) = log["entries"]
    assert e["startedDateTime"] == "2023-11-14T22:13:20.250Z"
    assert e["time"] == 2.5 and e["timings"]["wait"] == 2.5
    assert e["request"]["url"] == "http://svc:50051/pkg.Svc/Call"
    assert e["request"]["httpVersion"] == "HTTP/2"
    assert e["request"]["postData"]["mimeType"] == "application/grpc"
    assert e["response"]["status"] == 200 and e["response"]["content"]["size"] == 0


def test_non_http_entries_are_json_only() -> None:
    redis = {"id": "1:1", "proto": "redis", "method": "SET",
             "request": {"args": ["SET", "k", "v"]}, "response": {"reply": "OK"}}  # fmt: skip
    with pytest.raises(NotHttp):
        to_curl(redis)
    with pytest.raises(NotHttp):
        to_har(redis)
    assert json.loads(to_json(redis)) == redis
