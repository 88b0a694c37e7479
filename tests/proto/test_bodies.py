"""Body rendering: text or base64, caps, content codings."""

from __future__ import annotations

import base64
import gzip
import zlib

from hypothesis import given
from hypothesis import strategies as st

from shark_tui.proto.bodies import render_body


def test_empty_body_is_empty_text() -> None:
    assert render_body(b"") == {
        "body": "",
        "body_encoding": "text",
        "body_truncated": False,
        "content_encoding": None,
    }
    assert render_body(b"", truncated=True)["body_truncated"] is True


def test_utf8_is_text() -> None:
    out = render_body("héllo\n\tworld\r\n".encode())
    assert out["body"] == "héllo\n\tworld\r\n"
    assert out["body_encoding"] == "text"


def test_binary_and_control_characters_are_base64() -> None:
    for raw in (b"\xff\xfe", b"a\x00b", b"\x1b[31m"):
        out = render_body(raw)
        assert out["body_encoding"] == "base64"
        assert base64.b64decode(out["body"]) == raw


def test_truncated_inside_a_character_stays_text() -> None:
    raw = "abc€".encode()[:-1]
    assert render_body(raw, truncated=True)["body"] == "abc"
    assert render_body(raw, truncated=False)["body_encoding"] == "base64"


def test_gzip_deflate_raw_deflate() -> None:
    text = b"some text " * 20
    raw = zlib.compressobj(wbits=-15)
    cases = {
        "gzip": gzip.compress(text),
        "x-gzip": gzip.compress(text),
        "deflate": zlib.compress(text),
        " Deflate ": raw.compress(text) + raw.flush(),
    }
    for coding, data in cases.items():
        out = render_body(data, content_encoding=coding)
        assert out["body"] == text.decode(), coding
        assert out["content_encoding"] == coding.strip().lower()
        assert out["body_truncated"] is False
        assert "body_decode_error" not in out


def test_decompressed_output_is_capped() -> None:
    out = render_body(gzip.compress(b"x" * 100_000), content_encoding="gzip", cap=1000)
    assert out["body"] == "x" * 1000
    assert out["body_truncated"] is True


def test_cap_zero_decodes_nothing() -> None:
    out = render_body(gzip.compress(b"abc"), content_encoding="gzip", cap=0)
    assert out["body"] == ""
    assert out["body_truncated"] is True


def test_decode_failure_keeps_raw() -> None:
    out = render_body(b"plain, not gzip", content_encoding="gzip")
    assert out["body"] == "plain, not gzip"
    assert out["content_encoding"] is None
    assert out["body_decode_error"].startswith("failed to decode gzip: ")


def test_incomplete_stream() -> None:
    data = gzip.compress(b"hello world" * 10)[:30]
    cut = render_body(data, content_encoding="gzip", truncated=True)
    assert "body_decode_error" not in cut
    assert cut["body_truncated"] is True
    whole = render_body(data, content_encoding="gzip")
    assert whole["body_decode_error"] == "failed to decode gzip: incomplete stream"


def test_identity_and_unsupported_codings() -> None:
    assert "body_decode_error" not in render_body(b"x", content_encoding="identity")
    out = render_body(b"\x1b\x00", content_encoding="br")
    assert out["body_encoding"] == "base64"
    assert "not supported" in out["body_decode_error"]


@given(
    st.binary(max_size=300),
    st.sampled_from([None, "gzip", "deflate", "br", "identity"]),
    st.integers(0, 400),
    st.booleans(),
)
def test_never_raises_and_stays_within_cap(
    raw: bytes, coding: str | None, cap: int, truncated: bool
) -> None:
    out = render_body(raw, content_encoding=coding, cap=cap, truncated=truncated)
    assert out["body_encoding"] in ("text", "base64")
    if out["content_encoding"] is not None:
        shown = (
            out["body"].encode()
            if out["body_encoding"] == "text"
            else base64.b64decode(out["body"])
        )
        assert len(shown) <= cap
