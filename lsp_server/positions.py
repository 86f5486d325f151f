"""LSP positions (line, UTF-16 code unit) ↔ Python string offsets (code points).

LSP counts characters in UTF-16 code units, Python strings in code points: "é" is one of each, an
emoji is two units but one code point. Convert once, at the edge, and work in offsets inside.
Lines end at "\\n", "\\r\\n" or "\\r", as the protocol says.
"""

from __future__ import annotations

import re

_LINE_END = re.compile(r"\r\n|\r|\n")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, a code point here is always half of a broken pair


def line_starts(text: str) -> list[int]:
    """Offset at which each line starts (always at least one line)."""
    return [0] + [m.end() for m in _LINE_END.finditer(text)]


def utf16_len(s: str) -> int:
    """The length of a string in UTF-16 code units (what LSP counts)."""
    return len(s) + sum(1 for ch in s if ord(ch) > 0xFFFF)


def to_offset(text: str, line: int, utf16_char: int) -> int:
    """The string offset of an LSP position.

    A character past the end of its line means the end of the line (the protocol's rule); a line
    outside the document raises ValueError, since that position names nothing.
    """
    starts = line_starts(text)
    if line < 0 or line >= len(starts) or utf16_char < 0:
        raise ValueError(f"position {line}:{utf16_char} is outside the document ({len(starts)} lines)")
    start = starts[line]
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    content = text[start:end].rstrip("\r\n")
    units = 0
    for i, ch in enumerate(content):
        if units >= utf16_char:
            return start + i
        units += 2 if ord(ch) > 0xFFFF else 1
    return start + len(content)


def clamped_offset(text: str, line: int, utf16_char: int) -> int:
    """The string offset of a position in a document *change*: like `to_offset`, but a line past the end
    means the end of the document (what editors do with an edit past the end) instead of an error."""
    if line >= len(line_starts(text)):
        return len(text)
    return to_offset(text, max(line, 0), max(utf16_char, 0))


def to_position(text: str, offset: int) -> tuple[int, int]:
    """The LSP (line, UTF-16 character) of a string offset (clamped into the text)."""
    offset = max(0, min(offset, len(text)))
    starts = line_starts(text)
    lo, hi = 0, len(starts) - 1
    while lo < hi:  # last line start <= offset
        mid = (lo + hi + 1) // 2
        if starts[mid] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return lo, utf16_len(text[starts[lo]:offset])


def encodable(text: str) -> str:
    """The text with lone surrogates (a broken UTF-16 buffer can hold them; UTF-8 cannot) as U+FFFD: every
    offset and UTF-16 position stays the same, and the text can be encoded for the parser and the model."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text
