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
    assert all(s["agrees"] and s["matched"] == bench_query.SCREEN for s in res["screens"].values()
               if s["matched"])  # fmt: skip
    assert res["get_entry_ms"]["n"] == 100
    assert res["export"]["same_connections_as_tcpdump"]
