"""Judging a model's suggestion: where it should stop, what to cut, and whether to show it at all.

Each rule is a small function with its own tests, and the pipeline is a declared, ordered list (in the
spirit of tabby-agent's postprocess filters): `CUTTING_RULES` and `PIPELINE`, at the end of this module.
`stop_rule` runs the cutting rules during streaming so generation ends as soon as the suggestion has
left the block (saving tokens); `postprocess` runs the pipeline on the final text: cut, trim, validate.

A cutting rule returns where the suggestion should end (an index into it) or None. Rules that need a
complete line (`final=False` while streaming) wait for its newline before deciding. One step rewrites
rather than cuts: `first_line_depth` moves a Python suggestion to a depth its place allows, before any
cutting rule reads it (while streaming too), since they judge blocks by indentation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from lsp_server import languages
from lsp_server.completion.context import CompletionContext
from lsp_server.syntax import (
    OPENERS,
    bracket_events,
    error_spans,
    indent_width,
    inside_spans,
    leading_whitespace,
    open_token_at_end,
    scan_brackets,
)

log = logging.getLogger(__name__)

MAX_REPEAT_PERIOD = 3  # repetition_end looks for cycles of this many lines at most
HEADER_BODY_LINES = 3  # header_end: lines of the model's own body that make a header above the file's body end it
MAX_PARSE_RETRIES = 6  # multi-line suggestions that break the parse are shortened this many lines at most
_WORD = re.compile(r"\w")
_DEF = re.compile(r"[ \t]*(?:async[ \t]+)?def[ \t]")
_TRAILING_COMMENT = re.compile(r"[ \t]*#[^'\"]*$")  # a comment at the end of a line (no quote in it)


def stop_rule(ctx: CompletionContext) -> Callable[[str], bool]:
    """A predicate for streaming: True once the text so far has gone past where the suggestion ends."""
    def rule(text: str) -> bool:
        return cut_point(reindented(text, ctx), ctx, final=False) is not None
    return rule


def postprocess(suggestion: str, ctx: CompletionContext) -> str | None:
    """The suggestion to show (cut, trimmed, checked), or None to show nothing: the steps of `PIPELINE`,
    in order, until one returns None. A dropped suggestion is logged (at `infill serve -v`) with the
    step that dropped it, so "why did nothing show?" has an answer."""
    text = suggestion
    for step in PIPELINE:
        kept = step(text, ctx)
        if kept is None:
            log.info("suggestion dropped by %s: %r", step.__name__, text[:120])
            return None
        text = kept
    return text


def cut_point(text: str, ctx: CompletionContext, final: bool) -> int | None:
    """The earliest end any of the `CUTTING_RULES` asks for."""
    found = _cuts(text, ctx, final)
    return min(found)[0] if found else None


def _cuts(text: str, ctx: CompletionContext, final: bool) -> list[tuple[int, str]]:
    """Each end a cutting rule asks for, with the rule's name."""
    ends = ((rule(text, ctx, final), rule.__name__) for rule in CUTTING_RULES)
    return [(end, name) for end, name in ends if end is not None]


# ---------------------------------------------------------------------------------------------------
# Cutting rules


def single_line_end(text: str, ctx: CompletionContext, final: bool = False) -> int | None:
    """Single-line mode ends at the first newline after some code.

    At the end of a line a suggestion may start on the next line ("\\n    return x"); in the middle of
    a line it may not (the text after the cursor would be pushed down).
    """
    if ctx.multiline:
        return None
    if ctx.line_suffix.strip():
        nl = text.find("\n")
        return nl if nl >= 0 else None
    code = len(text) - len(text.lstrip())
    nl = text.find("\n", code)
    return nl if nl >= 0 and code < len(text) else None


