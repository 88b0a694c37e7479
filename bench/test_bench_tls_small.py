"""CI check of the TLS overhead benchmark at small size: every phase ran every load, and with
``--tls`` the daemon stored each request as an entry — no timing assertions."""

from __future__ import annotations

import json
import os

import pytest

from bench import bench_tls


def test_small_tls_bench_captures_every_request() -> None:
    if os.geteuid() != 0:
        pytest.fail("the TLS bench needs root (eBPF): run the suite as root")
    assert bench_tls.main(["--small"]) == 0
    res = json.loads((bench_tls.OUT / "tls-results-small.json").read_text())
    assert res["captured"] == res["expected"] == {"nginx": 220, "python": 200, "go": 200}
    for load in ("curl-new", "curl-keepalive", "python-keepalive", "go-keepalive"):
        assert set(res["loads"][load]) == set(bench_tls.PHASES)
        assert all(v > 0 for v in res["loads"][load].values())
