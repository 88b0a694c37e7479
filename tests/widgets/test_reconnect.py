"""A daemon that goes away: the header says so and when the next attempt is, attempts back off
(doubling, capped), and when a daemon serves the socket again the list resumes — the same
subscription, nothing doubled, what was stored meanwhile and what comes live afterwards shown.
A real `Server` is stopped and another started on the same socket over the same store."""

from __future__ import annotations

import asyncio
import time

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.link import BACKOFF_CAP, backoff
from shark_tui.widgets.status_header import capture_state
from tests.widgets.appfixture import notes, wait_for
from tests.widgets.storedaemon import StoreDaemon


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(i) for i in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff(10_000) == BACKOFF_CAP


def test_the_header_says_when_it_tries_again() -> None:
    assert capture_state({}, 0, 4) == ("disconnected, retrying in 4s", "-down")
    assert capture_state({}, 0, 0) == ("disconnected, reconnecting…", "-down")
    assert capture_state({"n": {"capturing": ["lo"]}}, 0) == ("disconnected", "-down")
    paused = {"capturing": ["eth0"], "paused": True}
    assert capture_state({"n": paused}, 1) == ("paused", "-warn")
    live = {"capturing": ["eth0"], "paused": False}
    assert capture_state({"n": paused, "m": live}, 2) == (
        "capturing on 2/2 nodes, 1 paused",
        "-live",
    )


def ids(app: SharkApp) -> list[tuple[str, str]]:
    return [(r.node, r.id) for r in app.store.rows]


def test_daemon_goes_away_and_comes_back() -> None:
    async def main() -> None:
        d = StoreDaemon(4)
        d.start()
        try:
            app = SharkApp([(d.address, d.token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16 and link.up)
                before = ids(app)
                await pilot.press("space")  # a mark survives the reconnect
                marked = app.entry_list.selected
                assert marked is not None

                d.stop()
                await wait_for(lambda: not link.up)
                await wait_for(lambda: "disconnected, retrying in" in app.header.text)
                assert app.query_one("#header-state").has_class("-down")
                assert "daemons 0/1" in app.header.text
                assert len(app.store) == 16  # the rows stay on screen
                # attempts back off: 0.5 s, then 1 s, then 2 s...
                await wait_for(lambda: link.attempts >= 3, timeout=10)
                assert link.retry_at is not None
                assert link.retry_at - time.monotonic() <= backoff(link.attempts - 1)
                await pilot.pause(0.2)
                left = link.retry_at - time.monotonic()
                assert f"retrying in {max(0, int(left + 0.999))}s" in app.header.text or (
                    "reconnecting" in app.header.text
                )
                # going away was said once, not at every attempt
                said = [n for n in notes(app) if n.startswith("fixture:")]
                assert len(said) == 1, said

                # stored while it was away; then a daemon on the same socket again
                d.add(4, 2)
                d.start()
                await wait_for(lambda: link.up, timeout=15)
                await wait_for(lambda: len(app.store) == 24)
                await pilot.pause(0.5)  # the whole backlog is in: still each row once
                got = ids(app)
                assert len(got) == len(set(got)) == 24
                assert set(before) < set(got)
                assert {r.src for r in app.store.rows} == {
                    f"10.0.0.{i + 1}:{40000 + i}" for i in range(6)
                }
                assert app.store.is_marked(marked)
                subs = [m for m in link.sent if isinstance(m, wire.Subscribe)]
                assert len(subs) == 2 and subs[1].filter == subs[0].filter == ""
                assert "disconnected" not in app.header.text and "daemons 1/1" in app.header.text
                assert link.retry_at is None

                # live again: new entries come, once
                d.add(6, 1)
                await wait_for(lambda: len(app.store) == 28)
                await pilot.pause(0.3)
                got = ids(app)
                assert len(got) == len(set(got)) == 28
                assert app.entry_list.cursor == 27  # still following
        finally:
            d.close()

    asyncio.run(main())


def test_a_cleared_list_stays_cleared_across_a_reconnect() -> None:
    async def main() -> None:
        with StoreDaemon(4) as d:
            app = SharkApp([(d.address, d.token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16 and link.up)
                await pilot.press("C")
                d.stop()
                await wait_for(lambda: not link.up)
                d.add(4, 1)
                d.start()
                await wait_for(lambda: len(app.store) == 4, timeout=15)
                await pilot.pause(0.3)
                assert {r.src for r in app.store.rows} == {"10.0.0.5:40004"}
                sub = link.sent[-1]
                assert isinstance(sub, wire.Subscribe) and sub.since > 1_700_000_003

    asyncio.run(main())