def bracket_end(text: str, ctx: CompletionContext, final: bool = False) -> int | None:
    """Stop where the suggestion closes a bracket that was open before the cursor, if it should not.

    The suggestion may close the brackets open at the cursor that the suffix leaves open (innermost
    first, each with its own kind); closing one the suffix closes would repeat it, so the suggestion
    ends just before. A `}` that starts its line ends a block, and the suggestion with it. Any other
    closer of the wrong kind ends it too.
    """
    if ctx.in_string or ctx.language is None:
        return None
    free = ctx.closable
    stack: list[str] = []
    outer = 0  # closers so far that closed brackets opened before the cursor
    for pos, ch in bracket_events(text, ctx.language):
        if ch in OPENERS:
            stack.append(ch)
            continue
        if stack:
            if OPENERS[stack.pop()] != ch:  # mismatched inside the suggestion: garbage from here
                return pos
            continue
        if outer >= len(free) or OPENERS[free[-1 - outer]] != ch:
            return pos
        line_start = text.rfind("\n", 0, pos) + 1
        if ch == "}" and not text[line_start:pos].strip() and (line_start or not ctx.line_prefix.strip()):
            return pos + 1
        outer += 1
    return None


def indent_end(text: str, ctx: CompletionContext, final: bool = False) -> int | None:
    """Python: stop before the first line that dedents out of the block the cursor is in.

    The limit is the cursor line's indentation, one deeper when the cursor line opens the block
    (`def f():`). Lines inside brackets or strings of the suggestion do not count, nor lines before
    the suggestion closes the brackets open at the cursor (continuation lines may be indented anyhow).
    A dedented comment does not end the block, but is not kept at its end either. When nothing of the
    enclosing function follows the cursor, the suggestion may dedent to the levels of that function's
    blocks: it may finish the function, not start new code after it.
    """
    if ctx.language != "python" or ctx.in_string:
        return None
    after = _closes_all(text, ctx)
    if after is None:  # still inside brackets opened before the cursor
        return None
    first = text.split("\n", 1)[0]
    follows = _next_code_indent(ctx)
    inner, def_level = _function_levels(ctx.prefix)
    # nothing of the enclosing function follows the cursor: the suggestion may finish its blocks
    finishable = inner if def_level is not None and follows is not None and follows <= def_level else set()
    if ctx.line_prefix.strip():  # after code: the block's body, or the cursor line's block
        limit = indent_width(ctx.block_indent) + 1 if ctx.opens_block else indent_width(ctx.indent)
    elif first.strip():  # on an empty line the suggestion's first code line sets the indentation
        lines = [ctx.line_prefix + first] + text.split("\n")[1:]
        code = next((line for line in lines if _is_code(line)), None)
        limit = indent_width(lines[0] if code is None else code)
        if code is not None and limit == 0 and follows is not None and follows > 0:
            return 0  # column 0 between indented lines (prose, usage examples) would end the block early
    else:  # the code starts on a later line: only going left of the cursor ends it
        limit = indent_width(ctx.line_prefix)
    skip = inside_spans(text, ctx.language)
    kept = len(first)  # end of the last line that belongs to the block
    dedented_comment = False
    pos = text.find("\n")
    while pos >= 0:
        start = pos + 1
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        width = indent_width(line)
        out = start >= after and line.strip() and not skip(start) and width < limit
        if out and _is_code(line):
            if width not in finishable:
                return kept  # dedented comments just before it go with it
            limit, out = width, False  # back in an enclosing block that has no more code after the cursor
        if out:
            dedented_comment = True
        elif line.strip():
            kept, dedented_comment = len(text) if end < 0 else end, False
        pos = end
    return kept if final and dedented_comment else None


def definition_end(text: str, ctx: CompletionContext, final: bool = False) -> int | None:
    """On an empty top-level line, one definition per suggestion: stop after the first block ends.

    C-like: at the end of the line where the suggestion's own braces close again (`}` or `};`).
    Python: before the first line back in column 0 after an indented block.
    """
    if not ctx.multiline or ctx.line_prefix.strip() or ctx.open_brackets or ctx.language is None:
        return None
    if ctx.language == "python":
        if ctx.line_prefix:
            return None
        indented = False
        pos = 0
        skip = inside_spans(text, ctx.language)
        lines = text.split("\n")
        for line in lines if final else lines[:-1]:  # while streaming, `el` may still become `else:`
            if skip(pos) or not _is_code(line):
                pass
            elif not line[:1].isspace():
                if indented and not line.lstrip().startswith(("else", "elif", "except", "finally", ")", "]", "}")):
                    return max(0, pos - 1)
            else:
                indented = True
            pos += len(line) + 1
        return None
    depth = 0
    for pos, ch in bracket_events(text, ctx.language):
        if ch in OPENERS:
            depth += 1
        elif depth:
            depth -= 1
            end = text.find("\n", pos)
            if depth == 0 and ch == "}" and end >= 0 and not bracket_events(text[pos + 1:end], ctx.language):
                return end
    return None


