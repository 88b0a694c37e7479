"""Network namespaces by name or path, and moving one thread into them (stdlib only).

A namespace is given as a name from ``ip netns list`` (``/run/netns/NAME``), as
``/proc/PID/ns/net`` (a pod's process), or as any other path to a namespace file.

``setns(2)`` on a network namespace moves only the calling thread: other threads, and the
process as ``/proc/self`` shows it, stay where they were. A socket or capture handle keeps the
namespace it was created in after its thread moves back, so the pattern is::

    with netns.switched(path):
        watcher = LinkWatcher()   # or a pcap handle
    ...                           # use it from any thread, in any namespace

pyroute2 is not used: its namespace support forks a helper process, and all we need is one
``setns`` call in the thread that opens the sockets.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
from collections.abc import Callable, Iterator

__all__ = [
    "CLONE_NEWNET",
    "NETNS_RUN_DIR",
    "NetnsError",
    "enter",
    "label",
    "resolve",
    "same_as_root",
    "switched",
]

#: The ``nstype`` argument of ``setns(2)`` for a network namespace (``<sched.h>``).
CLONE_NEWNET = 0x40000000
#: Where ``ip netns add NAME`` bind-mounts its namespaces.
NETNS_RUN_DIR = "/run/netns"

_THREAD_SELF = "/proc/thread-self/ns/net"  # the calling thread's namespace (Linux >= 3.17)
_MAIN_THREAD = "/proc/self/ns/net"  # /proc/self is the thread-group leader: the main thread
_NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), <linux/nsfs.h>, Linux >= 4.11
_NS_KINDS = {
    0x00020000: "mount",
    0x02000000: "cgroup",
    0x04000000: "uts",
    0x08000000: "ipc",
    0x10000000: "user",
    0x20000000: "pid",
    0x00000080: "time",
}
_PROC_NET = re.compile(r"/proc/(\d+)(?:/task/(\d+))?/ns/net")
_FIND = "give a name from `ip netns list` or /proc/PID/ns/net"


class NetnsError(Exception):
    """A namespace that cannot be found or entered; the message is one line naming the fix."""


def resolve(spec: str) -> str:
    """The path of the network namespace ``spec`` names.

    ``spec`` is a bare name (``/run/netns/NAME``), ``/proc/PID/ns/net`` or any path to a
    namespace file. The file must exist and, where it can be opened, be a network namespace;
    one this process may not open (another user's process when not root) is returned
    unchecked, and ``enter`` reports the problem. Raises NetnsError.
    """
    if not spec:
        raise NetnsError(f"empty network namespace ({_FIND})")
    if "/" not in spec:
        if spec in (".", ".."):
            raise NetnsError(f"network namespace {spec!r}: not a name ({_FIND})")
        path = os.path.join(NETNS_RUN_DIR, spec)
        if not os.path.lexists(path):
            raise NetnsError(
                f"network namespace {spec!r}: no {path} (create it with `ip netns add {spec}`,"
                " or give /proc/PID/ns/net)"
            )
    else:
        path = spec
        proc = _PROC_NET.fullmatch(os.path.normpath(spec))
        if proc is not None and not os.path.isdir(f"/proc/{proc[1]}"):
            raise NetnsError(
                f"network namespace {spec!r}: no process {proc[1]} (give the PID of a running"
                " process, e.g. from `crictl inspect` or `ps`)"
            )
        if not os.path.lexists(path):
            raise NetnsError(f"network namespace {spec!r}: no such file ({_FIND})")
    _check_net(spec, path)
    return path


def label(spec: str) -> str:
    """A short name for the namespace ``spec`` to show users, e.g. in ``NAME:eth0``.

    The bare name for ``NAME`` and ``/run/netns/NAME``, ``pid1234`` for
    ``/proc/1234/ns/net`` (``tid1235`` for ``/proc/1234/task/1235/ns/net``), else the file's
    base name. Looks at the string only, never at the file system.
    """
    if "/" not in spec:
        return spec
    norm = os.path.normpath(spec)
    proc = _PROC_NET.fullmatch(norm)
    if proc is not None:
        return f"tid{proc[2]}" if proc[2] else f"pid{proc[1]}"
    return os.path.basename(norm) or norm


def enter(path: str) -> None:
    """Move the calling thread (only) into the network namespace at ``path``.

    Other threads are not affected. Needs CAP_SYS_ADMIN. Raises NetnsError.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetnsError(f"network namespace {path}: {e.strerror} ({_hint(e.errno)})") from None
    try:
        _setns(fd, path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def switched(path: str) -> Iterator[None]:
    """Run the block with the calling thread in the network namespace at ``path``.

    The thread's namespace on entry (``/proc/thread-self/ns/net``, opened before moving) is
    restored on exit, also when the block raises. Sockets opened inside stay in ``path``.
    Raises NetnsError when entering fails (the thread has not moved) or when moving back fails
    (the thread is then left in ``path``; end it rather than reuse it).
    """
    try:
        home = os.open(_THREAD_SELF, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetnsError(f"cannot open {_THREAD_SELF}: {e.strerror} (is /proc mounted?)") from None
    try:
        enter(path)
        try:
            yield
        finally:
            _setns(home, f"{_THREAD_SELF} (moving back from {path})")
    finally:
        os.close(home)


def same_as_root(path: str) -> bool:
    """Whether ``path`` is the network namespace shark-tui was started in.

    "Root" is the namespace of the process's main thread (``/proc/self/ns/net``; ``/proc/self``
    is the thread-group leader, whatever thread asks), usually the host's. Not ``/proc/1``: in
    a container PID 1 is the container's init, and reading its namespace needs rights over it.
    Compares the files' (st_dev, st_ino), which identify a namespace. Raises NetnsError.
    """
    try:
        a = os.stat(path)
        b = os.stat(_MAIN_THREAD)
    except OSError as e:
        raise NetnsError(f"network namespace {path}: {e.strerror} ({_hint(e.errno)})") from None
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _check_net(spec: str, path: str) -> None:
    """Raise NetnsError unless ``path`` is a network namespace (or cannot be opened to tell)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        return
    except OSError as e:
        raise NetnsError(f"network namespace {spec!r}: {e.strerror} ({_hint(e.errno)})") from None
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError as e:
        if e.errno in (errno.ENOTTY, errno.EINVAL):
            stale = " (a stale name? `ip netns delete` it and add it again)"
            where = stale if path.startswith(NETNS_RUN_DIR + "/") else f" ({_FIND})"
            raise NetnsError(
                f"network namespace {spec!r}: {path} is not a namespace{where}"
            ) from None
        raise NetnsError(f"network namespace {spec!r}: {e.strerror} ({_hint(e.errno)})") from None
    finally:
        os.close(fd)
    if kind != CLONE_NEWNET:
        what = _NS_KINDS.get(kind, "another kind of")
        raise NetnsError(
            f"network namespace {spec!r}: {path} is a {what} namespace, not a network one"
            " (give .../ns/net)"
        )


def _hint(code: int | None) -> str:
    if code in (errno.EPERM, errno.EACCES):
        return "run as root, or with CAP_SYS_ADMIN"
    if code == errno.EINVAL:
        return f"not a network namespace; {_FIND}"
    if code == errno.ENOENT:
        return _FIND
    return "check the path"


_setns_fn: Callable[[int, int], int] | None = None


def _setns(fd: int, what: str) -> None:
    """``setns(fd, CLONE_NEWNET)`` for the calling thread; NetnsError with strerror if refused."""
    global _setns_fn
    if _setns_fn is None:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.setns
        fn.argtypes = (ctypes.c_int, ctypes.c_int)
        fn.restype = ctypes.c_int
        _setns_fn = fn
    if _setns_fn(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise NetnsError(
            f"cannot enter network namespace {what}: {os.strerror(code)} ({_hint(code)})"
        )
