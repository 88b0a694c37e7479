"""The TLS status view (`L`, `:tls`): per daemon, whether it captures TLS plaintext, the kernel
path that gives each SSL call its socket, the libraries probed (or why not), and one row per
process using TLS — whether its plaintext is visible and, when it is not, why. What
``shark-tui tls-status`` prints, for every connected daemon, refreshed every 2 s while open.
Never silent: a daemon without TLS capture, one that cannot say, or one that is away, says so.

`status_lines` and `process_rows` are plain functions of a report (`Client.get_tls_status`);
the screen only fetches (`DaemonLink.tls_status`) and shows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from shark_tui.widgets.link import DaemonLink

__all__ = ["REFRESH", "ProcessRow", "TlsStatusScreen", "process_rows", "status_lines"]

#: Seconds between two reports while the view is open.
REFRESH = 2.0

#: What each kernel path (`shark_tui.ebpf.loader.kernel_path`) means for the user.
KERNEL_PATHS = {
    "tracepoints": "the sock:sock_send_length / sock_recv_length tracepoints give each SSL "
    "call its socket",
    "kprobes": "kprobes on tcp_sendmsg / tcp_recvmsg give each SSL call its socket",
    "syscalls": "the file descriptor only; the 5-tuple is read from /proc afterwards",
}

VISIBLE = {True: "yes", False: "no", None: "-"}

COLUMNS = ("PID", "COMM", "VISIBLE", "TLS CONNS", "REASON")


class ProcessRow(NamedTuple):
    pid: int
    comm: str
    visible: str  # yes / no / - (nothing to judge yet)
    connections: int
    reason: str
    exited: bool


def status_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(text, role) lines above a daemon's process table; role is ``""``, ``off``, ``error``
    or ``warning`` (the view colours each)."""
    if not report.get("enabled"):
        return [(f"TLS capture is off: {report.get('reason') or report.get('error')}", "off")]
    if report.get("error"):
        return [(f"TLS status unavailable: {report['error']}", "error")]
    path = str(report.get("kernel_path"))
    lines = [(f"kernel path: {path} ({KERNEL_PATHS.get(path, 'sockets of SSL calls')})", "")]
    libraries = report.get("libraries") or []
    for lib in libraries:
        if lib.get("error"):
            lines.append((f"library {lib['path']}: {lib['error']}", "error"))
        else:
            attached = ", ".join(lib.get("attached") or []) or "nothing attached"
            lines.append((f"library {lib['path']}: probed {attached}", ""))
    if not libraries:
        lines.append(("no libssl probed yet: no process maps one", "warning"))
    lost = {k: v for k, v in (report.get("lost") or {}).items() if v}
    if lost:
        text = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in lost.items())
        lines.append((f"lost: {text}", "warning"))
    if not report.get("processes"):
        lines.append(("no process using TLS seen yet", ""))
    return lines


def process_rows(report: dict[str, Any]) -> list[ProcessRow]:
    """One row per process of the report, in its order (by pid)."""
    if not report.get("enabled") or report.get("error"):
        return []
    return [
        ProcessRow(
            pid=int(p["pid"]),
            comm=str(p.get("comm") or "?"),
            visible=VISIBLE[p.get("visible")],
            connections=len(p.get("tls_connections") or []),
            reason=str(p.get("reason") or ""),
            exited=bool(p.get("exited")),
        )
        for p in report.get("processes") or []
    ]


def _fg(s: Style) -> Style:
    """A component style without its background (the table's own shows through)."""
    return Style(color=s.color, bold=s.bold, italic=s.italic, dim=s.dim)


