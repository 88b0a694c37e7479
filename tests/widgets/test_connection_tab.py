"""The Connection tab names a TLS entry's ciphertext twin, and what an undecrypted TLS
connection's hellos say."""

from __future__ import annotations

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
