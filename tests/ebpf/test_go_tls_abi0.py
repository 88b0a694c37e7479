"""The Go TLS probes' stack-ABI path (Go < 1.17), end to end, with a synthetic ABI0 program.

No Go toolchain older than 1.17 exists here (README), so `abi0prog` builds with gcc a client
whose ``crypto/tls.(*Conn).Write``/``Read`` are assembly taking their arguments on the stack as
Go's ABI0 does (receiver 8(SP), buffer 16/24/32(SP), n written to 40(SP); a Go-like stack-bound
check and frame, two RETs each), carrying a pre-1.18 ``.go.buildinfo`` that says go1.16.15 and
an unstripped symbol table, and whose receiver is laid out as a Go *tls.Conn → net.TCPConn →
netFD (pfd.Sysfd the real fd, laddr/raddr *TCPAddr of the real socket). It makes three
HTTP/1.1 calls over one real loopback TCP connection to a plain Python HTTP server in this
process, every byte through those functions in real write(2)/read(2) calls (the responses in
several 512-byte reads). The daemon runs with ``--tls`` on ``lo``.

What this proves: goelf reads the old build info and calls the binary stack-ABI; the tracer
attaches the stack-ABI programs (after the stack-bound check, and at every RET); they read the
receiver, buffer and length from the stack at entry and n from 40(SP) at each RET, key calls
by process and thread, copy writes at entry through the tail call, follow the conn offsets to
the fd and 5-tuple; the entries come out of the TLS path (``tls: true``) with method, path,
status, the secret header and the client's real 5-tuple; tls-status names the process visible
with the stack ABI and offsets assumed from the go1.19 entry.

What it cannot prove: anything about a real Go 1.16 runtime — that its (*Conn).Write/Read
layouts and struct offsets are these (the offsets are the assumed go1.19 entry on both sides
here), how its prologues look, or how often its goroutines change threads inside a call (this
client is one thread; a migrated call is lost, see openssl_bpf.c). The plaintext is also on
the wire (no encryption), so the wire gives its own entries, which are not what is checked.
Root and BCC needed: fails, never skips, without them."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.daemonpeers import Daemon
from tests.ebpf import abi0prog, tlspeers
from tests.ebpf.test_go_tls import tls_status
from tests.ebpf.test_openssl import header, wait_entries

# the tracer scans /proc once a second: the client waits for this before its first call
PROBE_WAIT_S = 4.0


@pytest.fixture(scope="module")
def tls_daemon() -> Iterator[tuple[Daemon, str, str]]:
    # every binary probed here leaves uprobes to detach on exit: give that time
    with tlspeers.tls_daemon("shark-abi0-d-", exit_wait=60) as found:
        yield found


def test_stack_abi_client_calls_are_seen_with_tls_true(
    tls_daemon: tuple[Daemon, str, str],
) -> None:
    _d, sock, token = tls_daemon
    secret = "abi0-secret-7f3a"
    with tempfile.TemporaryDirectory(prefix="shark-abi0-") as tmp:
        path = abi0prog.build(tmp)
        with abi0prog.http_server() as port:
            client = abi0prog.Client(path, port, secret, 3)
            try:
                time.sleep(PROBE_WAIT_S)
                result = client.run()
            finally:
                client.kill()
            got = wait_entries(sock, token, f"dst.port == {port} and tls", 3)
            report = tls_status(sock, token)
            text = tls_status(sock, token, text=True)
    assert result["statuses"] == [201] * 3 and result["echo"] == [secret] * 3, result
    lport = int(result["local"].rsplit(":", 1)[1])
    assert len(got) == 3, ([(e["proto"], e["summary"], e["src"]["port"]) for e in got],
                           [p for p in report["processes"] if p["pid"] == client.pid])  # fmt: skip
    for i, e in enumerate(sorted(got, key=lambda e: e["ts"])):
        assert (e["tls"], e["proto"]) == (True, "http")
        assert (e["method"], e["summary"], e["status"]) == ("GET", f"/abi0/items/{i}", 201)
        assert (e["src"]["ip"], e["src"]["port"], e["dst"]["ip"], e["dst"]["port"]) == (
            "127.0.0.1", lport, "127.0.0.1", port)  # fmt: skip
        assert header(e["request"], "X-Secret") == [secret]
        assert header(e["response"], "X-Echo") == [secret]
        assert e["response"]["body"].startswith('{"path": "/abi0/items/'), e["response"]
    rows = [p for p in report["processes"] if p["pid"] == client.pid]
    assert len(rows) == 1, report["processes"]
    row, go = rows[0], rows[0]["go"]
    offsets = "table go1.19 (assumed for go1.16)"
    assert (go["version"], go["abi"], go["functions_from"], go["offsets_from"], go["error"]) == (
        abi0prog.VERSION, "stack", "symtab", offsets, None), go  # fmt: skip
    assert go["probes"] == 6, go  # two entries, four RETs
    assert row["visible"] is True and row["chunks"] >= 12, row  # 3 writes, 3 x several reads
    reason = (f"visible: Go {abi0prog.VERSION} crypto/tls uprobes (stack ABI, functions from "
              f"symtab, offsets from {offsets})")  # fmt: skip
    assert row["reason"] == reason, row
    head = f"{client.pid:>7}  {row['comm'][:16]:<16} {'yes':<8} "
    line = re.compile(rf"{re.escape(head)} *\d+  {re.escape(reason)}")
    assert any(line.fullmatch(t) for t in text), (line.pattern, text)
    lost = report["lost"]
    assert lost["go_writes_at_return"] == 0, lost  # the writes were copied at entry
    assert lost["go_stack_returns_unmatched"] == 0, lost  # one thread: every RET its own call
    assert lost["go_stack_returns_dropped"] == 0, lost
