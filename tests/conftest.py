"""Fixtures shared by the test tree. Nothing starts at import: real peers start only when a test
asks for them (see ``tests/realpeers.py``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests import realpeers

# CI runs the property tests on a fixed seed sequence, so a green run stays green for the same
# code; runs elsewhere explore new examples (and put failures in .hypothesis/ for replay).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def capture_tools() -> None:
    """Real-peer tests need root (tcpdump on ``lo``), tcpdump and tshark: fail, not skip,
    when they are missing, so a broken machine cannot pass the suite by skipping it."""
    missing = [tool for tool in ("tcpdump", "tshark", "mergecap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)} (run scripts/setup)")
    if os.geteuid() != 0:
        pytest.fail("real-peer captures need root (tcpdump -i lo)")


@pytest.fixture(scope="module")
def http_backend(capture_tools: None) -> Iterator[realpeers.Peer]:
    """The aiohttp backend on 127.0.0.1, one per test module."""
    with realpeers.aiohttp_backend() as peer:
        yield peer


@pytest.fixture(scope="module")
def nginx_proxy(http_backend: realpeers.Peer) -> Iterator[realpeers.Nginx]:
    """nginx on 127.0.0.1 in front of ``http_backend`` (with an h2c port), one per module."""
    with realpeers.nginx(backend_port=http_backend.port, h2c=True) as peer:
        yield peer
