"""The live-capture benchmark: ``shark-tui daemon`` against ``tcpdump`` on the same replayed load.

    python -m bench.bench_capture                        # full: rate ladder + 100 k-flow index
    python -m bench.bench_capture --rates 100k,200k --seconds 5 --no-flows
    python -m bench.bench_capture --capturers shark-tui --rates top --top-seconds 30 \
        --no-flows --profile bench/out/capture-profile.txt   # where the daemon's time goes

Needs root, ``ip`` (iproute2), ``tcpreplay`` and ``tcpdump``. The load is `bench.mkflows`'
capture (100 000 complete HTTP/1.1 connections, 1 M packets; built once and cached).

The wire: a private network namespace ``skbench-<pid>`` holding a veth pair ``skbA``/``skbB``
(both up, no addresses, IPv6 off). ``tcpreplay -i skbA`` sends the capture, the capturer listens
on ``skbB``; the frames' Ethernet addresses match no interface, so the namespace's IP stack
drops them after the packet sockets have seen them, and nothing leaves the namespace. The
namespace, the veths and every process started here are removed in a ``finally``; a namespace
left by a bench that died (its pid gone) is removed at the start, after its processes (found by
their network namespace) are killed, and so is its ``bench/out/live-PID`` directory.

One capturer at a time, a fresh one per step:

- ``tcpdump -i skbB -w FILE -B 65536 -Z root tcp`` — drops from its final "packets dropped by
  kernel" line, the packets it captured from "packets captured";
- ``shark-tui daemon --iface skbB --store DIR --max-bytes 16G --max-age 1h`` — drops =
  ``dropped`` + ``queue_dropped`` of its source in the final ``status.json`` (written on SIGTERM),
  stored packets = ``packets``.

Each rate step replays ``rate × --seconds`` packets (default 30 s; the file looped as needed)
with ``tcpreplay --pps=RATE --preload-pcap --no-flow-stats --limit=N --loop=0``; the topspeed
step replays for ``--top-seconds`` (default 60) with ``--topspeed --duration=S --loop=0``. Runs
are long on purpose: the daemon's 64 MiB ring plus its 256 MiB queue hide a deficit of a few
hundred thousand packets for a while, so a short burst "holds" at rates it cannot sustain.

After tcpreplay ends, the bench waits until the capturer has caught up (at least 2.5 s: tcpdump's
libpcap hands over a part-filled TPACKET_V3 block only at its 1 s timeout; no progress for 1.5 s;
for the daemon an empty queue), then reads the capturer's CPU time (``/proc/PID/stat`` utime +
stime, from just before the replay to then, so start-up is not counted) and its peak RSS
(``VmHWM``), and stops it with SIGTERM. A step *holds* when the capturer reports 0 drops and
captured every packet tcpreplay sent (its "Successful packets"; the veth's counters are kept in
the JSON too, to tell a loss before the capturer from one inside it). Columns beside that:
"lag s", from the end of the replay to the capturer's last work (the daemon: its last 0.1 s
sample above 30 % of a core; tcpdump: the last growth of its file); "drain pps", the packets
captured over the sending time plus that lag (what it sustained); "queue MB", the largest
``queue_bytes`` the daemon's status showed (sampled every 0.1 s from a file written every
second).

``--profile FILE`` runs ``py-spy record --nonblocking --threads --format raw`` on the daemon
for up to 20 s during its ``--profile-rate`` step (default topspeed) and prints, per thread, its
share of wall time on CPU and the functions with the most self time.

The flow-index step: a fresh daemon idles 3 s (RSS read: the baseline), the 100 k-connection
capture is replayed once at ``--flows-rate``, and when the daemon has caught up the RSS is read
again; bytes per flow = (RSS after − RSS idle) / status ``flows``, which must be 100 000.

Exit status: 0 when every capturer ran and the flow step indexed exactly the connections
replayed; 1 otherwise; 2 for bad usage or a missing tool.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import mkflows
from bench.bench_dissect import shark_tui_argv

OUT_DIR = mkflows.OUT_DIR
REPO_DIR = mkflows.BENCH_DIR.parent
NETNS_PREFIX = "skbench-"
TX, RX = "skbA", "skbB"
TCPDUMP_BUFFER_KIB = 65536  # tcpdump -B: the same 64 MiB kernel buffer the daemon asks for
DEFAULT_RATES = (50_000, 100_000, 150_000, 200_000, 250_000, 300_000, 400_000, 500_000, 0)
TOPSPEED = 0  # a rate of 0 means --topspeed
LAG_OK_S = 2.0  # "caught up": last progress within this of the replay's end (tcpdump's libpcap
# hands over a part-filled block after its 1 s timeout; the daemon writes status every second)
CLK_TCK = os.sysconf("SC_CLK_TCK")

Log = Callable[[str], None]


def _stderr(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the wire: a private namespace with a veth pair


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def _netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def pids_in_netns(name: str) -> list[int]:
    """Processes whose network namespace is the named one (only what a bench started there)."""
    ino = _netns_inode(name)
    if ino is None:
        return []
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{d}/ns/net").st_ino == ino:
                found.append(int(d))
        except OSError:
            continue
    return found


def _kill_pids(pids: list[int], grace: float = 3.0) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def remove_netns(name: str) -> None:
    _kill_pids(pids_in_netns(name))
    _run(["ip", "netns", "delete", name], check=False)


def stale_cleanup(log: Log = _stderr) -> None:
    """Remove namespaces left by benches that died (their pid is gone), with their processes."""
    with contextlib.suppress(OSError):
        for name in os.listdir("/run/netns"):
            m = re.fullmatch(re.escape(NETNS_PREFIX) + r"(\d+)", name)
            if m and not _alive(int(m.group(1))):
                log(f"bench: removing stale namespace {name} (and its processes)")
                remove_netns(name)
    # the captures and stores of benches that died
    with contextlib.suppress(OSError):
        for d in OUT_DIR.glob("live-*"):
            pid = d.name[len("live-") :]
            if pid.isdigit() and not _alive(int(pid)):
                log(f"bench: removing stale {d}")
                shutil.rmtree(d, ignore_errors=True)
    # the root-namespace variant of the wire, should an older run have left it
    if os.path.exists(f"/sys/class/net/{TX}"):
        _run(["ip", "link", "delete", TX], check=False)


class Wire:
    """The namespace and its veth pair; ``exec`` prefixes a command to run inside it."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"{NETNS_PREFIX}{os.getpid()}"
        self.exec = ["ip", "netns", "exec", self.name]

    def __enter__(self) -> Wire:
        remove_netns(self.name)
        _run(["ip", "netns", "add", self.name])
        try:
            sh = (
                f"sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default."
                f"disable_ipv6=1 && ip link set lo up && ip link add {TX} type veth peer name "
                f"{RX} && ip link set {TX} up && ip link set {RX} up"
            )
            _run([*self.exec, "sh", "-c", sh])
        except BaseException:
            remove_netns(self.name)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        remove_netns(self.name)

    def link_stats(self) -> dict[str, int]:
        """skbA's tx and skbB's rx counters (packets, dropped)."""
        names = [
            (dev, way, key)
            for dev, way in ((TX, "tx"), (RX, "rx"))
            for key in ("packets", "dropped")
        ]
        p = _run(
            [*self.exec, "cat", *(f"/sys/class/net/{d}/statistics/{w}_{k}" for d, w, k in names)]
        )
        values = [int(v) for v in p.stdout.split()]
        return {f"{d}_{w}_{k}": v for (d, w, k), v in zip(names, values, strict=True)}


