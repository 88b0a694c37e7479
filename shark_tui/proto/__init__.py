"""Sans-IO protocol dissectors: bytes of each direction in, events out. No I/O here."""
