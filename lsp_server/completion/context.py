"""What the model sees for an inline completion: prefix, suffix and a little of the rest of the workspace.

Pure logic (no LSP, no engine). `build_context` takes a document, a cursor offset and a token counter and
returns a `CompletionContext`: the code before and after the cursor fitted into a token budget, plus what
post-processing needs to judge a suggestion (the enclosing scope, brackets open at the cursor, whether
the cursor opens a block, the parse tree around the cursor).

Speed matters (it runs on every keystroke) and documents can be huge, so only a *window* around the
cursor is parsed: the text the budget can possibly use, widened to top-level line boundaries so the
enclosing function is usually whole. Parsing is done once per context; `postprocess` reuses the tree.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

from tree_sitter import Node, Tree

from lsp_server import languages
from lsp_server.syntax import (
    bracket_state,
    error_spans,
    indent_width,
    inside_spans,
    leading_whitespace,
    open_token_at_end,
)

PREFIX_SHARE = 0.75  # of the budget, when both sides have more text than fits
STICKY_LINES = 16  # a cut prefix starts on a multiple of this many lines, so KV caches stay reusable
CHARS_PER_TOKEN = 6  # generous: the window must hold at least the budget's worth of text
HEADER_SHARE = 0.3  # at most this much of the prefix budget goes to kept imports
HEAD_CHARS = 8192  # imports are looked for in this much of the file's start
BOUNDARY_SLACK = 0.25  # give up at most this share of the kept lines to cut at a statement boundary

STRING_TYPES = ("string", "comment", "char_literal", "template_string", "raw_string", "heredoc")

_PY_BLOCK = re.compile(
    r"\s*(?:async\s+)?(?:def|class|if|elif|else|for|while|try|except|finally|with|match|case)\b")
_INDENT = re.compile(r"[ \t]*")
_TRAILING_COMMENT = re.compile(r"[ \t]*#[^'\"]*$")  # a comment at the end of a line (no quote in it)
_SPACES = re.compile(r"\s+")
_TOP_LEVEL_LINE = re.compile(r"\n(?=[^\s)\]}])")  # a line starting in column 0 with code, not a closer
# A line with code that neither starts with a closer nor continues a statement (`else:`, `case 1:`).
_LINE_START = re.compile(r"\n([ \t]*)(?=[^\s)\]}])(?!(?:else|elif|except|finally|case|default)\b)")


@dataclass
class CompletionContext:
    """Everything a completion request needs to build its prompt and to judge the model's suggestion."""

    prefix: str  # text before the cursor that goes in the prompt (possibly cut, with header/imports kept)
    suffix: str  # text after the cursor that goes in the prompt (possibly cut)
    language: str | None  # canonical language name from lsp_server.languages, None = plain text
    multiline: bool  # True when the cursor opens an empty block/function body etc.; False mid-statement
    indent: str  # indentation of the cursor's line (for block-end detection)
    scope: str | None  # e.g. "function_definition parse_config" — the enclosing scope, for logs/prompts
    line_prefix: str  # text of the cursor line before the cursor
    line_suffix: str  # text of the cursor line after the cursor
    extra: list[str] = field(default_factory=list)  # snippets from other documents (within their budget)
    opens_block: bool = False  # the cursor line ends with a block opener (`def f():`, `{`)
    block_indent: str = ""  # indentation of the line starting the statement the cursor's line belongs to
    open_brackets: str = ""  # brackets still open at the cursor, outermost first ("({")
    suffix_closers: str = ""  # closing brackets in the suffix without an opener there, in order ("})")
    closable: str = ""  # the open brackets the suffix leaves open: the suggestion may close these ("(")
    in_string: bool = False  # the cursor is inside a string or comment: bracket rules do not apply
    prefix_cut: bool = False  # the prefix does not start at the start of the document
    prefix_start: int = 0  # where the kept text of the prefix starts in the document (after any header)
    suffix_cut: bool = False  # the suffix does not end at the end of the document
    # Python, the cursor at the start of an empty line: what the code before says about its indentation
    # (once the user has typed some, the editor's indentation decides).
    header_indent: str | None = None  # the line follows a block header (`if x:`) indented so
    statement_indent: str | None = None  # the line follows another statement indented so
    indent_unit: str = "    "  # one level of indentation as the file uses it
    # The parsed window around the cursor, for the post-processing parse check.
    window: str = field(default="", repr=False)
    window_offset: int = 0  # the cursor's offset inside `window`
    tree: Tree | None = field(default=None, repr=False)
    scope_range: tuple[int, int] = (0, 0)  # byte range in `window` whose errors the parse check compares

    @property
    def scope_was_clean(self) -> bool:
        """Whether the code around the cursor parsed without errors before any suggestion."""
        return self.tree is not None and not error_spans(self.tree.root_node, *self.scope_range)