def suffix_repeat(text: str, ctx: CompletionContext, final: bool = False) -> int | None:
    """Stop where the suggestion starts repeating the code that follows the cursor.

    A suggestion line equal to the first code line of the suffix (at the same indentation) is where the
    model ran into existing code. Short lines (`}`, `x += 1`) only count when the next line matches too,
    when both the suggestion and the suffix end there, or (not for a bare closer) when the suggestion does.
    """
    if ctx.line_suffix.strip():
        return None
    targets = [_line_key(line) for line in ctx.suffix.split("\n")[1:] if line.strip()][:2]
    if not targets:
        return None
    lines = text.split("\n")
    complete = len(lines) if final else len(lines) - 1
    offset = 0
    for i, line in enumerate(lines[:complete]):
        absolute = line if i else ctx.line_prefix + line
        if (i > 0 or not ctx.line_prefix.strip()) and _line_key(absolute) == targets[0]:
            strong = len(_WORD.findall(targets[0][1])) >= 3
            rest = [_line_key(ln) for ln in lines[i + 1:complete] if ln.strip()]
            if rest:
                follows = rest[:1] == targets[1:2]
            else:  # the suggestion ends on it: a copy, unless a bare closer (`}` may close its own block)
                follows = final and (len(targets) == 1 or bool(_WORD.search(targets[0][1])))
            if strong or follows:
                return max(0, offset - 1)
        offset += len(line) + 1
    return None


def header_end(text: str, ctx: CompletionContext, final: bool = False) -> int | None:
    """Python, above a body the file already has (`_heads_a_body`): a suggestion that starts with a header
    of that body and goes on only with lines at the body's depth or deeper stops after the header. Those
    lines are a body of the model's own, inside which the file's body would end up (`if self.sock is
    None:` and eight lines of its own above the real body). A suggestion that leaves that depth again
    (`if n < 4:` / `return r[n]` / `for _ in …:` above the loop's body) or starts with other code may be
    a multi-line hole whose last lines begin the block the body goes on: left to the other rules, as is a
    header with fewer than `HEADER_BODY_LINES` such lines (`if ok:` / `if x == y:` / `return True` above
    the `return False` that ends the outer block). Reached while streaming, that many stop generating."""
    first = _first_code_line(text, ctx)
    if first is None or not _heads_a_body(first[1], ctx):
        return None
    end = block_opener_end(text, ctx)
    if end is None or end != first[0]:
        return None
    follows, existing = _next_code_indent(ctx) or 0, _next_code_line(ctx)
    skip = inside_spans(text, ctx.language or "python")
    lines = text[end + 1:].split("\n") if end < len(text) else []
    start, body = end + 1, 0
    for line in lines if final else lines[:-1]:
        if _is_code(line) and not skip(start):
            if indent_width(line) < follows:
                return None
            if existing is not None and _line_key(line) == _line_key(existing):
                break  # it runs into the file's body: `suffix_repeat` ends it there
            body += 1
        start += len(line) + 1
    return end if body >= HEADER_BODY_LINES else None


def _first_code_line(text: str, ctx: CompletionContext) -> tuple[int, str] | None:
    """The suggestion's first line of code: where it ends in `text`, and the whole line (on the cursor's
    line, with what precedes the cursor)."""
    start = 0
    for i, line in enumerate(text.split("\n")):
        whole = ctx.line_prefix + line if i == 0 else line
        if _is_code(whole):
            return start + len(line), whole
        start += len(line) + 1
    return None


def _heads_a_body(line: str, ctx: CompletionContext) -> bool:
    """Python: the next code line is indented deeper than `line`, so a suggestion starting with it heads
    a body that is already there."""
    if ctx.language != "python" or ctx.in_string or ctx.line_suffix.strip():
        return False
    follows = _next_code_indent(ctx)
    return follows is not None and follows > indent_width(line)