class TlsStatusScreen(ModalScreen[None]):
    CSS_PATH = "tls_status.tcss"
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "tls-status--yes", "tls-status--no", "tls-status--unknown", "tls-status--exited",
        "tls-status--off", "tls-status--error", "tls-status--warning",
    }  # fmt: skip
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,L", "dismiss", "close", id="tls_status.close"),
    ]

    def __init__(self, links: Sequence[DaemonLink], refresh: float = REFRESH) -> None:
        super().__init__()
        self.links = list(links)
        self.refresh_every = refresh
        #: per link: the last report, or what kept it from coming (shown as it is)
        self.reports: list[dict[str, Any] | str | None] = [None] * len(self.links)
        self._shown: list[list[ProcessRow] | None] = [None] * len(self.links)
        self._fetching = False

    def compose(self):  # type: ignore[no-untyped-def]
        with Vertical(id="tls-box"):
            yield Static("TLS status: processes using TLS, and whether their plaintext is "
                         "visible", id="tls-title")  # fmt: skip
            with VerticalScroll(id="tls-nodes"):
                for i in range(len(self.links)):
                    yield Static("", id=f"tls-node-{i}", classes="tls-node")
                    yield Static("", id=f"tls-info-{i}", classes="tls-info")
                    # no cursor: nothing to choose here, and the verdicts keep their colours
                    yield DataTable(id=f"tls-procs-{i}", classes="tls-procs", cursor_type="none",
                                    zebra_stripes=True)  # fmt: skip
            yield Static(f"refreshed every {self.refresh_every:g} s · dim: the process has "
                         "exited · esc closes", id="tls-hint")  # fmt: skip

    def on_mount(self) -> None:
        for i, link in enumerate(self.links):
            self.query_one(f"#tls-procs-{i}", DataTable).add_columns(*COLUMNS)
            self._show(i, link.node, None)
        self.fetch()
        self.set_interval(self.refresh_every, self.fetch)

    def fetch(self) -> None:
        """Ask every daemon for its report (one round at a time: a slow daemon is not asked
        again before it answered)."""
        if not self._fetching:
            self._fetching = True
            self.run_worker(self._fetch(), group="tls-status", exit_on_error=False)

    async def _fetch(self) -> None:
        async def one(link: DaemonLink) -> dict[str, Any] | str:
            if not link.up:
                return "not connected"
            try:
                return await link.tls_status()
            except Exception as exc:  # said in the view, never raised into the UI
                return str(exc) or type(exc).__name__

        try:
            reports = await asyncio.gather(*(one(link) for link in self.links))
        finally:
            self._fetching = False
        if not self.is_attached:
            return
        for i, (link, report) in enumerate(zip(self.links, reports)):
            self.reports[i] = report
            self._show(i, link.node, report)

    def _style(self, role: str) -> Style:
        return _fg(self.get_component_rich_style(f"tls-status--{role}"))

    def _show(self, i: int, node: str, report: dict[str, Any] | str | None) -> None:
        self.query_one(f"#tls-node-{i}", Static).update(node)
        if report is None:
            lines = [("asking…", "")]
        elif isinstance(report, str):
            lines = [(f"no TLS status: {report}", "error")]
        else:
            lines = status_lines(report)
        info = Text()
        for n, (text, role) in enumerate(lines):
            info.append(("\n" if n else "") + text, self._style(role) if role else "")
        self.query_one(f"#tls-info-{i}", Static).update(info)
        rows = process_rows(report) if isinstance(report, dict) else []
        table = self.query_one(f"#tls-procs-{i}", DataTable)
        table.display = bool(rows)
        if rows == self._shown[i]:
            return  # the same rows: no repaint
        self._shown[i] = rows
        table.clear()
        roles = {"yes": "yes", "no": "no", "-": "unknown"}
        for r in rows:
            dim = self._style("exited") if r.exited else Style()
            table.add_row(
                Text(str(r.pid), dim, justify="right"), Text(r.comm, dim),
                Text(r.visible, self._style(roles[r.visible])),
                Text(str(r.connections), dim, justify="right"), Text(r.reason, dim),
                key=str(r.pid),
            )  # fmt: skip

    def table_rows(self, i: int) -> list[list[str]]:
        """The cells of daemon ``i``'s process table as shown (tests read them)."""
        table = self.query_one(f"#tls-procs-{i}", DataTable)
        return [[str(c) for c in table.get_row_at(n)] for n in range(table.row_count)]

    def info_text(self, i: int) -> str:
        """The lines above daemon ``i``'s table as shown."""
        return str(self.query_one(f"#tls-info-{i}", Static).render())
