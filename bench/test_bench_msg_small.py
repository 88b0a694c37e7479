"""CI check of the Redis / Kafka / AMQP dissect benchmark at small size: shark-tui equals the
truth (the seed parsed independently, expanded over the copies), tshark's differences are all
explained, and both see the same requests (no timing assertions). Fails, never skips, when a
tool is missing or not root."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from bench import bench_dissect, bench_msg, mkcapture, mkcapture_msg
from tests import realpeers3


def _require() -> None:
    if os.geteuid() != 0:
        pytest.fail("recording the seeds needs root (unshare -n): run the suite as root")
    for tool in ("tshark", "tcpdump", "unshare", "redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/setup")
    if not os.access(realpeers3.RABBITMQ_SERVER, os.X_OK):
        pytest.fail(f"{realpeers3.RABBITMQ_SERVER} is missing: {realpeers3.RABBITMQ_FIX}")
    realpeers3.tansu_binary()
    for mod in ("redis", "pika", "kafka", "confluent_kafka", "msgspec"):
        if importlib.util.find_spec(mod) is None:
            pytest.fail(f"python module {mod} is missing: run scripts/setup")
    why = bench_dissect.shark_tui_available()
    if why:
        pytest.fail(why)


@pytest.mark.slow
@pytest.mark.parametrize("proto", mkcapture_msg.PROTOS)
def test_small_msg_bench_tools_agree(proto: str) -> None:
    _require()
    capture = mkcapture_msg.build_profile(proto, small=True)
    man = mkcapture.load_manifest(capture)
    assert man["packets"] >= mkcapture_msg.SMALL["packets"]
    assert man["connections"] == man["seed_connections"] * man["copies"]
    res = bench_msg.bench(proto, capture, log=lambda *_: None)
    report = bench_msg.table(res)
    assert res["runs"]["shark-tui"]["returncode"] == 0, report
    assert res["runs"]["tshark"]["returncode"] == 0, report
    for key in ("shark_vs_truth", "tshark_vs_truth"):
        for name, d in res[key].items():
            n = d["missing"] + d["extra"]
            if key == "shark_vs_truth":
                assert n == 0, f"{key} {name}\n{report}"
            else:
                assert d["explained"] == n, f"{key} {name}\n{report}"
    # the requests both tools decoded are the same multiset, up to explained differences
    main = {"redis": "requests", "kafka": "requests", "amqp": "frames"}[proto]
    d = res["shark_vs_tshark"][main]
    assert d["explained"] == d["only_tshark"] + d["only_shark_tui"], report
    assert not res["problems"], report