def _next_code_indent(ctx: CompletionContext) -> int | None:
    """The indentation of the first code line after the cursor's line; -1 when no code follows,
    None when the suffix was cut before any (what follows is unknown)."""
    for line in ctx.suffix.split("\n")[1:]:
        if _is_code(line):
            return indent_width(line)
    return None if ctx.suffix_cut else -1


def _function_levels(prefix: str) -> tuple[set[int], int | None]:
    """The indentations of the blocks around the end of `prefix` inside the enclosing function, and
    that `def` line's indentation (None outside any function)."""
    levels: set[int] = set()
    current = 1 << 30
    for line in reversed(prefix.split("\n")[:-1]):
        if _is_code(line) and indent_width(line) < current:
            current = indent_width(line)
            if _DEF.match(line):
                return levels, current
            levels.add(current)
            if not current:
                break
    return levels, None


def _is_code(line: str) -> bool:
    """A Python line that counts for indentation: not blank, not only a comment."""
    code = line.strip()
    return bool(code) and not code.startswith("#")


def _line_key(line: str) -> tuple[int, str]:
    """A line as (indentation width, code): equal keys are the same line whatever the tabs."""
    return indent_width(line), line.strip()


def repetition_end(text: str, ctx: CompletionContext, final: bool = False) -> int | None:
    """Stop when the model loops: a line, or a cycle of up to three lines, three times in a row keeps
    only its first copy.

    Small models fall into repeating themselves (`odds.sort()` / `evens = evens[0]` / `odds.sort()`…);
    real code rarely repeats the same lines verbatim thrice.
    """
    lines = text.split("\n")
    complete = len(lines) if final else len(lines) - 1
    keys = [line.strip() for line in lines[:complete]]
    ends = []  # offset of the end of each line
    offset = 0
    for line in lines[:complete]:
        ends.append(offset + len(line))
        offset += len(line) + 1
    for i in range(complete):
        for period in range(1, MAX_REPEAT_PERIOD + 1):
            block = keys[i:i + period]
            if i + 3 * period <= complete and any(_WORD.search(k) for k in block) and \
                    block == keys[i + period:i + 2 * period] == keys[i + 2 * period:i + 3 * period]:
                return ends[i + period - 1]
    return None


def _closes_all(text: str, ctx: CompletionContext) -> int | None:
    """Where the suggestion has closed every bracket open at the cursor (0 if none is), or None."""
    needed = len(ctx.open_brackets)
    if not needed:
        return 0
    depth = closed = 0
    for pos, ch in bracket_events(text, ctx.language):
        if ch in OPENERS:
            depth += 1
        elif depth:
            depth -= 1
        else:
            closed += 1
            if closed == needed:
                return pos + 1
    return None


# ---------------------------------------------------------------------------------------------------
# Cleaning rules


def drop_suffix_overlap(text: str, ctx: CompletionContext) -> str:
    """Drop a tail that repeats the rest of the cursor line (`foo(x)` + `)` → `foo(x`)…

    …but never a closer the suggestion opened itself (`bar()` before `)` stays whole).
    """
    rest = ctx.line_suffix.strip()
    body = text.rstrip()
    if not rest or not body.endswith(rest):
        return text
    kept = body[:len(body) - len(rest)]
    if ctx.language is not None and not ctx.in_string and \
            len(scan_brackets(kept, ctx.language)[0]) != len(scan_brackets(body, ctx.language)[0]):
        return text
    return kept


def trim_whitespace(text: str, ctx: CompletionContext) -> str:
    """Trailing blank lines go; trailing spaces go at the end of a line; no doubled space at the cursor;
    on an empty line the code starts on that line."""
    if ctx.line_suffix.strip():
        text = re.sub(r"(?:\n[ \t]*)+\Z", "", text)
    else:
        text = text.rstrip()
    if not ctx.line_prefix.strip() and text.startswith("\n") and not ctx.line_suffix.strip():
        # on an empty line, code that starts on the next one starts here (not below a blank line)
        text = text.lstrip("\n")
        text = text[len(ctx.line_prefix):] if text.startswith(ctx.line_prefix) else text.lstrip(" \t")
    if ctx.line_prefix.endswith((" ", "\t")) and text[:1] in (" ", "\t"):
        text = text.lstrip(" \t")
    return text


