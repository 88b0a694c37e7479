"""The one C extension (pyproject.toml has everything else): the per-packet loops of capfile and
packet, ``shark_tui/engine/_native.c``. Optional: without a compiler the Python code, which is
the reference, runs instead (tests/engine/test_native.py fails in CI if it was not built)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("shark_tui.engine._native", ["shark_tui/engine/_native.c"], optional=True)
    ]
)
