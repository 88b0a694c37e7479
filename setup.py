"""The C extensions (pyproject.toml has everything else): the per-packet loops of capfile and
packet and the merge of parallel, ``shark_tui/engine/_native.c``, and the header blocks of
HTTP/1, ``shark_tui/proto/_http1.c``, and HTTP/1 connections written straight as entry JSON,
``shark_tui/engine/_http1entries.c``. Optional: without a compiler the Python code, which is the
reference, runs instead (tests/engine/test_native.py fails in CI if they were not built)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("shark_tui.engine._native", ["shark_tui/engine/_native.c"], optional=True),
        Extension("shark_tui.proto._http1", ["shark_tui/proto/_http1.c"], optional=True),
        Extension(
            "shark_tui.engine._http1entries",
            ["shark_tui/engine/_http1entries.c"],
            libraries=["z"],
            optional=True,
        ),
    ]
)