# ---------------------------------------------------------------------------------------------
# measuring a process


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def vm_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1])
    return out


class Progress:
    """Samples a capturer's progress (`Capturer.progress`), backlog and CPU time every
    ``interval`` s in a thread: when the progress last changed, when the capturer last used more
    than ``BUSY`` of a core over a sample, and the largest backlog seen."""

    BUSY = 0.3

    def __init__(self, cap: Capturer, interval: float = 0.1) -> None:
        self.cap = cap
        self.interval = interval
        self.value: int | None = None
        self.last_change = self.last_busy = time.monotonic()
        self.max_backlog = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Progress:
        self.value = self.cap.progress()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        cpu, t = cpu_seconds(self.cap.pid), time.monotonic()
        while not self._stop.wait(self.interval):
            v = self.cap.progress()
            now = time.monotonic()
            if v != self.value:
                self.value, self.last_change = v, now
            self.max_backlog = max(self.max_backlog, self.cap.backlog())
            with contextlib.suppress(OSError, IndexError, ValueError):
                c = cpu_seconds(self.cap.pid)
                if c - cpu > self.BUSY * (now - t):
                    self.last_busy = now
                cpu, t = c, now

    def last_progress(self) -> float:
        """When the capturer last did work: its last busy sample for a capturer whose work
        shows as CPU (`Capturer.cpu_bound`), else the last change of its progress number."""
        return self.last_busy if self.cap.cpu_bound else self.last_change


def settle(
    cap: Capturer,
    prog: Progress,
    since: float,
    min_s: float = 2.5,
    quiet_s: float = 1.5,
    timeout: float = 600.0,
) -> None:
    """Wait until the capturer has caught up after the replay ended at ``since``: at least
    ``min_s`` later (tcpdump's libpcap hands a partly filled TPACKET_V3 block over only at its
    1 s timeout), no progress for ``quiet_s`` (the daemon's status.json is written every
    second), and `Capturer.caught_up`."""
    deadline = since + timeout
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        if now - since >= min_s and now - prog.last_change >= quiet_s and cap.caught_up():
            return
        if cap.proc is not None and cap.proc.poll() is not None:
            raise RuntimeError(
                f"{cap.name} exited {cap.proc.returncode} during the step: "
                f"{cap.stderr().strip()[-500:]}"
            )
        if now > deadline:
            raise TimeoutError(f"{cap.name} still busy {timeout} s after the replay")


