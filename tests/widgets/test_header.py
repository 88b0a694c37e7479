"""The header: capture state, daemons, packets/s and its sparkline from the stats pushes'
``received`` growth, drops, entries."""

from __future__ import annotations

import asyncio

from textual.widgets import Sparkline

from shark_tui.app import SharkApp
from shark_tui.widgets.messages import StatsArrived
from shark_tui.widgets.status_header import RateMeter, capture_state
from tests.widgets.appfixture import fixture_daemon, wait_for


def _live(received: int, dropped: int = 0) -> dict[str, object]:
    return {
        "capturing": ["eth0", "lo"],
        "failed": {},
        "sources": [
            {"name": "eth0", "received": received - 100, "dropped": dropped, "queue_dropped": 0},
            {"name": "lo", "received": 100, "dropped": 0, "queue_dropped": 0},
        ],
    }


def test_rate_meter() -> None:
    m = RateMeter(history=4)
    m.feed("a", 1000, 10.0)
    assert m.rate == 0 and list(m.samples) == [0, 0, 0, 0]
    m.feed("a", 3000, 11.0)
    m.feed("b", 50, 11.0)
    m.feed("b", 550, 11.5)
    assert m.rates == {"a": 2000.0, "b": 1000.0}
    assert list(m.samples) == [0, 0, 2000.0, 3000.0]
    m.feed("a", 200, 12.0)  # the daemon restarted: its counter began again
    assert m.rates["a"] == 200.0
    m.feed("a", 400, 12.0)  # same instant: no rate from it
    assert m.rates["a"] == 200.0
    m.forget("b")
    assert m.rate == 200.0


def test_capture_state() -> None:
    assert capture_state({}, 0) == ("disconnected", "-down")
    assert capture_state({"f": {"sources": []}}, 1) == ("stored", "-stored")
    assert capture_state({"n": _live(5)}, 1) == ("capturing eth0,lo", "-live")
    failed = {"capturing": [], "failed": {"eth9": "no such device"}}
    assert capture_state({"n": failed}, 1) == ("capture failed", "-down")
    two = {"n": _live(5), "m": dict(_live(5), failed={"x": "gone"})}
    assert capture_state(two, 2) == ("capturing on 2/2 nodes (some failed)", "-warn")


def test_header_over_a_daemon_and_stats_pushes() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16 and app.links[0].up)
                await wait_for(lambda: "fixture" in app.header.stats)
                await pilot.pause()
                text = app.header.text
                assert "● stored" in text  # a store served without capture (open FILE)
                assert "daemons 1/1" in text and "0 pkt/s" in text and "drops 0" in text
                assert "entries 16" in text and "FOLLOW" in text
                assert app.query_one("#header-state").has_class("-stored")

                # a capturing node's pushes: 2,000 packets in a second, then 3,000 in half
                app.post_message(StatsArrived("node-x", _live(10_000), at=50.0))
                app.post_message(StatsArrived("node-x", _live(12_000), at=51.0))
                app.post_message(StatsArrived("node-x", _live(13_500, dropped=7), at=51.5))
                await pilot.pause()
                text = app.header.text
                assert "3,000 pkt/s" in text and "drops 7" in text
                assert "capturing on 1/2 nodes" in text
                assert app.query_one("#header-drops").has_class("-bad")
                spark = app.query_one(Sparkline)
                assert list(spark.data or [])[-2:] == [2000.0, 3000.0]

    asyncio.run(main())
