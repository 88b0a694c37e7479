"""The Connection tab names a TLS entry's ciphertext twin, and what an undecrypted TLS
connection's hellos say."""

from __future__ import annotations

from shark_tui.widgets.connview import connection_view
from shark_tui.widgets.detail import connection_info


def test_tls_plaintext_entry_shows_its_wire_twin() -> None:
    wire = {"flow": 3, "iface": "lo", "packets": 18, "bytes": 3975,
            "client_hello": {"sni": "localhost", "alpn": ["http/1.1"]}}  # fmt: skip
    info = connection_info({"id": "4:1", "proto": "http", "tls": True, "wire": wire})
    assert info["wire (ciphertext twin)"] == wire
    info = connection_info({"id": "4:1", "proto": "http", "tls": True, "wire": None})
    assert info["wire (ciphertext twin)"].startswith("not captured")
    assert "wire (ciphertext twin)" not in connection_info({"id": "1:1", "tls": False})


def test_undecrypted_tls_shows_sni_and_alpn() -> None:
    hello = {"hello": "client", "sni": "api.example", "alpn": ["h2"]}
    e = {"id": "9:1", "proto": "tcp", "tls": False, "request": {"tls": hello},
         "response": {"tls": {"hello": "server", "version": "TLS 1.3"}}}  # fmt: skip
    got = connection_info(e)["tls (not decrypted)"]
    assert got["client hello"]["sni"] == "api.example"
    assert got["server hello"]["version"] == "TLS 1.3"


def shown(info: dict[str, object]) -> list[str]:
    from rich.console import Console

    c = Console(width=120, record=True, color_system=None)
    c.print(connection_view(info))
    return [line.rstrip() for line in c.export_text().splitlines()]


ENTRY = {
    "id": "2:1", "proto": "http", "tls": False, "ts": 1_700_000_000.5, "latency_ms": 2.25,
    "src": {"ip": "10.0.0.1", "port": 40000, "pod": "web-1", "ns": "shop"},
    "dst": {"ip": "fd00::5", "port": 80, "pod": None, "ns": None},
    "request_size": 1, "response_size": None, "error": "no_response",
}  # fmt: skip


def test_a_connection_joined_midway_has_no_handshake() -> None:
    conn = {"flow": 2, "iface": "eth0", "packets": {"client": 1, "server": 0},
            "bytes": {"client": 1500, "server": 0}, "first_ts": 1_700_000_000.0,
            "last_ts": 1_700_000_001.0, "state": "reset", "handshake": None}  # fmt: skip
    out = shown(connection_info({**ENTRY, "connection": conn}))
    assert "  client     10.0.0.1:40000  (shop/web-1)" in out
    assert "  server     [fd00::5]:80" in out
    assert "  state      reset" in out
    assert "  client → server  1 packet, 1,500 bytes" in out
    assert "  server → client  0 packets, 0 bytes" in out
    assert "  handshake           not seen (the capture joined the connection midway)" in out
    assert "  this request        2023-11-14 22:13:20.500000 UTC  (+500.000 ms)" in out
    assert "  request → response  2.250 ms" in out
    assert "  response size  -" in out and "  error          no_response" in out


def test_without_the_daemons_connection_facts_the_entry_alone() -> None:
    out = shown(connection_info(ENTRY))
    assert "  this request        2023-11-14 22:13:20.500000 UTC" in out
    assert not any(line.startswith("packets") for line in out)
    assert out[-1] == "note: the daemon did not say more of this connection"
