"""The import boundaries of STYLE.md, enforced.

- ``proto/`` imports neither textual, rich, engine, ebpf, widgets nor I/O modules.
- ``engine/`` and ``ebpf/`` never import textual or widgets; importing the engine leaves
  ``textual`` out of ``sys.modules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "shark_tui"

IO_MODULES = {
    "asyncio", "io", "os", "pathlib", "select", "selectors", "shutil", "socket", "ssl",
    "subprocess", "threading", "multiprocessing", "time", "random", "tempfile", "signal",
    "urllib", "http", "gzip",
}  # fmt: skip
UI_MODULES = {"textual", "rich"}
FORBIDDEN = {
    "proto": IO_MODULES
    | UI_MODULES
    | {"shark_tui.engine", "shark_tui.ebpf", "shark_tui.widgets", "shark_tui.app"},
    "engine": {"textual", "shark_tui.widgets", "shark_tui.app"},
    "ebpf": {"textual", "shark_tui.widgets", "shark_tui.app"},
}


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """Every absolute module name ``source`` imports, with its line (relative ones resolved)."""
    found: list[tuple[int, str]] = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found.extend((node.lineno, f"{name}.{alias.name}") for alias in node.names)
    return found


def violations(source: str, module: str, forbidden: set[str]) -> list[str]:
    bad: dict[int, str] = {}
    for line, name in imported_modules(source, module):
        for f in forbidden:
            if (name == f or name.startswith(f + ".")) and line not in bad:
                bad[line] = f"{module}:{line} imports {name}"
    return list(bad.values())


def _modules(sub: str) -> list[tuple[str, Path]]:
    root = PACKAGE / sub
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


@pytest.mark.parametrize("sub", sorted(FORBIDDEN))
def test_layer_imports(sub: str) -> None:
    modules = _modules(sub)
    if sub in ("proto", "engine"):
        assert modules, f"no modules found under shark_tui/{sub}"
    bad: list[str] = []
    for module, path in modules:
        bad += violations(path.read_text(), module, FORBIDDEN[sub])
    assert not bad, "\n".join(bad)


def test_checker_catches_violations() -> None:
    src = (
        "import socket\nfrom shark_tui.engine import tcp\nfrom ...widgets import x\n"
        "import zlib\nfrom ..base import CLIENT\n"
    )
    bad = violations(src, "shark_tui.proto.http1.dissector", FORBIDDEN["proto"])
    names = [b.split(" imports ")[1] for b in bad]
    assert names == ["socket", "shark_tui.engine", "shark_tui.widgets"]
    bad = violations("from .. import widgets\n", "shark_tui.engine.dissect", FORBIDDEN["engine"])
    assert bad == ["shark_tui.engine.dissect:1 imports shark_tui.widgets"]


def test_engine_import_leaves_textual_out() -> None:
    mods = [m for m, _ in _modules("engine") + _modules("proto")]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"importing the engine pulled in: {res.stdout}"
