"""Completion context: budget, cut points, header, scope, single/multi-line, other documents."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_server.completion.context import RecentSnippets, build_context
from lsp_server.completion.postprocess import postprocess
from lsp_server.syntax import scan_brackets

CURSOR = "█"


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: about three characters a token."""
    return len(text) // 3


def ctx_at(doc: str, language: str | None, **kwargs):
    """Build a context for `doc` with the cursor at the █ marker."""
    offset = doc.index(CURSOR)
    kwargs.setdefault("count_tokens", count_tokens)
    return build_context(doc.replace(CURSOR, "", 1), offset, language, **kwargs)


STDLIB_SOURCE = Path(argparse.__file__).read_text()  # real code nobody here wrote, ~2,600 lines


# --- budget and cut points ---------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, 5, 40, 200, 768, 2000])
def test_budget_is_never_exceeded_on_a_real_file(budget: int) -> None:
    offset = STDLIB_SOURCE.index("def _get_values(self, action, arg_strings):")
    ctx = build_context(STDLIB_SOURCE, offset, "python", count_tokens=count_tokens, budget_tokens=budget)
    assert count_tokens(ctx.prefix) + count_tokens(ctx.suffix) <= budget
    assert STDLIB_SOURCE[offset:].startswith(ctx.suffix)


def test_cuts_at_line_boundaries_and_favours_the_prefix() -> None:
    offset = STDLIB_SOURCE.index("def _get_values(self, action, arg_strings):")
    ctx = build_context(STDLIB_SOURCE, offset, "python", count_tokens=count_tokens, budget_tokens=400)
    assert ctx.prefix_cut and ctx.suffix_cut
    assert ctx.suffix.endswith("\n")  # ends at a line end
    kept = ctx.prefix[ctx.prefix.rindex("from gettext import gettext as _, ngettext\n") + len(
        "from gettext import gettext as _, ngettext\n"):]
    start = offset - len(kept)
    assert STDLIB_SOURCE[start:offset] == kept and STDLIB_SOURCE[start - 1] == "\n"  # starts at a line start
    assert count_tokens(ctx.prefix) >= 2.5 * count_tokens(ctx.suffix)


def test_whole_small_file_is_kept() -> None:
    ctx = ctx_at("import os\n\ndef f():\n    return █os.getcwd()\n", "python")
    assert ctx.prefix == "import os\n\ndef f():\n    return "
    assert ctx.suffix == "os.getcwd()\n"
    assert not ctx.prefix_cut and not ctx.suffix_cut


def test_prefers_a_statement_boundary_for_the_cut() -> None:
    lines = [f"def f{i}(a, b):" + "\n" + "    x = (a +\n         b)\n    return x\n\n" for i in range(200)]
    doc = "".join(lines) + "def last():\n    █\n"
    ctx = ctx_at(doc, "python", budget_tokens=120)
    first_line = ctx.prefix.split("\n", 1)[0]
    assert ctx.prefix_cut
    assert re.fullmatch(r"def f\d+\(a, b\):|    x = \(a \+|    return x", first_line)  # never `         b)`


def test_never_cuts_mid_token_in_a_huge_single_line() -> None:
    words = " ".join(f"word{i}" for i in range(5000))
    doc = words + CURSOR + " tail" * 3000
    ctx = ctx_at(doc, None, budget_tokens=100)
    assert count_tokens(ctx.prefix) + count_tokens(ctx.suffix) <= 100
    assert ctx.prefix.startswith("word") and ctx.prefix[:1] != " "
    assert (" " + ctx.prefix) in (" " + doc.split(CURSOR)[0])  # begins at a word start
    assert ctx.suffix.strip() and doc.split(CURSOR)[1].startswith(ctx.suffix)
    assert ctx.suffix.endswith("tail")


