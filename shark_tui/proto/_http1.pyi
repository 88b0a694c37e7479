# The header blocks of proto.http1 in C (_http1.c says what it takes over).
def header_block(
    buf: bytes | bytearray, start: int, end: int
) -> tuple[list[list[str]], dict[str, str]] | None: ...
