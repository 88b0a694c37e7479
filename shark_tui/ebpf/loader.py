"""Getting BCC going: the checks before a program is compiled, each failing with one line that
says what is missing and how to fix it, and what the kernel offers for finding sockets.

BCC comes from Debian (``python3-bpfcc``; ``scripts/setup`` links it into the virtualenv — the
``bcc`` on PyPI is another project). BCC will not compile without a kernel header tree:
``scripts/setup`` merges Debian's ``linux-headers-*-common`` and ``-amd64`` trees into
`HEADER_TREE`, used when ``BCC_KERNEL_SOURCE`` is unset and the running kernel has no
``/lib/modules/*/build``. Struct layouts never come from those headers (they are another
kernel's): see `btf`.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Final

__all__ = ["HEADER_TREE", "TRACEFS", "EbpfUnavailable", "kernel_path", "load_bcc", "prepare"]

HEADER_TREE: Final = "/usr/local/lib/shark-tui/kernel-headers"
TRACEFS: Final = "/sys/kernel/tracing"


class EbpfUnavailable(Exception):
    """eBPF capture cannot start here; the message is one line and names the fix."""


def _tracefs() -> None:
    if os.path.isdir(os.path.join(TRACEFS, "events")):
        return
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True)
        if os.path.isdir(os.path.join(TRACEFS, "events")):
            return
    raise EbpfUnavailable(
        f"tracefs is not mounted at {TRACEFS}: mount -t tracefs nodev {TRACEFS} (as root)"
    )


def _headers() -> None:
    if os.environ.get("BCC_KERNEL_SOURCE"):
        if not os.path.isdir(os.path.join(os.environ["BCC_KERNEL_SOURCE"], "include")):
            raise EbpfUnavailable(
                f"BCC_KERNEL_SOURCE={os.environ['BCC_KERNEL_SOURCE']} has no include/ directory"
            )
        return
    if os.path.isdir(f"/lib/modules/{os.uname().release}/build/include"):
        return
    if os.path.isdir(os.path.join(HEADER_TREE, "include")):
        os.environ["BCC_KERNEL_SOURCE"] = HEADER_TREE
        return
    raise EbpfUnavailable(
        "no kernel headers for BCC: run scripts/setup (it builds "
        f"{HEADER_TREE} from linux-headers-amd64) or set BCC_KERNEL_SOURCE"
    )


def load_bcc() -> Any:
    """The ``bcc`` module (Debian's)."""
    try:
        import bcc  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise EbpfUnavailable(
            "BCC is not importable: apt install python3-bpfcc, then run scripts/setup "
            f"(it links Debian's bcc into the virtualenv) [{exc}]"
        ) from exc
    return bcc


def prepare() -> Any:
    """Check everything eBPF capture needs; return the ``bcc`` module."""
    if os.geteuid() != 0:
        raise EbpfUnavailable("eBPF TLS capture needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)")
    _tracefs()
    _headers()
    return load_bcc()


def _available(path: str, word: str) -> bool:
    try:
        with open(path) as f:
            return any(line.split(" ", 1)[0].strip() == word for line in f)
    except OSError:
        return False


def kernel_path() -> str:
    """How the socket of an SSL call is found on this kernel: ``tracepoints`` (the
    ``sock:sock_{send,recv}_length`` tracepoints, Linux ≥ 6.3), ``kprobes`` (``tcp_sendmsg`` /
    ``tcp_recvmsg``, older distribution kernels) or ``syscalls`` (the fd only; the 5-tuple is
    read from ``/proc`` afterwards)."""
    ev = os.path.join(TRACEFS, "events", "sock")
    if all(os.path.isdir(os.path.join(ev, t)) for t in ("sock_send_length", "sock_recv_length")):
        return "tracepoints"
    funcs = os.path.join(TRACEFS, "available_filter_functions")
    if os.path.exists(os.path.join(TRACEFS, "kprobe_events")) and _available(funcs, "tcp_sendmsg"):
        return "kprobes"
    return "syscalls"
