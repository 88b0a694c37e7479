"""OpenSSL plaintext through uprobes on ``SSL_read``/``SSL_write`` and their ``_ex`` variants.

`openssl_bpf.c` saves the buffer at entry (by thread), copies what the call moved at return in
16 KiB chunks into a ring buffer, and learns the connection from what the kernel does inside the
call: the ``sock:sock_{send,recv}_length`` tracepoints (or ``tcp_sendmsg``/``tcp_recvmsg``
kprobes on kernels without them) give the socket, whose addresses are read at the offsets the
running kernel's BTF gives; the ``syscalls`` read/write/send/recv tracepoints give the fd. A call
served from OpenSSL's buffer reuses what the same ``SSL *`` was last seen on. When nothing gave a
socket the 5-tuple is looked up from the fd in ``/proc``.

Every ``libssl`` the processes map is probed once (by device and inode), found through
``/proc/PID/maps`` and opened through ``/proc/PID/root`` (so a container's own libssl is found).
Probes fire for every process mapping the library; the kernel drops our own process's calls and,
when targets are set, every process that is not one of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from shark_tui.ebpf import loader
from shark_tui.ebpf.btf import member_offsets
from shark_tui.engine.tlssynth import Chunk

__all__ = ["LibInfo", "OpenSSLTracer", "ProcInfo", "exe_path", "read_text"]

PROGRAM: Final = os.path.join(os.path.dirname(__file__), "openssl_bpf.c")
FUNCS: Final = (("SSL_write", "write"), ("SSL_read", "read"),
                ("SSL_write_ex", "write_ex"), ("SSL_read_ex", "read_ex"))  # fmt: skip
_HDR: Final = struct.Struct("<QQIIiIIIHHH16s16sBB16sQ")
_UNREAD: Final = 0x80  # the kernel could not read the chunk: it is at ``addr`` in the process
EXITED_KEEP: Final = 600.0
GO_COMPILED: Final = (1, 19)  # the Go struct offsets compiled in (goelf.OFFSET_TABLE)
# The fields the probes read, all a binary is checked against: the same in every table entry so
# far (1.19 to 1.27). runtime.g.goid, which moves (160 in 1.23), is not read: calls are keyed
# by the g pointer.
_GO_FIELDS: Final = {"CONN": "crypto/tls.Conn.conn", "CONNFD": "net.conn.fd",
                     "PFD": "net.netFD.pfd", "SYSFD": "internal/poll.FD.Sysfd",
                     "LADDR": "net.netFD.laddr", "RADDR": "net.netFD.raddr",
                     "IP": "net.TCPAddr.IP", "PORT": "net.TCPAddr.Port"}  # fmt: skip
CALL_LIMIT: Final = 64 * 16384  # MAX_CHUNKS * CHUNK in openssl_bpf.c: bytes copied per call
_LIBSSL: Final = re.compile(r"/libssl[.-][^/]*\.so[^/]*$|/libssl\.so[^/]*$")


@dataclass
class LibInfo:
    """A probed libssl file: ``error`` says why probing it failed."""

    path: str
    attached: list[str] = field(default_factory=list)
    error: str | None = None


def _go_offsets(version: tuple[int, int]) -> dict[str, int]:
    from shark_tui.ebpf.goelf import OFFSET_TABLE

    table = OFFSET_TABLE[version]
    return {k: table[field] for k, field in _GO_FIELDS.items()}


@dataclass
class GoInfo:
    """A probed Go executable: its version, where its functions and offsets came from, and
    ``error`` when its plaintext cannot be seen."""

    path: str
    version: str | None = None
    funcs_from: str | None = None
    offsets_from: str | None = None
    abi: str | None = None  # "register" (Go >= 1.17) or "stack" (ABI0, Go < 1.17)
    probes: int = 0
    error: str | None = None


@dataclass
class ProcInfo:
    """What the tracer knows of one process."""

    pid: int
    comm: str
    exe: str
    libs: list[str] = field(default_factory=list)  # keys into OpenSSLTracer.libs
    go: GoInfo | None = None  # a Go program
    chunks: int = 0
    bytes: int = 0
    last_seen: float = 0.0
    exited: bool = False


def read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _listening(pid: int) -> set[int]:
    """Ports listening in the network namespace of ``pid`` (TCP, v4 and v6)."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        for line in read_text(f"/proc/{pid}/net/{name}").splitlines()[1:]:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A":
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def _read_memory(pid: int, addr: int, length: int) -> bytes | None:
    """``length`` bytes at ``addr`` in process ``pid`` (faulting paged-out memory back in, which
    a probe cannot), or None. Read right after the call, so the buffer normally still holds
    what the call moved; best effort."""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as f:
            f.seek(addr)
            data = f.read(length)
    except (OSError, OverflowError, ValueError):
        return None
    return data if len(data) == length else None


