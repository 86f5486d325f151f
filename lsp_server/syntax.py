"""What a line of code's syntax says without a parser: brackets, strings and comments, indentation.

One small lexer per language family (a regex that finds brackets and skips strings and comments whole)
answers what the parse tree cannot while the user is typing: which brackets are open at the cursor,
what the text after it closes, whether the cursor sits in an unterminated string. Completion context and
post-processing both use it, so they always agree. `error_spans` reads a parse tree's error nodes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tree_sitter import Node

from lsp_server import languages

CLOSERS = {")": "(", "]": "[", "}": "{"}
OPENERS = {v: k for k, v in CLOSERS.items()}
BRACKETS = frozenset("()[]{}")


def token_pattern(language: str | None) -> re.Pattern[str]:
    """The regex that finds brackets, strings and comments in this language's code."""
    spec = languages.named(language)
    if spec is not None:
        return spec.tokens
    return languages.PYTHON_TOKENS if language is None else languages.C_TOKENS


def scan_brackets(text: str, language: str | None) -> tuple[str, str]:
    """(brackets still open at the end, closers that had no opener) outside strings and comments.

    The open brackets come outermost first; the unmatched closers in the order they appear.
    """
    pattern = token_pattern(language)
    stack: list[str] = []
    unmatched: list[str] = []
    for match in pattern.finditer(text):
        ch = match.group()
        if ch not in BRACKETS:
            continue
        if ch in OPENERS:
            stack.append(ch)
        elif stack:
            stack.pop()
        else:
            unmatched.append(ch)
    return "".join(stack), "".join(unmatched)


@dataclass(frozen=True)
class Brackets:
    """Brackets around the cursor: what is open, what the suffix closes, what the suggestion may close."""

    open: str  # open at the cursor, outermost first
    suffix_closers: str  # closers in the suffix without an opener there, in order
    closable: str  # the open ones the suffix leaves open (outermost first)


def bracket_state(before: str, after: str, language: str | None) -> Brackets:
    """Match brackets across the cursor (strings and comments skipped).

    The suffix's first unmatched closer closes one of the open brackets; everything opened inside
    that one is the suggestion's to close. Which one: a closer that starts its line closes the
    innermost bracket of its kind opened on a line with the same indentation (`}` under `function`
    closes the function, not a `const {` left open inside it); otherwise the innermost of its kind.
    """
    opens: list[tuple[str, int]] = []  # (bracket, position)
    for pos, ch in bracket_events(before, language):
        if ch in OPENERS:
            opens.append((ch, pos))
        elif opens:
            opens.pop()
    brackets = "".join(ch for ch, _ in opens)
    depth = 0
    closers: list[str] = []
    closable: str | None = None
    for pos, ch in bracket_events(after, language):
        if ch in OPENERS:
            depth += 1
        elif depth:
            depth -= 1
        else:
            closers.append(ch)
            if closable is None:
                closable = _left_open(before, opens, after, pos, ch)
    return Brackets(brackets, "".join(closers), brackets if closable is None else closable)


def _left_open(before: str, opens: list[tuple[str, int]], after: str, pos: int, closer: str) -> str:
    """The open brackets inside the one that the closer at after[pos] closes."""
    kind = [i for i, (opener, _) in enumerate(opens) if OPENERS[opener] == closer]
    line_start = after.rfind("\n", 0, pos) + 1
    if line_start and not after[line_start:pos].strip():  # a closer at the start of its line
        width = indent_width(after[line_start:pos])
        aligned = [i for i in kind
                   if indent_width(before[before.rfind("\n", 0, opens[i][1]) + 1:opens[i][1]]) == width]
        kind = aligned or kind
    brackets = "".join(ch for ch, _ in opens)
    return brackets[kind[-1] + 1:] if kind else brackets


def bracket_events(text: str, language: str | None) -> list[tuple[int, str]]:
    """Positions and characters of the brackets in text, outside strings and comments."""
    return [(m.start(), m.group()) for m in token_pattern(language).finditer(text) if m.group() in BRACKETS]


def open_token_at_end(text: str, language: str | None) -> str | None:
    """"string" or "comment" when text ends inside one that is still open, else None (the parse tree
    cannot tell: an unterminated string is an error node)."""
    last = None
    for match in token_pattern(language).finditer(text):
        last = match
    if last is None or last.end() != len(text) or last.group() in BRACKETS:
        return None
    token = last.group()
    if token.startswith(("//", "#")) or (token.startswith("/*") and not token.endswith("*/")):
        return "comment"
    quote = token[:3] if token[:3] in ('"""', "'''") else token[0]
    open_ = len(token) == len(quote) or not token.endswith(quote) or token.endswith("\\" + quote)
    return "string" if open_ else None


def inside_spans(text: str, language: str) -> Callable[[int], bool]:
    """A test for 'this position is inside a bracket, string or comment of the text' (the opening
    character itself is not inside): a line whose start is inside one continues an earlier line."""
    pattern = token_pattern(language)
    spans: list[tuple[int, int]] = []
    depth, opened = 0, 0
    for m in pattern.finditer(text):
        token = m.group()
        if token not in BRACKETS:
            spans.append((m.start() + 1, m.end()))
        elif token in OPENERS:
            if depth == 0:
                opened = m.start() + 1
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                spans.append((opened, m.start() + 1))
    if depth > 0:
        spans.append((opened, len(text) + 1))
    return lambda pos: any(lo <= pos < hi for lo, hi in spans)


def leading_whitespace(line: str) -> str:
    """The spaces and tabs a line starts with (its indentation, as written)."""
    return line[:len(line) - len(line.lstrip(" \t"))]


def indent_width(line: str) -> int:
    """Columns of leading whitespace (a tab counts as 4)."""
    lead = leading_whitespace(line)
    return len(lead) + 3 * lead.count("\t")


def error_spans(root: Node, lo: int, hi: int) -> list[tuple[int, int]]:
    """Byte ranges of ERROR/MISSING nodes that touch [lo, hi] (only subtrees with errors are visited)."""
    spans: list[tuple[int, int]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.end_byte < lo or node.start_byte > hi or not (node.has_error or node.is_missing):
            continue
        flawed = [c for c in node.children if c.has_error or c.is_missing]
        if node.is_error or node.is_missing or not flawed:  # no child to blame: a hidden token is missing
            spans.append((node.start_byte, node.end_byte))
            continue
        stack.extend(flawed)
    return spans
