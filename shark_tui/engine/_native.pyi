# The C fast paths of capfile and packet (_native.c, which says what each one takes over).
from shark_tui.engine.capfile import RawPacket
from shark_tui.engine.packet import TcpSegment

def pcap_records(
    buf: bytes, pos: int, big_endian: bool, record_size: int, ts_mult: int, out: list[RawPacket]
) -> int: ...
def pcapng_epbs(
    buf: bytes,
    pos: int,
    big_endian: bool,
    section_ifs: list[tuple[int, int, int]],
    out: list[RawPacket],
) -> int: ...
def tcp_segment(linktype: int, data: bytes) -> TcpSegment | None: ...
