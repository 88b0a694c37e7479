"""Struct member offsets from the running kernel's BTF (``/sys/kernel/btf/vmlinux``).

The kernel headers Debian ships (6.1) do not match the kernel this runs on, so the BPF
programs never take a kernel struct layout from a header: they get the byte offsets they read
(`struct sock_common`'s addresses and ports) as ``#define``s computed here. Only what that
needs is parsed: the type section's records, struct/union members (anonymous ones flattened
into their parent, as C sees them) and names.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Final

__all__ = ["BTFError", "member_offsets"]

VMLINUX: Final = "/sys/kernel/btf/vmlinux"
_HEADER: Final = struct.Struct("<HBBIIIII")
_TYPE: Final = struct.Struct("<III")
_MEMBER: Final = struct.Struct("<III")
_STRUCT, _UNION = 4, 5
# bytes that follow the 12-byte record, per kind: fixed, and per member (vlen)
_EXTRA: Final = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8),
                 14: (4, 0), 15: (0, 12), 17: (4, 0), 19: (0, 12)}  # fmt: skip


class BTFError(Exception):
    """The BTF is missing or does not hold what was asked for."""


@cache
def _types(
    path: str,
) -> tuple[dict[str, list[int]], list[tuple[int, int, list[tuple[str, int, int]]]]]:
    """(struct/union name -> type ids, per type id (kind, name offset, members))."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BTFError(
            f"cannot read {path}: {exc.strerror} (a kernel built with BTF has it)"
        ) from exc
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
    if magic != 0xEB9F:
        raise BTFError(f"{path} is not BTF")
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]

    def name(off: int) -> str:
        end = strings.index(b"\0", off)
        return strings[off:end].decode()

    types: list[tuple[int, int, list[tuple[str, int, int]]]] = [(0, 0, [])]  # id 0 is void
    by_name: dict[str, list[int]] = {}
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    while pos < end:
        name_off, info, _size = _TYPE.unpack_from(data, pos)
        pos += 12
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        fixed, each = _EXTRA.get(kind, (0, 0))
        members: list[tuple[str, int, int]] = []
        if kind in (_STRUCT, _UNION):
            for i in range(vlen):
                m_name, m_type, m_off = _MEMBER.unpack_from(data, pos + 12 * i)
                bits = m_off & 0xFFFFFF if kflag else m_off
                members.append((name(m_name) if m_name else "", m_type, bits))
            if name_off:
                by_name.setdefault(name(name_off), []).append(len(types))
        types.append((kind, name_off, members))
        pos += fixed + each * vlen
    return by_name, types


def member_offsets(struct_name: str, path: str = VMLINUX) -> dict[str, int]:
    """Byte offset of every member of ``struct struct_name``, anonymous members flattened."""
    by_name, types = _types(path)
    ids = [i for i in by_name.get(struct_name, ()) if types[i][0] == _STRUCT and types[i][2]]
    if not ids:
        raise BTFError(f"struct {struct_name} is not in {path}")
    out: dict[str, int] = {}

    def walk(tid: int, base_bits: int) -> None:
        for m_name, m_type, bits in types[tid][2]:
            if m_name:
                out.setdefault(m_name, (base_bits + bits) // 8)
            elif types[m_type][0] in (_STRUCT, _UNION):
                walk(m_type, base_bits + bits)

    walk(ids[0], 0)
    return out
