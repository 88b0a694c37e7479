"""The detail pane (enter): the full entry fetched from its daemon, in tabs — Request, Response,
Raw and Connection (``connview``). HTTP-like messages read as a start line, headers and a body
view chosen by priority (``bodyview``: gRPC messages, GraphQL, JSON, form, text, hex) that says
when a body failed to parse as what it claimed; Redis, Kafka and AMQP have native views
(``protoviews``); anything else shows its objects as JSON."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final

from rich.console import Console, Group, RenderableType
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Input, Static, TabbedContent, TabPane

from shark_tui.widgets.bodyview import (
    GRPC_CODES,
    cut_note,
    json_view,
    message_body_view,
    tcp_view,
    websocket_view,
)
from shark_tui.widgets.connview import connection_info, connection_view
from shark_tui.widgets.protoviews import ROLES, Palette, proto_view


def _header_lines(out: Text, headers: list[Any], trailers: bool = False) -> str:
    """``name: value`` lines (a gRPC status named); the content type, lower-cased."""
    ctype = ""
    for h in headers:
        if isinstance(h, list | tuple) and len(h) == 2:
            out.append(f"{h[0]}", style="cyan")
            value = str(h[1])
            if trailers and str(h[0]).lower() == "grpc-status" and value.isdigit():
                value += f" ({GRPC_CODES.get(int(value), 'unknown code')})"
            out.append(f": {value}\n")
            if str(h[0]).lower() == "content-type":
                ctype = value.lower()
    return ctype


#: Keys of an HTTP-like message drawn on their own (the rest is listed as JSON at the end).
_SHOWN: Final = frozenset({
    "headers", "body", "body_encoding", "body_truncated", "version", "method", "target", "path",
    "status", "reason", "query", "body_size", "content_encoding", "graphql", "messages",
    "trailers",
})  # fmt: skip


def message_view(msg: Any) -> RenderableType:
    """A request or response: HTTP-like (start line, headers, body by priority, trailers),
    a WebSocket message, a tcp half; anything else as JSON."""
    if not isinstance(msg, dict):
        return Text("(not seen)", style="dim") if msg is None else json_view(msg)
    if "opcode" in msg:
        return websocket_view(msg)
    if "first_bytes" in msg:
        return tcp_view(msg)
    headers = msg.get("headers")
    if not isinstance(headers, list):
        return json_view(msg)
    if msg.get("method"):
        start = f"{msg.get('method')} {msg.get('target') or msg.get('path') or ''} " + str(
            msg.get("version") or ""
        )
    else:
        start = f"{msg.get('version') or ''} {msg.get('status') or ''} {msg.get('reason') or ''}"
    lines = Text(start.strip() + "\n", style="bold")
    ctype = _header_lines(lines, headers)
    parts: list[RenderableType] = [lines]
    note = cut_note(msg)
    if note:
        parts.append(note)
    parts.append(message_body_view(msg, ctype))
    trailers = msg.get("trailers")
    extra = {k: v for k, v in msg.items() if k not in _SHOWN}
    if isinstance(trailers, list) and trailers:
        out = Text("trailers\n", style="bold")
        _header_lines(out, trailers, trailers=True)
        out.rstrip()
        parts.append(out)
        names = {str(h[0]).lower() for h in trailers if isinstance(h, list | tuple) and h}
        for key in ("grpc_status", "grpc_message"):  # the trailers say it
            if key.replace("_", "-") in names:
                extra.pop(key, None)
    if extra:
        parts.append(json_view(extra))
    return Group(*parts)


RawLoader = Callable[[], Awaitable[tuple[list[tuple[int, bytes]], int]]]
#: The entry asked for again with bodies kept up to N bytes (``max_body`` of GetEntry).
FullLoader = Callable[[int], Awaitable[dict[str, Any]]]
#: The body cap "show full" asks for (the daemon sends at most its own limit).
FULL_BODY: Final = 16 << 20
_CUT_KEYS: Final = ("body_truncated", "truncated", "args_truncated", "records_truncated")


def was_cut(obj: Any, depth: int = 0) -> bool:
    """Whether a value of an entry's request or response was cut (a body, a Redis value or
    argument, Kafka records...)."""
    if depth > 64:
        return False
    if isinstance(obj, dict):
        if depth == 0:
            return any(was_cut(obj.get(side), 1) for side in ("request", "response"))
        if any(obj.get(k) for k in _CUT_KEYS):
            return True
        return any(was_cut(v, depth + 1) for v in obj.values() if isinstance(v, dict | list))
    if isinstance(obj, list):
        return any(was_cut(v, depth + 1) for v in obj if isinstance(v, dict | list))
    return False


def title(e: dict[str, Any]) -> str:
    """The pane's first line: id, protocol, method and summary, status, latency, error."""
    head = f"{e.get('id')}  {e.get('proto')}  {e.get('method') or ''} {e.get('summary') or ''}"
    if e.get("status") is not None:
        head += f"  → {e['status']}"
    if e.get("latency_ms") is not None:
        head += f"  {e['latency_ms']} ms"
    if e.get("error"):
        head += f"  [{e['error']}]"
    return head


