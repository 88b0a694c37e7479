"""The header blocks of HTTP/1 in C (proto/_http1.c) against the Python reference."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shark_tui.proto._http1 import header_block
from shark_tui.proto.http1 import dissector
from shark_tui.proto.http1.dissector import Http1Dissector


def test_the_c_module_is_used() -> None:
    """CI installs a compiler: the fast path must be the one the dissector calls."""
    assert dissector._header_block is header_block


_NAMES = ["Host", "host", "HOST", "Content-Length", "content-length", "Transfer-Encoding",
          "Connection", "Upgrade", "Content-Encoding", "X-A", "x-b", "Accept", ""]  # fmt: skip
_piece = st.one_of(
    st.sampled_from(_NAMES),
    st.sampled_from([":", ": ", " :", "\t", " ", "\r", "\r\n", "\n", ",", "é", "\x00", "\x7f"]),
    st.text(alphabet="abcdeXYZ0123-_ /;=", max_size=12),
)


@st.composite
def _blocks(draw: st.DrawFn) -> bytes:
    """Header lines, mostly well formed: some with odd spacing, obs-fold, no colon, empty, CRs,
    bytes over 0x7F (UTF-8 and not)."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 3)):
            name = draw(st.sampled_from(_NAMES[:-1]))
            pad = draw(st.sampled_from(["", " ", "\t", " \t"]))
            value = draw(st.text(alphabet="abc 123\t,;=\r", max_size=10))
            lines.append(f"{name}{pad}:{value}")
        else:
            lines.append("".join(draw(st.lists(_piece, max_size=6))))
    raw = "\n".join(lines).encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        raw += b"\xff"  # not UTF-8: latin-1 in Python
    return raw


@settings(max_examples=2000, deadline=None)
@given(block=_blocks(), pad=st.binary(max_size=4))
@example(block=b"Host: a\r\nHost: b\r\nConnection: keep-alive\r\nconnection: upgrade", pad=b"")
@example(block=b"A: b\r\n c", pad=b"")
@example(block=b"", pad=b"x")
def test_property_c_header_blocks_are_the_reference(block: bytes, pad: bytes) -> None:
    """Where the C code answers it answers what `_headers` does, from inside a larger buffer;
    where it declines (None), the block is one the Python code takes another way for (not
    ASCII, or a line that is not a plain ``name: value``)."""
    d = Http1Dissector()
    want = d._headers(block)
    buf = bytearray(pad + block + pad)
    got = header_block(buf, len(pad), len(pad) + len(block))
    if got is None:
        text = block.decode("latin-1")
        plain = all(
            (sep := line.partition(":"))[1] and sep[0] and sep[0][0] not in " \t"
            for line in text.split("\n")
        )
        assert not block.isascii() or not plain, block
    else:
        assert got == want
        assert block.isascii()


def test_out_of_range_is_an_error_not_a_crash() -> None:
    import pytest

    with pytest.raises(ValueError):
        header_block(b"abc", 2, 5)
    with pytest.raises(ValueError):
        header_block(b"abc", -1, 1)
    assert header_block(b"abc", 1, 1) == header_block(b"abc", 2, 1) == ([], {})  # as b"abc"[2:1]
