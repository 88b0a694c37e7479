"""Real servers and logging clients in namespace-pods, a query-serving daemon, and oracles,
for the daemon query tests (``tests/integration/test_daemon_queries.py``).

- ``Daemon(store, *args)`` — ``shark-tui daemon`` as a process (stderr collected), as in
  ``tests/engine/test_daemon.py``.
- ``start_servers(node, stubs) -> Servers`` — in the first three pods of a ``tests.netpods.Node``:
  the aiohttp backend of ``tests/peers/http_backend.py`` on ``[::]:8080`` plus a raw TCP
  responder on 7000 (pod 0), the grpcio echo server of ``tests/peers/grpc_server.py`` on
  ``[::]:50051`` (pod 1), ``redis-server`` on 6379, IPv4 and IPv6 (pod 2). Readiness is checked
  inside each pod (its own ``lo`` or the server's "listening" line), so no probe crosses the
  veths a daemon captures.
- ``run_clients([(pod, plan), ...]) -> list[Record]`` — one client process per pod, all at once:
  each runs its plan (``http``: http.client on one keep-alive connection, ``{"sleep": s}`` holding
  it open between requests; ``redis``: redis-py on one
  connection; ``grpc``: grpcio on one channel; ``tcp``: a raw socket) and logs every request it
  made — local and remote address, method, summary, status, what it sent, when — as JSON. That
  log is the truth the tests compare the daemon's entries with.
- ``Tcpdump(iface, path)`` and ``tshark_packets(path)`` — the packet oracle.

Run in a pod as ``python -m tests.daemonpeers client`` (plan as JSON on stdin): this module
imports only the standard library at the top so that the client starts fast.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARK = str(REPO / ".venv" / "bin" / "shark-tui")
if not os.path.exists(SHARK):
    SHARK = os.path.join(os.path.dirname(sys.executable), "shark-tui")

HTTP_PORT = 8080
TCP_PORT = 7000
GRPC_PORT = 50051
REDIS_PORT = 6379
GRPC_SERVICE = "shark.test.Echo"

Record = dict[str, Any]


def norm_ip(ip: str) -> str:
    """One spelling per address; an IPv4-mapped IPv6 address (a dual-stack socket's view of an
    IPv4 peer) is the IPv4 address that is on the wire."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------------------------
# the daemon