# ---------------------------------------------------------------------------------------------------
# Parse check


def check_parse(text: str, ctx: CompletionContext) -> str | None:
    """The suggestion, or its longest leading lines that keep the cursor's scope parsing; None if none do.

    Applies only when the scope parsed cleanly before (a file being typed is often broken already,
    and then there is nothing to compare with).
    """
    if ctx.tree is None or ctx.language is None or not ctx.scope_was_clean:
        return text
    candidate = text
    for _ in range(MAX_PARSE_RETRIES + 1):
        if not breaks_parse(candidate, ctx):
            return candidate
        if "\n" not in candidate.strip("\n"):
            return None
        candidate = candidate.rstrip("\n").rsplit("\n", 1)[0].rstrip()
        if not candidate.strip():
            return None
    return None


def misses_block_opener(text: str, ctx: CompletionContext) -> bool:
    """Python: the next line is indented deeper, so the suggestion must end on a block opener (`if x:`).

    The file does not compile until that line opens the block, so `check_parse` has no clean scope to
    compare with; an ordinary statement there (what a model that cannot see the suffix often writes)
    cannot be right, and showing nothing beats showing it. A line left inside brackets or ending in a
    backslash is a continuation, and one inside a string it opens (a triple quote) goes on as the
    string's text: either may be followed by anything.
    """
    if ctx.language != "python" or ctx.in_string or ctx.line_suffix.strip() or \
            open_token_at_end(text, ctx.language) == "string":
        return False
    last = (ctx.line_prefix + text).rsplit("\n", 1)[-1]
    follows = _next_code_indent(ctx)
    if not _is_code(last) or follows is None or follows <= indent_width(last):
        return False
    still_open, closers = scan_brackets(text, ctx.language)
    if still_open or len(closers) < len(ctx.open_brackets):
        return False
    return not _TRAILING_COMMENT.sub("", last).rstrip().endswith((":", "\\"))


def block_opener_end(text: str, ctx: CompletionContext) -> int | None:
    """Python: the end of the suggestion's first line that opens a block the next line of the file can
    be the body of (a header indented less than that line), or None."""
    follows = _next_code_indent(ctx)
    after = _closes_all(text, ctx)
    if ctx.language is None or follows is None or after is None:
        return None
    skip = inside_spans(text, ctx.language)
    start = 0
    for i, line in enumerate(text.split("\n")):
        end = start + len(line)
        absolute = ctx.line_prefix + line if i == 0 else line
        body = _TRAILING_COMMENT.sub("", absolute).rstrip()
        colon = end - (len(absolute) - len(body)) - 1  # where the `:` is in text
        if end >= after and (i == 0 or not skip(start)) and _is_code(absolute) and body.endswith(":") \
                and colon >= 0 and not skip(colon) and indent_width(absolute) < follows:
            return end
        start = end + 1
    return None


def reindented(text: str, ctx: CompletionContext) -> str:
    """Python, at the start of an empty line: the suggestion moved to a depth the code around it allows.

    Small models get the code right and the depth wrong (the new line has no indentation to copy, and
    token healing cut the line break), which Python rejects. Only a depth that cannot be right is
    changed (`first_line_depth_for`): then the first code line moves, and with it the lines that share
    its indentation, so the block keeps its shape. A comment first is left alone.
    """
    if ctx.header_indent is None and ctx.statement_indent is None:
        return text
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or not _is_code(lines[first]):
        return text
    old = leading_whitespace(lines[first])
    new = first_line_depth_for(lines[first], ctx)
    if new is None or new == old:
        return text
    skip = inside_spans(text, ctx.language or "python")
    out = lines[:first]
    start = sum(len(line) + 1 for line in out)
    for i, line in enumerate(lines[first:], first):
        moves = i == first or (line.strip() and line.startswith(old) and not skip(start))
        out.append(new + line[len(old):] if moves else line)
        start += len(line) + 1
    return "\n".join(out)


