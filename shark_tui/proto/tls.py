"""What a TLS connection says in the clear: the ClientHello's server name (SNI), offered ALPN
protocols and versions, and the ServerHello's chosen version and (TLS ≤ 1.2) ALPN protocol.

Sans-IO: the first bytes of each direction in, a dict out (``{}`` when they are not a hello).
A hello spread over several records is joined; a cut or malformed one yields what was read
before the damage and ``"truncated": True``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_HELLO", "parse_hello"]

#: Bytes of each direction kept to find a hello (post-quantum key shares make them ~1.5 KiB).
MAX_HELLO = 16384
_VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
             0x0304: "TLS 1.3"}  # fmt: skip


def _handshake(data: bytes) -> tuple[bytes, bool]:
    """The handshake-protocol bytes of the leading handshake records; True if cut short."""
    out = bytearray()
    pos = 0
    while pos + 5 <= len(data) and data[pos] == 0x16:
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        out += data[pos + 5 : pos + 5 + length]
        if pos + 5 + length > len(data):
            return bytes(out), True
        pos += 5 + length
        if len(out) >= 4 and len(out) >= 4 + int.from_bytes(out[1:4], "big"):
            break
    return bytes(out), False


def parse_hello(data: bytes) -> dict[str, Any]:
    """SNI/ALPN/versions from a ClientHello or ServerHello at the start of ``data``."""
    hs, cut = _handshake(data)
    if len(hs) < 4 or hs[0] not in (1, 2):
        return {}
    client = hs[0] == 1
    body = hs[4 : 4 + int.from_bytes(hs[1:4], "big")]
    out: dict[str, Any] = {"hello": "client" if client else "server"}
    try:
        _parse_body(body, client, out)
    except (IndexError, ValueError):
        out["truncated"] = True
    if cut or len(body) < int.from_bytes(hs[1:4], "big"):
        out["truncated"] = True
    return out


def _parse_body(b: bytes, client: bool, out: dict[str, Any]) -> None:
    legacy = int.from_bytes(b[0:2], "big")
    out["version"] = _VERSIONS.get(legacy, hex(legacy))
    pos = 2 + 32
    pos += 1 + b[pos]  # session id
    if client:
        n = int.from_bytes(b[pos : pos + 2], "big")
        pos += 2 + n
        pos += 1 + b[pos]  # compression methods
    else:
        out["cipher"] = f"0x{int.from_bytes(b[pos : pos + 2], 'big'):04x}"
        pos += 3
    if pos + 2 > len(b):
        return
    end = min(len(b), pos + 2 + int.from_bytes(b[pos : pos + 2], "big"))
    pos += 2
    while pos + 4 <= end:
        etype = int.from_bytes(b[pos : pos + 2], "big")
        elen = int.from_bytes(b[pos + 2 : pos + 4], "big")
        ext = b[pos + 4 : pos + 4 + elen]
        if len(ext) < elen:
            raise ValueError("extension cut")
        pos += 4 + elen
        if etype == 0 and client and len(ext) >= 5 and ext[2] == 0:
            n = int.from_bytes(ext[3:5], "big")
            out["sni"] = ext[5 : 5 + n].decode("ascii", "replace")
        elif etype == 16:
            protos, i = [], 2
            while i < len(ext):
                n = ext[i]
                protos.append(ext[i + 1 : i + 1 + n].decode("ascii", "replace"))
                i += 1 + n
            out["alpn"] = protos
        elif etype == 43:
            if client:
                vs = [int.from_bytes(ext[i : i + 2], "big") for i in range(1, len(ext) - 1, 2)]
                out["versions"] = [_VERSIONS[v] for v in vs if v in _VERSIONS]
            elif len(ext) >= 2:
                out["version"] = _VERSIONS.get(int.from_bytes(ext[:2], "big"), "?")