def _socket_tuple(pid: int, fd: int) -> tuple[int, bytes, int, bytes, int] | None:
    """(family, local address, local port, remote address, remote port) of a TCP fd."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    m = re.fullmatch(r"socket:\[(\d+)\]", target)
    if m is None:
        return None
    inode = m.group(1)
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in read_text(f"/proc/{pid}/net/{name}").splitlines()[1:]:
            parts = line.split()
            if len(parts) > 9 and parts[9] == inode:
                la, lp = parts[1].split(":")
                ra, rp = parts[2].split(":")
                return family, _proc_addr(la), int(lp, 16), _proc_addr(ra), int(rp, 16)
    return None


def _proc_addr(hexaddr: str) -> bytes:
    raw = bytes.fromhex(hexaddr)
    # /proc/net/tcp prints each 32-bit word in host (little-endian) order
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))


class OpenSSLTracer:
    """Load the program, probe every libssl in use, and hand chunks to ``on_chunk``.

    ``poll`` (from one thread) reads the ring buffer; ``scan`` (now and then) probes libraries
    that appeared. ``close`` detaches everything.
    """

    def __init__(
        self,
        on_chunk: Callable[[Chunk], None],
        targets: Iterable[int] | None = None,
    ) -> None:
        self.on_chunk = on_chunk
        self.targets = set(targets) if targets is not None else None
        self.bcc: Any = None
        self.bpf: Any = None
        self.path = "none"
        self.libs: dict[tuple[int, int], LibInfo] = {}
        self.go_bins: dict[tuple[int, int], GoInfo | None] = {}  # None: not a Go program
        self._fd_tuples: dict[tuple[int, int, int], tuple[int, bytes, int, bytes, int]] = {}
        self.procs: dict[int, ProcInfo] = {}
        self.stats = {"events": 0, "closes": 0, "unresolved": 0, "resolved_from_proc": 0,
                      "unreadable_recovered": 0, "unreadable_lost": 0}  # fmt: skip
        self._clock_offset = time.time_ns() - time.monotonic_ns()
        self._listen_cache: dict[int, tuple[float, set[int]]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Compile and attach; raises `loader.EbpfUnavailable` with the reason."""
        self.bcc = loader.prepare()
        self.path = loader.kernel_path()
        try:
            off = member_offsets("sock_common")
        except Exception as exc:
            raise loader.EbpfUnavailable(f"cannot read socket offsets from BTF: {exc}") from exc
        defines = {
            "SELF_PID": os.getpid(),
            "TARGETED": int(self.targets is not None),
            "KPROBES": int(self.path == "kprobes"),
            "TRACEPOINTS": int(self.path == "tracepoints"),
            "OFF_DADDR": off["skc_daddr"],
            "OFF_SADDR": off["skc_rcv_saddr"],
            "OFF_DPORT": off["skc_dport"],
            "OFF_NUM": off["skc_num"],
            "OFF_FAMILY": off["skc_family"],
            "OFF_V6_DADDR": off.get("skc_v6_daddr", 0),
            "OFF_V6_SADDR": off.get("skc_v6_rcv_saddr", 0),
            **{f"GO_{k}_OFF": v for k, v in _go_offsets(GO_COMPILED).items()},
        }
        text = "".join(f"#define {k} {v}\n" for k, v in defines.items()) + read_text(PROGRAM)
        try:
            self.bpf = self.bcc.BPF(text=text)
        except Exception as exc:
            raise loader.EbpfUnavailable(f"the BPF program did not load: {exc}") from exc
        if self.path == "kprobes":
            self.bpf.attach_kprobe(event="tcp_sendmsg", fn_name="kp_tcp_sendmsg")
            self.bpf.attach_kprobe(event="tcp_recvmsg", fn_name="kp_tcp_recvmsg")
        if self.targets is not None:
            self.set_targets(self.targets)
        # Go writes are copied at entry by a tail-called program, stack-ABI reads at their RET
        # by the same one (see openssl_bpf.c)
        emit = self.bpf.load_func("go_emit", self.bcc.BPF.KPROBE)
        self.bpf["go_tail"][ctypes.c_int(0)] = ctypes.c_int(emit.fd)
        self.bpf["events"].open_ring_buffer(self._on_event)
        self.probe_system()
        self.scan()

    def close(self) -> None:
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()
            self.bpf = None

    def set_targets(self, pids: Iterable[int]) -> None:
        """Only these processes (when the tracer was started with targets)."""
        self.targets = set(pids)
        table = self.bpf["targets"]
        table.clear()
        for pid in self.targets:
            table[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    # -- libraries ------------------------------------------------------------------------------

    def scan(self) -> None:
        """Find processes mapping a libssl; probe libraries not probed yet."""
        seen: set[int] = set()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid == os.getpid() or (self.targets is not None and pid not in self.targets):
                continue
            go = self._probe_go(pid)
            libs = set()
            for line in read_text(f"/proc/{pid}/maps").splitlines():
                parts = line.split(None, 5)
                if len(parts) == 6 and _LIBSSL.search(parts[5].strip()):
                    libs.add(parts[5].strip())
            if not libs and go is None:
                continue
            seen.add(pid)
            info = self.procs.get(pid)
            if info is None:
                info = self.procs[pid] = ProcInfo(pid, read_text(f"/proc/{pid}/comm").strip(),
                                                  exe_path(pid))  # fmt: skip
            keys = []
            for path in sorted(libs):
                key = self._probe(pid, path)
                if key is not None:
                    keys.append(path if key not in self.libs else self.libs[key].path)
            info.libs = keys
            info.go = go
        now = time.time()
        for pid, info in list(self.procs.items()):
            if pid in seen or os.path.exists(f"/proc/{pid}"):
                continue
            info.exited = True
            # a short-lived client (curl) stays listed a while after it exited
            if not info.chunks or now - info.last_seen > EXITED_KEEP or len(self.procs) > 4096:
                del self.procs[pid]

    def _probe_go(self, pid: int) -> GoInfo | None:
        """Probe the executable of ``pid`` if it is a Go program using crypto/tls (once per
        file): entry uprobes on (*Conn).Write/Read and one on every RET of each."""
        exe = f"/proc/{pid}/exe"
        try:
            st = os.stat(exe)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        if key in self.go_bins:
            return self.go_bins[key]
        from shark_tui.ebpf.goelf import inspect

        b = inspect(exe)
        if b.version is None and not b.funcs:
            self.go_bins[key] = None  # not Go
            return None
        abi = {True: "register", False: "stack", None: None}[b.register_abi]
        info = self.go_bins[key] = GoInfo(exe_path(pid), b.version, b.funcs_from,
                                          b.offsets_from, abi, error=b.error)  # fmt: skip
        if info.error is not None:
            return info
        want = _go_offsets(GO_COMPILED)
        have = {k: b.offsets.get(f) for k, f in _GO_FIELDS.items()}
        if have != want:
            info.error = f"{b.version}: struct offsets {have} differ from the compiled {want}"
            return info
        # the stack ABI (Go < 1.17) reads arguments and result from the stack and keys calls
        # by thread (openssl_bpf.c says what that loses); tested only with a synthetic ABI0
        # program (tests/ebpf/abi0prog.py): no Go older than 1.17 can be built here (README)
        suffix = "" if b.register_abi else "_stack"
        try:
            for name, fn in (("crypto/tls.(*Conn).Write", "go_enter_write"),
                             ("crypto/tls.(*Conn).Read", "go_enter_read")):  # fmt: skip
                f = b.funcs[name]
                at = _after_stack_check(exe, f.start, f.start_offset)
                self.bpf.attach_uprobe(name=exe, addr=at, fn_name=fn + suffix)
                for ret in f.rets:
                    self.bpf.attach_uprobe(name=exe, addr=ret, fn_name="go_return" + suffix)
                info.probes += 1 + len(f.rets)
        except Exception as exc:
            info.error = f"probe failure: {exc}"
        return info

    def _probe(self, pid: int, path: str) -> tuple[int, int] | None:
        return self._probe_file(f"/proc/{pid}/root{path}", path)

    def probe_system(self) -> None:
        """Probe the host's own libssl files now, so a process started later (a ``curl``
        that lives 50 ms) is traced from its first call, before any scan could see it."""
        for path in system_libssl():
            self._probe_file(path, path)

    def _probe_file(self, host_path: str, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(host_path)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        if key in self.libs:
            return key
        lib = self.libs[key] = LibInfo(path)
        for sym, fn in FUNCS:
            try:
                self.bpf.attach_uprobe(name=host_path, sym=sym, fn_name=f"enter_{fn}")
                self.bpf.attach_uretprobe(name=host_path, sym=sym, fn_name=f"return_{fn}")
                lib.attached.append(sym)
            except Exception as exc:
                if sym.endswith("_ex"):
                    continue  # OpenSSL 1.1.0 and older have no _ex functions
                lib.error = f"probing {sym} in {path} failed: {exc}"
        if not lib.attached and lib.error is None:
            lib.error = f"no SSL_read/SSL_write symbols in {path}"
        return key

    # -- events ---------------------------------------------------------------------------------

    def poll(self, timeout_ms: int = 100) -> None:
        if self.bpf is not None:
            self.bpf.ring_buffer_poll(timeout_ms)

    def lost(self) -> dict[str, int]:
        table = self.bpf["lost"] if self.bpf is not None else None
        if table is None:
            return {}
        vals = [table[ctypes.c_int(i)].value for i in range(6)]
        return {"ring_full_chunks": vals[0], "bytes_past_max_call": vals[1],
                "unreadable_bytes": vals[2], "go_writes_at_return": vals[3],
                "go_stack_returns_unmatched": vals[4], "go_stack_returns_dropped": vals[5],
                # of the chunks the kernel could not read: read from /proc/PID/mem instead, or lost
                "unreadable_recovered": self.stats["unreadable_recovered"],
                "unreadable_lost": self.stats["unreadable_lost"]}  # fmt: skip

    def _on_event(self, _ctx: Any, data: Any, size: int) -> None:
        raw = ctypes.string_at(data, size)
        (ts, ssl, pid, _tid, fd, length, offset, total, family, lport, rport, laddr, raddr,
         direction, kind, comm, addr) = _HDR.unpack_from(raw)  # fmt: skip
        self.stats["events"] += 1
        if family == socket.AF_INET:
            la, ra = laddr[:4], raddr[:4]
        elif family == socket.AF_INET6:
            la, ra = laddr, raddr
            if la[:12] == ra[:12] == b"\0" * 10 + b"\xff\xff":  # v4-mapped
                la, ra = la[12:], ra[12:]
        else:
            found = self._fd_tuples.get((pid, fd, ssl))
            if found is None and fd >= 0:
                found = _socket_tuple(pid, fd)
                if found is not None:
                    if len(self._fd_tuples) > 65536:
                        self._fd_tuples.clear()
                    self._fd_tuples[(pid, fd, ssl)] = found
            if found is None:
                self.stats["unresolved"] += 1
                la, ra, lport, rport = b"", b"", 0, 0
            else:
                self.stats["resolved_from_proc"] += 1
                _fam, la, lport, ra, rport = found
        name = comm.split(b"\0", 1)[0].decode(errors="replace")
        ts_ns = ts + self._clock_offset
        if kind == 1:
            self.stats["closes"] += 1
            self.on_chunk(Chunk(ts_ns, pid, name, fd, la, lport, ra, rport, True, closed=True))
            return
        if kind & _UNREAD:
            kind &= ~_UNREAD
            got = _read_memory(pid, addr, length)
            if got is None:
                self.stats["unreadable_lost"] += 1
                return
            self.stats["unreadable_recovered"] += 1
            payload = got
        else:
            payload = raw[_HDR.size : _HDR.size + length]
        info = self.procs.get(pid)
        if info is None:
            info = self.procs[pid] = ProcInfo(pid, name, exe_path(pid))
        info.chunks += 1
        info.bytes += len(payload)
        info.last_seen = time.time()
        self.on_chunk(
            Chunk(
                ts_ns,
                pid,
                name,
                fd,
                la,
                lport,
                ra,
                rport,
                direction == 0,
                payload,
                listening=lport in self._listen_ports(pid),
                library="go" if kind == 2 else "openssl",
                # the last chunk the kernel copies of a bigger call: the rest becomes a gap
                gap_after=total - CALL_LIMIT if offset + length == CALL_LIMIT < total else 0,
            )
        )

    def _listen_ports(self, pid: int) -> set[int]:
        now = time.monotonic()
        hit = self._listen_cache.get(pid)
        if hit is None or now - hit[0] > 1.0:
            hit = self._listen_cache[pid] = (now, _listening(pid))
        return hit[1]

    def socket_io(self) -> list[tuple[int, int, bytes, int, bytes, int, int, int]]:
        """Per process and connection: (pid, family, local addr, local port, remote addr,
        remote port, bytes inside SSL calls, bytes outside)."""
        if self.bpf is None:
            return []
        out = []
        for k, v in self.bpf["sockio"].items():
            fam = k.t.family
            n = 4 if fam == socket.AF_INET else 16
            out.append((k.pid, fam, bytes(k.t.laddr[:n]), k.t.lport, bytes(k.t.raddr[:n]),
                        k.t.rport, v.ssl_bytes, v.plain_bytes))  # fmt: skip
        return out


def _after_stack_check(path: str, start: int, offset: int) -> int:
    """The address just past a Go function's stack-growth check (``cmp …, [r14+16]; jbe``):
    a probe there fires once per call, not again when the function restarts after growing
    its stack. ``start`` when the prologue is not the expected one."""
    try:
        import capstone  # type: ignore[import-untyped]

        with open(path, "rb") as f:
            f.seek(offset)
            code = f.read(64)
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        for n, ins in enumerate(md.disasm(code, start)):
            if ins.mnemonic in ("jbe", "jna"):
                return int(ins.address + ins.size)
            if n >= 4:
                break
    except Exception:  # no capstone, an unreadable file, bytes it cannot decode: the start
        pass
    return start


def system_libssl() -> list[str]:
    """The libssl files ``ldconfig`` knows (resolved, once each)."""
    import subprocess

    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    paths = []
    for line in out.splitlines():
        path = line.rpartition(" => ")[2].strip()
        if _LIBSSL.search(path):
            real = os.path.realpath(path)
            if real not in paths and os.path.exists(real):
                paths.append(real)
    return paths


def exe_path(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:  # gone, or a kernel thread
        return ""