HEADERS = {
    "python": ("import os\nimport sys\nfrom typing import Any\n", "x{i} = {i}\n", "def f():\n    █\n"),
    "go": ('package main\n\nimport (\n\t"fmt"\n)\n', "var x{i} = {i}\n", "func main() {\n\t█\n}\n"),
    "c": ("#include <stdio.h>\n#include \"local.h\"\n", "int x{i} = {i};\n", "int main(void) {\n  █\n}\n"),
    "cpp": ("#include <vector>\nusing std::vector;\n", "int x{i} = {i};\n", "int main() {\n  █\n}\n"),
    "java": ("package demo;\n\nimport java.util.List;\n", "// filler {i}\n",
             "class A {\n  void m() {\n    █\n  }\n}\n"),
    "rust": ("use std::io;\nuse std::fmt;\n", "const X{i}: i32 = {i};\n", "fn main() {\n    █\n}\n"),
    "javascript": ("import fs from 'fs';\nimport { x } from './x.js';\n", "const x{i} = {i};\n",
                   "function f() {\n  █\n}\n"),
    "typescript": ("import type { A } from './a';\n", "const x{i}: number = {i};\n", "function f(): void {\n  █\n}\n"),
}


@pytest.mark.parametrize("language", sorted(HEADERS))
def test_header_is_kept_when_the_prefix_is_cut(language: str) -> None:
    header, filler, tail = HEADERS[language]
    doc = header + "".join(filler.format(i=i) for i in range(3000)) + tail
    ctx = ctx_at(doc, language, budget_tokens=300)
    assert ctx.prefix_cut
    first_import = header.strip().splitlines()[0]
    assert ctx.prefix.startswith(first_import)
    assert ctx.prefix.endswith(tail.split(CURSOR)[0])
    assert count_tokens(ctx.prefix) + count_tokens(ctx.suffix) <= 300


def test_header_is_dropped_when_it_does_not_fit() -> None:
    header = "".join(f"import module_with_a_long_name_{i}\n" for i in range(100))
    doc = header + "x = 1\n" * 3000 + "y = █\n"
    ctx = ctx_at(doc, "python", budget_tokens=60)
    assert count_tokens(ctx.prefix) + count_tokens(ctx.suffix) <= 60
    assert ctx.prefix.endswith("y = ")


def test_parses_only_a_window_of_a_2000_line_file() -> None:
    """Bounded work per keystroke (speed itself is measured by benchmarks, not asserted here)."""
    source = "\n".join(STDLIB_SOURCE.splitlines()[:2000])
    offset = source.index("def _parse_known_args(")
    ctx = build_context(source, offset, "python", count_tokens=count_tokens)
    assert len(ctx.window) < 20_000 < len(source)


def test_huge_single_line_is_not_parsed_whole() -> None:
    doc = "var a = [" + ", ".join(str(i) for i in range(1_500_000)) + "];"  # 10 MB of minified code
    offset = len(doc) // 2
    ctx = build_context(doc, offset, "javascript", count_tokens=count_tokens)
    assert len(ctx.window) < 20_000
    assert count_tokens(ctx.prefix) + count_tokens(ctx.suffix) <= 768
    assert doc[:offset].endswith(ctx.prefix) and doc[offset:].startswith(ctx.suffix)


def test_ten_megabyte_file_stays_bounded() -> None:
    doc = "int x = 1;\n" * 950_000
    offset = len(doc) // 2
    ctx = build_context(doc, offset, "c", count_tokens=count_tokens, budget_tokens=768)
    assert count_tokens(ctx.prefix) + count_tokens(ctx.suffix) <= 768
    assert len(ctx.window) < 20_000


# --- edge cases ----------------------------------------------------------------------------------------


def test_window_never_starts_inside_a_docstring() -> None:
    prose = "".join(f"Line {i} of prose (with a paren.\n" for i in range(400))
    docstring = '"""Module docstring.\n\n' + prose + '"""\n'
    doc = docstring + "import os\n\n\ndef f(a):\n    return g(a, █\n"
    ctx = ctx_at(doc, "python", budget_tokens=400)
    assert not ctx.window.startswith("Line") and ctx.scope == "function_definition f"
    assert ctx.open_brackets == "(" and ctx.closable == "("


def test_window_around_a_cursor_in_a_docstring_starts_with_it() -> None:
    code = "".join(f"x{i} = {i}\n" for i in range(300))
    rules = "".join(f"{i}. a rule (with a paren.\n" for i in range(80))
    doc = 'import os\n' + code + '\n\ndef f():\n    """Rules:\n\n' + rules + '81. █\n    """\n    return 1\n'
    ctx = ctx_at(doc, "python", budget_tokens=300)
    assert ctx.window.startswith('    """Rules:') and ctx.in_string and ctx.scope_was_clean
    assert postprocess("62. another rule (short).\n", ctx) == "62. another rule (short)."


