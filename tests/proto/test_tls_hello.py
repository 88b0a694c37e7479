"""SNI/ALPN from real hellos (made by OpenSSL through Python's ``ssl`` over memory BIOs, no
network), checked against tshark on the same bytes; damaged hellos never raise, say they are
truncated, and keep what came before the damage."""

from __future__ import annotations

import contextlib
import ssl
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from shark_tui.proto.tls import parse_hello
from tests.engine.fixtures_pcap import LINKTYPE_ETHERNET, eth_ipv4_tcp, pcap_bytes


def client_hello(sni: str, alpn: list[str]) -> bytes:
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server: fine
        conn.do_handshake()
    return outgoing.read()


HELLO = client_hello("api.shop.example", ["h2", "http/1.1"])


def test_client_hello_agrees_with_tshark(tmp_path) -> None:  # type: ignore[no-untyped-def]
    got = parse_hello(HELLO)
    assert got["hello"] == "client" and not got.get("truncated")
    assert got["sni"] == "api.shop.example"
    assert got["alpn"] == ["h2", "http/1.1"]
    assert "TLS 1.3" in got["versions"]
    pkt = eth_ipv4_tcp("10.0.0.1", "10.0.0.2", 50000, 443, 1, 1, 0x18, HELLO)
    path = tmp_path / "hello.pcap"
    path.write_bytes(pcap_bytes(LINKTYPE_ETHERNET, [(1_000_000, pkt)]))
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "tls.handshake.extensions_server_name",
         "-e", "tls.handshake.extensions_alpn_str"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert out.split("\t") == ["api.shop.example", "h2,http/1.1"]


def test_not_a_hello() -> None:
    assert parse_hello(b"GET / HTTP/1.1\r\n\r\n") == {}
    assert parse_hello(b"") == {}
    assert parse_hello(b"\x17\x03\x03\x00\x05hello") == {}  # application data


@settings(max_examples=300)
@given(cut=st.integers(min_value=0, max_value=len(HELLO)))
def test_a_cut_hello_is_marked_and_keeps_what_came_before(cut: int) -> None:
    got = parse_hello(HELLO[:cut])
    if cut < 9:
        assert got == {}
        return
    assert got["hello"] == "client"
    if cut < len(HELLO):
        assert got["truncated"] is True
    # the SNI extension comes first: once it is whole, it is right
    sni_end = HELLO.index(b"api.shop.example") + len(b"api.shop.example")
    if cut >= sni_end:
        assert got["sni"] == "api.shop.example"
    assert got.get("sni", "api.shop.example") == "api.shop.example"


@settings(max_examples=300)
@given(pos=st.integers(min_value=0, max_value=len(HELLO) - 1), byte=st.integers(0, 255))
def test_a_mutated_hello_never_raises(pos: int, byte: int) -> None:
    data = HELLO[:pos] + bytes([byte]) + HELLO[pos + 1 :]
    got = parse_hello(data)
    assert isinstance(got, dict)
    for key in ("sni", "alpn", "versions"):
        assert key not in got or isinstance(got[key], (str, list))
