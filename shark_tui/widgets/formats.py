"""An entry as something to paste elsewhere (`x`): a curl command, a HAR 1.2 log, or JSON.

No Textual here. curl and HAR need an HTTP-like entry (http, http2, grpc, graphql) with its
request seen; `http_request` says whether one is."""

from __future__ import annotations

import base64
import json
import shlex
import time
from typing import Any
from urllib.parse import quote, urlencode

from shark_tui import __version__

__all__ = ["FORMATS", "HTTP_PROTOS", "NotHttp", "http_request", "render", "to_curl", "to_har",
           "to_json"]  # fmt: skip

HTTP_PROTOS = frozenset({"http", "http2", "grpc", "graphql", "websocket"})
#: Format name → (label, needs an HTTP request).
FORMATS = {"curl": ("curl command", True), "har": ("HAR 1.2", True), "json": ("JSON", False)}

#: Request headers curl sets itself (or that describe the connection, not the request).
_CURL_SKIP = frozenset({"host", "content-length", "transfer-encoding", "connection",
                        "keep-alive", "upgrade", "http2-settings", "te"})  # fmt: skip


class NotHttp(ValueError):
    """The entry has no HTTP request to turn into curl or HAR."""


def http_request(entry: dict[str, Any]) -> dict[str, Any] | None:
    req = entry.get("request")
    if entry.get("proto") not in HTTP_PROTOS or not isinstance(req, dict):
        return None
    return req if req.get("method") or _pseudo(req).get(":method") else None


def render(fmt: str, entry: dict[str, Any]) -> str:
    return {"curl": to_curl, "har": to_har, "json": to_json}[fmt](entry)


def to_json(entry: dict[str, Any]) -> str:
    return json.dumps(entry, indent=2, ensure_ascii=False) + "\n"


# -- HTTP pieces -------------------------------------------------------------------------------


def _headers(msg: dict[str, Any] | None) -> list[tuple[str, str]]:
    out = []
    for h in (msg or {}).get("headers") or []:
        if isinstance(h, list | tuple) and len(h) == 2:
            out.append((str(h[0]), str(h[1])))
    return out


def _pseudo(msg: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in _headers(msg) if k.startswith(":")}


def _header(msg: dict[str, Any] | None, name: str) -> str | None:
    for k, v in _headers(msg):
        if k.lower() == name:
            return v
    return None


def _target(req: dict[str, Any]) -> str:
    """The request target with its query, as sent."""
    p = _pseudo(req)
    if p.get(":path"):
        return p[":path"]
    if req.get("target"):
        return str(req["target"])
    path = quote(str(req.get("path") or "/"), safe="/%:@!$&'()*+,;=-._~")
    query = req.get("query") or []
    pairs = [(str(q[0]), str(q[1])) for q in query if isinstance(q, list | tuple) and len(q) == 2]
    return path + ("?" + urlencode(pairs) if pairs else "")


def url_of(entry: dict[str, Any], req: dict[str, Any]) -> str:
    target = _target(req)
    if target.startswith(("http://", "https://")):  # absolute form (a proxy request)
        return target
    p = _pseudo(req)
    scheme = req.get("scheme") or p.get(":scheme") or ("https" if entry.get("tls") else "http")
    host = req.get("authority") or p.get(":authority") or _header(req, "host")
    if not host:
        dst = entry.get("dst") or {}
        ip, port = str(dst.get("ip") or "localhost"), dst.get("port")
        ip = f"[{ip}]" if ":" in ip else ip
        default = 443 if scheme == "https" else 80
        host = ip if port in (None, default) else f"{ip}:{port}"
    return f"{scheme}://{host}{target}"


def _body(msg: dict[str, Any] | None) -> bytes | str | None:
    """The body as text (``str``) or bytes (base64 on the wire), None when empty."""
    if not msg:
        return None
    body = msg.get("body")
    if body in (None, ""):
        return None
    if not isinstance(body, str):
        return json.dumps(body, ensure_ascii=False)
    if msg.get("body_encoding") == "base64":
        try:
            return base64.b64decode(body)
        except ValueError:
            return body
    return body