class Daemon:
    """`shark-tui daemon ARGS` as a process, its stderr collected line by line."""

    def __init__(self, store: str, *args: str) -> None:
        self.store = store
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [SHARK, "daemon", "--store", store, *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 10.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"daemon never said {text!r}; it said: {self.lines}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._reader.join(5)
        return rc


# --------------------------------------------------------------------------------------------
# servers in pods


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    t.start()
    t.join(timeout)
    return out[0].strip() if out else ""


_TCP_RESPONDER = r"""
import socket, sys, threading
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
s.listen(64)
print("listening", flush=True)
def serve(c):
    got = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        got += d
    c.sendall(b"\x02\x03reply:" + str(len(got)).encode() + b"\xff")
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


@dataclass
class Servers:
    http: Any  # the pods
    grpc: Any
    redis: Any


def start_servers(node: Any, stubs: str, workdir: Path) -> Servers:
    """Start every server at once, then wait for each (see the module docstring)."""
    p_http, p_grpc, p_redis = node.pods[:3]
    py = sys.executable
    text = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL, "text": True, "cwd": REPO}
    procs = {
        "http": p_http.popen(
            [py, str(REPO / "tests/peers/http_backend.py"), "--host", "::",
             "--port", str(HTTP_PORT)], **text,
        ),
        "tcp": p_http.popen([py, "-c", _TCP_RESPONDER, str(TCP_PORT)], **text),
        "grpc": p_grpc.popen(
            [py, str(REPO / "tests/peers/grpc_server.py"), "--host", "::",
             "--port", str(GRPC_PORT), "--stubs", stubs], **text,
        ),
    }  # fmt: skip
    rdir = workdir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    p_redis.popen(
        ["redis-server", "--port", str(REDIS_PORT), "--bind", "0.0.0.0", "::",
         "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", str(rdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for name, proc in procs.items():
        line = _readline(proc, 20)
        if not line.startswith("listening"):
            raise AssertionError(f"the {name} server in its pod did not start: {line!r}")
    deadline = time.monotonic() + 10
    ping = ["redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT), "ping"]
    while p_redis.run(ping, capture_output=True, text=True).stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            raise AssertionError("redis-server in its pod never answered PING")
        time.sleep(0.03)
    return Servers(p_http, p_grpc, p_redis)


# --------------------------------------------------------------------------------------------
# clients in pods


def run_clients(plans: list[tuple[Any, dict[str, Any]]], timeout: float = 60) -> list[Record]:
    """Run each (pod, plan) in a client process in that pod, all at once; every request made."""
    running = []
    for pod, plan in plans:
        proc = pod.popen(
            [sys.executable, "-m", "tests.daemonpeers", "client"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=REPO,
        )  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(plan))
        proc.stdin.close()
        running.append((pod, proc))
    records: list[Record] = []
    for pod, proc in running:
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read()
        err = proc.stderr.read()
        rc = proc.wait(timeout)
        if rc != 0:
            raise AssertionError(f"client in {pod.name} failed ({rc}): {err[-3000:]}")
        records += json.loads(out)
    return records


def _record(
    proto: str, local: tuple[Any, ...], host: str, port: int, t0: float, **kw: Any
) -> Record:
    rec: Record = {
        "proto": proto,
        "src": {"ip": norm_ip(local[0]), "port": local[1]},
        "dst": {"ip": norm_ip(host), "port": port},
        "t0": t0,
        "t1": time.time(),
        "method": None,
        "summary": None,
        "status": None,
        "path": None,
        "headers": [],
        "body": None,
        "error_text": None,
        "text": None,
    }
    rec.update(kw)
    return rec


def _http(s: dict[str, Any]) -> list[Record]:
    import http.client

    host, port = s["host"], s["port"]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    out = []
    for op in s["ops"]:
        if "sleep" in op:  # hold the connection open, idle
            time.sleep(op["sleep"])
            continue
        body = op.get("body")
        headers = dict(op.get("headers", {}))
        t0 = time.time()
        conn.request(op["method"], op["path"], body=body.encode() if body else None,
                     headers=headers)  # fmt: skip
        assert conn.sock is not None
        local = conn.sock.getsockname()
        resp = conn.getresponse()
        resp.read()
        out.append(_record(
            "http", local, host, port, t0, method=op["method"], summary=op["path"],
            path=op["path"].split("?")[0], status=resp.status, body=body,
            headers=[[k, v] for k, v in headers.items()],
        ))  # fmt: skip
    conn.close()
    return out


#: The RESP2 reply type (the entry's status) of each reply redis-py hands back.
_REDIS_TYPES: dict[type, str] = {bytes: "bulk", int: "integer", list: "array", type(None): "null"}


def _redis(s: dict[str, Any]) -> list[Record]:
    import redis

    host, port = s["host"], s["port"]
    # one connection, nothing sent but the commands of the plan: RESP2 (redis-py 8 would say
    # HELLO 3 and CLIENT MAINT_NOTIFICATIONS first), no CLIENT SETINFO
    r = redis.Redis(host=host, port=port, protocol=2, lib_name=None, lib_version=None,
                    single_connection_client=True, socket_timeout=10)  # fmt: skip
    out: list[Record] = []
    for args in s["ops"]:
        t0 = time.time()
        err = None
        try:
            reply = r.execute_command(*args)
        except redis.ResponseError as exc:
            err = str(exc)
            status = f"ERR {err}"  # redis-py cuts the error code off; the plans only cause ERR
        else:
            status = _REDIS_TYPES.get(type(reply), "?")
            if args[0].upper() == "SET" and reply is True:
                status = "OK"
        conn = r.connection
        assert conn is not None and conn._sock is not None
        local = conn._sock.getsockname()
        out.append(_record(
            "redis", local, host, port, t0, method=args[0].upper(), summary=args[1],
            status=status, error_text=err, body=" ".join(args),
        ))  # fmt: skip
    r.close()
    return out


def _established(host: str, port: int) -> list[tuple[str, int]]:
    """Local ends of this namespace's established connections to host:port (``ss``)."""
    res = subprocess.run(
        ["ss", "-Htn", "state", "established", "dst", hostport(host, port)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = []
    for line in res.stdout.splitlines():
        local = line.split()[2]
        ip, _, p = local.rpartition(":")
        out.append((ip.strip("[]"), int(p)))
    return out


def _grpc(s: dict[str, Any]) -> list[Record]:
    sys.path.insert(0, s["stubs"])
    import echo_pb2 as pb2
    import echo_pb2_grpc as pb2_grpc
    import grpc

    host, port = s["host"], s["port"]
    channel = grpc.insecure_channel(hostport(host, port))
    stub = pb2_grpc.EchoStub(channel)
    out = []
    local: tuple[str, int] | None = None
    for op in s["ops"]:
        kind, text = op["call"], op["text"]
        t0 = time.time()
        try:
            if kind == "Unary":
                _, call = stub.Unary.with_call(pb2.EchoRequest(text=text, count=1), timeout=10)
            elif kind == "ServerStream":
                call = stub.ServerStream(pb2.EchoRequest(text=text, count=op["n"]), timeout=10)
                assert len(list(call)) == op["n"]
            else:  # ClientStream
                msgs = [pb2.EchoRequest(text=f"{text}{i}") for i in range(op["n"])]
                _, call = stub.ClientStream.with_call(iter(msgs), timeout=10)
            code = call.code().value[0]
        except grpc.RpcError as exc:
            code = exc.code().value[0]
        conns = _established(host, port)
        assert len(conns) == 1, f"expected one gRPC connection, found {conns}"
        assert local is None or conns[0] == local, "the gRPC channel reconnected"
        local = conns[0]
        method = f"{GRPC_SERVICE}/{kind}"
        out.append(_record(
            "grpc", local, host, port, t0, method=method, summary=f"/{method}",
            path=f"/{method}", status=code, text=text,
        ))  # fmt: skip
    channel.close()
    return out


def _tcp(s: dict[str, Any]) -> list[Record]:
    import socket

    host, port = s["host"], s["port"]
    payload = bytes.fromhex(s["hex"])
    t0 = time.time()
    sock = socket.create_connection((host, port), timeout=10)
    local = sock.getsockname()
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    sock.close()
    summary = f"{len(payload)} bytes \u21c4 {len(got)} bytes"
    return [_record("tcp", local, host, port, t0, summary=summary)]


_SESSIONS = {"http": _http, "redis": _redis, "grpc": _grpc, "tcp": _tcp}


def client_main() -> None:
    plan = json.load(sys.stdin)
    records: list[Record] = []
    for s in plan["sessions"]:
        records += _SESSIONS[s["kind"]](s)
    json.dump(records, sys.stdout)


# --------------------------------------------------------------------------------------------
# the packet oracle


class Tcpdump:
    """tcpdump on one interface, every TCP packet, into ``path``."""

    def __init__(self, iface: str, path: str) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", iface, "-B", "65536", "--immediate-mode", "-U", "-w", path, "tcp"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on ..."
        assert "listening" in line, line

    def stop(self) -> None:
        time.sleep(0.2)  # what the kernel still holds reaches tcpdump (--immediate-mode)
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=10)
        # else it is no oracle
        assert re.search(r"^0 packets dropped by kernel", err, re.M), err


@dataclass(frozen=True)
class Pkt:
    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    length: int
    ipid: str
    win: int

    @property
    def ident(self) -> tuple[Any, ...]:
        """The packet without its timestamp (the same on every interface it crossed)."""
        return (self.src, self.sport, self.dst, self.dport, self.seq, self.ack, self.flags,
                self.length, self.ipid, self.win)  # fmt: skip

    @property
    def conn(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """The connection, as a sorted pair of ends."""
        a, b = (self.src, self.sport), (self.dst, self.dport)
        return (a, b) if a <= b else (b, a)


def tshark_packets(path: str) -> list[Pkt]:
    """Every TCP packet in ``path``, in file order (tshark must read it without complaint)."""
    res = subprocess.run(
        ["tshark", "-r", path, "-T", "fields", "-E", "separator=,", "-e", "frame.time_epoch",
         "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "ipv6.dst",
         "-e", "tcp.dstport", "-e", "tcp.seq_raw", "-e", "tcp.ack_raw", "-e", "tcp.flags",
         "-e", "tcp.len", "-e", "ip.id", "-e", "tcp.window_size_value"],
        capture_output=True, text=True,
    )  # fmt: skip
    complaints = [line for line in res.stderr.splitlines() if line.strip()
                  and "Running as user" not in line]  # fmt: skip
    assert res.returncode == 0 and not complaints, f"tshark on {path}: {res.stderr}"
    out = []
    for line in res.stdout.splitlines():
        ts, s4, s6, sp, d4, d6, dp, seq, ack, flags, ln, ipid, win = line.split(",")
        out.append(Pkt(float(ts), norm_ip(s4 or s6), int(sp), norm_ip(d4 or d6), int(dp),
                       int(seq), int(ack), int(flags, 16), int(ln), ipid, int(win)))  # fmt: skip
    return out


if __name__ == "__main__" and sys.argv[1:] == ["client"]:
    client_main()
