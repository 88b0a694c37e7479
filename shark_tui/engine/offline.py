"""A capture file loaded into a segment store, so files are queried like a live daemon's store
(``export FILE``, and ``open FILE`` in the TUI): the same index, dissection and export code.
"""

from __future__ import annotations

import struct
import sys
from typing import BinaryIO, Final

from shark_tui.engine.capfile import CaptureFile
from shark_tui.engine.podmap import from_comments
from shark_tui.engine.store import Recorder

__all__ = ["import_capture"]

_META: Final = struct.Struct("=IIII")
_BATCH: Final = 4096
_NS: Final = 1_000_000_000
#: A file's store keeps everything: no byte budget, no age limit.
_UNLIMITED: Final = 1 << 62


def import_capture(path: str, directory: str) -> tuple[Recorder, str | None]:
    """Load ``path`` (``-`` = stdin) into a new store in ``directory``; return it (flushed,
    its last segment still open) and the reader's warning (truncated file), if any.

    Raises `CaptureFormatError` for input that is not a capture, OSError when unreadable."""
    rec = Recorder(directory, _UNLIMITED, _UNLIMITED, segment_bytes=(1 << 32) - 1)
    if path == "-":
        warning = _load(sys.stdin.buffer, rec)
    else:
        with open(path, "rb") as f:
            warning = _load(f, rec)
    rec.flush()
    return rec, warning


def _load(f: BinaryIO, rec: Recorder) -> str | None:
    cf = CaptureFile(f)
    ids: list[int] = []
    data = bytearray()
    meta = bytearray()
    exact: list[tuple[int, int]] = []
    current = -1

    def flush_batch() -> None:
        if exact:
            rec.add_batch(current, bytes(data), bytes(meta), list(exact))
            data.clear()
            meta.clear()
            exact.clear()

    for ts, iface, pkt, orig_len in cf:
        while len(ids) <= iface:
            i = len(ids)
            info = cf.interfaces[i]
            ids.append(rec.source(info.name or f"if{i}", info.linktype, info.snaplen))
        sid = ids[iface]
        if sid != current or len(exact) >= _BATCH:
            flush_batch()
            current = sid
        meta += _META.pack(ts // _NS, ts % _NS // 1000, len(data), len(pkt))
        data += pkt
        exact.append((ts, orig_len))
    flush_batch()
    rec.names, problem = from_comments(cf.reader.comments)
    return cf.warning or problem
