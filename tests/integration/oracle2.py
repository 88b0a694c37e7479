"""tshark 4.0 as the oracle for HTTP/2, gRPC and WebSocket (the companion of ``oracle.py``).

tshark's full JSON (``-T json --no-duplicate-keys``) keeps each HTTP/2 frame's stream id next to
its headers, which ``-T fields`` cannot (several frames per packet); this module walks that
tree. Known blind spot: HTTP/2 joined mid-connection — tshark has no HPACK state then; each
header field that refers to the dynamic table comes out as ``<unknown>`` with an empty value
(static-table references and literals still decode). ``h2_streams`` leaves those out of the
header lists and counts them in ``req_unknown`` / ``resp_unknown``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from tests.integration.oracle import Endpoint, decode_as, tcp_connections, tshark

Header = tuple[str, str]

#: What tshark shows for a header field that refers to an HPACK dynamic table it never saw.
UNKNOWN = ("<unknown>", "")

H2_DATA, H2_HEADERS, H2_RST, H2_SETTINGS, H2_PING, H2_GOAWAY, H2_WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8


def _list(x: Any) -> list[Any]:
    if x is None:
        return []
    return x if isinstance(x, list) else [x]


def _one(layers: dict[str, Any], *names: str) -> str | None:
    for layer in names:
        proto, _, _ = layer.partition(".")
        for d in _list(layers.get(proto)):
            if isinstance(d, dict) and layer in d:
                v = d[layer]
                return v[0] if isinstance(v, list) else v
    return None


def _packets(path: str | PathLike[str], display_filter: str, *extra: str) -> list[dict[str, Any]]:
    out = tshark(path, "-Y", display_filter, "-T", "json", "--no-duplicate-keys", *extra)
    return [p["_source"]["layers"] for p in (json.loads(out) if out.strip() else [])]


def _ends(layers: dict[str, Any]) -> tuple[int, Endpoint, Endpoint, int, float]:
    src = (_one(layers, "ip.src", "ipv6.src") or "", int(_one(layers, "tcp.srcport") or 0))
    dst = (_one(layers, "ip.dst", "ipv6.dst") or "", int(_one(layers, "tcp.dstport") or 0))
    stream = int(_one(layers, "tcp.stream") or -1)
    frame = int(_one(layers, "frame.number") or 0)
    ts = float(_one(layers, "frame.time_epoch") or 0)
    return stream, src, dst, frame, ts


# --------------------------------------------------------------------------------------------
# HTTP/2


@dataclass
class H2Frame:
    frame: int  # packet number
    ts: float
    tcp_stream: int
    src: Endpoint
    dst: Endpoint
    stream_id: int
    type: int
    flags: int
    length: int
    headers: list[Header] | None  # HEADERS/CONTINUATION: what tshark decoded (maybe nothing)
    data_len: int = 0  # DATA: payload bytes without padding
    error: int | None = None  # RST_STREAM / GOAWAY error code

    @property
    def end_stream(self) -> bool:
        return self.type in (H2_DATA, H2_HEADERS) and bool(self.flags & 0x1)


def h2_frames(path: str | PathLike[str], ports: Iterable[int]) -> list[H2Frame]:
    """Every HTTP/2 frame tshark finds (decode-as ``http2`` on ``ports``), in file order."""
    out: list[H2Frame] = []
    for layers in _packets(path, "http2", *decode_as(ports, "http2")):
        tcp_stream, src, dst, frame, ts = _ends(layers)
        for layer in _list(layers.get("http2")):
            for st in _list(layer.get("http2.stream") if isinstance(layer, dict) else None):
                if "http2.type" not in st:
                    continue  # the connection preface
                headers = None
                if "http2.header" in st or int(st["http2.type"]) in (H2_HEADERS, 9):
                    headers = [(h.get("http2.header.name", ""), h.get("http2.header.value", ""))
                               for h in _list(st.get("http2.header"))]
                data_len = 0
                if int(st["http2.type"]) == H2_DATA:  # the frame's payload without padding
                    data_len = int(st["http2.length"])
                    if int(st["http2.flags"], 16) & 0x8:
                        data_len -= int(st.get("http2.pad_length", 0)) + 1
                err = st.get("http2.rst_stream.error") or st.get("http2.goaway.error")
                out.append(H2Frame(frame, ts, tcp_stream, src, dst, int(st["http2.streamid"]),
                                   int(st["http2.type"]), int(st["http2.flags"], 16),
                                   int(st["http2.length"]), headers, data_len,
                                   int(err) if err is not None else None))
    return out


@dataclass
class H2OStream:
    """One HTTP/2 stream as tshark saw it."""

    tcp_stream: int
    client: Endpoint
    server: Endpoint
    stream_id: int
    req_headers: list[Header] = field(default_factory=list)
    resp_headers: list[Header] = field(default_factory=list)
    trailers: list[Header] = field(default_factory=list)
    req_data: int = 0
    resp_data: int = 0
    req_data_frames: int = 0
    resp_data_frames: int = 0
    req_headers_frames: int = 0
    resp_headers_frames: int = 0
    rst: int | None = None
    first_ts: float = 0.0
    req_unknown: int = 0  # header fields tshark could not decode (dynamic table unknown)
    resp_unknown: int = 0

    def req(self, name: str) -> str | None:
        return next((v for k, v in self.req_headers if k == name), None)

    def resp(self, name: str) -> str | None:
        return next((v for k, v in self.resp_headers if k == name), None)

    @property
    def method(self) -> str | None:
        return self.req(":method")

    @property
    def path(self) -> str | None:
        return self.req(":path")

    @property
    def status(self) -> int | None:
        v = self.resp(":status")
        return int(v) if v is not None else None


def h2_streams(
    path: str | PathLike[str], ports: Iterable[int]
) -> dict[tuple[Endpoint, Endpoint], dict[int, H2OStream]]:
    """(client, server) -> stream id -> what tshark decoded. The client is the SYN's sender, or
    (no SYN seen) the end whose port is not in ``ports``."""
    ports = list(ports)
    syns = tcp_connections(path)
    out: dict[tuple[Endpoint, Endpoint], dict[int, H2OStream]] = {}
    for f in h2_frames(path, ports):
        if f.tcp_stream in syns:
            client, server = syns[f.tcp_stream]
        elif f.dst[1] in ports:
            client, server = f.src, f.dst
        else:
            client, server = f.dst, f.src
        if f.stream_id == 0:
            continue
        streams = out.setdefault((client, server), {})
        st = streams.get(f.stream_id)
        if st is None:
            st = streams[f.stream_id] = H2OStream(f.tcp_stream, client, server, f.stream_id,
                                                  first_ts=f.ts)
        from_client = f.src == client
        if f.type in (H2_HEADERS, 9):
            hs = [h for h in f.headers or [] if h != UNKNOWN]
            unknown = len(f.headers or []) - len(hs)
            if from_client:
                st.req_unknown += unknown
            else:
                st.resp_unknown += unknown
            if from_client:
                st.req_headers_frames += f.type == H2_HEADERS
                st.req_headers += hs
            else:
                if f.type == H2_HEADERS:
                    st.resp_headers_frames += 1
                if st.resp_headers_frames >= 2 and f.type == H2_HEADERS and not any(
                    k == ":status" for k, _ in hs
                ):
                    st.trailers += hs
                else:
                    st.resp_headers += hs
        elif f.type == H2_DATA:
            if from_client:
                st.req_data += f.data_len
                st.req_data_frames += 1
            else:
                st.resp_data += f.data_len
                st.resp_data_frames += 1
        elif f.type == H2_RST:
            st.rst = f.error
    return out


# --------------------------------------------------------------------------------------------
# gRPC


@dataclass(frozen=True)
class GrpcMessage:
    frame: int
    tcp_stream: int
    src: Endpoint
    dst: Endpoint
    length: int  # grpc.message_length (as on the wire, compressed when compressed)
    compressed: bool


def grpc_messages(path: str | PathLike[str], ports: Iterable[int]) -> list[GrpcMessage]:
    """Every gRPC length-prefixed message tshark finds (decode-as ``http2`` on ``ports``)."""
    out: list[GrpcMessage] = []
    for layers in _packets(path, "grpc", *decode_as(ports, "http2")):
        tcp_stream, src, dst, frame, _ts = _ends(layers)
        for g in _list(layers.get("grpc")):
            if "grpc.message_length" not in g:
                continue
            out.append(GrpcMessage(frame, tcp_stream, src, dst, int(g["grpc.message_length"]),
                                   g.get("grpc.compressed_flag") == "1"))
    return out


# --------------------------------------------------------------------------------------------
# WebSocket


@dataclass
class WsOFrame:
    frame: int
    tcp_stream: int
    src: Endpoint
    dst: Endpoint
    fin: bool
    opcode: int
    masked: bool
    payload_length: int
    text: str | None = None  # the (reassembled) text of a text message's last frame
    close_code: int | None = None
    close_reason: str | None = None
    reassembled_length: int | None = None


def ws_frames(path: str | PathLike[str], ports: Iterable[int]) -> list[WsOFrame]:
    """Every WebSocket frame tshark finds (decode-as ``http`` on ``ports``, so it sees the
    upgrade)."""
    out: list[WsOFrame] = []
    for layers in _packets(path, "websocket", *decode_as(ports, "http")):
        tcp_stream, src, dst, frame, _ts = _ends(layers)
        frags = _list(layers.get("websocket.fragments"))
        for i, w in enumerate(_list(layers.get("websocket"))):
            payload = w.get("websocket.payload")
            text = code = reason = None
            for p in _list(payload):
                if not isinstance(p, dict):
                    continue
                if "websocket.payload.text" in p:
                    text = p["websocket.payload.text"]
                c = p.get("websocket.payload.close")
                if isinstance(c, dict):
                    code = int(c["websocket.payload.close.status_code"])
                    reason = c.get("websocket.payload.close.reason")
            rl = None
            if frags and i < len(frags) and isinstance(frags[i], dict):
                rl = int(frags[i].get("websocket.reassembled.length", 0)) or None
            out.append(WsOFrame(frame, tcp_stream, src, dst, w.get("websocket.fin") == "1",
                                int(w["websocket.opcode"]), w.get("websocket.mask") == "1",
                                int(w["websocket.payload_length"]), text, code, reason, rl))
    return out
