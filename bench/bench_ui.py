"""The TUI's budgets: a filter keystroke repaints its first screen in < 200 ms at a million
entries, RSS < 500 MB — the real app (Textual Pilot) over a real daemon's socket.

    python -m bench.bench_ui            # full: the HTTP/1 + Redis bench captures (≈2.38 M entries)
    python -m bench.bench_ui --small    # CI size: checks only that the rows shown agree

The daemon runs in a child process (``python -m bench.bench_ui --serve SOCK``): it loads the
captures (built by ``bench.mkcapture`` / ``bench.mkcapture_msg``, cached in bench/out) into one
segment store as ``bench.bench_query`` does, serves it with `Server` on a Unix socket (summary
cache raised above the entry count), **warms the summary cache** with one subscription over
everything (so what is measured is the UI, not the store's first-ever dissection), and then
asks, with a plain `Client`, every filter of `FILTERS` the way the app does
(``Subscribe(filter, newest_first, limit=BACKLOG)``): those answers are the reference. So the
benchmark process holds only the app and its rows, and its RSS is the UI's.

The app is ``SharkApp([("unix:SOCK", token)])`` under ``run_test(size=(160, 40))``. A frame is
one compositor update handed to the (headless) driver (`App._display`); the list's lines drawn
for each frame are recorded (`EntryList.render_line`, wrapped on the instance), so "what the
screen shows" is known frame by frame.

1. **startup**: from constructing the app to the first frame whose list shows the newest rows
   of the daemon's answer for "" (the bottom of the list: follow-live);
2. **filter**: for each filter, the filter bar is opened and the text typed (not timed), then
   from just before the ``enter`` keypress to the first frame whose list shows exactly the
   newest rows of that filter's answer (as many as fit, newest at the bottom). Also reported:
   until the app's store holds the whole answer (``CaughtUp`` received and settled). Best and
   median of `REPEAT` rounds over all filters;
3. **scroll**: with the "" filter loaded (≥ 200 k rows at full size), each of ``pageup``,
   ``pagedown``, ``g``, ``G`` pressed `SCROLL_PRESSES` times: from before the keypress to the
   first frame whose list shows the row under the cursor;
4. **RSS** (VmRSS/VmHWM from /proc) of this process — the app and its rows — and of the daemon
   child, separately.

Agreement (the CI check, no timing): after each filter the app's rows are exactly the daemon's
answer to the same Subscribe (same ids), and the first screen shown equals its newest rows.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import mkcapture

FILTERS = ["", "http", "redis", "status >= 500", 'method == "GET"', "dst.port == 6379"]
REPEAT = 3
SCROLL_KEYS = ("pageup", "pagedown", "g", "G")
SCROLL_PRESSES = 5
SIZE = (160, 40)
TOKEN = "bench"
TAIL = 80  # newest ids of each reference kept for the screen check


def rss(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) * 1024
    return out


def digest(ids: list[str]) -> str:
    return hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()


# -- the daemon child ----------------------------------------------------------------------------


async def _reference(sock: str, limit: int) -> dict[str, Any]:
    from shark_tui.engine import wire
    from shark_tui.engine.client import Client

    c = await Client.connect(f"unix:{sock}", TOKEN)
    t = time.perf_counter()
    n = 0
    async for m in c.subscribe("", follow=False):
        if isinstance(m, wire.EntriesAppended):
            n += len(m.entries)
    ref: dict[str, Any] = {"entries": n, "warm_s": round(time.perf_counter() - t, 2)}
    print(f"daemon: cache warmed, {n:,} entries in {ref['warm_s']} s", file=sys.stderr)
    ref["filters"] = {}
    for text in FILTERS:
        got: list[tuple[float, str]] = []
        t = time.perf_counter()
        async for m in c.subscribe(text, newest_first=True, limit=limit, follow=False):
            if isinstance(m, wire.EntriesAppended):
                got += [(e["ts"], e["id"]) for e in m.entries]
        dt = time.perf_counter() - t
        got.sort()
        ref["filters"][text] = {
            "count": len(got),
            "digest": digest([i for _, i in got]),
            "newest": [i for _, i in got[-TAIL:]],
            "client_s": round(dt, 3),
        }
        print(f"daemon: reference {text!r}: {len(got):,} in {dt:.2f} s", file=sys.stderr)
    await c.close()
    return ref


def serve(sock: str, small: bool) -> int:
    """The daemon child: load, serve, warm, answer the references; print one JSON line, then
    serve until stdin closes."""
    from bench.bench_query import captures, load_store
    from shark_tui.engine.server import Server
    from shark_tui.widgets.link import BACKLOG

    paths = captures(small)
    with tempfile.TemporaryDirectory(prefix="shark-tui-bench-ui-") as tmp:
        rec, load_s = load_store(paths, os.path.join(tmp, "store"))
        srv = Server(rec, threading.Lock(), TOKEN, sock, rec.status)
        srv.engine.max_cached_entries = max(srv.engine.max_cached_entries, 3_000_000)
        srv.start()
        try:
            ref = asyncio.run(_reference(sock, BACKLOG))
            ref.update(
                captures=[p.name for p in paths], load_s=round(load_s, 1),
                store_bytes=rec.store_bytes(), packets=rec.stats["packets"],
                summary_cache_entries=srv.engine.max_cached_entries, rss=rss(),
            )  # fmt: skip
            sys.stdout.write(json.dumps(ref) + "\n")
            sys.stdout.flush()
            sys.stdin.read()
        finally:
            srv.stop()
    return 0


# -- the app -------------------------------------------------------------------------------------


class Probe:
    """What the list shows, frame by frame; `until(pred)` resolves at the first frame (after
    it is armed) where ``pred(screen)`` holds, ``screen`` being the ids drawn per line."""

    def __init__(self) -> None:
        self.screen: dict[int, str | None] = {}
        self.drawn = 0  # list lines drawn since the last frame
        self.frames = 0
        self.pred: Any = None
        self.hit: float | None = None

    def arm(self, pred: Any) -> None:
        self.pred = pred
        self.hit = None

    def frame(self, t: float) -> None:
        self.frames += 1
        drawn, self.drawn = self.drawn, 0
        if self.pred is not None and drawn and self.pred(self.screen):
            self.hit = t
            self.pred = None


def make_app(address: str, probe: Probe) -> Any:
    import shark_tui.app as app_module
    from shark_tui.app import SharkApp
    from shark_tui.widgets.messages import CaughtUp

    class BenchApp(SharkApp):
        # relative CSS paths are read beside the module that defines the class
        CSS_PATH = str(Path(app_module.__file__).parent / SharkApp.CSS_PATH)
        caught_up_at: float = 0.0

        def _display(self, screen: Any, renderable: Any) -> None:
            super()._display(screen, renderable)
            if renderable is not None:
                probe.frame(time.perf_counter())

        def on_caught_up(self, msg: CaughtUp) -> None:  # the base class's handler runs too
            self.caught_up_at = time.perf_counter()

        def on_mount(self) -> None:  # after SharkApp.on_mount (Textual calls both)
            el = self.entry_list
            draw = el.render_line

            def render_line(y: int) -> Any:
                strip = draw(y)
                i = el.scroll_offset.y + y
                rows = el.store.shown
                probe.screen[y] = rows[i].id if i < len(rows) else None
                probe.drawn += 1
                return strip

            el.render_line = render_line  # type: ignore[method-assign]

    return BenchApp([(address, TOKEN)])


def shows_newest(ref: dict[str, Any]) -> Any:
    """The list shows the newest rows of ``ref``, as many as fit, newest at the bottom."""

    def pred(screen: dict[int, str | None]) -> bool:
        ids = [screen[y] for y in sorted(screen) if screen[y] is not None]
        # the list leaves its last line blank when scrolled to the end (at 160x40), so a
        # screenful is one line short of the list's height
        k = len(ids)
        return (
            bool(k >= min(len(screen) - 1, ref["count"]))
            and ids == ref["newest"][len(ref["newest"]) - k :]
        )

    return pred


async def wait(pred: Any, timeout: float, what: Any = None) -> None:
    deadline = time.perf_counter() + timeout
    while not pred():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out{': ' + what() if what else ''}")
        await asyncio.sleep(0.002)


async def drive(address: str, refs: dict[str, Any], out: dict[str, Any], small: bool) -> None:
    probe = Probe()
    timeout = float(os.environ.get("BENCH_UI_TIMEOUT", 0)) or 60.0 if small else 600.0
    probe.arm(shows_newest(refs[""]))
    t0 = time.perf_counter()
    app = make_app(address, probe)
    async with app.run_test(size=SIZE) as pilot:
        el = app.entry_list
        store = app.store
        link = app.links[0]
        await wait(lambda: el.size.height > 0, timeout)
        height = el.size.height
        out["list_height"] = height
        await wait(
            lambda: probe.hit is not None,
            timeout,
            lambda: f"screen {probe.screen} newest {refs['']['newest'][-40:]}",
        )
        out["startup_first_screen_ms"] = round((probe.hit - t0) * 1e3, 1)  # type: ignore[operator]
        await wait(lambda: app.caught_up_at and not store.pending
                   and len(store) == refs[""]["count"], timeout)  # fmt: skip
        out["startup_all_rows_s"] = round(time.perf_counter() - t0, 2)
        await pilot.pause()
        out["rss_after_startup"] = rss()
        print(f"startup: first screen {out['startup_first_screen_ms']} ms, "
              f"{len(store):,} rows in {out['startup_all_rows_s']} s", file=sys.stderr)  # fmt: skip

        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in FILTERS}
        for _ in range(REPEAT):
            for text in FILTERS:
                ref = refs[text]
                await pilot.press("slash", "ctrl+u", *text)
                await pilot.pause()
                sent = len(link.sent)
                probe.arm(shows_newest(ref))
                app.caught_up_at = 0.0
                t = time.perf_counter()
                await pilot.press("enter")
                await wait(lambda: probe.hit is not None, timeout)
                first = probe.hit - t  # type: ignore[operator]
                await wait(lambda sent=sent, n=ref["count"]: len(link.sent) > sent
                           and app.caught_up_at and not store.pending and len(store) == n,
                           timeout)  # fmt: skip
                done = time.perf_counter() - t
                await pilot.pause()
                ids = [r.id for r in store.rows]
                agrees = (
                    link.sent[-1].filter == text
                    and digest(ids) == ref["digest"]
                    and ids[-TAIL:] == ref["newest"][-len(ids[-TAIL:]) :]
                )
                runs[text].append({"first_ms": first * 1e3, "all_s": done, "rows": len(ids),
                                   "agrees": agrees})  # fmt: skip
                print(f"filter {text!r}: first screen {first * 1e3:.1f} ms, "
                      f"{len(ids):,} rows in {done:.2f} s {'ok' if agrees else 'WRONG'}",
                      file=sys.stderr)  # fmt: skip
                del ids
        out["filters"] = {}
        for text, rs in runs.items():
            firsts = sorted(r["first_ms"] for r in rs)
            out["filters"][text or "(none)"] = {
                "first_screen_ms_best": round(firsts[0], 1),
                "first_screen_ms_median": round(statistics.median(firsts), 1),
                "all_rows_s_median": round(statistics.median(r["all_s"] for r in rs), 2),
                "rows": rs[-1]["rows"],
                "daemon_matches_limited": refs[text]["count"],
                "client_all_rows_s": refs[text]["client_s"],
                "agrees": all(r["agrees"] for r in rs),
            }

        # scroll on the "" list (the last filter applied above may be another)
        if link.sent[-1].filter != "":
            await pilot.press("escape")
            await wait(
                lambda: (
                    link.sent[-1].filter == ""
                    and app.caught_up_at
                    and not store.pending
                    and len(store) == refs[""]["count"]
                ),
                timeout,
            )
        await pilot.pause()
        out["scroll_rows"] = len(store)
        scroll: dict[str, list[float]] = {k: [] for k in SCROLL_KEYS}
        for _ in range(SCROLL_PRESSES):
            for key in SCROLL_KEYS:
                before = el.cursor
                n = len(store.shown)
                want = {"pageup": max(0, before - 20), "pagedown": min(n - 1, before + 20),
                        "g": 0, "G": n - 1}[key]  # fmt: skip
                wid = store.shown[want].id
                if want == before:  # nothing would change: move off first
                    await pilot.press("k" if want else "j")
                    await pilot.pause()
                probe.arm(lambda s, wid=wid: wid in s.values())
                t = time.perf_counter()
                await pilot.press(key)
                await wait(lambda: probe.hit is not None, timeout)
                scroll[key].append((probe.hit - t) * 1e3)  # type: ignore[operator]
                assert el.cursor == want, (key, el.cursor, want)
                await pilot.pause()
        out["scroll_ms"] = {
            k: {"best": round(min(v), 1), "median": round(statistics.median(v), 1),
                "max": round(max(v), 1)}
            for k, v in scroll.items()
        }  # fmt: skip
        print(f"scroll on {len(store):,} rows: {out['scroll_ms']}", file=sys.stderr)
        out["ui_rows_held"] = len(store)
        out["rss_end"] = rss()


def table(out: dict[str, Any]) -> str:
    mb = 1 << 20
    lines = [
        f"entries stored: {out['entries']:,} ({out['packets']:,} packets); UI backlog limit "
        f"{out['backlog']:,}; list height {out['list_height']} lines",
        f"startup → first screen: {out['startup_first_screen_ms']} ms; all "
        f"{out['ui_rows_held']:,} rows in {out['startup_all_rows_s']} s",
        "",
        f"{'filter':<22} {'matches':>9} {'first ms best':>14} {'median':>8} "
        f"{'all rows s':>11} {'(client s)':>11}  agrees",
    ]
    for text, f in out["filters"].items():
        lines.append(
            f"{text:<22} {f['rows']:>9,} {f['first_screen_ms_best']:>14} "
            f"{f['first_screen_ms_median']:>8} {f['all_rows_s_median']:>11} "
            f"{f['client_all_rows_s']:>11}  {f['agrees']}"
        )
    lines.append("")
    lines.append(
        f"scroll on {out['scroll_rows']:,} rows (ms, best/median/max):  "
        + "  ".join(
            f"{k} {v['best']}/{v['median']}/{v['max']}" for k, v in out["scroll_ms"].items()
        )
    )
    u, d = out["rss_end"], out["daemon_rss"]
    lines.append(f"RSS UI process: {u['VmRSS'] / mb:.0f} MB now, {u['VmHWM'] / mb:.0f} MB peak "
                 f"(before the app: {out['rss_before_app']['VmRSS'] / mb:.0f} MB); daemon child: "
                 f"{d['VmRSS'] / mb:.0f} MB, peak {d['VmHWM'] / mb:.0f} MB")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--serve", metavar="SOCK", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.small)

    import shark_tui.app  # noqa: F401  (imports counted in the baseline RSS)
    from shark_tui.widgets.link import BACKLOG

    with tempfile.TemporaryDirectory(prefix="shark-tui-bench-ui-") as tmp:
        sock = os.path.join(tmp, "sock")
        cmd = [sys.executable, "-m", "bench.bench_ui", "--serve", sock]
        child = subprocess.Popen(cmd + (["--small"] if args.small else []),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        try:
            assert child.stdout is not None and child.stdin is not None
            line = child.stdout.readline()
            if not line:
                raise SystemExit(f"daemon child failed (exit {child.wait()})")
            ref = json.loads(line)
            out: dict[str, Any] = {
                k: ref[k] for k in ("captures", "entries", "packets", "store_bytes", "load_s",
                                    "warm_s", "summary_cache_entries")
            }  # fmt: skip
            out["backlog"] = BACKLOG
            out["rss_before_app"] = rss()
            # the app reads no keys.toml (keys, theme) of the user's, and writes its filter
            # history here, not into the user's
            os.environ["XDG_CONFIG_HOME"] = os.path.join(tmp, "config")
            os.environ["XDG_STATE_HOME"] = os.path.join(tmp, "state")
            asyncio.run(drive(f"unix:{sock}", ref["filters"], out, args.small))
            out["daemon_rss"] = rss(child.pid)
        finally:
            if child.stdin:
                child.stdin.close()
            child.wait(timeout=60)
    name = "ui-results-small.json" if args.small else "ui-results.json"
    (Path(mkcapture.OUT_DIR) / name).write_text(json.dumps(out, indent=1))
    print(table(out))
    agree = all(f["agrees"] for f in out["filters"].values())
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