def test_window_never_starts_inside_a_block_comment() -> None:
    doc = "/*\n" + "".join(f"note {i} {{\n" for i in range(400)) + "*/\nint f(void) {\n  return g(█\n}\n"
    ctx = ctx_at(doc, "c", budget_tokens=400)
    assert not ctx.window.startswith("note")
    assert ctx.closable == "("


def test_empty_document() -> None:
    ctx = build_context("", 0, "python", count_tokens=count_tokens)
    assert (ctx.prefix, ctx.suffix, ctx.line_prefix, ctx.line_suffix) == ("", "", "", "")
    assert ctx.multiline and ctx.scope is None


@pytest.mark.parametrize("offset", [-5, 0, 10**9])
def test_offsets_are_clamped(offset: int) -> None:
    doc = "def f():\n    return 1\n"
    ctx = build_context(doc, offset, "python", count_tokens=count_tokens)
    assert ctx.prefix + ctx.suffix == doc
    assert ctx.prefix == ("" if offset <= 0 else doc)


def test_non_ascii_before_the_cursor() -> None:
    ctx = ctx_at('def café():\n    s = "é😀"; return █s\n', "python")
    assert ctx.line_prefix == '    s = "é😀"; return '
    assert ctx.line_suffix == "s"
    assert ctx.scope == "function_definition café"
    assert ctx.scope_was_clean and not ctx.in_string


def test_unknown_language_is_plain_text() -> None:
    ctx = ctx_at("Dear diary,\ntoday █ happened.\n", "markdown")
    assert ctx.language is None and ctx.tree is None and ctx.scope is None
    assert ctx.prefix == "Dear diary,\ntoday " and not ctx.multiline


def test_language_from_path_when_id_is_unknown() -> None:
    ctx = ctx_at("fn main() {\n    █\n}\n", "something", path="/tmp/x.rs")
    assert ctx.language == "rust"


def test_binary_garbage_does_not_crash() -> None:
    doc = "\x00\x01\xff" * 1000 + CURSOR + "\x00" * 100
    ctx = ctx_at(doc, "python")
    assert count_tokens(ctx.prefix) + count_tokens(ctx.suffix) <= 768


def test_crlf_line_ends() -> None:
    ctx = ctx_at("def f():\r\n    x = █1\r\n    return x\r\n", "python")
    assert ctx.line_suffix == "1" and ctx.line_prefix == "    x = "


# --- scope, brackets, strings --------------------------------------------------------------------------

SCOPES = [
    ("python", "class Config:\n    def parse_config(self, path):\n        data = █\n",
     "function_definition parse_config"),
    ("javascript", "class A {\n  load(url) {\n    const r = █\n  }\n}\n", "method_definition load"),
    ("typescript", "function total(xs: number[]): number {\n  return █\n}\n", "function_declaration total"),
    ("go", "package main\n\nfunc (s *Server) Serve(n int) error {\n\treturn █\n}\n", "method_declaration Serve"),
    ("rust", "impl Foo {\n    fn bar(&self) -> u32 {\n        █\n    }\n}\n", "function_item bar"),
    ("java", "class A {\n  int count(List<String> xs) {\n    return █;\n  }\n}\n", "method_declaration count"),
    ("c", "static int add(int a, int b) {\n  return █;\n}\n", "function_definition add"),
    ("cpp", "namespace n {\nint Widget::size() const {\n  return █;\n}\n}\n", "function_definition Widget::size"),
]


@pytest.mark.parametrize("language,doc,scope", SCOPES, ids=[s[0] for s in SCOPES])
def test_enclosing_scope(language: str, doc: str, scope: str) -> None:
    assert ctx_at(doc, language).scope == scope


def test_top_level_has_no_scope() -> None:
    assert ctx_at("import os\nx = █\n", "python").scope is None


def test_open_brackets_and_suffix_closers() -> None:
    ctx = ctx_at("def f():\n    g(a, [1, {2: █}])\n", "python")
    assert ctx.open_brackets == "([{"
    assert ctx.suffix_closers == "}])"


