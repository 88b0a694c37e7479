"""CI check of the dissect benchmark at small size: the tools agree (no timing assertions)."""

from __future__ import annotations

import os
import shutil

import pytest

from bench import bench_dissect, mkcapture


@pytest.fixture(scope="module")
def small_capture():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.fail("recording the seed needs root (unshare -n): run the suite as root")
    for tool in ("tshark", "tcpdump", "nginx", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/setup")
    p = mkcapture.SMALL
    return mkcapture.build(p["packets"], p["min_conns"], p["seed_conns"])


@pytest.mark.slow
def test_small_capture_is_replicated(small_capture) -> None:  # type: ignore[no-untyped-def]
    man = mkcapture.load_manifest(small_capture)
    assert man["packets"] >= mkcapture.SMALL["packets"]
    assert man["connections"] >= mkcapture.SMALL["min_conns"]
    assert man["copies"] >= 2
    expected = mkcapture.expected_exchanges(man)
    # every copy rewrote the placeholder: each seed exchange shows up once per copy number
    assert sum(expected.values()) == man["exchanges"]
    assert len(expected) > man["seed_exchanges"]


@pytest.mark.slow
def test_small_bench_tools_agree(small_capture) -> None:  # type: ignore[no-untyped-def]
    why = bench_dissect.shark_tui_available()
    if why:
        pytest.fail(why)
    res = bench_dissect.bench(small_capture, log=lambda *_: None)
    report = bench_dissect.table(res)
    assert res["runs"]["shark-tui"]["returncode"] == 0, report
    assert res["runs"]["tshark"]["returncode"] == 0, report
    assert res["shark_vs_truth"]["missing"] == 0, report
    assert res["shark_vs_truth"]["extra"] == 0, report
    assert res["tshark_vs_truth"]["unexplained"] == 0, report
    assert res["shark_vs_tshark"]["unexplained"] == 0, report
    assert not res["problems"], report
