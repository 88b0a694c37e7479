"""The detail pane's Connection tab: the TCP connection an entry travelled on.

`connection_info` gathers, from the entry and what its daemon's flow index said of the
connection (the ``connection`` the link puts in the entry, from `wire.EntryDetail`): the ends
(pod and namespace when known), the interface, TLS, the connection's state, packets and bytes
each end sent, and the timings — first and last packet, the handshake when its packets are
stored (SYN → SYN-ACK → ACK), this exchange's request time and request → response latency.
For TLS plaintext, the wire connection it came from (``wire``); for TLS seen only as
ciphertext, what its hellos say. `connection_view` draws that as headed key/value lines.

Times are UTC. No colours here: the roles (``heading``, ``key``, ``note``) come from the detail
screen's component classes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.text import Text

from shark_tui.widgets.protoviews import Palette

__all__ = ["connection_info", "connection_view"]


def _utc(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "?"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.3f} ms"


def _end(end: Any) -> str:
    if not isinstance(end, dict):
        return "?"
    ip = str(end.get("ip"))
    text = f"[{ip}]:{end.get('port')}" if ":" in ip else f"{ip}:{end.get('port')}"
    names = [str(end[k]) for k in ("ns", "pod") if end.get(k)]
    if names:
        text += f"  ({'/'.join(names)})"
    if end.get("service"):
        text += f"  service {end['service']}"
    return text


def _count(n: Any, unit: str) -> str:
    return f"{n:,} {unit}{'' if n == 1 else 's'}" if isinstance(n, int) else "?"


def connection_info(e: dict[str, Any]) -> dict[str, Any]:
    """The Connection tab of entry ``e`` as sections of key → value (see the module docstring);
    a value may be a dict (drawn indented)."""
    conn = e.get("connection") if isinstance(e.get("connection"), dict) else None
    info: dict[str, Any] = {}
    ends: dict[str, Any] = {"client": _end(e.get("src")), "server": _end(e.get("dst"))}
    if conn is not None:
        ends["interface"] = conn.get("iface") or "?"
        ends["flow"] = conn.get("flow")
        ends["state"] = conn.get("state")
    ends["TLS"] = "yes (plaintext captured)" if e.get("tls") else "no"
    info["connection"] = ends
    ts = e.get("ts")
    timings: dict[str, Any] = {}
    if conn is not None:
        pk, by = conn.get("packets") or {}, conn.get("bytes") or {}
        info["packets and bytes (on the wire)"] = {
            "client → server": f"{_count(pk.get('client'), 'packet')}, "
                               f"{_count(by.get('client'), 'byte')}",
            "server → client": f"{_count(pk.get('server'), 'packet')}, "
                               f"{_count(by.get('server'), 'byte')}",
        }  # fmt: skip
        first, last = conn.get("first_ts"), conn.get("last_ts")
        timings["first packet"] = _utc(first)
        if isinstance(first, int | float) and isinstance(last, int | float):
            timings["last packet"] = f"{_utc(last)}  (+{_ms(last - first)})"
        hs = conn.get("handshake")
        if isinstance(hs, dict):
            steps = [f"SYN → SYN-ACK {hs['syn_ack_ms']:,.3f} ms"
                     if hs.get("syn_ack_ms") is not None else "no SYN-ACK stored"]  # fmt: skip
            if hs.get("ack_ms") is not None:
                steps.append(f"SYN-ACK → ACK {hs['ack_ms']:,.3f} ms")
            timings["handshake"] = ", ".join(steps)
        else:
            timings["handshake"] = "not seen (the capture joined the connection midway)"
        if isinstance(first, int | float) and isinstance(ts, int | float):
            timings["this request"] = f"{_utc(ts)}  (+{_ms(ts - first)})"
    else:
        timings["this request"] = _utc(ts)
    latency = e.get("latency_ms")
    timings["request → response"] = f"{latency:,.3f} ms" if latency is not None else "no response"
    info["timings"] = timings
    info["this exchange"] = {
        "id": e.get("id"),
        "request size": _count(e.get("request_size"), "byte") if e.get("request_size") is not None
        else "-",
        "response size": _count(e.get("response_size"), "byte")
        if e.get("response_size") is not None else "-",
        "error": e.get("error") or "none",
    }  # fmt: skip
    if conn is None:
        info["note"] = "the daemon did not say more of this connection"
    if e.get("wire"):
        info["wire (ciphertext twin)"] = e["wire"]
    elif e.get("tls"):
        info["wire (ciphertext twin)"] = "not captured (no interface carried it)"
    hellos = {side: (e.get(side) or {}).get("tls") for side in ("request", "response")}
    if e.get("proto") == "tcp" and any(hellos.values()):
        info["tls (not decrypted)"] = {
            "client hello": hellos["request"],
            "server hello": hellos["response"],
        }
    return info


def _value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ", ".join(str(x) for x in v)
    return "-" if v is None else str(v)


def _lines(out: Text, obj: dict[str, Any], indent: int, pal: Palette) -> None:
    width = max((len(str(k)) for k in obj), default=0)
    key_style = pal.get("key", "")
    for k, v in obj.items():
        out.append("  " * indent)
        out.append(f"{k}", style=key_style)
        if isinstance(v, dict):
            out.append("\n")
            _lines(out, v, indent + 1, pal)
        else:
            out.append(" " * (width - len(str(k)) + 2) + _value(v) + "\n")


def connection_view(info: dict[str, Any], palette: Palette | None = None) -> Text:
    """``connection_info`` drawn: each section a heading, its keys aligned under it."""
    pal = palette or {}
    out = Text()
    for i, (section, body) in enumerate(info.items()):
        if i:
            out.append("\n")
        if isinstance(body, dict):
            out.append(f"{section}\n", style=pal.get("heading", "bold"))
            _lines(out, body, 1, pal)
        else:
            out.append(f"{section}: ", style=pal.get("heading", "bold"))
            out.append(_value(body) + "\n", style=pal.get("note", ""))
    out.rstrip()
    return out
