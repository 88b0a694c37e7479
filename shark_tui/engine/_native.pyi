# The C fast paths of capfile and packet (_native.c, which says what each one takes over).
from collections.abc import Callable
from typing import Any

from shark_tui.engine.packet import TcpSegment

# ``out`` receives capfile.RawPacket tuples, and capfile.Decoded ones with a link type
def pcap_records(
    buf: bytes,
    pos: int,
    big_endian: bool,
    record_size: int,
    ts_mult: int,
    out: list[Any],
    linktype: int = -1,
    ignore: IgnoreSet | None = None,
) -> int: ...
def pcapng_epbs(
    buf: bytes,
    pos: int,
    big_endian: bool,
    section_ifs: list[tuple[int, int, int]],
    out: list[Any],
    linktypes: list[int] | None = None,
    ignore: IgnoreSet | None = None,
) -> int: ...
def tcp_segment(linktype: int, data: bytes) -> TcpSegment | None: ...
def merge_records(
    bufs: list[bytes | memoryview], poss: list[int], live: list[bool], fd: int
) -> tuple[int, int]: ...

class IgnoreSet:
    """Connections whose plain segments the record loops take out as they read (_native.c)."""

    dropped: int
    taken: int  # records of fast connections handled in the loops
    looped: int  # records `take` handled
    def add(self, src: bytes, sport: int, dst: bytes, dport: int, zone: int) -> None: ...
    def discard(self, src: bytes, sport: int, dst: bytes, dport: int, zone: int) -> None: ...
    def last_seen(
        self, src: bytes, sport: int, dst: bytes, dport: int, zone: int
    ) -> int | None: ...
    def arm(self, zones: list[int], next_sweep: float | None, interval: float) -> None: ...
    def add_fast(self, flow: Any) -> None: ...
    def take(self, record: tuple[Any, ...], zone: int) -> bool: ...
    def set_sink(self, sink: Callable[[Any, list[Any]], None] | None) -> None: ...
    def __len__(self) -> int: ...
