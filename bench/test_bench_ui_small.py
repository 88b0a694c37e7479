"""CI check of the TUI benchmark at small size: the real app over a real daemon's socket shows,
after each filter's Enter, exactly the daemon's answer to the same Subscribe (same ids, the
newest on the first screen) — no timing assertions."""

from __future__ import annotations

import json
import os

import pytest

from bench import bench_ui, mkcapture


def test_small_ui_bench_agrees() -> None:
    if os.geteuid() != 0:
        pytest.fail("recording the bench seeds needs root: run the suite as root")
    assert bench_ui.main(["--small"]) == 0
    res = json.loads((mkcapture.OUT_DIR / "ui-results-small.json").read_text())
    assert res["entries"] > 1000
    assert set(res["filters"]) == {f or "(none)" for f in bench_ui.FILTERS}
    for f in res["filters"].values():
        assert f["agrees"]
        assert f["rows"] == f["daemon_matches_limited"]
    assert res["ui_rows_held"] == min(res["entries"], res["backlog"])
    assert set(res["scroll_ms"]) == set(bench_ui.SCROLL_KEYS)
