"""CI check of the h2c/gRPC dissect benchmark at small size: the tools agree with the clients'
record (no timing assertions). Fails, never skips, when a tool is missing or not root."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from bench import bench_dissect, bench_h2, mkcapture, mkcapture_h2


@pytest.fixture(scope="module")
def small_h2_capture():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.fail("recording the seed needs root (unshare -n): run the suite as root")
    for tool in ("tshark", "tcpdump", "nginx", "nghttp", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/setup")
    for mod in ("h2", "grpc", "grpc_tools", "aiohttp", "msgspec"):
        if importlib.util.find_spec(mod) is None:
            pytest.fail(f"python module {mod} is missing: run scripts/setup")
    return mkcapture_h2.build_profile(small=True)


@pytest.mark.slow
def test_small_h2_capture_is_replicated(small_h2_capture) -> None:  # type: ignore[no-untyped-def]
    man = mkcapture.load_manifest(small_h2_capture)
    assert man["packets"] >= mkcapture_h2.SMALL["packets"]
    assert man["copies"] >= 2
    assert man["connections"] == man["seed_connections"] * man["copies"]
    expected = mkcapture_h2.expected_streams(man)
    assert sum(expected.values()) == man["streams"]
    kinds = {k for k, *_ in expected}
    assert kinds == {"http2", "grpc"}
    # the literal (non-Huffman) paths were rewritten per copy: one distinct path per copy
    if man["seed_streams_rewritten"]:
        assert any("q000001" in (p or "") for _, _, p, _ in expected)
        assert any(f"q{man['copies']:06d}" in (p or "") for _, _, p, _ in expected)
        assert not any("q000000" in (p or "") for _, _, p, _ in expected)
    # a gRPC error status and an HTTP error status are among the truth
    assert any(k == "grpc" and s not in (0, None) for k, _, _, s in expected)
    assert any(k == "http2" and s == 404 for k, _, _, s in expected)


@pytest.mark.slow
def test_small_h2_tshark_finds_the_truth(small_h2_capture) -> None:  # type: ignore[no-untyped-def]
    res = bench_h2.bench(small_h2_capture, skip_shark=True, log=lambda *_: None)
    report = bench_h2.table(res)
    assert res["runs"]["tshark"]["returncode"] == 0, report
    assert res["runs"]["tshark"]["packets_misaligned"] == 0, report
    assert res["tshark_vs_truth"]["unexplained"] == 0, report
    assert not res["problems"], report


@pytest.mark.slow
def test_small_h2_bench_tools_agree(small_h2_capture) -> None:  # type: ignore[no-untyped-def]
    why = bench_dissect.shark_tui_available()
    if why:
        pytest.fail(why)
    res = bench_h2.bench(small_h2_capture, log=lambda *_: None)
    report = bench_h2.table(res)
    assert res["runs"]["shark-tui"]["returncode"] == 0, report
    assert res["runs"]["tshark"]["returncode"] == 0, report
    assert res["shark_vs_truth"]["unexplained"] == 0, report
    assert res["tshark_vs_truth"]["unexplained"] == 0, report
    assert res["shark_vs_tshark"]["unexplained"] == 0, report
    assert not res["problems"], report