def first_line_depth_for(line: str, ctx: CompletionContext) -> str | None:
    """The indentation a suggestion's first code line must have instead of its own, or None when its
    own can be right.

    After a block header the line opens the header's body: deeper than the header, and at the depth of
    the body's next line when the file already has one (unless the line is a header itself, above that
    body: then one level deeper than the outer header). After any other statement it may not go deeper
    than that statement.
    """
    width = indent_width(line)
    if ctx.header_indent is None:
        limit = ctx.statement_indent
        return limit if limit is not None and width > indent_width(limit) else None
    header = indent_width(ctx.header_indent)
    level = ctx.header_indent + ctx.indent_unit
    body = _next_code_line(ctx)
    if body is None or indent_width(body) <= header:  # the body is still to be written
        return None if width > header else level
    body_indent = leading_whitespace(body)
    if _TRAILING_COMMENT.sub("", line).rstrip().endswith(":"):  # a header above the body
        ok = header < width < indent_width(body)
        return None if ok or indent_width(level) >= indent_width(body) else level
    return None if width == indent_width(body) else body_indent


def _next_code_line(ctx: CompletionContext) -> str | None:
    """The first code line after the cursor's line, if the suffix has one."""
    return next((line for line in ctx.suffix.split("\n")[1:] if _is_code(line)), None)


def breaks_parse(text: str, ctx: CompletionContext) -> bool:
    """Whether inserting text at the cursor puts a parse error in the cursor's scope, or anywhere more of them."""
    if ctx.tree is None or ctx.language is None:
        return False
    window = ctx.window
    new = window[:ctx.window_offset] + text + window[ctx.window_offset:]
    tree = languages.parse(new, ctx.language)
    if tree is None:
        return False
    lo, hi = ctx.scope_range
    if error_spans(tree.root_node, lo, hi + len(text.encode("utf-8"))):
        return True
    everywhere = (0, 1 << 62)
    return len(error_spans(tree.root_node, *everywhere)) > len(error_spans(ctx.tree.root_node, *everywhere))


# ---------------------------------------------------------------------------------------------------
# The pipeline, in order


def normalize_newlines(text: str, ctx: CompletionContext) -> str:
    """Windows line ends become plain ones (the rules count on "\n")."""
    return text.replace("\r\n", "\n")


def cut(text: str, ctx: CompletionContext) -> str:
    """End the suggestion where the first cutting rule says (logged when that drops code: `-v` says why)."""
    found = _cuts(text, ctx, final=True)
    if not found:
        return text
    end, rule = min(found)
    if text[end:].strip():
        log.info("suggestion cut by %s: %r -> %r", rule, text[:120], text[:end][:120])
    text = text[:end]
    # another rule's cut may leave the suggestion ending on a copy of the next line (`i += 1`)
    repeat = suffix_repeat(text, ctx, final=True)
    return text if repeat is None else text[:repeat]


def drop_blank(text: str, ctx: CompletionContext) -> str | None:
    """Nothing but whitespace left: show nothing."""
    return text if text.strip() else None


def first_line_depth(text: str, ctx: CompletionContext) -> str:
    """Python: the suggestion at the depth its first line must have (`reindented`); logged when moved."""
    moved = reindented(text, ctx)
    if moved != text:
        log.info("suggestion re-indented by first_line_depth: %r -> %r", text[:120], moved[:120])
    return moved


def end_at_block_opener(text: str, ctx: CompletionContext) -> str | None:
    """Where the next line needs a block opener the suggestion does not end with: the suggestion up to
    its first line that opens that block (the model wrote the header, then its own copy of the body
    that follows); nothing when it has no such line."""
    if not misses_block_opener(text, ctx):
        return text
    end = block_opener_end(text, ctx)
    if end is None or not text[:end].strip():
        return None
    log.info("suggestion cut by end_at_block_opener: %r -> %r", text[:120], text[:end][:120])
    return text[:end]


CuttingRule = Callable[[str, CompletionContext, bool], "int | None"]
CUTTING_RULES: tuple[CuttingRule, ...] = (
    single_line_end, bracket_end, indent_end, definition_end, header_end, suffix_repeat, repetition_end)
Step = Callable[[str, CompletionContext], "str | None"]
PIPELINE: tuple[Step, ...] = (
    normalize_newlines, first_line_depth, cut, drop_suffix_overlap, trim_whitespace, drop_blank, end_at_block_opener,
    check_parse)