def build_context(text: str, offset: int, language_id: str | None, *, count_tokens: Callable[[str], int],
                  budget_tokens: int = 768, path: str | None = None,
                  other_documents: Sequence[tuple[str, str]] = (),
                  other_budget_tokens: int = 128, snippets: Sequence[str] = (),
                  keep_start: int | None = None, ahead_of: int | None = None) -> CompletionContext:
    """The context for a completion at `offset` (a str index into `text`).

    `count_tokens(prefix) + count_tokens(suffix) <= budget_tokens` holds whenever count_tokens grows with
    the text (true of any tokenizer up to a token or two at the seams). `snippets` (already
    formatted, e.g. from `RecentSnippets.pick`) and signatures from `other_documents` ((uri, text) pairs,
    most relevant first, the current document excluded) fill `extra` within `other_budget_tokens`.
    `keep_start` is the `prefix_start` of the previous prompt for this document: while the prefix from
    there still fits, it is kept, so the prompt's first tokens (and the KV cache behind them) change
    only when the budget forces a new cut — not when an unclosed string or bracket typed at the cursor
    changes the parse the cut points are chosen from. `ahead_of` (a `prefix_start`) cuts the prefix where
    typing will move that cut next (the following STICKY_LINES line), so the server can warm that
    prompt's KV cache before the move costs a cold prefill.
    """
    offset = max(0, min(offset, len(text)))
    budget_tokens = max(0, budget_tokens)
    spec = languages.spec_for(language_id, path)
    language = spec.name if spec else None

    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end < 0 else line_end
    line_prefix = text[line_start:offset]
    line_suffix = text[offset:line_end].rstrip("\r")
    indent = _INDENT.match(text, line_start, line_end).group()  # type: ignore[union-attr]  # always matches

    lo, hi = _window(text, offset, budget_tokens * CHARS_PER_TOKEN, budget_tokens * CHARS_PER_TOKEN // 2, language)
    window = text[lo:hi]
    cursor = offset - lo
    tree = languages.parse(window, language) if language else None
    window_bytes = window.encode("utf-8") if tree is not None else b""
    cursor_b = len(window[:cursor].encode("utf-8"))

    fitter = _Fitter(text, offset, lo, hi, count_tokens, tree, language, keep_start, ahead_of)
    suffix_cap = budget_tokens - int(budget_tokens * PREFIX_SHARE)
    suffix, suffix_cut, suffix_tokens = fitter.suffix(suffix_cap)
    prefix, prefix_cut, prefix_tokens = fitter.prefix(budget_tokens - suffix_tokens)
    if suffix_cut and budget_tokens - prefix_tokens - suffix_tokens > budget_tokens // 10:  # give unused to suffix
        suffix, suffix_cut, _ = fitter.suffix(budget_tokens - prefix_tokens)

    scope_node = _enclosing_scope(tree, window_bytes, cursor_b, language) if tree is not None and language else None
    header = _python_header(tree, window_bytes, cursor_b) if language == "python" and tree is not None else None
    opens_block = header is not None or _opens_block(line_prefix, language)
    block_indent = indent
    if header is not None:  # a multi-line `def f(a,\n      b):` — the block belongs to the `def` line
        header_start = len(window_bytes[:header.start_byte].decode("utf-8", "replace"))
        block_indent = _INDENT.match(window, window.rfind("\n", 0, header_start) + 1).group()  # type: ignore
    brackets = bracket_state(window[:cursor], window[cursor:], language)
    in_string = open_token_at_end(line_prefix, language) is not None or (
        _in_string(tree, window_bytes, cursor_b) if tree is not None else False)
    header_indent = statement_indent = None
    unit = "    "
    if language == "python" and not line_prefix and not line_suffix.strip() and not in_string and not brackets.open:
        header_indent, statement_indent, unit = _python_line_before(window[:cursor - len(line_prefix)])
    return CompletionContext(
        prefix=prefix, suffix=suffix, language=language,
        # Prose (comments, docstrings) gets one line: cheap to type, slow to generate, rarely right at length.
        multiline=not in_string and not line_suffix.strip() and (
            not line_prefix.strip() or (opens_block and _block_is_empty(text, line_end, block_indent, language))),
        indent=indent, scope=_describe(scope_node), line_prefix=line_prefix,
        line_suffix=line_suffix,
        extra=_extra(snippets, other_documents, count_tokens, other_budget_tokens, language, line_prefix + line_suffix),
        opens_block=opens_block, block_indent=block_indent, open_brackets=brackets.open,
        suffix_closers=brackets.suffix_closers, closable=brackets.closable,
        in_string=in_string,
        prefix_cut=prefix_cut, prefix_start=fitter.start, suffix_cut=suffix_cut,
        header_indent=header_indent, statement_indent=statement_indent, indent_unit=unit, window=window,
        window_offset=cursor, tree=tree,
        scope_range=_check_range(tree, scope_node, cursor_b) if tree is not None else (0, 0),
    )


# ---------------------------------------------------------------------------------------------------
# The window that gets parsed


def _window(text: str, offset: int, before: int, after: int, language: str | None) -> tuple[int, int]:
    """[lo, hi) around offset: `before`/`after` chars, widened to the least indented line start nearby
    (column 0 when there is one) so the window starts and ends between statements."""
    lo = max(0, offset - before)
    if lo > 0:
        nl = text.rfind("\n", max(0, lo - before), lo)  # back to the line start, unless the line is huge
        lo = nl + 1 if nl >= 0 else min(offset, _word_start(text, lo))
        best: tuple[int, int] | None = None  # (indent, start) of the least indented line, latest wins ties
        for m in _LINE_START.finditer(text, max(0, lo - before // 2), lo):
            if best is None or len(m.group(1)) <= best[0]:
                best = (len(m.group(1)), m.start(1))
        if best is not None:
            lo = best[1]
        lo = _skip_long_string(text, lo, offset, language, before)
    hi = min(len(text), offset + after)
    if hi < len(text):
        found = _TOP_LEVEL_LINE.search(text, max(hi - 1, offset), min(len(text), hi + after // 2))
        if found:
            hi = found.start() + 1
        else:  # the end of the line, unless the line is huge (minified code): then a word end nearby
            nl = text.find("\n", hi, hi + after + 1)
            hi = nl + 1 if nl >= 0 else _word_end(text, hi)
    return lo, hi


def _skip_long_string(text: str, lo: int, offset: int, language: str | None, reach: int) -> int:
    """Move a window start that falls inside a docstring or block comment out of it: to the line after
    its end, or, when the cursor is inside it too, to the line where it starts (if within `reach`).

    Counting delimiters before `lo` tells (odd `\"\"\"` count, more `/*` than `*/`); a window starting
    inside one would make the parse and the bracket scan read prose as code.
    """
    pairs = (('"""', '"""'), ("'''", "'''")) if language == "python" else (("/*", "*/"),)
    for opener, closer in pairs:
        opened = text.count(opener, 0, lo)
        inside = opened % 2 == 1 if opener == closer else opened > text.count(closer, 0, lo)
        if not inside:
            continue
        end = text.find(closer, lo)
        nl = text.find("\n", end) if end >= 0 else -1
        if 0 <= nl < offset:
            lo = nl + 1
        else:
            start = text.rfind(opener, 0, lo)
            if lo - start <= reach:
                lo = text.rfind("\n", 0, start) + 1
    return lo


def _word_start(text: str, pos: int) -> int:
    """The first position at or after pos that starts a word (after whitespace), or pos."""
    m = _SPACES.search(text, pos, pos + 200)
    return m.end() if m else pos


def _word_end(text: str, pos: int) -> int:
    """The first whitespace at or after pos (so a cut there splits no word), or pos."""
    m = _SPACES.search(text, pos, pos + 200)
    return m.start() if m else pos


# ---------------------------------------------------------------------------------------------------
# Fitting prefix and suffix into the budget


class _Fitter:
    """Cuts the prefix and suffix at line (preferably statement) boundaries to fit a token budget.

    Token counting is the expensive part, so candidates are searched by interpolating on the measured
    characters-per-token ratio and then galloping: a handful of `count_tokens` calls per side.
    """

    def __init__(self, text: str, offset: int, lo: int, hi: int, count_tokens: Callable[[str], int],
                 tree: Tree | None, language: str | None, keep_start: int | None = None,
                 ahead_of: int | None = None) -> None:
        self.text, self.offset, self.lo, self.hi = text, offset, lo, hi
        self.keep_start, self.ahead_of = keep_start, ahead_of
        self.start = 0  # where the last prefix() kept text from
        self.count = count_tokens
        self.tree, self.language = tree, language
        spec = languages.named(language)
        self.bodies = frozenset(spec.bodies) if spec else frozenset()
        window = text[lo:hi]
        self.starts = [lo] + [lo + m.end() for m in re.finditer("\n", window)]  # line starts in window
        self.cursor_line = bisect.bisect_right(self.starts, offset) - 1

    def prefix(self, cap: int) -> tuple[str, bool, int]:
        """The longest prefix within `cap` tokens, the file header kept when the start is cut.

        Returns (text, cut, tokens) where tokens is the measured count of a candidate at least as long.
        """
        cap = max(0, cap)
        self.start = 0
        if self.lo == 0:
            whole = self.count(self.text[:self.offset])
            if whole <= cap:
                return self.text[:self.offset], False, whole
        chosen = self._header(int(cap * HEADER_SHARE))
        kept = self.keep_start if self.ahead_of is None else None  # ahead of a cut, the cut itself is moot
        if kept is not None and 0 < kept <= self.starts[self.cursor_line] and self.text[kept - 1] == "\n":
            header = "".join(line for end, line in chosen if end <= kept)
            tokens = self.count(header + self.text[kept:self.offset])
            if tokens <= cap:
                self.start = kept
                return header + self.text[kept:self.offset], True, tokens
        header = "".join(line for _, line in chosen)
        starts = self.starts[self.cursor_line::-1]  # cursor line's start first: shortest first
        costs: dict[int, int] = {}

        def cost(i: int) -> int:
            costs[i] = self.count(header + self.text[starts[i]:self.offset])
            return costs[i]

        found = _longest_fitting([len(header) + self.offset - p for p in starts], cost, cap)
        if found is None:  # not even the cursor line fits: cut it at a word boundary, no header
            text = self._cut_line_left(cap)
            self.start = self.offset - len(text)
            return text, True, self.count(text)
        first = self.cursor_line - found
        if self.ahead_of is not None:  # once the cut at ahead_of stops fitting, it moves past that line
            first = max(first, bisect.bisect_right(self.starts, self.ahead_of))
        start = self.starts[self._boundary_after(self._sticky(first), self.cursor_line)]
        header = "".join(line for end, line in chosen if end <= start)  # imports in the kept text: not twice
        self.start = start
        return header + self.text[start:self.offset], start > 0, costs[found]

    def _sticky(self, first: int) -> int:
        """Round a cut prefix's first line up to a multiple of STICKY_LINES (counted from the file start).

        The engine reuses the KV cache of the longest shared token prefix; if the cut moved with every
        keystroke, each request would share nothing with the last and pay a cold prefill (~1 s on a
        CPU). Rounded, the start stays put while the user types a screenful of lines.
        """
        base = self.text.count("\n", 0, self.lo)
        rounded = -(-(base + first) // STICKY_LINES) * STICKY_LINES - base
        return min(max(first, rounded), self.cursor_line)

    def suffix(self, cap: int) -> tuple[str, bool, int]:
        """The longest suffix within `cap` tokens, ending at a line end: (text, cut, tokens bound)."""
        cap = max(0, cap)
        ends = self.starts[self.cursor_line + 1:]  # each line's end, its newline included
        if not ends or ends[-1] < self.hi:
            ends = ends + [self.hi]
        costs: dict[int, int] = {}

        def cost(i: int) -> int:
            costs[i] = self.count(self.text[self.offset:ends[i]])
            return costs[i]

        found = _longest_fitting([e - self.offset for e in ends], cost, cap)
        if found is None:
            text = self._cut_line_right(cap)
            return text, True, self.count(text)
        end = ends[self._boundary_before(found, ends)]
        return self.text[self.offset:end], end < len(self.text), costs[found]

    def _head(self) -> str:
        """The start of the file where imports are looked for (whole lines, before the cursor)."""
        return self.text[:self.text.rfind("\n", 0, min(self.offset, HEAD_CHARS)) + 1]

    def _header(self, cap: int) -> list[tuple[int, str]]:
        """The file's first imports/package lines (whole statements, in order) within `cap` tokens."""
        if not self.language or cap <= 0:
            return []
        nodes = list(_header_nodes(self.language, self._head()))
        cumulative = list(itertools.accumulate(len(line) for _, line in nodes))
        found = _longest_fitting(cumulative, lambda i: self.count("".join(line for _, line in nodes[:i + 1])), cap)
        return nodes[:found + 1] if found is not None else []

    def _boundary_after(self, first: int, last: int) -> int:
        """The first line in [first, last] that starts a statement, if it costs little; else `first`."""
        slack = max(2, int((last - first) * BOUNDARY_SLACK))
        for i in range(first, min(last, first + slack) + 1):
            if self._starts_statement(i):
                return i
        return first

    def _boundary_before(self, last: int, ends: list[int]) -> int:
        """The last suffix end at or before `last` that is followed by a statement start, if cheap."""
        slack = max(2, int(last * BOUNDARY_SLACK))
        for i in range(last, max(-1, last - slack - 1), -1):
            line = bisect.bisect_left(self.starts, ends[i])
            if ends[i] >= self.hi or (line < len(self.starts) and self.starts[line] == ends[i]
                                      and self._starts_statement(line)):
                return i
        return last

    def _starts_statement(self, line: int) -> bool:
        """Whether window line `line` begins a statement/declaration in a body (a clean cut point)."""
        start = self.starts[line]
        end = self.text.find("\n", start)
        content = self.text[start:len(self.text) if end < 0 else end]
        stripped = content.lstrip()
        if not stripped:
            return False
        if self.tree is None:  # plain text: a line in column 0
            return stripped == content
        point = (line, _utf8_len(content[:len(content) - len(stripped)]))
        node = self.tree.root_node.descendant_for_point_range(point, point)
        while node is not None and node.parent is not None and node.parent.start_byte == node.start_byte:
            node = node.parent
        return node is not None and node.parent is not None and node.parent.type in self.bodies \
            and node.start_point[0] == line and not node.has_error

    def _cut_line_left(self, cap: int) -> str:
        """The end of a too-long cursor line that fits, starting at a word boundary."""
        line_start = self.starts[self.cursor_line]
        cuts = [line_start] + [line_start + m.end() for m in re.finditer(r"[\s;,]+", self.text[line_start:self.offset])]
        cuts = [c for c in reversed(cuts) if c < self.offset]  # word starts, nearest first
        found = _longest_fitting([self.offset - c for c in cuts],
                                 lambda i: self.count(self.text[cuts[i]:self.offset]), cap)
        return self.text[cuts[found]:self.offset] if found is not None else ""

    def _cut_line_right(self, cap: int) -> str:
        """The start of a too-long rest of the cursor line that fits, ending at a word boundary."""
        end = self.text.find("\n", self.offset)
        end = self.hi if end < 0 else end
        cuts = [self.offset + m.start() for m in re.finditer(r"[\s;,]+", self.text[self.offset:end])] + [end]
        cuts = [c for c in cuts if c > self.offset]
        found = _longest_fitting([c - self.offset for c in cuts],
                                 lambda i: self.count(self.text[self.offset:cuts[i]]), cap)
        return self.text[self.offset:cuts[found]] if found is not None else ""


_chars_per_token = 3.5  # last measured; only a starting guess, so sharing it across tokenizers is harmless


def _longest_fitting(lengths: Sequence[int], cost: Callable[[int], int], cap: int) -> int | None:
    """Index of the longest candidate whose cost is within cap (lengths ascending, cost growing with them).

    The first guess uses the characters-per-token ratio measured last time, the second the one just
    measured, then the search gallops and bisects. Every index returned has been measured.
    """
    n = len(lengths)
    if n == 0:
        return None
    memo: dict[int, int] = {}

    def fits(i: int) -> bool:
        if i not in memo:
            memo[i] = cost(i)
        return memo[i] <= cap

    global _chars_per_token
    guess = min(n - 1, max(0, bisect.bisect_right(lengths, cap * _chars_per_token) - 1))
    fits(guess)
    if memo[guess] >= 64:  # long enough to say something about the tokenizer
        _chars_per_token = lengths[guess] / memo[guess]
        guess = min(n - 1, max(0, bisect.bisect_right(lengths, cap * _chars_per_token) - 1))
    if fits(guess):  # gallop toward longer candidates, unless the next one clearly will not fit
        good, bad, step = guess, n, 1
        if guess + 1 < n and memo[guess] + (lengths[guess + 1] - lengths[guess]) / _chars_per_token > cap * 1.02:
            bad = guess + 1
        while good + step < bad:
            if fits(good + step):
                good, step = good + step, step * 2
            else:
                bad = good + step
                break
    else:  # gallop toward shorter ones
        good, bad, step = -1, guess, 1
        while bad - step > good:
            if fits(bad - step):
                good = bad - step
                break
            bad, step = bad - step, step * 2
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good if good >= 0 else None


@functools.lru_cache(maxsize=64)
def _header_nodes(language: str, head: str) -> tuple[tuple[int, str], ...]:
    """(end offset, source line(s)) of the top-level import/package statements at the start of a file.

    Cached: the head of a file rarely changes while the user types further down.
    """
    tree = languages.parse(head, language) if language else None
    if tree is None:
        return ()
    data = head.encode("utf-8")
    imports = languages.named(language).imports  # type: ignore[union-attr]  # parsed, so a known language
    out = []
    for node in tree.root_node.named_children:
        if node.type in imports and not node.has_error:
            end = len(data[:node.end_byte].decode("utf-8", "replace"))
            out.append((end, data[node.start_byte:node.end_byte].decode("utf-8", "replace").rstrip("\n") + "\n"))
    return tuple(out)


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8"))


# ---------------------------------------------------------------------------------------------------
# Structure at the cursor


@functools.cache
def scope_types(language: str) -> frozenset[str]:
    """A completion's scopes: named definitions (without the decorators or `export` around them) and
    anonymous functions."""
    spec = languages.named(language)
    if spec is None:
        return frozenset()
    return frozenset(spec.scopes).difference(spec.wrappers).union(spec.function_literals)


def _enclosing_scope(tree: Tree, data: bytes, cursor_b: int, language: str) -> Node | None:
    """The innermost function/class-like node around the cursor (probing the last code before it)."""
    probe = max(0, len(data[:cursor_b].rstrip()) - 1)
    node = tree.root_node.descendant_for_byte_range(probe, probe + 1)
    scopes = scope_types(language)
    while node is not None:
        if node.type in scopes:
            return node
        node = node.parent
    return None


def _describe(node: Node | None) -> str | None:
    """"function_definition parse_config" for a scope node (its type and name, when it has one)."""
    if node is None:
        return None
    name = _scope_name(node)
    return f"{node.type} {name}" if name else node.type


def _scope_name(node: Node) -> str | None:
    """A scope's name: its `name` field, or the identifier inside its declarator (C/C++)."""
    current: Node | None = node
    for _ in range(6):
        if current is None:
            return None
        if current.type in ("identifier", "field_identifier", "qualified_identifier", "destructor_name",
                            "operator_name", "type_identifier"):
            return current.text.decode("utf-8", "replace") if current.text else None
        name = current.child_by_field_name("name")
        if name is not None:
            return name.text.decode("utf-8", "replace") if name.text else None
        current = current.child_by_field_name("declarator") or current.child_by_field_name("type")
    return None


def _check_range(tree: Tree, scope: Node | None, cursor_b: int) -> tuple[int, int]:
    """Byte range whose parse errors decide whether a suggestion broke the code around the cursor.

    The enclosing scope when there is one, else the top-level statement at the cursor, else just the
    cursor (between statements: only what the suggestion itself adds is judged).
    """
    node = scope
    if node is None:
        node = next((c for c in tree.root_node.children if c.start_byte < cursor_b < c.end_byte), None)
    if node is None:
        return cursor_b, cursor_b
    return min(node.start_byte, cursor_b), max(node.end_byte, cursor_b)


def _in_string(tree: Tree, data: bytes, cursor_b: int) -> bool:
    """Whether the cursor is inside a string or comment (a line comment also at its end)."""
    for probe in (cursor_b, max(0, cursor_b - 1)):
        node = tree.root_node.descendant_for_byte_range(probe, probe)
        while node is not None:
            if any(t in node.type for t in STRING_TYPES) and node.start_byte < cursor_b:
                line_comment = "comment" in node.type and data.startswith((b"//", b"#"), node.start_byte)
                if cursor_b < node.end_byte or (line_comment and cursor_b == node.end_byte):
                    return True
            node = node.parent
    return False


PY_COMPOUND = frozenset({
    "function_definition", "class_definition", "if_statement", "elif_clause", "else_clause", "for_statement",
    "while_statement", "try_statement", "except_clause", "finally_clause", "with_statement", "match_statement",
    "case_clause", "except_group_clause",
})


def _python_header(tree: Tree, data: bytes, cursor_b: int) -> Node | None:
    """The compound statement whose header's `:` is the last code before the cursor, if any."""
    probe = len(data[:cursor_b].rstrip()) - 1
    if probe < 0 or data[probe:probe + 1] != b":":
        return None
    leaf = tree.root_node.descendant_for_byte_range(probe, probe + 1)
    parent = leaf.parent if leaf is not None and leaf.type == ":" else None
    return parent if parent is not None and parent.type in PY_COMPOUND else None


def _opens_block(line_prefix: str, language: str | None) -> bool:
    """Whether the text before the cursor ends with something that opens a block or bracket."""
    code = line_prefix.rstrip()
    if code.endswith(("{", "(", "[")):
        return True
    if language == "python" or language is None:
        return code.endswith(":") and (language is None or bool(_PY_BLOCK.match(code)))
    return False


def _python_line_before(before: str) -> tuple[str | None, str | None, str]:
    """What the code before an empty line says about that line's indentation: (the indentation of the
    block header it follows, or None; that of the other statement it follows, or None; one level).

    A header spread over several lines (`def f(a,\n      b):`) and a statement ending in a bracket or
    docstring continuation count from the line they start on. After a line ending in a backslash the
    new line continues it: both None.
    """
    skip = inside_spans(before, "python")
    lines = _lines_with_starts(before)
    code = [i for i, (start, line) in enumerate(lines) if _is_code_line(line, skip(start))]
    unit = _indent_unit(lines, [i for i in code if not skip(lines[i][0])])
    if not code:
        return None, None, unit
    start, last = lines[code[-1]]
    body = _TRAILING_COMMENT.sub("", last).rstrip()
    if body.endswith("\\"):
        return None, None, unit
    first = code[-1]
    while first > 0 and skip(lines[first][0]):  # back to the line the statement starts on
        first -= 1
    indent = leading_whitespace(lines[first][1])
    if body.endswith(":") and not skip(start + len(body) - 1):
        return indent, None, unit
    return None, indent, unit


def _lines_with_starts(text: str) -> list[tuple[int, str]]:
    """(offset, line) for each line of text."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


def _is_code_line(line: str, continues: bool) -> bool:
    """Not blank and not a comment (a line continuing a string or bracket is code whatever it starts with)."""
    code = line.strip()
    return bool(code) and (continues or not code.startswith("#"))


def _indent_unit(lines: list[tuple[int, str]], starts: list[int]) -> str:
    """One level of indentation as the code uses it: what a block header's body most often adds to the
    header's indentation (four spaces when there is no block; a tab in tab-indented code)."""
    steps: Counter[str] = Counter()
    for a, b in zip(starts, starts[1:]):
        outer, inner = leading_whitespace(lines[a][1]), leading_whitespace(lines[b][1])
        if _TRAILING_COMMENT.sub("", lines[a][1]).rstrip().endswith(":") and \
                inner.startswith(outer) and len(inner) > len(outer):
            steps[inner[len(outer):]] += 1
    if steps:
        return steps.most_common(1)[0][0]
    return "\t" if any(line.startswith("\t") for _, line in lines) else "    "


def _block_is_empty(text: str, line_end: int, indent: str, language: str | None) -> bool:
    """Whether the block opened at the end of the cursor line has no body yet (the next code line is
    not indented deeper, or is the closing bracket)."""
    for line in text[line_end:line_end + 4096].split("\n")[1:]:
        code = line.strip()
        if not code:
            continue
        if code.startswith(("}", ")", "]")):
            return True
        return indent_width(line) <= indent_width(indent)
    return True


# ---------------------------------------------------------------------------------------------------
# Other documents


def _extra(snippets: Sequence[str], documents: Sequence[tuple[str, str]],
           count_tokens: Callable[[str], int], budget: int, language: str | None, cursor_line: str = "") -> list[str]:
    """Recent snippets first (without copies of the cursor's line), then other documents' signatures, as
    long as they fit the budget."""
    out: list[str] = []
    used = 0
    comment = languages.comment_prefix(language)
    candidates = [kept for kept in (_without_line(s, cursor_line) for s in snippets) if kept]
    for uri, text in documents:
        sigs = _signatures(uri_path(uri), text[:200_000])
        if sigs:
            candidates.append(f"{comment} {PurePosixPath(uri_path(uri)).name}\n" + "\n".join(sigs) + "\n")
    for item in candidates:
        cost = count_tokens(item)
        if used + cost > budget:
            item = _cut_lines_to(item, budget - used, count_tokens)
            cost = count_tokens(item) if item else 0
            if not item or used + cost > budget:
                continue
        out.append(item)
        used += cost
    return out


def _without_line(snippet: str, line: str) -> str:
    """A labelled snippet without its copies of `line` (compared without indentation), or "" when no
    code is left.

    The line being completed is unfinished; in a similar document edited a moment ago (a copy, the
    same file under another name) the same unfinished line ends where the user stopped typing, and a
    small model shown it copies it: it answers a line break. The prompt has the line already.
    """
    if not line.strip():
        return snippet
    label, _, code = snippet.partition("\n")
    kept = [row for row in code.split("\n") if row.strip() != line.strip()]
    return f"{label}\n" + "\n".join(kept) if any(row.strip() for row in kept) else ""


def _cut_lines_to(item: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The first lines of item that fit the budget (at least two lines: a label alone is useless)."""
    lines = item.splitlines(keepends=True)
    if len(lines) < 2:
        return ""
    lengths = list(itertools.accumulate(len(line) for line in lines))[1:]
    found = _longest_fitting(lengths, lambda i: count_tokens("".join(lines[:i + 2])), budget)
    return "".join(lines[:found + 2]) if found is not None else ""


@functools.lru_cache(maxsize=64)
def _signatures(path: str, text: str) -> tuple[str, ...]:
    """First lines of a document's top-level functions/classes and their members: what other code calls."""
    spec = languages.spec_for(None, path)
    tree = languages.parse(text, spec.name) if spec else None
    if tree is None or spec is None:
        return ()
    lines = text.splitlines()
    out: list[str] = []
    scopes = scope_types(spec.name)

    def visit(nodes: list[Node], depth: int) -> None:
        for node in nodes:
            if node.type == "decorated_definition":
                node = node.child_by_field_name("definition") or node
            if node.type not in scopes:
                continue
            row = node.start_point[0]
            if row < len(lines) and len(out) < 200:
                out.append(lines[row].rstrip())
            body = node.child_by_field_name("body")
            if depth == 0 and body is not None and _scope_name(node) and not node.type.startswith(
                    ("function", "method", "func", "arrow", "constructor")):
                visit(body.named_children, 1)

    visit(tree.root_node.named_children, 0)
    return tuple(out)


def uri_path(uri: str) -> str:
    """The path part of a file URI (or the string itself if it is not a URI)."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme else uri


# ---------------------------------------------------------------------------------------------------
# Recently edited places (llama.vim's ring buffer)


@dataclass
class _Chunk:
    uri: str
    first_line: int
    text: str


class RecentSnippets:
    """Chunks of code near where the user recently edited or moved, across documents.

    Like llama.vim's ring buffer: the code you just touched in another file is the best hint for the
    file you are in. A new chunk replaces an older one from the same document that overlaps it.
    Documents are told apart by their unquoted URI (pygls keys them so, and a client may spell
    `my%20file.py` either way): the document being completed is never its own snippet.
    """

    def __init__(self, capacity: int = 16, lines: int = 16) -> None:
        self.capacity = capacity
        self.lines = lines
        self._chunks: deque[_Chunk] = deque()
        self._lock = threading.Lock()

    def add(self, uri: str, text: str, offset: int) -> None:
        """Remember the lines around `offset` in document `uri` (most recent last)."""
        offset = max(0, min(offset, len(text)))
        start = text.rfind("\n", 0, offset) + 1
        for _ in range(self.lines // 2):  # back to the start of the chunk's first line
            if start > 0:
                start = text.rfind("\n", 0, start - 1) + 1
        end = start
        for _ in range(self.lines):
            nl = text.find("\n", end)
            end = len(text) if nl < 0 else nl + 1
        first = text.count("\n", 0, start)
        chunk = text[start:end].strip("\n")
        if not chunk.strip():
            return
        uri = unquote(uri)
        with self._lock:
            for old in list(self._chunks):
                if old.uri == uri and abs(old.first_line - first) < self.lines // 2 + 1:
                    self._chunks.remove(old)
            self._chunks.append(_Chunk(uri, first, chunk + "\n"))
            while len(self._chunks) > self.capacity:
                self._chunks.popleft()

    def forget(self, uri: str) -> None:
        """Drop a document's chunks (it was closed or deleted)."""
        uri = unquote(uri)
        with self._lock:
            self._chunks = deque(c for c in self._chunks if c.uri != uri)

    def pick(self, count_tokens: Callable[[str], int], budget: int, exclude_uri: str | None = None,
             comment: str = "#") -> list[str]:
        """The most recent chunks from other documents that fit in `budget` tokens, each labelled."""
        with self._lock:
            chunks = list(reversed(self._chunks))
        out: list[str] = []
        used = 0
        exclude = unquote(exclude_uri) if exclude_uri is not None else None
        for chunk in chunks:
            if chunk.uri == exclude:
                continue
            item = f"{comment} {PurePosixPath(uri_path(chunk.uri)).name}\n{chunk.text}"
            cost = count_tokens(item)
            if used + cost <= budget:
                out.append(item)
                used += cost
        return out