def test_brackets_in_strings_and_comments_are_ignored() -> None:
    assert scan_brackets('f("(", \'[\')  # )\n', "python") == ("", "")
    assert scan_brackets('f("(", \'[\') /* ) */ // }\n{', "c") == ("{", "")
    assert scan_brackets("fn f<'a>(x: &'a str) { (", "rust") == ("{(", "")
    assert scan_brackets("`${(}`) ]", "javascript") == ("", ")]")
    assert scan_brackets("f('\", (', \"'\").g(", "javascript") == ("(", "")  # quotes inside JS strings
    assert scan_brackets("let c = '(';", "java") == ("", "")
    assert scan_brackets("f('\\'', '(', '\\u{28}')", "rust") == ("", "")


def test_cursor_in_string() -> None:
    assert ctx_at('def f():\n    print("hel█")\n', "python").in_string
    assert not ctx_at('def f():\n    print(█)\n', "python").in_string
    assert not ctx_at('def f():\n    print("x")█\n', "python").in_string
    assert ctx_at("def f():\n    pass  # see f(█\n", "python").in_string  # the end of a line comment
    assert ctx_at("int f() {\n  // see g(█\n}\n", "c").in_string
    assert not ctx_at("int f() {\n  /* g( */█\n}\n", "c").in_string
    assert ctx_at('int f() {\n  puts("a [b█\n}\n', "c").in_string  # unterminated: an error node, not a string
    assert ctx_at("x = f'{a} (█\n", "python").in_string
    assert not ctx_at('x = "a" + (█\n', "python").in_string


# --- single-line vs multi-line ---------------------------------------------------------------------------

MULTILINE = [
    ("python", "def f(x):█\n", True),
    ("python", "def f(x):█\n    return x\n", False),  # the body exists: just finish this line
    ("python", "def f(x):\n    █\n", True),
    ("python", "def f(x):\n    y = █\n", False),
    ("python", "def f(x):\n    y = g(█)\n", False),
    ("python", "d = {'a':█\n", False),  # a colon that opens no block
    ("python", "def f(a,\n      b):█\n\nx = 1\n", True),  # a header over two lines
    ("javascript", "function f() {█\n}\n", True),
    ("javascript", "function f() {█}\n", False),
    ("go", "func f() {\n\tif x {█\n\t}\n}\n", True),
    ("go", "func f() {\n\tx := █\n}\n", False),
    ("rust", "fn f() {\n    let v = vec![█\n}\n", True),
    ("java", "class A {\n  void m() {\n    █\n  }\n}\n", True),
    ("c", "int main() {\n  for (;;) {█\n    x++;\n  }\n}\n", False),
    ("cpp", "int main() {\n  foo(1, █\n}\n", False),
]


@pytest.mark.parametrize("language,doc,multiline", MULTILINE)
def test_single_or_multi_line(language: str, doc: str, multiline: bool) -> None:
    assert ctx_at(doc, language).multiline is multiline


def test_indent_of_the_cursor_line() -> None:
    assert ctx_at("def f():\n\tif x:\n\t\ty = █\n", "python").indent == "\t\t"
    ctx = ctx_at("class A:\n    def f(self, a,\n             b):█\n", "python")
    assert ctx.opens_block and ctx.indent == " " * 13 and ctx.block_indent == "    "


# What the code before an empty Python line says about its indentation: (header, statement, unit)
LINE_BEFORE = [
    ("def f(x):\n    if x:\n█\n    return 1\n", ("    ", None, "    ")),
    ("class A:\n    def f(self, a,\n          b):  # why\n█\n", ("    ", None, "    ")),  # header on two lines
    ("def f(x):\n    y = g(1,\n          2)\n█\n", (None, "    ", "    ")),  # a call continued on a line
    ('def f(x):\n    """Doc:\n    more\n    """\n█', (None, "    ", "    ")),  # a docstring ending in ":" inside
    ("def f(x):\n    s = '#a:'\n█", (None, "    ", "    ")),  # a `#` and `:` in a string
    ("def f(x):\n    if x:  # ok:\n        y = 1\n\n    # done:\n█", (None, "        ", "    ")),  # comments skipped
    ("def f():\n\tif x:\n\t\ty = 1\n\t\tif z:\n█", ("\t\t", None, "\t")),
    ("def f(x):\n  if x:\n    for y in x:\n█", ("    ", None, "  ")),  # two-space code
    # the unit is the step most blocks use, not the nearest one (HumanEval/107's odd 8-space body)
    ("def f(x):\n    for i in x:\n        if i:\n                y = 1\n        elif i:\n█",
     ("        ", None, "    ")),
    ("x = 1 + \\\n█", (None, None, "    ")),  # a backslash continuation: the new line goes on with it
]


