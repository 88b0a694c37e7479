"""``tls-status``: every process using TLS, whether its plaintext is visible, and why not.

A process is listed when it maps a libssl or when a connection it reads or writes looks like
TLS on the wire (the kernel tracepoints attribute each connection's bytes to a process, and say
whether they moved inside an ``SSL_read``/``SSL_write`` call). Never silent: a process with TLS
connections and no plaintext gets one of these reasons —

- ``probe failure``: attaching to its libssl failed (the error is quoted);
- ``BIO-based I/O``: probes are on its libssl, its TLS connections carry bytes, but none of it
  went through ``SSL_read``/``SSL_write`` (e.g. ``openssl s_server -www`` drives an SSL BIO);
- ``Go crypto/tls``: a Go program the Go probes were not set on, with why (struct offsets
  unknown, no crypto/tls functions found, …);
- ``statically linked library``: no libssl mapped, but the executable holds ``SSL_write``;
- ``no symbols``: TLS on the wire, and nothing known in the executable to probe.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import cache
from typing import Any

from shark_tui.ebpf.openssl import exe_path, read_text

__all__ = ["exe_kind", "report"]

Tuple4 = tuple[bytes, int, bytes, int]


@cache
def exe_kind(path: str) -> str:
    """``go``, ``static-openssl`` or ``unknown`` for an executable."""
    try:
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection

        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf.get_section_by_name(".go.buildinfo") is not None:
                return "go"
            for name in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(name)
                if not isinstance(sec, SymbolTableSection):
                    continue
                # defined here, not merely imported from libssl (as /usr/bin/openssl does)
                for sym in sec.get_symbol_by_name("SSL_write") or ():
                    if sym["st_shndx"] != "SHN_UNDEF":
                        return "static-openssl"
    except Exception:
        return "unknown"
    return "unknown"


def _fmt(addr: bytes, port: int) -> str:
    if len(addr) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, addr)}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, addr)}]:{port}"


def report(cap: Any, wire_tls: Callable[[Tuple4], bool]) -> dict[str, Any]:
    """The status of a running `TlsCapture` (its lock held by the caller)."""
    tracer = cap.tracer
    tracer.scan()  # fresh: a process that started since the last scan is judged on its maps
    by_pid: dict[int, dict[str, Any]] = {}
    for pid, info in tracer.procs.items():
        by_pid[pid] = {"pid": pid, "comm": info.comm, "exe": info.exe, "libs": list(info.libs),
                       "exited": info.exited,
                       "go": None if info.go is None else {
                           "version": info.go.version, "functions_from": info.go.funcs_from,
                           "offsets_from": info.go.offsets_from, "abi": info.go.abi,
                           "probes": info.go.probes,
                           "error": info.go.error},
                       "chunks": info.chunks, "bytes": info.bytes, "tls_connections": [],
                       "unseen_connections": []}  # fmt: skip
    for pid, fam, la, lp, ra, rp, ssl_bytes, plain_bytes in tracer.socket_io():
        if fam == socket.AF_INET6 and la[:12] == ra[:12] == b"\0" * 10 + b"\xff\xff":
            la, ra = la[12:], ra[12:]
        on_wire = wire_tls((la, lp, ra, rp))
        if not on_wire and pid not in by_pid:
            continue
        row = by_pid.get(pid)
        if row is None and not os.path.exists(f"/proc/{pid}"):
            continue  # gone before anything was learnt of it
        if row is None:
            comm = read_text(f"/proc/{pid}/comm").strip()
            exe = exe_path(pid)
            row = by_pid[pid] = {"pid": pid, "comm": comm, "exe": exe, "libs": [], "chunks": 0,
                                 "bytes": 0, "tls_connections": [],
                                 "unseen_connections": []}  # fmt: skip
        if on_wire:
            conn = f"{_fmt(la, lp)} ⇄ {_fmt(ra, rp)}"
            row["tls_connections"].append(conn)
            if plain_bytes and not ssl_bytes:
                row["unseen_connections"].append(conn)
    processes = []
    for pid in sorted(by_pid):
        row = by_pid[pid]
        # (a process whose plaintext was captured is listed even when its wire is not TLS:
        # the synthetic stack-ABI client of tests/ebpf, say)
        if not row["libs"] and not row["tls_connections"] and not row["chunks"]:
            continue
        row["visible"], row["reason"] = _verdict(tracer, row)
        processes.append(row)
    return {
        "kernel_path": tracer.path,
        "libraries": [
            {"path": lib.path, "attached": lib.attached, "error": lib.error}
            for lib in tracer.libs.values()
        ],
        "processes": processes,
        "lost": tracer.lost(),
        "synthetic": dict(cap.synth.stats),
        "tracer": dict(tracer.stats),
    }


def _verdict(tracer: Any, row: dict[str, Any]) -> tuple[bool | None, str]:
    failed = [lib.error for lib in tracer.libs.values() if lib.path in row["libs"] and lib.error]
    go = row.get("go")
    if row["chunks"]:
        if go is not None:
            abi = "stack ABI, " if go.get("abi") == "stack" else ""
            return True, (
                f"visible: Go {go['version']} crypto/tls uprobes ({abi}functions from "
                f"{go['functions_from']}, offsets from {go['offsets_from']})"
            )
        if row["unseen_connections"]:
            return True, "visible on some connections; others never passed through SSL_read/write"
        return True, "visible: SSL_read/SSL_write uprobes"
    if go is not None:
        if go["error"]:
            return False, f"Go crypto/tls: {go['error']}"
        if not row["libs"]:
            return None, f"Go {go['version']}: {go['probes']} probes attached; no TLS seen yet"
    if row["libs"]:
        if failed:
            return False, f"probe failure: {failed[0]}"
        if row["tls_connections"]:
            return False, (
                "BIO-based I/O: its TLS connections never went through SSL_read/SSL_write"
            )
        return None, "probes attached; no TLS traffic seen yet"
    kind = exe_kind(row["exe"]) if row["exe"] else "unknown"
    if kind == "go":
        return False, "Go crypto/tls: not probed by the OpenSSL tracer"
    if kind == "static-openssl":
        return False, f"statically linked library: OpenSSL inside {row['exe']}"
    return False, "no symbols: TLS on the wire, no known TLS library to probe"
