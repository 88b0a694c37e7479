"""TLS plaintext chunks → synthetic TCP: the connection reads as ordinary TCP to our dissector
and to tshark, once even when both ends were traced, with the client end right."""

from __future__ import annotations

import io
import socket
import subprocess

from shark_tui.engine import pcapng
from shark_tui.engine.capfile import CaptureFile
from shark_tui.engine.dissect import Dissection
from shark_tui.engine.tlssynth import Chunk, Synthesizer

A = socket.inet_aton("10.1.0.5")
B = socket.inet_aton("10.1.0.9")
REQ = b"GET /orders?id=7 HTTP/1.1\r\nHost: shop\r\nX-Secret: s3cr3t\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n"
RESP += b'{"ok": true'  # 11 bytes


def client_side(ts: int, outgoing: bool, data: bytes, pid: int = 100) -> Chunk:
    return Chunk(ts, pid, "curl", 5, A, 40000, B, 8443, outgoing, data, listening=False)


def server_side(ts: int, outgoing: bool, data: bytes, pid: int = 200) -> Chunk:
    return Chunk(ts, pid, "nginx", 9, B, 8443, A, 40000, outgoing, data, listening=True)


def as_pcapng(packets: list[tuple[int, bytes]], iface: str = "tls") -> bytes:
    out = pcapng.section_header() + pcapng.interface_description(1, 262144, iface)
    for ts, pkt in packets:
        out += pcapng.enhanced_packet(0, ts, pkt, len(pkt))
    return out


def dissect(data: bytes) -> list[dict]:
    got: list[dict] = []
    cap = CaptureFile(io.BytesIO(data))
    Dissection(got.append).run(iter(cap), cap.interfaces)
    return got


def test_both_ends_traced_give_each_exchange_once_with_the_right_client() -> None:
    s = Synthesizer()
    t = 1_700_000_000_000_000_000
    pkts = []
    # the server's view arrives first (it read the request before curl's write returned)
    pkts += s.feed(server_side(t, False, REQ))
    pkts += s.feed(client_side(t + 10, True, REQ))
    pkts += s.feed(server_side(t + 2_000_000, True, RESP[:40]))
    pkts += s.feed(server_side(t + 2_000_100, True, RESP[40:]))
    pkts += s.feed(client_side(t + 3_000_000, False, RESP))
    pkts += s.feed(Chunk(t + 4_000_000, 200, "nginx", -1, B, 8443, A, 40000, True, closed=True))
    assert s.stats["other_end"] == 2 and s.stats["closed"] == 1
    entries = dissect(as_pcapng(pkts))
    assert len(entries) == 1
    e = entries[0]
    assert (e["method"], e["summary"], e["status"], e["tls"]) == ("GET", "/orders?id=7", 200, True)
    assert (e["src"]["ip"], e["src"]["port"], e["dst"]["ip"], e["dst"]["port"]) == (
        "10.1.0.5",
        40000,
        "10.1.0.9",
        8443,
    )
    assert ["X-Secret", "s3cr3t"] in e["request"]["headers"]
    assert e["latency_ms"] == 2.0


def test_tshark_reads_the_synthetic_connection(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Synthesizer()
    t = 1_700_000_000_000_000_000
    pkts = s.feed(client_side(t, True, REQ)) + s.feed(client_side(t + 1_000_000, False, RESP))
    pkts += s.feed(Chunk(t + 2_000_000, 100, "curl", 5, A, 40000, B, 8443, True, closed=True))
    path = tmp_path / "synth.pcapng"
    path.write_bytes(as_pcapng(pkts))
    out = subprocess.run(
        ["tshark", "-r", str(path), "-d", "tcp.port==8443,http", "-T", "fields",
         "-e", "tcp.flags.str", "-e", "tcp.analysis.flags", "-e", "http.request.uri",
         "-e", "http.response.code"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    flags = [line.split("\t")[0] for line in out]
    assert flags[:3] == ["··········S·", "·······A··S·", "·······A····"]
    assert not any(line.split("\t")[1] for line in out), out  # no lost/retransmitted segments
    assert any(line.endswith("/orders?id=7\t") for line in out)
    assert any(line.endswith("\t200") for line in out)
    assert sum("F" in f for f in flags) == 2


def test_no_socket_and_port_reuse() -> None:
    s = Synthesizer()
    assert s.feed(Chunk(1, 1, "x", 3, b"", 0, b"", 0, True, b"data")) == []
    assert s.stats["no_socket"] == 1
    t = 10_000_000
    first = s.feed(client_side(t, True, REQ))
    s.feed(Chunk(t + 5, 100, "curl", 5, A, 40000, B, 8443, True, closed=True))
    late = s.feed(server_side(t + 50, False, REQ))  # the other end reads after the close
    assert late == [] and s.stats["after_close"] == 1
    again = s.feed(client_side(t + 3_000_000_000, True, REQ, pid=300))  # same 4-tuple, later
    assert len(first) == len(again) == 4  # handshake (3) + data, each time
    assert s.stats["connections"] == 2


def test_bytes_the_probe_did_not_copy_become_a_gap() -> None:
    s = Synthesizer()
    t = 10_000_000
    pkts = s.feed(client_side(t, True, REQ))
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    resp = Chunk(t + 1000, 100, "curl", 5, A, 40000, B, 8443, False, head + b"a" * 40,
                 listening=False, gap_after=60)  # fmt: skip
    pkts += s.feed(resp)
    pkts += s.feed(client_side(t + 2000, True, REQ))
    pkts += s.feed(client_side(t + 3000, False, head + b"b" * 100))
    entries = dissect(as_pcapng(pkts))
    assert [e["status"] for e in entries] == [200, 200]  # still in step after the hole
    assert entries[0]["response_size"] == len(head) + 100
    assert s.stats["gap_bytes"] == 60