@pytest.mark.parametrize("doc,expected", LINE_BEFORE)
def test_what_the_line_before_says_about_indentation(doc: str, expected: tuple) -> None:
    ctx = ctx_at(doc, "python")
    assert (ctx.header_indent, ctx.statement_indent, ctx.indent_unit) == expected


@pytest.mark.parametrize("language,doc", [
    ("python", "def f(x):\n    if x:\n        y = █\n"),  # code before the cursor on its line
    ("python", "def f(x):\n    if x:\n        █\n"),  # indentation typed: the editor's decides
    ("python", "def f(x):\n    y = g(1,\n█\n"),  # inside brackets
    ("python", 'def f(x):\n    """Doc.\n█\n    """\n'),  # inside a docstring
    ("javascript", "function f(x) {\n  if (x) {\n█\n  }\n}\n"),  # indentation carries no meaning
])
def test_no_indentation_facts_where_they_do_not_apply(language: str, doc: str) -> None:
    ctx = ctx_at(doc, language)
    assert ctx.header_indent is None and ctx.statement_indent is None


# --- other documents and recent snippets ------------------------------------------------------------------


def test_signatures_of_other_documents_within_their_budget() -> None:
    other = "class Store:\n    def get(self, key):\n        return 1\n\ndef helper(a, b):\n    return a\n"
    ctx = ctx_at("x = █\n", "python", other_documents=[("file:///w/store.py", other)], other_budget_tokens=64)
    assert ctx.extra == ["# store.py\nclass Store:\n    def get(self, key):\ndef helper(a, b):\n"]
    big = "".join(f"def function_number_{i}(a, b):\n    pass\n" for i in range(500))
    ctx = ctx_at("x = █\n", "go", other_documents=[("file:///w/big.py", big)], other_budget_tokens=50)
    assert sum(count_tokens(e) for e in ctx.extra) <= 50
    assert ctx.extra and ctx.extra[0].startswith("// big.py\ndef function_number_0(a, b):")


def test_snippets_come_first_and_share_the_budget() -> None:
    snippets = ["# a.py\nvalue = compute()\n", "# b.py\n" + "z = 1\n" * 100]
    ctx = ctx_at("x = █\n", "python", snippets=snippets, other_budget_tokens=30)
    assert ctx.extra[0] == snippets[0]
    assert sum(count_tokens(e) for e in ctx.extra) <= 30


def test_recent_snippets_ring_buffer() -> None:
    ring = RecentSnippets(capacity=3, lines=4)
    doc = "".join(f"line {i}\n" for i in range(100))
    ring.add("file:///a.py", doc, doc.index("line 10"))
    ring.add("file:///a.py", doc, doc.index("line 11"))  # overlaps the last chunk: replaces it
    ring.add("file:///b.py", doc, doc.index("line 50"))
    picked = ring.pick(count_tokens, 1000, exclude_uri="file:///c.py")
    assert picked == ["# b.py\nline 48\nline 49\nline 50\nline 51\n", "# a.py\nline 9\nline 10\nline 11\nline 12\n"]
    assert ring.pick(count_tokens, 1000, exclude_uri="file:///b.py") == [picked[1]]
    assert ring.pick(count_tokens, 14, comment="//") == ["// b.py\nline 48\nline 49\nline 50\nline 51\n"]
    for i in range(5):
        ring.add(f"file:///{i}.py", doc, 0)
    assert len(ring.pick(count_tokens, 10_000)) == 3  # capacity
    ring.forget("file:///4.py")
    assert all("4.py" not in p for p in ring.pick(count_tokens, 10_000))