def to_curl(entry: dict[str, Any]) -> str:
    """A curl command that sends the same request again (bodies as decoded by the dissector;
    a binary body is piped in through ``base64 -d``)."""
    req = http_request(entry)
    if req is None:
        raise NotHttp(f"{entry.get('proto')} entry: curl needs an HTTP request")
    method = str(req.get("method") or _pseudo(req).get(":method") or "GET").upper()
    url = url_of(entry, req)
    h2 = str(req.get("version") or "").upper().startswith("HTTP/2") or entry.get("proto") in (
        "http2", "grpc")  # fmt: skip
    args = ["curl"]
    if method == "HEAD":
        args.append("--head")
    elif method != "GET" or _body(req) is not None:
        args += ["-X", method]
    if h2:
        args.append("--http2" if url.startswith("https://") else "--http2-prior-knowledge")
    decoded = req.get("content_encoding") not in (None, "", "identity")
    for name, value in _headers(req):
        low = name.lower()
        if name.startswith(":") or low in _CURL_SKIP or (decoded and low == "content-encoding"):
            continue
        args += ["-H", f"{name}: {value}"]
    body = _body(req)
    pipe = ""
    if isinstance(body, bytes):
        pipe = f"printf %s {shlex.quote(base64.b64encode(body).decode())} | base64 -d | "
        args += ["--data-binary", "@-"]
    elif body is not None:
        args += ["--data-raw", body]
    args.append(url)
    notes = []
    if req.get("body_truncated"):
        notes.append(f"# the body was cut at capture: {req.get('body_size')} bytes were sent\n")
    return "".join(notes) + pipe + " ".join(shlex.quote(a) for a in args) + "\n"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _har_headers(msg: dict[str, Any] | None) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in _headers(msg)]


def _har_content(msg: dict[str, Any] | None) -> dict[str, Any]:
    msg = msg or {}
    out: dict[str, Any] = {
        "size": int(msg.get("body_size") or 0),
        "mimeType": _header(msg, "content-type") or "",
    }
    body = msg.get("body")
    if body not in (None, ""):
        out["text"] = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        if msg.get("body_encoding") == "base64":
            out["encoding"] = "base64"
    return out


def to_har(entry: dict[str, Any]) -> str:
    """A HAR 1.2 log holding this one exchange (what browsers' devtools import)."""
    req = http_request(entry)
    if req is None:
        raise NotHttp(f"{entry.get('proto')} entry: HAR needs an HTTP request")
    resp = entry.get("response") if isinstance(entry.get("response"), dict) else None
    query = [{"name": str(q[0]), "value": str(q[1])} for q in req.get("query") or []
             if isinstance(q, list | tuple) and len(q) == 2]  # fmt: skip
    request: dict[str, Any] = {
        "method": str(req.get("method") or _pseudo(req).get(":method") or "GET").upper(),
        "url": url_of(entry, req),
        "httpVersion": str(req.get("version") or "HTTP/1.1"),
        "cookies": [],
        "headers": _har_headers(req),
        "queryString": query,
        "headersSize": -1,
        "bodySize": int(req.get("body_size") or 0),
    }
    if req.get("body") not in (None, ""):
        content = _har_content(req)
        request["postData"] = {"mimeType": content["mimeType"], "text": content.get("text", "")}
        if content.get("encoding"):
            request["postData"]["comment"] = "text is base64"
    latency = float(entry.get("latency_ms") or 0.0)
    response: dict[str, Any] = {
        "status": int((resp or {}).get("status") or 0),
        "statusText": str((resp or {}).get("reason") or ""),
        "httpVersion": str((resp or {}).get("version") or request["httpVersion"]),
        "cookies": [],
        "headers": _har_headers(resp),
        "content": _har_content(resp),
        "redirectURL": _header(resp, "location") or "",
        "headersSize": -1,
        "bodySize": int((resp or {}).get("body_size") or (0 if resp else -1)),
    }
    dst = entry.get("dst") or {}
    har_entry: dict[str, Any] = {
        "startedDateTime": _iso(float(entry.get("ts") or 0.0)),
        "time": latency,
        "request": request,
        "response": response,
        "cache": {},
        "timings": {"send": 0, "wait": latency, "receive": 0},
        "serverIPAddress": str(dst.get("ip") or ""),
        "connection": str((entry.get("src") or {}).get("port") or ""),
        "comment": f"shark-tui entry {entry.get('id')} ({entry.get('proto')})"
        + (f", {entry['error']}" if entry.get("error") else ""),
    }
    log = {
        "log": {
            "version": "1.2",
            "creator": {"name": "shark-tui", "version": __version__},
            "entries": [har_entry],
        }
    }
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"