# ---------------------------------------------------------------------------------------------
# tcpreplay


@dataclass
class Replay:
    rate: int  # packets/s asked for (0: --topspeed)
    packets: int  # asked for
    sent: int = 0  # "Successful packets"
    failed: int = 0
    seconds: float = 0.0
    pps: float = 0.0  # tcpreplay's "Rated: ... pps"
    argv: list[str] = field(default_factory=list)
    output: str = ""


def replay_argv(
    wire: Wire, pcap: Path, rate: int, packets: int | None, duration: int | None = None
) -> list[str]:
    """``packets`` (looping over the file as needed), or ``duration`` seconds, or the file once."""
    speed = ["--topspeed"] if rate == TOPSPEED else [f"--pps={rate}"]
    limit = []
    if packets:
        limit = [f"--limit={packets}", "--loop=0"]
    elif duration:
        limit = [f"--duration={duration}", "--loop=0"]
    return [
        *wire.exec,
        "tcpreplay",
        "-i",
        TX,
        *speed,
        "--preload-pcap",
        "--no-flow-stats",
        *limit,
        str(pcap),
    ]


def replay(
    wire: Wire, pcap: Path, rate: int, packets: int | None, duration: int | None = None
) -> Replay:
    argv = replay_argv(wire, pcap, rate, packets, duration)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    r = Replay(rate, packets or 0, argv=argv, output=p.stdout + p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"tcpreplay exited {p.returncode}: {r.output.strip()[-500:]}")
    m = re.search(r"Actual: (\d+) packets .* in ([\d.]+) seconds", r.output)
    if m:
        r.seconds = float(m.group(2))
    m = re.search(r"Rated: .*?, ([\d.]+) pps", r.output)
    if m:
        r.pps = float(m.group(1))
    m = re.search(r"Successful packets:\s+(\d+)", r.output)
    r.sent = int(m.group(1)) if m else 0
    m = re.search(r"Failed packets:\s+(\d+)", r.output)
    r.failed = int(m.group(1)) if m else 0
    return r


# ---------------------------------------------------------------------------------------------
# the capturers