def test_a_similar_document_does_not_show_the_model_the_unfinished_line() -> None:
    """A copy of this file was edited a moment ago at the same line, left unfinished: its chunk keeps its
    other lines but not that one, which would teach the model the line ends there (a blank answer)."""
    head = "def total(items):\n    result = 0\n    for item in items:\n"
    unfinished = "        result += item.price * "
    tail = "\n    return result\n"
    copy = head + unfinished + tail
    ring = RecentSnippets()
    ring.add("file:///w/total_copy.py", copy, len(head + unfinished))
    doc = head + unfinished + "█" + tail
    ctx = ctx_at(doc, "python", snippets=ring.pick(count_tokens, 128, exclude_uri="file:///w/total.py"))
    assert len(ctx.extra) == 1
    assert ctx.extra[0].startswith("# total_copy.py\ndef total(items):\n")
    assert "    return result" in ctx.extra[0]
    assert unfinished.strip() not in ctx.extra[0]
    only_that_line = ctx_at(doc, "python", snippets=["# other.py\n" + unfinished + "\n"])
    assert only_that_line.extra == []  # nothing else to show: no snippet


def test_the_document_being_completed_is_never_its_own_snippet() -> None:
    ring = RecentSnippets()
    ring.add("file:///w/my%20file.py", "x = 1\ny = \n", 10)  # didChange spelled the URI quoted
    assert ring.pick(count_tokens, 100, exclude_uri="file:///w/my file.py") == []
    assert ring.pick(count_tokens, 100, exclude_uri="file:///w/other.py") == ["# my file.py\nx = 1\ny = \n"]
    ring.forget("file:///w/my file.py")
    assert ring.pick(count_tokens, 100) == []


def test_recent_snippets_ignore_blank_places() -> None:
    ring = RecentSnippets()
    ring.add("file:///a.py", "\n\n\n", 1)
    assert ring.pick(count_tokens, 100) == []


# --- properties ---------------------------------------------------------------------------------------------

code_text = st.text(alphabet=st.sampled_from(list("abc(){}[]:;=\n \t\"'#é😀")), max_size=400)


@settings(max_examples=150, deadline=None)
@given(text=code_text, where=st.floats(0, 1), budget=st.integers(0, 120),
       language=st.sampled_from(["python", "c", "rust", "javascript", None]))
def test_property_budget_and_alignment(text: str, where: float, budget: int, language: str | None) -> None:
    offset = int(len(text) * where)
    ctx = build_context(text, offset, language, count_tokens=count_tokens, budget_tokens=budget)
    assert count_tokens(ctx.prefix) + count_tokens(ctx.suffix) <= budget
    assert text[offset:].startswith(ctx.suffix)
    assert text[:offset].endswith(ctx.prefix) or ctx.prefix_cut
    assert ctx.line_prefix == text[:offset].rsplit("\n", 1)[-1]


def test_cut_prefix_start_is_sticky_while_typing() -> None:
    """Consecutive keystrokes keep the same prompt start, so the engine's KV cache can be reused."""
    lines = [f"value_{i} = compute({i}, factor={i % 7})\n" for i in range(400)]
    text = "".join(lines)
    starts = set()
    for line in range(300, 306):  # the user types down six lines
        offset = sum(len(x) for x in lines[:line]) + 5
        ctx = build_context(text, offset, "python", count_tokens=count_tokens, budget_tokens=400)
        assert ctx.prefix_cut and count_tokens(ctx.prefix) + count_tokens(ctx.suffix) <= 400
        starts.add(ctx.prefix.split("\n", 1)[0])
    assert len(starts) <= 2, f"the prefix start moved with every line: {sorted(starts)}"


@pytest.mark.parametrize("anchor", ["def _get_values(self, action, arg_strings):", "def format_help(self):",
                                    "def _parse_optional(self, arg_string):"])
