"""The command line (DESIGN.md's contract). Exit codes: 0 ok, 2 usage or bad input, 1 other."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, NoReturn

from shark_tui import __version__

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input or flags: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_size(text: str) -> int:
    """``64K``, ``2M``, ``1G`` or a byte count."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64K, 2M)") from None


def parse_duration(text: str) -> int:
    """``1h``, ``30m``, ``45s``, ``2d`` or seconds -> nanoseconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 1h, 30m)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r}")
    return int(value * 1_000_000_000)


def parse_decode(text: str) -> tuple[int, str]:
    from shark_tui.proto.infer import DECODABLE

    port, sep, proto = text.partition("=")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected PORT=PROTO, got {text!r}")
    if proto not in DECODABLE:
        raise argparse.ArgumentTypeError(
            f"unknown protocol {proto!r} (one of {', '.join(DECODABLE)})"
        )
    return int(port), proto


def _default_jobs() -> int:
    return min(os.cpu_count() or 1, 4)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shark-tui", description="API calls between pods, in the terminal.")
    parser.add_argument("--version", action="version", version=f"shark-tui {__version__}")
    parser.add_argument(
        "-i", dest="iface", action="append", default=[], metavar="IFACE",
        help="the TUI on this host: capture on IFACE (repeatable; default all)",
    )  # fmt: skip
    parser.add_argument("-f", dest="bpf", default="", metavar="BPF", help="BPF filter")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    o = sub.add_parser("open", help="the TUI over a capture file (no privileges needed)")
    o.add_argument("file", help="a pcap or pcapng file, or - for stdin")
    a = sub.add_parser("attach", help="the TUI attached to running daemons")
    a.add_argument("address", nargs="+", metavar="HOST:PORT", help="daemons (or unix:PATH)")
    a.add_argument("--token-file", default=None, metavar="F", help="the daemons' token")

    d = sub.add_parser("dissect", help="print the API calls in a capture file or a daemon")
    d.add_argument("file", nargs="?", help="a pcap or pcapng file, or - for stdin")
    d.add_argument("--attach", metavar="HOST:PORT", help="a running daemon instead of a file")
    d.add_argument("--follow", action="store_true", help="with --attach: keep streaming")
    d.add_argument("--token-file", default=None, metavar="F", help="the daemon's token")
    d.add_argument("--json", action="store_true", help="one JSON entry per line")
    d.add_argument("--filter", default="", metavar="EXPR", help="only entries matching EXPR")
    d.add_argument(
        "--decode",
        action="append",
        type=parse_decode,
        default=[],
        metavar="PORT=PROTO",
        help="dissect connections on PORT as PROTO, whatever their first bytes say",
    )
    d.add_argument(
        "--max-body",
        type=parse_size,
        default=64 * 1024,
        metavar="SIZE",
        help="body bytes kept per message (default 64K)",
    )
    d.add_argument("--stats", action="store_true", help="print counters to stderr at the end")
    d.add_argument(
        "--jobs",
        type=int,
        default=_default_jobs(),
        metavar="N",
        help="worker processes for a file (default: one per core, at most 4; stdin uses one)",
    )
    add_daemon_parser(sub)
    add_deploy_parsers(sub)
    x = sub.add_parser("export", help="save the connections of selected entries as pcapng")
    x.add_argument("file", nargs="?", help="a pcap or pcapng file, or - for stdin")
    x.add_argument("--attach", metavar="HOST:PORT", help="a running daemon instead of a file")
    x.add_argument("--filter", default="", metavar="EXPR", help="entries matching EXPR")
    x.add_argument("--ids", default="", metavar="ID,...", help="these entries")
    x.add_argument("-o", dest="out", required=True, metavar="OUT", help="output file, - for stdout")
    x.add_argument("--token-file", default=None, metavar="F", help="the daemon's token")
    t = sub.add_parser(
        "tls-status", help="processes using TLS, and whether their plaintext is visible"
    )
    t.add_argument("--attach", metavar="HOST:PORT", default="127.0.0.1:8898",
                   help="the daemon to ask (default: this host's, 127.0.0.1:8898)")  # fmt: skip
    t.add_argument("--json", action="store_true", help="the report as JSON")
    t.add_argument("--token-file", default=None, metavar="F", help="the daemon's token")
    return parser


def add_daemon_parser(sub: Any) -> None:
    d = sub.add_parser("daemon", help="the node capture daemon")
    d.add_argument(
        "--iface",
        action="append",
        default=[],
        metavar="IFACE",
        help="capture on IFACE (repeatable; default: every interface that is up, "
        "and new ones as they appear)",
    )
    d.add_argument(
        "--netns",
        action="append",
        default=[],
        metavar="PATH_OR_NAME",
        help="capture inside this network namespace: /proc/PID/ns/net or a /run/netns name "
        "(repeatable; given, the daemon's own namespace is not captured)",
    )
    d.add_argument("--bpf", default="", metavar="EXPR", help="BPF filter (TCP only always)")
    d.add_argument(
        "--listen", default="127.0.0.1:8898", metavar="ADDR", help="HOST:PORT or unix:PATH"
    )
    d.add_argument("--store", default=None, metavar="DIR", help="segment directory")
    d.add_argument("--max-bytes", type=parse_size, default=2 << 30, metavar="SIZE",
                   help="store budget (default 2G)")  # fmt: skip
    d.add_argument("--max-age", type=parse_duration, default=3600 * 10**9, metavar="DURATION",
                   help="oldest data kept (default 1h)")  # fmt: skip
    d.add_argument("--token-file", default=None, metavar="F", help="the clients' token")
    d.add_argument("--tls", action="store_true", help="capture TLS plaintext with eBPF")
    d.add_argument("--tls-if-possible", action="store_true", help=argparse.SUPPRESS)
    k = d.add_argument_group("cluster (--kube)")
    k.add_argument("--kube", action="store_true",
                   help="cluster-aware: name pods and capture the targeted ones in their "
                   "network namespaces")  # fmt: skip
    k.add_argument("--kubeconfig", default=None, metavar="F",
                   help="default: $KUBECONFIG, ~/.kube/config, or the pod's "
                   "service account")  # fmt: skip
    k.add_argument("--context", default=None, metavar="C", help="kubeconfig context")
    k.add_argument("--node", default=os.environ.get("NODE_NAME") or None, metavar="NAME",
                   help="this node (default $NODE_NAME, from the downward API; none: pods "
                   "found on this host)")  # fmt: skip
    k.add_argument("--pods", default="", metavar="REGEX", help="targeted pods (default all)")
    k.add_argument("-n", "--namespace", dest="namespaces", action="append", default=[],
                   metavar="NS", help="targeted namespace (repeatable; default all)")  # fmt: skip
    d.add_argument("--segment-bytes", type=parse_size, default=None, metavar="SIZE",
                   help=argparse.SUPPRESS)  # fmt: skip
    d.add_argument("--segment-age", type=parse_duration, default=None, metavar="DURATION",
                   help=argparse.SUPPRESS)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args.command = "tui"
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "dissect": cmd_dissect,
        "daemon": cmd_daemon,
        "export": cmd_export,
        "open": cmd_open,
        "attach": cmd_attach,
        "tui": cmd_tui,
        "tls-status": cmd_tls_status,
        "tap": cmd_tap,
        "manifests": cmd_manifests,
        "clean": cmd_clean,
    }
    try:
        return handlers[args.command](args)
    except UsageError as exc:
        print(f"shark-tui: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours.
        with contextlib.suppress(OSError):
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK


def _read_token(path: str | None) -> str:
    from shark_tui.engine.server import default_token_path

    path = path or default_token_path()
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise UsageError(
            f"--token-file {path}: {exc.strerror or exc} (the daemon writes it at start; "
            "run as the same user or pass --token-file)"
        ) from None


def _attach_or_file(args: argparse.Namespace) -> None:
    if (args.attach is None) == (args.file is None):
        raise UsageError("give a capture FILE or --attach HOST:PORT (one of them)")


def cmd_dissect_attach(args: argparse.Namespace) -> int:
    import asyncio

    import msgspec

    from shark_tui.engine.client import Client, ClientError
    from shark_tui.engine.filter import FilterError, compile_filter

    try:
        compile_filter(args.filter)
    except FilterError as exc:
        raise UsageError(f"--filter: {exc}") from None
    token = _read_token(args.token_file)
    out = sys.stdout.buffer
    encode = msgspec.json.Encoder().encode

    async def run() -> None:
        client = await Client.connect(args.attach, token)
        try:
            async for m in client.subscribe(args.filter, detail=True, follow=args.follow):
                entries = getattr(m, "entries", None)
                if not isinstance(entries, list):
                    continue
                buf = bytearray()
                for e in entries:
                    buf += encode(e) + b"\n" if args.json else format_row(e).encode()
                out.write(buf)
                out.flush()
        finally:
            await client.close()

    try:
        asyncio.run(run())
    except ClientError as exc:
        print(f"shark-tui: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    import asyncio

    from shark_tui.engine.client import Client, ClientError
    from shark_tui.engine.filter import FilterError, compile_filter

    _attach_or_file(args)
    try:
        compile_filter(args.filter)
    except FilterError as exc:
        raise UsageError(f"--filter: {exc}") from None
    ids = [i.strip() for i in args.ids.split(",") if i.strip()]
    if args.file is not None:
        return _export_file(args, ids)
    token = _read_token(args.token_file)

    async def run() -> int:
        client = await Client.connect(args.attach, token)
        try:
            await _write_export_async(args.out, client.export(args.filter, ids))
            done = client.last_export
        finally:
            await client.close()
        if done is not None and args.out != "-":
            print(
                f"shark-tui: {done.packets} packets of {done.connections} connections "
                f"written to {args.out}",
                file=sys.stderr,
            )
        return EXIT_OK

    try:
        return asyncio.run(run())
    except ClientError as exc:
        print(f"shark-tui: {exc}", file=sys.stderr)
        return EXIT_FAIL


@contextlib.contextmanager
def _output(path: str) -> Any:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        f = open(path, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UsageError(f"-o {path}: {exc.strerror or exc}") from None
    with f:
        yield f


def _write_export(out: str, chunks: Iterable[bytes]) -> None:
    """pcapng as it comes; classic pcap when OUT ends in .pcap and one link type suffices
    (DESIGN) — that needs the whole export at hand first."""
    from shark_tui.engine.pcapng import to_classic_pcap

    if not out.endswith(".pcap"):
        with _output(out) as f:
            for chunk in chunks:
                f.write(chunk)
        return
    data = b"".join(chunks)
    classic = to_classic_pcap(data)
    if classic is None:
        print(
            f"shark-tui: warning: {out}: the packets have several link types; written as pcapng",
            file=sys.stderr,
        )
    with _output(out) as f:
        f.write(data if classic is None else classic)


async def _write_export_async(out: str, chunks: AsyncIterator[bytes]) -> None:
    if out.endswith(".pcap"):
        _write_export(out, [c async for c in chunks])
        return
    with _output(out) as f:
        async for chunk in chunks:
            f.write(chunk)


def _export_file(args: argparse.Namespace, ids: list[str]) -> int:
    import tempfile
    import threading

    from shark_tui.engine.capfile import CaptureFormatError
    from shark_tui.engine.filter import compile_filter
    from shark_tui.engine.offline import import_capture
    from shark_tui.engine.query import QueryEngine

    with tempfile.TemporaryDirectory(prefix="shark-tui-export-") as tmp:
        try:
            rec, warning = import_capture(args.file, tmp)
        except CaptureFormatError as exc:
            raise UsageError(f"{args.file}: {exc}") from None
        except OSError as exc:
            raise UsageError(f"{args.file}: {exc.strerror or exc}") from None
        if warning:
            print(f"shark-tui: warning: {args.file}: {warning}", file=sys.stderr)
        engine = QueryEngine(rec, threading.Lock())
        flt = compile_filter(args.filter) if args.filter or not ids else None
        nums = engine.flows_of(flt, ids)
        _write_export(args.out, engine.export(nums))
        engine.close()
        if args.out != "-":
            print(
                f"shark-tui: {engine.last_export_packets} packets of {len(nums)} connections "
                f"written to {args.out}",
                file=sys.stderr,
            )
    return EXIT_OK


def _run_app(links: list[tuple[str, str]]) -> int:
    from shark_tui.app import SharkApp

    SharkApp(links).run()
    return EXIT_OK


def _keys_from_terminal() -> None:
    """The capture came on stdin (now at its end): the app reads its keys from stdin, so the
    terminal becomes stdin (as less and vim do). UsageError when there is no terminal."""
    if os.isatty(0):
        return
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError as exc:
        raise UsageError(
            f"open -: the capture came on stdin and there is no terminal to read keys from "
            f"(/dev/tty: {exc.strerror or exc}); save it to a file and open that"
        ) from None
    os.dup2(tty, 0)
    os.close(tty)


def cmd_open(args: argparse.Namespace) -> int:
    import tempfile
    import threading

    from shark_tui.engine.capfile import CaptureFormatError
    from shark_tui.engine.offline import import_capture
    from shark_tui.engine.server import Server

    with tempfile.TemporaryDirectory(prefix="shark-tui-open-") as tmp:
        progress = sys.stderr.isatty()  # a line while it loads, erased after: errors stay one
        if progress:
            print(f"shark-tui: loading {args.file}…", end="", file=sys.stderr, flush=True)
        try:
            rec, warning = import_capture(args.file, os.path.join(tmp, "store"))
        except CaptureFormatError as exc:
            raise UsageError(f"{args.file}: {exc}") from None
        except OSError as exc:
            raise UsageError(f"{args.file}: {exc.strerror or exc}") from None
        finally:
            if progress:
                print("\r\033[K", end="", file=sys.stderr, flush=True)
        if warning:
            print(f"shark-tui: warning: {args.file}: {warning}", file=sys.stderr)
        if args.file == "-":
            _keys_from_terminal()
        import secrets

        token = secrets.token_urlsafe(16)
        sock = os.path.join(tmp, "sock")
        node = os.path.basename(args.file)
        server = Server(rec, threading.Lock(), token, sock, rec.status, node=node)
        server.start()
        try:
            return _run_app([(f"unix:{sock}", token)])
        finally:
            server.stop()


def cmd_attach(args: argparse.Namespace) -> int:
    from shark_tui.engine.client import ClientError, parse_address

    for address in args.address:
        try:
            parse_address(address)
        except ClientError as exc:
            raise UsageError(str(exc)) from None
    token = _read_token(args.token_file)
    return _run_app([(address, token) for address in args.address])


def _can_capture() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 13))  # CAP_NET_RAW
    except OSError:
        pass
    return False


def cmd_tui(args: argparse.Namespace) -> int:
    """The TUI on this host: an embedded daemon (a child process, so capture never competes
    with the UI for the interpreter) on a private socket and store."""
    import secrets
    import shutil
    import signal
    import subprocess
    import tempfile

    if not _can_capture():
        raise UsageError(
            "capturing this host needs root or CAP_NET_RAW: run with sudo, or grant it once "
            f"with `sudo setcap cap_net_raw,cap_net_admin+eip {os.path.realpath(sys.executable)}`"
            "; to look at a file instead: shark-tui open FILE"
        )
    with tempfile.TemporaryDirectory(prefix="shark-tui-") as tmp:
        sock = os.path.join(tmp, "sock")
        token_file = os.path.join(tmp, "token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        argv = [sys.executable, "-m", "shark_tui", "daemon", "--listen", f"unix:{sock}",
                "--token-file", token_file, "--store", os.path.join(tmp, "store"),
                "--max-bytes", "1G", "--tls-if-possible"]  # fmt: skip
        for iface in args.iface:
            argv += ["--iface", iface]
        if args.bpf:
            argv += ["--bpf", args.bpf]
        log = open(os.path.join(tmp, "daemon.log"), "w")  # noqa: SIM115 - closed below
        daemon = subprocess.Popen(argv, stdout=log, stderr=log)

        def on_hangup(signum: int, frame: object) -> None:
            # the terminal went away (or we were told to stop): no `finally` runs after a
            # signal's default action, so stop the daemon and remove its store here
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
            shutil.rmtree(tmp, ignore_errors=True)
            os._exit(128 + signum)

        signal.signal(signal.SIGHUP, on_hangup)
        signal.signal(signal.SIGTERM, on_hangup)
        try:
            deadline = time.monotonic() + 15
            while not os.path.exists(sock):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    with open(os.path.join(tmp, "daemon.log")) as f:
                        print(f.read(), file=sys.stderr, end="")
                    return EXIT_FAIL
                time.sleep(0.05)
            with open(token_file) as f:
                token = f.read().strip()
            return _run_app([(f"unix:{sock}", token)])
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
            log.close()


def cmd_dissect(args: argparse.Namespace) -> int:
    import msgspec

    _attach_or_file(args)
    if args.attach is not None:
        if args.decode or args.max_body != 64 * 1024 or args.jobs != _default_jobs():
            raise UsageError("--decode, --max-body and --jobs apply to files, not to --attach")
        return cmd_dissect_attach(args)
    if args.follow:
        raise UsageError("--follow needs --attach")

    from shark_tui.engine.capfile import CaptureFormatError
    from shark_tui.engine.dissect import Dissection, tune_gc
    from shark_tui.engine.filter import FilterError, compile_filter
    from shark_tui.engine.parallel import WorkerFailed, dissect_file

    try:
        flt = compile_filter(args.filter)
    except FilterError as exc:
        raise UsageError(f"--filter: {exc}") from None

    if args.json:
        encode_into = msgspec.json.Encoder().encode_into

        def render(entry: dict[str, Any], buf: bytearray) -> None:
            encode_into(entry, buf, -1)
            buf += b"\n"

    else:

        def render(entry: dict[str, Any], buf: bytearray) -> None:
            buf += format_row(entry).encode()

    pushdown = flt.pushdown
    flow_filter = None
    if pushdown.selective:
        # Address and port predicates rule whole connections out before any dissection. The
        # protocol is not known yet here (and --decode may override it): pass None.

        def flow_filter(ip0: str, p0: int, ip1: str, p1: int) -> bool:
            return pushdown.flow_may_match(None, ip0, p0, ip1, p1)

    def make() -> Dissection:
        d = Dissection(
            lambda entry: None,
            entry_filter=flt if args.filter.strip() else None,
            flow_filter=flow_filter,
            decode_ports=dict(args.decode),
            body_cap=args.max_body,
        )
        d.json_lines = args.json  # `render` is msgspec's JSON: HTTP/1 may come as ready lines
        return d

    if args.file != "-":
        try:
            open(args.file, "rb").close()
        except OSError as exc:
            raise UsageError(f"{args.file}: {exc.strerror or exc}") from None
    jobs = 1 if args.file == "-" else args.jobs
    tune_gc()
    out = sys.stdout.buffer
    try:
        warning, counters = dissect_file(args.file, jobs, make, render, out)
    except CaptureFormatError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    except WorkerFailed as exc:
        print(f"shark-tui: dissect failed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    out.flush()
    if warning:
        print(f"shark-tui: warning: {args.file}: {warning}", file=sys.stderr)
    if args.stats:
        import json

        print(json.dumps(counters), file=sys.stderr)
    return EXIT_OK


def cmd_daemon(args: argparse.Namespace) -> int:
    import signal

    try:
        import pcapy
    except ImportError as exc:  # pragma: no cover - a broken install
        print(f"shark-tui: live capture needs pcapy-ng: {exc}", file=sys.stderr)
        return EXIT_FAIL
    from shark_tui.engine import netns
    from shark_tui.engine.daemon import Daemon, DaemonConfig, capture_filter, default_store_dir

    if args.max_bytes < 1 << 20:
        raise UsageError(f"--max-bytes: at least 1M, got {args.max_bytes} bytes")
    try:
        pcapy.compile(1, 262144, capture_filter(args.bpf, 1), 1, 0)
    except pcapy.PcapError as exc:
        raise UsageError(f"--bpf: {exc}") from None
    for spec in args.netns:
        try:
            netns.resolve(spec)
        except netns.NetnsError as exc:
            raise UsageError(f"--netns: {exc}") from None
    kube_flags = args.kubeconfig or args.context or args.pods or args.namespaces
    if kube_flags and not args.kube:
        raise UsageError("--kubeconfig, --context, --pods and --namespace need --kube")
    try:
        re.compile(args.pods)
    except re.error as exc:
        raise UsageError(f"--pods: bad regex {args.pods!r}: {exc}") from None
    from shark_tui.engine.server import default_token_path, ensure_token, parse_listen

    try:
        listen = parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    token_path = args.token_file or default_token_path()
    try:
        token = ensure_token(token_path)
    except OSError as exc:
        raise UsageError(f"--token-file {token_path}: {exc.strerror or exc}") from None
    store = args.store or default_store_dir()
    try:
        os.makedirs(store, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--store {store}: {exc.strerror or exc}") from None
    config = DaemonConfig(
        store=store,
        max_bytes=args.max_bytes,
        max_age_ns=args.max_age,
        ifaces=args.iface,
        netns=args.netns,
        bpf=args.bpf,
        segment_bytes=args.segment_bytes,
        segment_ns=args.segment_age,
        listen=listen,
        token=token,
        tls=args.tls or args.tls_if_possible,
        tls_optional=args.tls_if_possible,
        kube=args.kube,
        kubeconfig=args.kubeconfig,
        context=args.context,
        node=args.node,
        pods=args.pods,
        namespaces=args.namespaces,
    )
    daemon = Daemon(config)

    def on_signal(signum: int, frame: object) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return daemon.run()


# ---- the cluster: tap, manifests, clean (engine/deploy.py; also `kubectl shark ...`)


def add_deploy_parsers(sub: Any) -> None:
    """``tap`` and ``manifests`` (the same flags) and ``clean``. The targets (``POD_REGEX``,
    ``-n``, ``-A``) are what the daemons capture; the daemons themselves always run in the
    namespace ``shark-tui`` that tap creates."""
    from shark_tui.engine.deploy import DEFAULT_IMAGE, NAMESPACE

    def cluster(p: argparse.ArgumentParser) -> None:
        p.add_argument("--context", default=None, metavar="C", help="kubeconfig context")
        p.add_argument("--kubeconfig", default=None, metavar="F",
                       help="default: $KUBECONFIG or ~/.kube/config")  # fmt: skip

    for command, text in (
        ("tap", "deploy the daemons to the cluster, port-forward to them, open the TUI"),
        ("manifests", "print the objects tap creates, as YAML (kubectl apply -f - reads it)"),
    ):
        p = sub.add_parser(command, help=text)
        p.add_argument("pods", nargs="?", default="", metavar="POD_REGEX",
                       help="targeted pods (default all)")  # fmt: skip
        p.add_argument("-n", "--namespace", dest="namespaces", action="append", default=[],
                       metavar="NS", help="targeted namespace (repeatable; default: the "
                       "context's)")  # fmt: skip
        p.add_argument("-A", "--all-namespaces", action="store_true",
                       help="target every namespace")  # fmt: skip
        cluster(p)
        p.add_argument("--image", default=DEFAULT_IMAGE, metavar="IMG",
                       help=f"the daemon's image (default {DEFAULT_IMAGE}: build it from the "
                       "Dockerfile)")  # fmt: skip
        keep = "leave the daemons running on exit (shark-tui clean removes them)"
        p.add_argument("--keep", action="store_true",
                       help=keep if command == "tap" else argparse.SUPPRESS)  # fmt: skip
    c = sub.add_parser("clean", help=f"remove what tap created (namespace {NAMESPACE}, ...)")
    cluster(c)


def _say(text: str) -> None:
    # the terminal may be gone (SIGHUP): saying what is undone must not stop the undo
    with contextlib.suppress(OSError):
        print(f"shark-tui: {text}", file=sys.stderr, flush=True)


def _check_targets(args: argparse.Namespace) -> None:
    if args.all_namespaces and args.namespaces:
        raise UsageError("-A targets every namespace: give it or -n NS, not both")
    try:
        re.compile(args.pods)
    except re.error as exc:
        raise UsageError(f"POD_REGEX: bad regex {args.pods!r}: {exc}") from None


def _tap_spec(args: argparse.Namespace, token: str) -> Any:
    """The `TapSpec` of ``tap``/``manifests``: the targets checked, the context's namespace
    when neither ``-n`` nor ``-A`` is given."""
    from shark_tui.engine import deploy
    from shark_tui.engine.kube import KubeError

    _check_targets(args)
    namespaces: tuple[str, ...] = ()
    if args.namespaces:
        namespaces = tuple(dict.fromkeys(args.namespaces))
    elif not args.all_namespaces:
        try:
            namespaces = (deploy.kube_context(args.kubeconfig, args.context).namespace,)
        except KubeError as exc:
            raise UsageError(f"{exc} (or target with -n NS / -A)") from None
    return deploy.TapSpec(token=token, pods=args.pods, namespaces=namespaces, image=args.image)


def _kube_client(args: argparse.Namespace) -> Any:
    from shark_tui.engine.deploy import kube_context
    from shark_tui.engine.kube import KubeError, load_client

    try:
        kube_context(args.kubeconfig, args.context)  # no such context: say so plainly
        return load_client(args.kubeconfig, args.context)
    except KubeError as exc:
        raise UsageError(str(exc)) from None


def cmd_manifests(args: argparse.Namespace) -> int:
    from shark_tui.engine import deploy

    spec = _tap_spec(args, deploy.new_token())
    sys.stdout.write(deploy.to_yaml(deploy.objects(spec)))
    return EXIT_OK


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP during ``tap``, raised in the main thread as Ctrl-C raises
    KeyboardInterrupt, so that `deploy.run_tap`'s ``finally`` undoes (the TUI, when it runs,
    restores the terminal on the way out). The handler itself does nothing else: work there
    would re-enter what the main thread was in the middle of — the Tap, a request on the
    connection pool — and could deadlock."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def cmd_tap(args: argparse.Namespace) -> int:
    """Deploy, wait, port-forward, the TUI; Ctrl-C, quitting, SIGTERM or SIGHUP (the terminal
    closed) remove what was deployed unless ``--keep`` (exit status 128 + the signal's)."""
    import signal

    from shark_tui.engine import deploy

    _check_targets(args)
    client = _kube_client(args)
    try:
        token = deploy.existing_token(client) or deploy.new_token()
        tap = deploy.Tap(client, _tap_spec(args, token), say=_say)
    except deploy.DeployError as exc:
        print(f"shark-tui: {exc}", file=sys.stderr)
        return EXIT_FAIL

    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        # the default action would end the process with no `finally` run: raise instead, once;
        # a signal during the undo (or after the first) lets the undo under way finish
        signals.append(signum)
        if len(signals) == 1 and not tap.undoing:
            raise _Stopped(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        rc = deploy.run_tap(tap, keep=args.keep, open_ui=_run_app)
    except deploy.DeployError as exc:
        print(f"shark-tui: {exc}", file=sys.stderr)
        rc = EXIT_FAIL
    except _Stopped:
        if not args.keep:
            tap.undo()  # run_tap undid on the way here; this ends an undo cut short as it began
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + signals[0] if signals else rc


def cmd_clean(args: argparse.Namespace) -> int:
    from shark_tui.engine import deploy

    client = _kube_client(args)
    try:
        deploy.clean(client, say=_say)
    except deploy.DeployError as exc:
        print(f"shark-tui: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_tls_status(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from shark_tui.engine.client import Client, ClientError

    token = _read_token(args.token_file)

    async def run() -> dict[str, Any]:
        client = await Client.connect(args.attach, token)
        try:
            return await client.get_tls_status()
        finally:
            await client.close()

    try:
        report = asyncio.run(run())
    except ClientError as exc:
        print(f"shark-tui: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        sys.stdout.write("".join(line + "\n" for line in format_tls_status(report)))
    return EXIT_OK


def format_tls_status(report: dict[str, Any]) -> list[str]:
    """The readable ``tls-status``: one line per process, the reason when not visible."""
    if not report.get("enabled"):
        return [f"TLS capture is off: {report.get('reason') or report.get('error')}"]
    if report.get("error"):
        return [f"TLS status unavailable: {report['error']}"]
    lines = [f"kernel path: {report.get('kernel_path')}  (sockets of SSL calls)"]
    for lib in report.get("libraries", []):
        state = lib["error"] or "probed: " + ", ".join(lib["attached"])
        lines.append(f"library {lib['path']}: {state}")
    lines.append(f"{'PID':>7}  {'COMM':<16} {'VISIBLE':<8} CONNS  REASON")
    for p in report.get("processes", []):
        vis = {True: "yes", False: "no", None: "-"}[p.get("visible")]
        conns = len(p.get("tls_connections", []))
        lines.append(f"{p['pid']:>7}  {p['comm'][:16]:<16} {vis:<8} {conns:>5}  {p['reason']}")
    lost = {k: v for k, v in (report.get("lost") or {}).items() if v}
    if lost:
        lines.append("lost: " + ", ".join(f"{k} {v}" for k, v in lost.items()))
    return lines


def format_row(entry: dict[str, Any]) -> str:
    """One readable line of the table ``dissect`` prints without ``--json``."""

    def end(e: dict[str, Any]) -> str:
        if e.get("pod"):
            return f"{e['ns']}/{e['pod']}" if e.get("ns") else str(e["pod"])
        ip = e["ip"]
        return f"[{ip}]:{e['port']}" if ":" in ip else f"{ip}:{e['port']}"

    t = time.strftime("%H:%M:%S", time.localtime(entry["ts"]))
    ms = int((entry["ts"] % 1) * 1000)
    lat = entry.get("latency_ms")
    status = entry.get("status")
    cols = [
        f"{t}.{ms:03d}",
        f"{entry['id']:>8}",
        f"{end(entry['src'])} → {end(entry['dst'])}",
        f"{entry['proto']:<7}",
        f"{entry.get('method') or '-':<7}",
        entry.get("summary") or "",
        "-" if status is None else str(status),
        "-" if lat is None else f"{lat:.1f}ms",
    ]
    if entry.get("error"):
        cols.append(f"[{entry['error']}]")
    return "  ".join(cols) + "\n"
