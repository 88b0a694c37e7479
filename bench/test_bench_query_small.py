"""CI check of the query benchmark at small size: through the real socket, every first screen
equals the newest matching entries of the full list, GetEntry answers the asked entry, and the
export holds the same connections as tcpdump's selection (no timing assertions)."""

from __future__ import annotations

import json
import os

import pytest

from bench import bench_query, mkcapture


def test_small_query_bench_agrees() -> None:
    if os.geteuid() != 0:
        pytest.fail("recording the bench seeds needs root: run the suite as root")
    assert bench_query.main(["--small"]) == 0
    res = json.loads((mkcapture.OUT_DIR / "query-results-small.json").read_text())
    assert res["entries"] > 1000
    screens = res["screens"].values()
    # `agrees`: the screen's ids, in order, are the newest matching entries of the full list —
    # a whole screen, or all of them when fewer match (how many entries of the recorded traffic
    # took over 5 ms, say, varies from run to run: 90 in one CI run)
    assert all(s["agrees"] for s in screens)
    assert sum(s["matched"] == bench_query.SCREEN for s in screens) >= len(screens) - 2
    assert res["get_entry_ms"]["n"] == 100
    assert res["export"]["same_connections_as_tcpdump"]