@pytest.mark.parametrize("budget", [400, 768])
def test_ahead_prefix_is_where_typing_moves_the_cut_next(anchor: str, budget: int) -> None:
    """Typing line after line with the cut kept, as the server does: the `ahead_of` prompt warmed after
    each line is what the request starts with once the kept cut stops fitting."""
    offset = STDLIB_SOURCE.index("\n", STDLIB_SOURCE.index(anchor)) + 1

    def at(typed: str, **kwargs):
        text = STDLIB_SOURCE[:offset] + typed + STDLIB_SOURCE[offset:]
        return build_context(text, offset + len(typed), "python", count_tokens=count_tokens, budget_tokens=budget,
                             **kwargs)

    typed = ""
    now = at(typed)
    ahead = at(typed, ahead_of=now.prefix_start)
    assert now.prefix_cut and ahead.prefix_cut and len(ahead.prefix) < len(now.prefix)
    for _ in range(200):  # type lines at the cursor until the kept cut has to move
        typed += "        if not arg_strings and action.nargs == OPTIONAL:\n"
        moved = at(typed, keep_start=now.prefix_start)
        if moved.prefix_start != now.prefix_start:
            break
        ahead = at(typed, ahead_of=now.prefix_start)  # what the warm-up after this line prefills
    else:
        pytest.fail("the cut never moved")
    assert moved.prefix_start > now.prefix_start and moved.prefix.startswith(ahead.prefix)


def test_ahead_is_the_same_cut_when_nothing_was_cut() -> None:
    doc = "import os\n\ndef f():\n    return █os.getcwd()\n"
    assert ctx_at(doc, "python", ahead_of=0).prefix == ctx_at(doc, "python").prefix


# --- the cut kept between requests ---------------------------------------------------------------------


def test_a_kept_cut_stays_while_it_fits_and_moves_when_the_budget_forces_it() -> None:
    offset = STDLIB_SOURCE.index("\n", STDLIB_SOURCE.index("def _get_values(self, action, arg_strings):")) + 1
    first = build_context(STDLIB_SOURCE, offset, "python", count_tokens=count_tokens, budget_tokens=400)
    assert first.prefix_cut and 0 < first.prefix_start < offset

    def typed(extra: str):
        text = STDLIB_SOURCE[:offset] + extra + STDLIB_SOURCE[offset:]
        return build_context(text, offset + len(extra), "python", count_tokens=count_tokens, budget_tokens=400,
                             keep_start=first.prefix_start)

    short = typed("        value = action.default\n")
    assert short.prefix_start == first.prefix_start and short.prefix.endswith("value = action.default\n")
    long = typed("        value = action.default\n" * 40)
    assert long.prefix_start > first.prefix_start  # the kept start no longer fits
    assert count_tokens(long.prefix) + count_tokens(long.suffix) <= 400


@pytest.mark.parametrize("shift", [1, 5, -3])
def test_a_kept_cut_that_is_not_a_line_start_is_ignored(shift: int) -> None:
    offset = STDLIB_SOURCE.index("def _get_values(self, action, arg_strings):")
    plain = build_context(STDLIB_SOURCE, offset, "python", count_tokens=count_tokens, budget_tokens=400)
    odd = build_context(STDLIB_SOURCE, offset, "python", count_tokens=count_tokens, budget_tokens=400,
                        keep_start=plain.prefix_start + shift)
    assert odd.prefix == plain.prefix and odd.prefix_start == plain.prefix_start


def test_typing_keeps_the_prompt_start_where_the_window_alone_would_move_it() -> None:
    """The typing replay's text (textwrap, at 40 %) with a tokenizer that packs ~8 characters a token, as
    SmolLM2's does on indented code: the parsed window, not the budget, bounds the prefix, and each time
    the window's start jumps to the next `def` the prompt's first tokens changed — a cold prefill of the
    whole context although the old prefix still fitted. With the kept cut it stays."""

    def count_tokens(text: str) -> int:
        return len(text) // 8 + 1

    import sysconfig

    source = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text(encoding="utf-8")
    start = source.index("\n", int(len(source) * 0.4)) + 1
    tail = source[start + 1500:]
    plain_moves, kept_moves, keep, before = 0, 0, None, None
    for i in range(start, start + 360):
        text = source[:i + 1] + tail
        plain = build_context(text, i + 1, "python", count_tokens=count_tokens)
        kept = build_context(text, i + 1, "python", count_tokens=count_tokens, keep_start=keep)
        assert count_tokens(kept.prefix) + count_tokens(kept.suffix) <= 768 + 4
        if before is not None:
            plain_moves += plain.prefix_start != before[0]
            kept_moves += kept.prefix_start != before[1]
        before, keep = (plain.prefix_start, kept.prefix_start), kept.prefix_start
    assert plain_moves >= 1, "the window no longer moves the cut here: this test lost its case"
    assert kept_moves == 0