def raw_view(chunks: list[tuple[int, bytes]], left_out: int, hex_mode: bool,
             client: Style, server: Style) -> Text:  # fmt: skip
    """The reassembled stream, client and server in their styles, as text or as hex."""
    out = Text()
    for direction, data in chunks:
        style = client if direction == 0 else server
        if hex_mode:
            lines = [f"{'→' if direction == 0 else '←'} {i:08x}  {data[i : i + 16].hex(' ')}"
                     for i in range(0, len(data), 16)]  # fmt: skip
            out.append("\n".join(lines) + "\n", style=style)
        else:
            out.append(data.decode("utf-8", "replace"), style=style)
            if not data.endswith(b"\n"):
                out.append("\n")
    if left_out:
        out.append(f"({left_out:,} bytes not shown: lost to the capture or past the cap)\n")
    if not chunks and not left_out:
        out.append("(no payload)")
    return out


def side_view(entry: dict[str, Any], side: str, palette: Palette | None = None) -> RenderableType:
    """The Request or Response tab of ``entry``: its protocol's native view, else the HTTP
    message view."""
    view = proto_view(entry, side, palette)
    return view if view is not None else message_view(entry.get(side))


class DetailScreen(ModalScreen[None]):
    CSS_PATH = "detail.tcss"
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "detail--client", "detail--server", *(f"detail--{role}" for role in ROLES)
    }  # fmt: skip
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "close", id="detail.close"),
        Binding("h", "toggle_hex", "hex/text", id="detail.hex"),
        Binding("f", "show_full", "show full", id="detail.full"),
        Binding("slash", "search", "search", id="detail.search"),
        Binding("n", "next_match(1)", "next", show=False, id="detail.next"),
        Binding("N", "next_match(-1)", "previous", show=False, id="detail.previous"),
    ]

    def __init__(
        self, entry: dict[str, Any], raw: RawLoader | None = None, full: FullLoader | None = None
    ) -> None:
        super().__init__()
        self.entry = entry
        self.raw = raw
        self.full = full
        self.hex_mode = False
        self._raw_data: tuple[list[tuple[int, bytes]], int] | None = None
        self._bodies: dict[str, RenderableType] = {}  # what each tab shows (for search)
        self.term = ""
        self.matches: list[int] = []  # line numbers of the active tab's text holding the term
        self.current = -1
        self._focus_before: Widget | None = None  # what had the focus before the search box

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static(title(self.entry), id="detail-title")
        with TabbedContent(id="detail-tabs"):
            with TabPane("Request", id="tab-request"), VerticalScroll():
                yield Static("", id="request-body", classes="detail-body")
            with TabPane("Response", id="tab-response"), VerticalScroll():
                yield Static("", id="response-body", classes="detail-body")
            with TabPane("Raw", id="tab-raw"), VerticalScroll():
                yield Static("(loading the stream…)", id="raw-body", classes="detail-body")
            with TabPane("Connection", id="tab-connection"), VerticalScroll():
                yield Static("", id="connection-body", classes="detail-body")
        yield Input(placeholder="search this tab (enter; n / N for the next and previous)",
                    id="detail-search")  # fmt: skip
        yield Static("", id="detail-search-status")

    def on_mount(self) -> None:
        self.query_one("#detail-search", Input).display = False
        # the roles' styles come from TCSS (component classes), applied to a new screen after
        # its first refresh: render then
        self.call_after_refresh(self._show_sides)
        if was_cut(self.entry):
            self._status("values of this entry were cut to what the daemon keeps: f shows them "
                         "whole")  # fmt: skip

    def _status(self, text: str) -> None:
        self.query_one("#detail-search-status", Static).update(text)

    def _show_sides(self) -> None:
        palette = {role: self.get_component_rich_style(f"detail--{role}", partial=True)
                   for role in ROLES}  # fmt: skip
        for side in ("request", "response"):
            view = side_view(self.entry, side, palette)
            self._bodies[f"tab-{side}"] = view
            self.query_one(f"#{side}-body", Static).update(view)
        conn = connection_view(connection_info(self.entry), palette)
        self._bodies["tab-connection"] = conn
        self.query_one("#connection-body", Static).update(conn)

    # -- show full (f) ---------------------------------------------------------------------------

    def action_show_full(self) -> None:
        if not was_cut(self.entry):
            self._status("nothing in this entry was cut")
            return
        loader = self.full
        if loader is None:
            self._status("cannot ask for this entry again: its daemon is not known")
            return
        self._status("asking the daemon for the whole entry…")
        self.run_worker(self._load_full(loader), group="full", exclusive=True,
                        exit_on_error=False)  # fmt: skip

    async def _load_full(self, loader: FullLoader) -> None:
        try:
            entry = await loader(FULL_BODY)
        except Exception as exc:  # said in the pane, never raised into the UI
            self._status(f"the whole entry could not be read: {exc}")
            return
        self.entry = entry
        self.query_one("#detail-title", Static).update(title(entry))
        self._show_sides()
        if self.term:
            self._find()
        if was_cut(entry):
            self._status("asked for the whole entry: some values are still cut (lost to the "
                         "capture, or longer than the daemon sends)")  # fmt: skip
        else:
            self._status("showing the whole entry")

    def action_close(self) -> None:
        """esc: the topmost first — the search box when it is open, else the pane."""
        box = self.query_one("#detail-search", Input)
        if box.display:
            self._close_search()
            return
        self.dismiss()

    def _close_search(self) -> None:
        """Hide the search box and give the focus back to what had it (the tabs)."""
        self.query_one("#detail-search", Input).display = False
        if self._focus_before is not None and self._focus_before.is_attached:
            self._focus_before.focus()
        self._focus_before = None

    # -- search (/, n, N) ------------------------------------------------------------------------

    def action_search(self) -> None:
        box = self.query_one("#detail-search", Input)
        if not box.display:
            self._focus_before = self.focused
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "detail-search":
            return
        event.stop()
        self._close_search()
        self.term = event.value
        self._find()
        self.action_next_match(1)

    def _active_pane(self) -> tuple[VerticalScroll, RenderableType] | None:
        tabs = self.query_one(TabbedContent)
        pane = tabs.get_pane(tabs.active) if tabs.active else None
        body = self._bodies.get(tabs.active)
        if pane is None or body is None:
            return None
        return pane.query_one(VerticalScroll), body

    def _find(self) -> None:
        """The lines of the active tab that hold the term (case-insensitive), as drawn."""
        self.matches, self.current = [], -1
        found = self._active_pane()
        if found is None or not self.term:
            return
        scroll, body = found
        console = Console(width=max(20, scroll.size.width or 100), record=True,
                          color_system=None, file=io.StringIO())  # fmt: skip
        console.print(body)
        needle = self.term.lower()
        lines = console.export_text().splitlines()
        self.matches = [i for i, line in enumerate(lines) if needle in line.lower()]

    def action_next_match(self, step: int) -> None:
        status = self.query_one("#detail-search-status", Static)
        if not self.term:
            return
        if not self.matches:
            status.update(f"no {self.term!r} in this tab")
            return
        self.current = (self.current + step) % len(self.matches)
        status.update(f"{self.term!r}: match {self.current + 1} of {len(self.matches)}")
        found = self._active_pane()
        if found is not None:
            found[0].scroll_to(y=max(0, self.matches[self.current] - 2), animate=False)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-raw" and self._raw_data is None and self.raw is not None:
            self.run_worker(self._load_raw(), exclusive=True, exit_on_error=False)

    async def _load_raw(self) -> None:
        assert self.raw is not None
        try:
            self._raw_data = await self.raw()
        except Exception as exc:  # shown in the tab, never raised into the UI
            self.query_one("#raw-body", Static).update(f"the stream could not be read: {exc}")
            return
        self._show_raw()

    def _show_raw(self) -> None:
        if self._raw_data is None:
            return
        chunks, left_out = self._raw_data
        view = raw_view(
            chunks, left_out, self.hex_mode,
            self.get_component_rich_style("detail--client"),
            self.get_component_rich_style("detail--server"),
        )  # fmt: skip
        self._bodies["tab-raw"] = view
        self.query_one("#raw-body", Static).update(view)

    def action_toggle_hex(self) -> None:
        self.hex_mode = not self.hex_mode
        self._show_raw()