class Capturer:
    """One capture process on ``skbB``: start, wait until ready, stop, read its counters."""

    name = ""
    #: Its work shows as CPU time (a core's worth while it catches up): `Progress` uses that.
    cpu_bound = False

    def __init__(self, wire: Wire, workdir: Path) -> None:
        self.wire = wire
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.errpath = workdir / f"{self.name}.stderr"
        self.argv: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def caught_up(self) -> bool:
        return True

    def progress(self) -> int | None:
        """A number that moves while the capturer stores packets."""
        raise NotImplementedError

    def backlog(self) -> int:
        """Bytes waiting inside the capturer (beyond the kernel ring), when it says."""
        return 0

    def env(self) -> dict[str, str] | None:
        return None

    def start(self, timeout: float = 30.0) -> None:
        self.argv = self.command()
        with open(self.errpath, "wb") as err:
            self.proc = subprocess.Popen(
                [*self.wire.exec, *self.argv],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited {self.proc.returncode}: {self.stderr().strip()[-500:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} not ready after {timeout} s: {self.stderr().strip()[-500:]}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM, wait. Returns (exit code, CPU seconds of its whole life from wait4)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        os.kill(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return self.proc.returncode, ru.ru_utime + ru.ru_stime
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} did not stop within {timeout} s of SIGTERM")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self.proc.wait()

    def stderr(self) -> str:
        try:
            return self.errpath.read_text(errors="replace")
        except OSError:
            return ""

    def result(self) -> dict[str, int]:
        """After `stop`: ``captured`` (stored) and ``dropped`` (the capturer's own count)."""
        raise NotImplementedError


class Tcpdump(Capturer):
    name = "tcpdump"

    def __init__(self, wire: Wire, workdir: Path) -> None:
        super().__init__(wire, workdir)
        self.file = workdir / "tcpdump.pcap"

    def command(self) -> list[str]:
        # -Z root: Debian's tcpdump otherwise writes as user tcpdump, which cannot create FILE
        return [
            "tcpdump",
            "-i",
            RX,
            "-w",
            str(self.file),
            "-B",
            str(TCPDUMP_BUFFER_KIB),
            "-Z",
            "root",
            "tcp",
        ]

    def is_ready(self) -> bool:
        return "listening on" in self.stderr()

    def progress(self) -> int | None:
        try:
            return self.file.stat().st_size
        except OSError:
            return None

    def result(self) -> dict[str, int]:
        text = self.stderr()
        out = {}
        for key, pat in (
            ("captured", r"(\d+) packets? captured"),
            ("received", r"(\d+) packets? received by filter"),
            ("dropped", r"(\d+) packets? dropped by kernel"),
        ):
            m = re.search(pat, text)
            if m is None:
                raise RuntimeError(f"tcpdump printed no '{pat}' line: {text.strip()[-500:]}")
            out[key] = int(m.group(1))
        return out


class Daemon(Capturer):
    name = "shark-tui"
    cpu_bound = True
    #: Run the daemon from this copy of the sources (``python -m shark_tui`` with it first on
    #: PYTHONPATH) instead of the installed ``shark-tui``: pins the code under test while the
    #: working tree moves (``--daemon-src``).
    src: Path | None = None

    def env(self) -> dict[str, str] | None:
        if self.src is None:
            return None
        return {**os.environ, "PYTHONPATH": str(self.src)}

    def __init__(self, wire: Wire, workdir: Path) -> None:
        super().__init__(wire, workdir)
        self.store = workdir / "store"

    def command(self) -> list[str]:
        return [
            *(shark_tui_argv() if self.src is None else [sys.executable, "-m", "shark_tui"]),
            "daemon",
            "--iface",
            RX,
            "--store",
            str(self.store),
            "--max-bytes",
            "16G",
            "--max-age",
            "1h",
            "--listen",
            f"unix:{self.workdir / 'daemon.sock'}",
            "--token-file",
            str(self.workdir / "token"),
        ]

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.store / "status.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def source(self, st: dict[str, Any]) -> dict[str, Any]:
        for s in st.get("sources", []):
            if s.get("name") == RX:
                return s  # type: ignore[no-any-return]
        return {}

    def is_ready(self) -> bool:
        st = self.status()
        return st is not None and RX in st.get("capturing", [])

    def caught_up(self) -> bool:
        st = self.status()
        return st is not None and not st.get("queue_bytes", 0)

    def progress(self) -> int | None:
        st = self.status()
        return None if st is None else int(st.get("packets", 0))

    def backlog(self) -> int:
        st = self.status()
        return 0 if st is None else int(st.get("queue_bytes", 0))

    def result(self) -> dict[str, int]:
        st = self.status()
        if st is None:
            raise RuntimeError(f"no status.json in {self.store}: {self.stderr().strip()[-500:]}")
        src = self.source(st)
        return {
            "captured": int(st["packets"]),
            "received": int(src.get("received", 0)),
            "dropped": int(src.get("dropped", 0)) + int(src.get("queue_dropped", 0)),
            "kernel_dropped": int(src.get("dropped", 0)),
            "ifdropped": int(src.get("ifdropped", 0)),
            "queue_dropped": int(src.get("queue_dropped", 0)),
            "flows": int(st.get("flows", 0)),
            "store_bytes": int(st.get("store_bytes", 0)),
            "duplicates": int(st.get("duplicates", 0)),
        }


CAPTURERS: dict[str, type[Capturer]] = {"tcpdump": Tcpdump, "shark-tui": Daemon}


# ---------------------------------------------------------------------------------------------
# one step


@dataclass
class Step:
    capturer: str
    rate: int
    sent: int = 0
    replay_failed: int = 0
    replay_pps: float = 0.0
    replay_s: float = 0.0
    veth_rx: int = 0
    captured: int = 0
    dropped: int = 0
    missing: int = 0  # sent - captured
    holds: bool = False
    cpu_s: float = 0.0  # from just before the replay until caught up
    cpu_us_per_pkt: float = 0.0
    cpu_total_s: float = 0.0  # the whole process life (wait4)
    lag_s: float = 0.0  # from the end of the replay to the capturer's last progress
    drain_pps: float = 0.0  # captured / (last progress - start of sending)
    max_queue_mb: float = 0.0  # the daemon's queue_bytes, largest sample
    rss_idle_mb: float = 0.0
    rss_after_mb: float = 0.0
    peak_rss_mb: float = 0.0
    exit_code: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


@contextlib.contextmanager
def running(cap: Capturer) -> Iterator[Capturer]:
    try:
        cap.start()
        yield cap
    finally:
        cap.kill()


def step(
    wire: Wire,
    kind: str,
    pcap: Path,
    rate: int,
    packets: int | None,
    workdir: Path,
    idle_s: float = 0.5,
    duration: int | None = None,
    keep: bool = False,
    during: Callable[[Capturer], None] | None = None,
) -> Step:
    """Start a fresh capturer, replay, wait until it caught up, stop it, collect."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    cap = CAPTURERS[kind](wire, workdir)
    st = Step(kind, rate)
    if kind == "shark-tui":
        st.detail["shark_tui"] = shark_tui_version()
    with running(cap):
        st.argv = cap.argv
        time.sleep(idle_s)
        st.rss_idle_mb = vm_kib(cap.pid)["VmRSS"] / 1024
        links0 = wire.link_stats()
        cpu0 = cpu_seconds(cap.pid)
        with Progress(cap) as prog:
            if during is not None:
                during(cap)
            rep = replay(wire, pcap, rate, packets, duration)
            end = time.monotonic()
            settle(cap, prog, end)
        st.cpu_s = cpu_seconds(cap.pid) - cpu0
        last = prog.last_progress()
        st.lag_s = max(0.0, last - end)
        st.max_queue_mb = prog.max_backlog / 2**20
        drain_s = max(rep.seconds, last - (end - rep.seconds))
        mem = vm_kib(cap.pid)
        st.rss_after_mb = mem["VmRSS"] / 1024
        st.peak_rss_mb = mem["VmHWM"] / 1024
        links1 = wire.link_stats()
        st.exit_code, st.cpu_total_s = cap.stop()
        res = cap.result()
    st.sent, st.replay_failed, st.replay_pps, st.replay_s = (
        rep.sent,
        rep.failed,
        rep.pps,
        rep.seconds,
    )
    st.veth_rx = links1[f"{RX}_rx_packets"] - links0[f"{RX}_rx_packets"]
    st.captured, st.dropped = res["captured"], res["dropped"]
    st.missing = st.sent - st.captured
    st.holds = st.dropped == 0 and st.missing == 0 and st.exit_code == 0
    if st.captured:
        st.cpu_us_per_pkt = st.cpu_s / st.captured * 1e6
        st.drain_pps = st.captured / drain_s if drain_s > 0 else 0.0
    st.detail = {
        **st.detail,
        **res,
        "links_before": links0,
        "links_after": links1,
        "replay_argv": rep.argv,
        "replay_output": rep.output.strip(),
        "capturer_stderr": cap.stderr().strip()[-2000:],
    }
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return st


class Profiler:
    """py-spy on the daemon during a step: ``record --nonblocking --threads --format raw`` for
    ``seconds`` after ``delay`` s (so the daemon is at its steady state), then `summary`."""

    def __init__(self, out: Path, seconds: int = 20, delay: float = 3.0, rate: int = 100) -> None:
        self.out = out
        self.seconds = seconds
        self.delay = delay
        self.rate = rate
        self.thread: threading.Thread | None = None
        self.error = ""

    @staticmethod
    def executable() -> str | None:
        exe = Path(sys.executable).parent / "py-spy"
        return str(exe) if exe.exists() else shutil.which("py-spy")

    def start(self, cap: Capturer) -> None:
        exe = self.executable()
        if exe is None:
            self.error = "py-spy not found"
            return
        argv = [exe, "record", "--pid", str(cap.pid), "--duration", str(self.seconds), "--rate",
                str(self.rate), "--nonblocking", "--threads", "--format", "raw",
                "-o", str(self.out)]  # fmt: skip

        def run() -> None:
            time.sleep(self.delay)
            p = subprocess.run(argv, capture_output=True, text=True)
            if p.returncode != 0:
                self.error = f"py-spy exited {p.returncode}: {p.stderr.strip()[-300:]}"

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def summary(self, top: int = 12) -> dict[str, Any]:
        """Per thread: share of the wall time it was on CPU (non-idle samples / possible
        samples), and the functions with the most samples (inclusive and self), in %."""
        threads: dict[str, dict[str, Any]] = {}
        try:
            lines = self.out.read_text().splitlines()
        except OSError as e:
            return {"error": self.error or str(e)}
        possible = self.seconds * self.rate
        for line in lines:
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            head, *frames = stack.split(";")
            name = head.split(": ", 1)[-1]
            t = threads.setdefault(name, {"samples": 0, "incl": {}, "self": {}})
            t["samples"] += n
            funcs = [re.sub(r":\d+\)$", ")", f) for f in frames]
            for fn in dict.fromkeys(funcs):
                t["incl"][fn] = t["incl"].get(fn, 0) + n
            leaf = funcs[-1] if funcs else "(no Python frame)"
            t["self"][leaf] = t["self"].get(leaf, 0) + n
        out: dict[str, Any] = {"file": str(self.out), "seconds": self.seconds, "hz": self.rate,
                               "threads": {}}  # fmt: skip
        for name, t in sorted(threads.items(), key=lambda kv: -kv[1]["samples"]):
            n = t["samples"]

            def pct(d: dict[str, int], n: int = n) -> list[tuple[str, float]]:
                items = sorted(d.items(), key=lambda kv: -kv[1])[:top]
                return [(k, round(100 * v / n, 1)) for k, v in items]

            out["threads"][name] = {
                "busy_pct": round(100 * n / possible, 1),
                "inclusive_pct": [x for x in pct(t["incl"]) if not x[0].startswith("Thread.")],
                "self_pct": pct(t["self"]),
            }
        if self.error:
            out["error"] = self.error
        return out


def flows_step(
    wire: Wire, pcap: Path, rate: int, workdir: Path, idle_s: float = 3.0, keep: bool = False
) -> Step:
    """Replay the whole capture once into a fresh daemon; RSS per indexed flow."""
    st = step(wire, "shark-tui", pcap, rate, None, workdir, idle_s=idle_s, keep=keep)
    flows = st.detail.get("flows", 0)
    st.detail["bytes_per_flow"] = (
        (st.rss_after_mb - st.rss_idle_mb) * 1024 * 1024 / flows if flows else None
    )
    st.detail["peak_bytes_per_flow"] = (
        (st.peak_rss_mb - st.rss_idle_mb) * 1024 * 1024 / flows if flows else None
    )
    return st


# ---------------------------------------------------------------------------------------------
# the whole bench


def parse_rate(s: str) -> int:
    s = s.strip().lower()
    if s in ("top", "topspeed", "max"):
        return TOPSPEED
    mult = 1
    if s.endswith("k"):
        mult, s = 1000, s[:-1]
    elif s.endswith("m"):
        mult, s = 1_000_000, s[:-1]
    return int(float(s) * mult)


def fmt_rate(rate: int) -> str:
    return "topspeed" if rate == TOPSPEED else f"{rate // 1000}k"


def shark_tui_version() -> dict[str, Any]:
    """Where the daemon runs from: ``--daemon-src`` (and the commit it says it is, from its
    ``COMMIT`` file), else the working tree's commit and whether ``shark_tui/`` differed."""
    if Daemon.src is not None:
        commit = Daemon.src / "COMMIT"
        return {"src": str(Daemon.src),
                "commit": commit.read_text().strip() if commit.exists() else None}  # fmt: skip

    def git(*args: str) -> str:
        p = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_DIR)
        return p.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--", "shark_tui"))}  # fmt: skip


def missing_tools() -> list[str]:
    return [t for t in ("ip", "tcpreplay", "tcpdump") if shutil.which(t) is None]


def bench(
    rates: list[int],
    seconds: float,
    capturers: list[str],
    conns: int = mkflows.FULL_CONNS,
    top_seconds: int = 60,
    profile: Path | None = None,
    profile_rate: int = TOPSPEED,
    retries: int = 1,
    flows: bool = True,
    flows_rate: int = 100_000,
    keep: bool = False,
    log: Log = _stderr,
) -> dict[str, Any]:
    pcap = mkflows.build(conns, log=log)
    man = mkflows.load_manifest(pcap)
    stale_cleanup(log)
    workroot = OUT_DIR / f"live-{os.getpid()}"
    res: dict[str, Any] = {
        "capture": man,
        "seconds": seconds,
        "top_seconds": top_seconds,
        "lag_ok_s": LAG_OK_S,
        "steps": [],
        "flows": None,
        "problems": [],
        "failed_runs": [],
        "profile": None,
        "shark_tui": shark_tui_version(),
        "host": {"cpus": os.cpu_count(), "kernel": os.uname().release},
    }
    try:
        with Wire() as wire:
            res["netns"] = wire.name
            for kind in capturers:
                for rate in rates:
                    n, dur = int(rate * seconds), None
                    what = f"{n} packets"
                    if rate == TOPSPEED:
                        n, dur = 0, top_seconds
                        what = f"{dur} s"
                    log(f"bench: {kind} at {fmt_rate(rate)} ({what})")
                    for attempt in range(1 + retries):
                        prof = None
                        if profile is not None and kind == "shark-tui" and rate == profile_rate:
                            busy = dur or seconds
                            prof = Profiler(profile, seconds=max(1, min(20, int(busy) - 4)))
                        try:
                            s = step(
                                wire, kind, pcap, rate, n, workroot / kind, keep=keep,
                                duration=dur, during=prof.start if prof else None,
                            )  # fmt: skip
                            if prof is not None:
                                prof.join()
                                res["profile"] = {"rate": rate, **prof.summary()}
                            break
                        except (RuntimeError, TimeoutError, OSError) as e:
                            # a capturer that died of something else (a shared machine) is a
                            # failed run, not a result: noted, and the step is run again
                            res["failed_runs"].append(f"{kind} at {fmt_rate(rate)}: {e}")
                            log(f"bench:   failed (attempt {attempt + 1}): {e}")
                    else:
                        res["problems"].append(f"{kind} at {fmt_rate(rate)}: no run completed")
                        continue
                    res["steps"].append(asdict(s))
                    log(
                        f"bench:   sent {s.sent} captured {s.captured} dropped {s.dropped} "
                        f"cpu {s.cpu_us_per_pkt:.2f} µs/pkt peak RSS {s.peak_rss_mb:.0f} MB"
                    )
            if flows:
                log(
                    f"bench: shark-tui flow index: {man['connections']} connections at "
                    f"{fmt_rate(flows_rate)}"
                )
                try:
                    s = flows_step(wire, pcap, flows_rate, workroot / "flows", keep=keep)
                    res["flows"] = asdict(s)
                    if s.detail.get("flows") != man["connections"]:
                        res["problems"].append(
                            f"flow step: {s.detail.get('flows')} flows "
                            f"indexed, {man['connections']} replayed"
                        )
                    if not s.holds:
                        res["problems"].append(
                            f"flow step: {s.dropped} dropped, {s.missing} missing"
                        )
                except (RuntimeError, TimeoutError, OSError) as e:
                    res["problems"].append(f"flow step: {e}")
    finally:
        if not keep:
            shutil.rmtree(workroot, ignore_errors=True)
    res["ceiling"] = ceilings(res["steps"], capturers)
    return res


def _fastest(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(steps, key=lambda x: x["replay_pps"]) if steps else None


def ceilings(steps: list[dict[str, Any]], capturers: list[str]) -> dict[str, Any]:
    """Per capturer, from its steps: the highest rate tcpreplay actually delivered (its "Rated"
    pps, which falls short of the asked rate when the two cores are busy) in a step that held;
    the same among steps it also caught up with (lag ≤ `LAG_OK_S`); the best drain rate of a
    step it did not hold (what it sustains when saturated); and the asked rates."""
    out = {}
    for kind in capturers:
        mine = [s for s in steps if s["capturer"] == kind]
        held = [s for s in mine if s["holds"]]
        kept = [s for s in held if s["lag_s"] <= LAG_OK_S]
        lost = [s for s in mine if not s["holds"]]
        b, k = _fastest(held), _fastest(kept)
        out[kind] = {
            "held_pps": round(b["replay_pps"]) if b else None,
            "held_asked": fmt_rate(b["rate"]) if b else None,
            "kept_up_pps": round(k["replay_pps"]) if k else None,
            "kept_up_asked": fmt_rate(k["rate"]) if k else None,
            "first_failure": fmt_rate(min((x["rate"] == TOPSPEED, x["rate"]) for x in lost)[1])
            if lost
            else None,
            "saturated_drain_pps": round(max(s["drain_pps"] for s in lost)) if lost else None,
        }
    return out


def table(res: dict[str, Any]) -> str:
    man = res["capture"]
    lines = [
        f"capture  {man['file']}",
        f"         {man['connections']:,} connections, {man['packets']:,} packets, "
        f"{man['frame_bytes'] / 1e6:.0f} MB of frames; {res['seconds']:g} s per rate step, "
        f"{res['top_seconds']} s at topspeed (the file looped as needed)",
        "",
        f"{'capturer':<10} {'rate':>8} {'tcpreplay':>10} {'sent':>11} {'captured':>11} "
        f"{'dropped':>9} {'missing':>9} {'holds':>5} {'cpu s':>6} {'µs/pkt':>6} "
        f"{'lag s':>5} {'drain pps':>9} {'queue MB':>8} {'peak RSS MB':>11}",
    ]
    for s in res["steps"]:
        queue = f"{s['max_queue_mb']:.0f}" if s["capturer"] == "shark-tui" else "-"
        lines.append(
            f"{s['capturer']:<10} {fmt_rate(s['rate']):>8} {s['replay_pps']:>10,.0f} "
            f"{s['sent']:>11,} {s['captured']:>11,} {s['dropped']:>9,} {s['missing']:>9,} "
            f"{'yes' if s['holds'] else 'NO':>5} {s['cpu_s']:>6.2f} {s['cpu_us_per_pkt']:>6.2f} "
            f"{s['lag_s']:>5.1f} {s['drain_pps']:>9,.0f} "
            f"{queue:>8} "
            f"{s['peak_rss_mb']:>11.1f}"
        )
    lines.append("")
    for kind, c in res.get("ceiling", {}).items():
        held = f"{c['held_pps']:,} pps (asked {c['held_asked']})" if c["held_pps"] else "none"
        kept = (
            f"{c['kept_up_pps']:,} pps (asked {c['kept_up_asked']})" if c["kept_up_pps"] else "none"
        )
        lines.append(
            f"{kind}: highest delivered rate held (0 drops, every packet captured): {held}"
        )
        lines.append(
            f"{' ' * len(kind)}  ...and caught up within {LAG_OK_S:g} s of the end: {kept}"
        )
        if c["first_failure"]:
            lines.append(
                f"{' ' * len(kind)}  first step not held: {c['first_failure']}; drained "
                f"{c['saturated_drain_pps']:,} pps at best when saturated"
            )
    f = res.get("flows")
    if f:
        d = f["detail"]
        bpf = d.get("bytes_per_flow")
        expect = "as expected"
        if d.get("flows") != man["connections"]:
            expect = f"EXPECTED {man['connections']:,}"
        lines += [
            "",
            f"flow index: {man['connections']:,} connections replayed once at "
            f"{fmt_rate(f['rate'])} pps: flows {d.get('flows'):,} "
            f"({expect}), "
            f"stored {f['captured']:,} of {f['sent']:,} packets, dropped {f['dropped']:,}",
            f"            RSS idle {f['rss_idle_mb']:.1f} MB -> after {f['rss_after_mb']:.1f} MB "
            f"(peak {f['peak_rss_mb']:.1f} MB): "
            + (f"{bpf:,.0f} bytes per indexed flow" if bpf is not None else "no flows")
            + (f" ({d['peak_bytes_per_flow']:,.0f} by peak)" if bpf is not None else ""),
        ]
    prof = res.get("profile")
    if prof and prof.get("threads"):
        lines += [
            "",
            f"py-spy on the daemon during its {fmt_rate(prof['rate'])} step ({prof['seconds']} s "
            f"sampled at {prof['hz']} Hz; raw stacks in {prof['file']}):",
        ]
        for name, t in prof["threads"].items():
            if t["busy_pct"] < 1:
                continue
            lines.append(f"  thread {name}: on CPU {t['busy_pct']:.0f}% of the time; self time:")
            for fn, pc in t["self_pct"][:8]:
                lines.append(f"    {pc:5.1f}%  {fn}")
    for p in res.get("failed_runs", []):
        lines.append(f"failed run (repeated): {p.splitlines()[0]}")
    for p in res["problems"]:
        lines.append(f"PROBLEM: {p}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="live capture: shark-tui daemon vs tcpdump")
    ap.add_argument(
        "--rates",
        default=",".join(fmt_rate(r) for r in DEFAULT_RATES),
        help="comma-separated packets/s (50k, 1.5m, top); default %(default)s",
    )
    ap.add_argument(
        "--seconds",
        type=float,
        default=30.0,
        help="replay length per step at its rate (default 30)",
    )
    ap.add_argument(
        "--top-seconds",
        type=int,
        default=60,
        help="length of the topspeed step (tcpreplay --duration; default 60)",
    )
    ap.add_argument("--capturers", default="tcpdump,shark-tui")
    ap.add_argument(
        "--conns",
        type=int,
        default=mkflows.FULL_CONNS,
        help="connections in the replayed capture (default 100000)",
    )
    ap.add_argument("--no-flows", action="store_true", help="skip the flow-index step")
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the daemon during its --profile-rate step; raw stacks to this file",
    )
    ap.add_argument("--profile-rate", default="top", help="the step to profile (default top)")
    ap.add_argument("--show", type=Path, help="print the table of a results JSON and exit")
    ap.add_argument(
        "--retries", type=int, default=1, help="runs again a step whose capturer failed (default 1)"
    )
    ap.add_argument(
        "--daemon-src",
        type=Path,
        default=None,
        help="run the daemon from this source tree (e.g. `git archive HEAD shark_tui | tar -x "
        "-C DIR`; a COMMIT file in it is recorded) instead of the installed shark-tui",
    )
    ap.add_argument("--flows-rate", default="100k", help="rate of the flow-index replay")
    ap.add_argument("--keep", action="store_true", help="keep captures and stores in bench/out")
    ap.add_argument(
        "--json",
        type=Path,
        default=OUT_DIR / "capture-results.json",
        help="write the results here (default %(default)s)",
    )
    args = ap.parse_args(argv)
    if args.show:
        res = json.loads(args.show.read_text())
        res["ceiling"] = ceilings(
            res["steps"], list(dict.fromkeys(s["capturer"] for s in res["steps"]))
        )
        print(table(res))
        return 0
    try:
        rates = [parse_rate(r) for r in args.rates.split(",") if r.strip()]
        flows_rate = parse_rate(args.flows_rate)
    except ValueError as e:
        print(f"bench: bad rate: {e}", file=sys.stderr)
        return 2
    capturers = [c.strip() for c in args.capturers.split(",") if c.strip()]
    bad = [c for c in capturers if c not in CAPTURERS]
    if bad or not rates or flows_rate == TOPSPEED:
        print(
            f"bench: usage: capturers are {', '.join(CAPTURERS)}; rates must be given; "
            "the flow step needs a rate",
            file=sys.stderr,
        )
        return 2
    if os.geteuid() != 0:
        print("bench: needs root (network namespace, veth, packet capture)", file=sys.stderr)
        return 2
    if missing_tools():
        print(f"bench: missing tools: {', '.join(missing_tools())}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(1)  # run the finally blocks: processes, veth, namespace

    if args.daemon_src is not None:
        if not (args.daemon_src / "shark_tui" / "__main__.py").exists():
            print(
                f"bench: --daemon-src {args.daemon_src}: no shark_tui/__main__.py", file=sys.stderr
            )
            return 2
        Daemon.src = args.daemon_src.resolve()
    signal.signal(signal.SIGTERM, on_term)
    res = bench(
        rates,
        args.seconds,
        capturers,
        args.conns,
        args.top_seconds,
        profile=args.profile,
        profile_rate=parse_rate(args.profile_rate),
        retries=max(0, args.retries),
        flows=not args.no_flows,
        flows_rate=flows_rate,
        keep=args.keep,
    )
    print(table(res))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(f"\nresults: {args.json}", file=sys.stderr)
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
