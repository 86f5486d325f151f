"""UTF-16 positions ↔ string offsets, with non-ASCII text (é is one unit, an emoji two)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsp_server.positions import to_offset, to_position

TEXT = "café = 1\n🎉x = 'é'\r\nlast"


def test_to_offset_counts_utf16_units() -> None:
    assert to_offset(TEXT, 0, 4) == TEXT.index(" =")  # after "café": é is one unit
    assert to_offset(TEXT, 1, 2) == TEXT.index("x =")  # after the emoji: two units
    assert to_offset(TEXT, 2, 4) == len(TEXT)


def test_to_offset_clamps_character_to_line_end_but_rejects_missing_lines() -> None:
    assert to_offset(TEXT, 1, 99) == TEXT.index("\r\n")
    with pytest.raises(ValueError):
        to_offset(TEXT, 3, 0)
    with pytest.raises(ValueError):
        to_offset(TEXT, -1, 0)


def test_to_position() -> None:
    assert to_position(TEXT, TEXT.index("x =")) == (1, 2)
    assert to_position(TEXT, len(TEXT)) == (2, 4)
    assert to_position("a\rb", 2) == (1, 0)


@given(st.lists(st.sampled_from(["a", "é", "🎉", "\n", "\r\n", " "]), max_size=40).map("".join), st.data())
def test_round_trip(text: str, data) -> None:
    offset = data.draw(st.integers(0, len(text)))
    if text[offset - 1:offset + 1] == "\r\n":  # inside a CRLF is not a position
        offset -= 1
    assert to_offset(text, *to_position(text, offset)) == offset
