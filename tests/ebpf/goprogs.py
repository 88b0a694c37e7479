"""The Go TLS test programs (go/server.go, go/client.go: standard library only), built with
Debian's golang-go offline, for the Go checks and the TLS benchmark."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

GO_SRC = Path(__file__).parent / "go"
VARIANTS = {"plain": [], "stripped": ["-ldflags=-s -w"], "pie": ["-buildmode=pie"]}


class GoMissing(RuntimeError):
    pass


def go_tool() -> str:
    for candidate in (shutil.which("go"), "/usr/lib/go-1.19/bin/go"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise GoMissing("go is missing: install golang-go (scripts/setup does)")


def build(tmp: str | Path, variants: dict[str, list[str]] = VARIANTS) -> dict[str, dict[str, str]]:
    """``{variant: {"server": path, "client": path}}``, built in ``tmp`` (no network: GOPATH
    mode, no proxy)."""
    go = go_tool()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
           "GOPATH": f"{tmp}/gopath", "GOCACHE": f"{tmp}/gocache", "GOFLAGS": "",
           "GOPROXY": "off", "GO111MODULE": "off"}  # fmt: skip
    bins: dict[str, dict[str, str]] = {}
    for variant, flags in variants.items():
        bins[variant] = {}
        for prog in ("server", "client"):
            src = Path(tmp, f"src-{prog}-{variant}")
            src.mkdir(parents=True)
            shutil.copy(GO_SRC / f"{prog}.go", src / "main.go")
            target = f"{tmp}/{prog}-{variant}"
            subprocess.run([go, "build", *flags, "-o", target, "main.go"], cwd=src, env=env,
                           check=True, timeout=600)  # fmt: skip
            bins[variant][prog] = target
    return bins


def server(path: str, cert: Path) -> tuple[subprocess.Popen[str], int]:
    """Start the Go HTTPS server (cert.pem and key.pem side by side); (process, port)."""
    proc = subprocess.Popen([path, str(cert), str(cert.with_name("key.pem"))],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def client(path: str, url: str, secret: str, n: int, mode: str, delay_ms: int) -> dict[str, Any]:
    """Run the Go client: ``n`` GETs on one connection (``mode`` h1 or h2) after ``delay_ms``;
    its JSON (``locals``, ``replies``, ``elapsed_ns`` of the requests alone)."""
    out = subprocess.run([path, url, secret, str(n), mode, str(delay_ms)], capture_output=True,
                         text=True, check=True, timeout=600).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result
