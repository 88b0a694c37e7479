"""tshark 4.0 as the oracle: what Wireshark's dissectors make of a capture.

Only the fields the tests compare are asked for (``-T json -e ...``: every field comes back as a
list, one item per occurrence, so several HTTP messages in one packet stay apart). Known blind
spots (RECIPES.md): a HEAD inside an HTTP/1.1 pipeline, HTTP/2 joined mid-connection, Redis
pipelines and RESP3, newer Kafka versions — there the client's own record is the truth.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

Endpoint = tuple[str, int]

_HTTP_FIELDS = [
    "frame.number",
    "frame.time_epoch",
    "tcp.stream",
    "ip.src",
    "ipv6.src",
    "tcp.srcport",
    "ip.dst",
    "ipv6.dst",
    "tcp.dstport",
    "http.request.method",
    "http.request.uri",
    "http.response.code",
    "http.request_in",
]


def tshark(path: str | PathLike[str], *args: str, timeout: float = 120) -> str:
    """Run ``tshark -r PATH ARGS...`` and return stdout; raise with stderr on failure."""
    proc = subprocess.run(
        ["tshark", "-r", str(path), *args], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"tshark {args} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def decode_as(ports: Iterable[int], proto: str = "http") -> list[str]:
    """``-d tcp.port==P,PROTO`` for each port (tshark needs it off the standard ports)."""
    out: list[str] = []
    for p in ports:
        out += ["-d", f"tcp.port=={p},{proto}"]
    return out


def tshark_json_fields(
    path: str | PathLike[str], display_filter: str, fields: Sequence[str], *extra: str
) -> list[dict[str, list[str]]]:
    """``-Y FILTER -T json -e F...``: one dict per packet, each field a list of occurrences."""
    args = ["-Y", display_filter, "-T", "json", "--no-duplicate-keys", *extra]
    for f in fields:
        args += ["-e", f]
    out = tshark(path, *args)
    packets: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return [p["_source"]["layers"] for p in packets]


@dataclass(frozen=True)
class HttpMessage:
    """One HTTP/1.x message as tshark sees it, at the frame where it was reassembled."""

    frame: int
    ts: float
    stream: int
    src: Endpoint
    dst: Endpoint
    kind: str  # "request" or "response"
    method: str | None = None
    uri: str | None = None
    status: int | None = None
    request_in: int | None = None  # the request's frame, for a response


@dataclass
class HttpExchange:
    """A request tshark paired with its response (``status`` None when it found none)."""

    stream: int
    client: Endpoint
    server: Endpoint
    ts: float
    method: str
    uri: str
    status: int | None
    request_frame: int


def _first(layers: dict[str, list[str]], *names: str) -> str | None:
    for n in names:
        v = layers.get(n)
        if v:
            return v[0]
    return None


def http_messages(path: str | PathLike[str], ports: Iterable[int] = ()) -> list[HttpMessage]:
    """Every HTTP/1.x request and response tshark finds, in frame order."""
    rows = tshark_json_fields(path, "http", _HTTP_FIELDS, *decode_as(ports))
    out: list[HttpMessage] = []
    for layers in rows:
        frame = int(_first(layers, "frame.number") or 0)
        ts = float(_first(layers, "frame.time_epoch") or 0)
        stream = int(_first(layers, "tcp.stream") or -1)
        src = (_first(layers, "ip.src", "ipv6.src") or "", int(_first(layers, "tcp.srcport") or 0))
        dst = (_first(layers, "ip.dst", "ipv6.dst") or "", int(_first(layers, "tcp.dstport") or 0))
        methods = layers.get("http.request.method", [])
        uris = layers.get("http.request.uri", [])
        for i, m in enumerate(methods):
            uri = uris[i] if i < len(uris) else None
            out.append(HttpMessage(frame, ts, stream, src, dst, "request", method=m, uri=uri))
        codes = layers.get("http.response.code", [])
        req_in = layers.get("http.request_in", [])
        for i, c in enumerate(codes):
            ri = int(req_in[i]) if len(req_in) == len(codes) else None
            out.append(HttpMessage(frame, ts, stream, src, dst, "response", status=int(c),
                                   request_in=ri))
    return out


def http_exchanges(path: str | PathLike[str], ports: Iterable[int] = ()) -> list[HttpExchange]:
    """Requests with their responses: by tshark's ``http.request_in`` where it gives one, else
    in order within the TCP stream."""
    msgs = http_messages(path, ports)
    exchanges: list[HttpExchange] = []
    by_frame: dict[tuple[int, int], list[HttpExchange]] = {}
    pending: dict[int, list[HttpExchange]] = {}
    for m in msgs:
        if m.kind == "request":
            ex = HttpExchange(m.stream, m.src, m.dst, m.ts, m.method or "", m.uri or "", None,
                              m.frame)
            exchanges.append(ex)
            by_frame.setdefault((m.stream, m.frame), []).append(ex)
            pending.setdefault(m.stream, []).append(ex)
    for m in msgs:
        if m.kind != "response":
            continue
        queue = pending.get(m.stream, [])
        target = None
        if m.request_in is not None:
            for ex in by_frame.get((m.stream, m.request_in), []):
                if ex.status is None:
                    target = ex
                    break
        if target is None:
            target = next((ex for ex in queue if ex.status is None), None)
        if target is not None:
            target.status = m.status
    return exchanges


def tcp_connections(path: str | PathLike[str]) -> dict[int, tuple[Endpoint, Endpoint]]:
    """``tcp.stream`` -> (client, server) from the SYNs tshark saw."""
    rows = tshark_json_fields(
        path,
        "tcp.flags.syn == 1 && tcp.flags.ack == 0",
        ["tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport"],
    )
    out: dict[int, tuple[Endpoint, Endpoint]] = {}
    for layers in rows:
        stream = int(_first(layers, "tcp.stream") or -1)
        out[stream] = (
            (_first(layers, "ip.src", "ipv6.src") or "", int(_first(layers, "tcp.srcport") or 0)),
            (_first(layers, "ip.dst", "ipv6.dst") or "", int(_first(layers, "tcp.dstport") or 0)),
        )
    return out


def packet_count(path: str | PathLike[str], display_filter: str = "") -> int:
    """How many packets of the file match ``display_filter`` (all when empty)."""
    args = ["-T", "fields", "-e", "frame.number"]
    if display_filter:
        args = ["-Y", display_filter, *args]
    return len([line for line in tshark(path, *args).splitlines() if line.strip()])
