"""Unit tests for the edit pipeline's pure parts: reply parsing, re-indentation, validation, prompts.

The retry/refusal logic is driven by `ScriptedEngine`, which answers with fixed reply strings of the
kind small models really produce; the real model is exercised end to end in test_edit_lsp.py.
"""

from __future__ import annotations

import ast
import threading

import pytest

from lsp_server.edit.docstring import clean_summary, doc_targets, line_width
from lsp_server.edit.prompts import Scope, chat_messages, enclosing_scope, fim_prompt, preset_instructions
from lsp_server.edit.reply import (
    check_edit,
    extract_code,
    is_prose,
    process_reply,
    reindent,
    syntax_problem,
    trim_to_definitions,
)
from lsp_server.edit.run import run_edit
from lsp_server.edit.task import DOCSTRING, EditCancelled, EditError, EditTask, unified_diff, validate_instruction

CLASS_DOC = ("import os\nfrom typing import Any\n\nclass Greeter:\n    def greet(self, name):\n"
             "        return 'hi ' + name\n\n    def bye(self):\n        pass\n")


def select(doc: str, fragment: str, instruction: str = "Add docstring", language: str = "python",
           **kw) -> EditTask:
    start = doc.index(fragment)
    return EditTask(doc, start, start + len(fragment), instruction, language, **kw)


# --- reply parsing ---------------------------------------------------------------------------------


def test_extract_code_takes_first_fenced_block_and_drops_prose() -> None:
    reply = ("Sure! Here is the updated function:\n\n```python\ndef f(x):\n    return x\n```\n\n"
             "This version is simpler.\n```python\nprint(f(1))\n```")
    assert extract_code(reply) == "def f(x):\n    return x"


def test_extract_code_unclosed_fence_runs_to_end() -> None:
    assert extract_code("```js\nfunction f() {\n  return 1;") == "function f() {\n  return 1;"


def test_extract_code_without_fences_drops_leading_and_trailing_prose() -> None:
    reply = ("Here is the code with a docstring:\ndef f(x):\n    \"\"\"Return x.\"\"\"\n    return x\n"
             "This adds a docstring to the function.")
    assert extract_code(reply) == 'def f(x):\n    """Return x."""\n    return x'


def test_extract_code_prose_only_reply_is_empty() -> None:
    assert extract_code("I am sorry, but I cannot help with that request.") == ""


@pytest.mark.parametrize("line, prose", [
    ("Here is the corrected code:", True),
    ("This function returns the sum of two numbers.", True),
    ("Note that the input must be sorted.", True),
    ("return a + b", False),
    ("    Explanation indented inside a docstring", False),
    ("import os", False),
    ("from typing import List, Optional", False),
    ("Console.WriteLine(message);", False),
    ("output = compute(x)", False),
    ("}", False),
])
def test_is_prose(line: str, prose: bool) -> None:
    assert is_prose(line) is prose


def test_trim_to_definitions_drops_example_usage_after_a_function() -> None:
    code = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\nassert add(2, 2) == 4"
    assert trim_to_definitions(code, "def add(a, b):\n    return a+b", "python") == \
        "def add(a, b):\n    return a + b"


def test_trim_to_definitions_keeps_statements_when_selection_was_statements() -> None:
    code = "x = 1\nprint(x)"
    assert trim_to_definitions(code, "x = 2\nprint(x)", "python") == code


# --- re-indentation --------------------------------------------------------------------------------


def test_reindent_method_selected_from_column_zero() -> None:
    task = select(CLASS_DOC, "    def greet(self, name):\n        return 'hi ' + name\n")
    out = reindent('def greet(self, name):\n    """Say hi."""\n    return "hi " + name', task)
    assert out == '    def greet(self, name):\n        """Say hi."""\n        return "hi " + name\n'


def test_reindent_selection_starting_after_indentation_keeps_first_line_bare() -> None:
    task = select(CLASS_DOC, "def greet(self, name):\n        return 'hi ' + name")
    out = reindent("def greet(self, name):\n    return f'hi {name}'", task)
    assert out == "def greet(self, name):\n        return f'hi {name}'"


def test_reindent_uses_tabs_when_the_file_does() -> None:
    doc = "class A:\n\tdef f(self):\n\t\treturn 1\n"
    task = select(doc, "\tdef f(self):\n\t\treturn 1\n")
    assert reindent("def f(self):\n    return 2", task) == "\tdef f(self):\n\t\treturn 2\n"


def test_reindent_insertion_at_end_of_comment_line_starts_a_new_line() -> None:
    doc = "def f(xs):\n    # sum the list\n    pass\n"
    pos = doc.index("# sum the list") + len("# sum the list")
    task = EditTask(doc, pos, pos, "Write code for this comment", "python")
    out = reindent("total = sum(xs)\nreturn total", task)
    expected = "def f(xs):\n    # sum the list\n    total = sum(xs)\n    return total\n    pass\n"
    assert doc[:pos] + out + doc[pos:] == expected


def test_reindent_insertion_on_blank_line_under_comment() -> None:
    doc = "def f(xs):\n    # sum the list\n\n"
    pos = len("def f(xs):\n    # sum the list\n")
    task = EditTask(doc, pos, pos, "Write code for this comment", "python")
    out = reindent("return sum(xs)", task)
    assert doc[:pos] + out + doc[pos:] == "def f(xs):\n    # sum the list\n    return sum(xs)\n"


def test_process_reply_end_to_end_for_a_chatty_reply() -> None:
    task = select(CLASS_DOC, "    def greet(self, name):\n        return 'hi ' + name\n")
    reply = ("```python\ndef greet(self, name):\n    \"\"\"Greet someone by name.\"\"\"\n    return 'hi ' + name\n"
             "```\nThe docstring explains what the method does.")
    new = CLASS_DOC[:task.start] + process_reply(task, reply) + CLASS_DOC[task.end:]
    assert new == CLASS_DOC.replace("    def greet(self, name):\n",
                                    "    def greet(self, name):\n        \"\"\"Greet someone by name.\"\"\"\n")


def test_process_reply_in_place_fim_reply_keeps_file_indentation() -> None:
    task = select(CLASS_DOC, "    def greet(self, name):\n        return 'hi ' + name\n")
    reply = "def greet(self, name: str) -> str:\n        return 'hi ' + name\n"  # continues "    "
    task = EditTask(task.text, task.start + 4, task.end, task.instruction, "python")
    out = process_reply(task, reply, in_place=True)
    assert out == "def greet(self, name: str) -> str:\n        return 'hi ' + name\n"


# --- validation ------------------------------------------------------------------------------------


def test_check_edit_refuses_an_edit_that_breaks_a_parsing_file() -> None:
    task = select(CLASS_DOC, "    def greet(self, name):\n        return 'hi ' + name\n")
    problem = check_edit(task, "    def greet(self, name:\n        return 'hi ' + name\n")
    assert problem is not None and "would not parse" in problem and "line" in problem
    assert check_edit(task, "    def greet(self, name):\n        return name\n") is None


def test_check_edit_does_not_blame_the_model_for_an_already_broken_file() -> None:
    doc = "def broken(:\n    pass\n\nx = 1\n"
    task = select(doc, "x = 1\n")
    assert check_edit(task, "x = (\n") is None


def test_check_edit_empty_reply_is_refused() -> None:
    task = select(CLASS_DOC, "pass")
    assert "no code" in check_edit(task, "  \n")


def test_check_edit_translation_is_checked_in_the_target_language() -> None:
    task = select("def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a + b\n",
                  "Translate to Rust", target_language="rust")
    assert check_edit(task, "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n") is None
    assert "Rust code does not parse" in check_edit(task, "fn add(a: i32, b: i32) -> i32 {\n    a + \n")


def test_syntax_problem_for_several_languages() -> None:
    assert syntax_problem("function f() { return 1; }", "javascript") is None
    assert syntax_problem("function f() { return 1; ", "javascript") is not None
    assert syntax_problem("fn main() {}", "rust") is None
    assert syntax_problem("package main\nfunc f() {", "go") is not None
    assert syntax_problem("anything at all", None) is None


# --- context and prompts ---------------------------------------------------------------------------


def test_enclosing_scope_has_imports_and_the_class_with_the_selection_marked() -> None:
    task = select(CLASS_DOC, "    def greet(self, name):\n        return 'hi ' + name\n")
    scope = enclosing_scope(task)
    assert scope.imports == "import os\nfrom typing import Any"
    assert scope.enclosing.startswith("class Greeter:\n    # <the code to edit>\n")
    assert "def bye(self):" in scope.enclosing and "return 'hi '" not in scope.enclosing


def test_enclosing_scope_with_non_ascii_text_before_the_selection() -> None:
    doc = "# café ☕ 🎉\nuse std::io;\n\nfn main() {\n    let s = \"é\";\n    println!(\"{}\", s);\n}\n"
    task = select(doc, 'println!("{}", s);', "Simplify", "rust")
    scope = enclosing_scope(task)
    assert scope.imports == "use std::io;"
    assert scope.enclosing == 'fn main() {\n    let s = "é";\n    // <the code to edit>\n}'


@pytest.mark.parametrize("language, doc, fragment, header", [
    ("javascript", "import x from 'x';\nclass A {\n  m() {\n    return 1;\n  }\n}\n", "return 1;", "  m() {"),
    ("go", "package main\nimport \"fmt\"\nfunc f() {\n\tfmt.Println(1)\n}\n", "fmt.Println(1)", "func f() {"),
    ("java", "import java.util.List;\nclass A {\n  int m() {\n    return 1;\n  }\n}\n", "return 1;", "  int m() {"),
])
def test_enclosing_scope_in_other_languages(language: str, doc: str, fragment: str, header: str) -> None:
    scope = enclosing_scope(select(doc, fragment, "Simplify", language))
    assert scope.imports and scope.enclosing.startswith(header)


def test_chat_messages_carry_instruction_dedented_selection_and_context() -> None:
    task = select(CLASS_DOC, "    def greet(self, name):\n        return 'hi ' + name\n", "Add type hints")
    messages = chat_messages(task, enclosing_scope(task))
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "Instruction: Add type hints" in user
    assert "```python\ndef greet(self, name):\n    return 'hi ' + name\n```" in user
    assert "class Greeter:" in user and "import os" in user


def test_chat_messages_retry_adds_previous_reply_and_note() -> None:
    task = select(CLASS_DOC, "pass", "Fix the bug")
    messages = chat_messages(task, Scope(), "That is not right: it does not parse.", "```python\npass(")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == "That is not right: it does not parse."


def test_chat_messages_for_an_insertion_mark_the_cursor() -> None:
    doc = "def f(xs):\n    # sum the list\n\n"
    pos = len("def f(xs):\n    # sum the list\n")
    user = chat_messages(EditTask(doc, pos, pos, "Write code for this comment", "python"), Scope())[1]["content"]
    assert "# sum the list\n<CURSOR>" in user


def test_fim_prompt_puts_instruction_comments_above_the_selection() -> None:
    task = select(CLASS_DOC, "    def greet(self, name):\n        return 'hi ' + name\n", "Add type hints")
    prefix, suffix = fim_prompt(task)
    assert prefix.endswith("class Greeter:\n    # Original code:\n    # def greet(self, name):\n"
                           "    #     return 'hi ' + name\n    # Rewritten: Add type hints\n    ")
    assert suffix == "\n    def bye(self):\n        pass\n"
    js = select("function f() {\n  return 1;\n}\n", "return 1;", "Return two", "javascript")
    prefix, _ = fim_prompt(js)
    assert prefix.endswith("  // Original code:\n  // return 1;\n  // Rewritten: Return two\n  ")


@pytest.mark.parametrize("bad", ["", "   ", None, "x" * 10_000])
def test_validate_instruction_rejects_empty_and_huge(bad) -> None:
    with pytest.raises(EditError):
        validate_instruction(bad)


def test_unified_diff() -> None:
    diff = unified_diff("a\nb\n", "a\nc\n", "x.py")
    assert diff.startswith("--- a/x.py\n+++ b/x.py\n") and "-b\n+c\n" in diff


# --- the run loop, with scripted replies -----------------------------------------------------------


class ScriptedEngine:
    """Answers each generate() with the next scripted reply, one character per delta."""

    is_instruct = True
    supports_fim = False

    def __init__(self, replies: list[str], cancel_after: int | None = None) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []
        self.cancel_after = cancel_after

    def chat_prompt(self, messages: list[dict]) -> str:
        return "\n".join(f"<{m['role']}>{m['content']}" for m in messages) + "\n<assistant>"

    def generate(self, prompt, *, max_new_tokens, stop, temperature, cancel):
        self.prompts.append(prompt)
        reply = self.replies.pop(0)
        for i, ch in enumerate(reply):
            if self.cancel_after is not None and i == self.cancel_after:
                cancel.set()
            if cancel.is_set():
                return
            yield ch


GREET = "    def greet(self, name):\n        return 'hi ' + name\n"


def test_run_edit_applies_a_good_first_reply() -> None:
    engine = ScriptedEngine(["def greet(self, name: str) -> str:\n    return 'hi ' + name\n"])
    result = run_edit(engine, select(CLASS_DOC, GREET, "Add type hints"), max_new_tokens=64)
    assert result.attempts == 1
    assert "    def greet(self, name: str) -> str:\n        return 'hi ' + name\n\n    def bye" in result.new_text
    assert engine.prompts[0].endswith("<assistant>```python\n")  # the reply is seeded with a fence


def test_run_edit_retries_once_with_a_note_then_succeeds() -> None:
    engine = ScriptedEngine(["def greet(self, name:\n    return 'hi ' + name\n",
                             "def greet(self, name):\n    return 'hi ' + name.title()\n"])
    progress: list[str] = []
    result = run_edit(engine, select(CLASS_DOC, GREET, "Fix the bug"), max_new_tokens=64,
                           progress=lambda msg, frac: progress.append(msg))
    assert result.attempts == 2 and "name.title()" in result.new_text
    assert "would not parse" in engine.prompts[1] and "def greet(self, name:\n" in engine.prompts[1]
    assert any(m.startswith("retrying") for m in progress)


def test_run_edit_refuses_after_two_unparsable_replies() -> None:
    engine = ScriptedEngine(["def greet(self, name:\n    return 1\n", "def greet(self name):\n    return 1\n"])
    with pytest.raises(EditError, match="Edit refused: the edited file would not parse"):
        run_edit(engine, select(CLASS_DOC, GREET, "Fix the bug"), max_new_tokens=64)


def test_run_edit_refuses_a_reply_without_code() -> None:
    engine = ScriptedEngine(["```\nSorry, I cannot do that.\n", "```"])
    with pytest.raises(EditError, match="no code"):
        run_edit(engine, select(CLASS_DOC, GREET, "Fix the bug"), max_new_tokens=64)


def test_run_edit_cancelled_mid_generation_raises_cancelled() -> None:
    engine = ScriptedEngine(["def greet(self, name):\n    return 'x'\n"], cancel_after=5)
    with pytest.raises(EditCancelled):
        run_edit(engine, select(CLASS_DOC, GREET, "Fix the bug"), max_new_tokens=64,
                      cancel=threading.Event())


def test_run_edit_reports_no_change() -> None:
    same = "def greet(self, name):\n    return 'hi ' + name\n"
    engine = ScriptedEngine([same, same])
    with pytest.raises(EditError, match="no change"):
        run_edit(engine, select(CLASS_DOC, GREET, "Simplify"), max_new_tokens=64)
    assert "You returned the code unchanged. Simplify" in engine.prompts[1]


def test_trim_overlap_drops_repeated_context_lines() -> None:
    doc = "def diff(a, b):\n    return a - b\n"
    task = select(doc, "return a - b", "Return the absolute difference")
    assert process_reply(task, "```python\ndef diff(a, b):\n    return abs(a - b)\n```") == "return abs(a - b)"
    js = "function f(a, b) {\n  return a < b ? a : b;\n}\n"
    task = select(js, "return a < b ? a : b;", "Fix", "javascript")
    assert process_reply(task, "function f(a, b) {\n  return a > b ? a : b;\n}") == "return a > b ? a : b;"
    # lines that are also in the selection stay
    task = select(js, js, "Fix", "javascript")
    assert process_reply(task, "function f(a, b) {\n  return a > b ? a : b;\n}") == \
        "function f(a, b) {\n  return a > b ? a : b;\n}\n"


def test_insertion_reply_repeating_the_enclosing_header_is_trimmed() -> None:
    doc = "def squares(xs):\n    # return the squares of xs\n"
    task = EditTask(doc, len(doc), len(doc), "Write code for this comment", "python")
    out = process_reply(task, "```python\ndef squares(xs):\n    return [x * x for x in xs]\n```")
    assert doc + out == "def squares(xs):\n    # return the squares of xs\n    return [x * x for x in xs]\n"


# --- structured docstrings -------------------------------------------------------------------------


def test_doc_targets_find_undocumented_definitions_in_the_selection() -> None:
    doc = 'class A:\n    """Documented."""\n\n    def f(self):\n        return 1\n\n    def g(self): return 2\n'
    targets = doc_targets(EditTask(doc, 0, len(doc), "doc", "python", preset=DOCSTRING))
    # A already has one; g is a one-liner with no line for a docstring: only f.
    assert [(t.name, t.kind, t.indent) for t in targets] == [("f", "method", "        ")]
    assert doc[targets[0].offset:].startswith("return 1")


@pytest.mark.parametrize("language, doc, expected", [
    ("python", "def add(a, b):\n    return a + b\n", 'def add(a, b):\n    """Adds a and b."""\n    return a + b\n'),
    ("javascript", "export function add(a, b) {\n  return a + b;\n}\n",
     "/** Adds a and b. */\nexport function add(a, b) {\n  return a + b;\n}\n"),
    ("go", "package m\n\nfunc Add(a, b int) int {\n\treturn a + b\n}\n",
     "package m\n\n// Add adds a and b.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n"),
    ("rust", "impl S {\n    fn add(&self) -> i32 {\n        1\n    }\n}\n",
     "impl S {\n    /// Adds a and b.\n    fn add(&self) -> i32 {\n        1\n    }\n}\n"),
    ("ruby", "x = 1\n\ndef add(a, b)\n  a + b\nend\n", "x = 1\n\n# Adds a and b.\ndef add(a, b)\n  a + b\nend\n"),
])
def test_run_docstring_inserts_the_summary_where_the_language_wants_it(language: str, doc: str, expected: str) -> None:
    engine = ScriptedEngine([" adds a and b. It uses the + operator."])
    task = EditTask(doc, 0, len(doc), "Add docstring", language, preset=DOCSTRING)
    result = run_edit(engine, task, max_new_tokens=64)
    assert result.new_text == expected
    assert engine.prompts[0].endswith("This function") or engine.prompts[0].endswith("This method")


LONG_SUMMARY = (" calculates the total value of the items by iterating over each item in the list, multiplying its"
                " price by its quantity, and summing up the results.")


@pytest.mark.parametrize("language, doc", [
    ("python", "def total(items):\n    return sum(i.price * i.quantity for i in items)\n"),
    ("javascript", "class C {\n  total(items) {\n    return 0;\n  }\n}\n"),
    ("go", "package m\n\nfunc Total(items []Item) float64 {\n\treturn 0\n}\n"),
    ("rust", "impl S {\n    fn total(&self) -> f64 {\n        0.0\n    }\n}\n"),
    ("ruby", "def total(items)\n  0\nend\n"),
])
def test_a_long_summary_wraps_within_the_files_line_length(language: str, doc: str) -> None:
    """A summary longer than the file's lines (79 columns for short files) wraps inside them, the words
    unchanged and in order; the rest of the file is byte-identical."""
    engine = ScriptedEngine([LONG_SUMMARY] * 2)  # the JavaScript class and its method
    result = run_edit(engine, EditTask(doc, 0, len(doc), "Add docstring", language, preset=DOCSTRING),
                      max_new_tokens=64)
    added = [line for line in result.new_text.splitlines() if line not in doc.splitlines()]
    assert len(added) > 1 and all(len(line.expandtabs(4)) <= 79 for line in added)
    words = " ".join(added).replace('"""', " ").replace("/**", " ").replace("*/", " ").split()
    prose = [w for w in words if w not in {"*", "//", "///", "#"}]
    assert " ".join(prose).endswith(" ".join(LONG_SUMMARY.split()[1:]))
    assert [line for line in result.new_text.splitlines() if line not in added] == doc.splitlines()
    if language == "python":
        ast.parse(result.new_text)


@pytest.mark.parametrize("text, width", [
    ("x = 1\n", 79),  # short lines: PEP 8's limit
    ("x = 1\n" + "y" * 88 + "\n", 88),  # a file formatted to 88 columns (black)
    ("x = 1\n# " + "u" * 300 + "\n", 120),  # one very long line does not stretch every doc
    ("", 79),
])
def test_line_width_follows_the_file(text: str, width: int) -> None:
    assert line_width(text) == width


def test_run_docstring_keeps_a_non_verb_reply_after_the_seed() -> None:
    engine = ScriptedEngine([" is a helper for sums in Python."])
    doc = "def add(a, b):\n    return a + b\n"
    result = run_edit(engine, EditTask(doc, 0, len(doc), "Add docstring", "python", preset=DOCSTRING),
                           max_new_tokens=64)
    assert '"""This function is a helper for sums."""' in result.new_text


def test_run_docstring_with_an_empty_reply_is_refused() -> None:
    doc = "def add(a, b):\n    return a + b\n"
    with pytest.raises(EditError, match="no description"):
        run_edit(ScriptedEngine(["   "]), EditTask(doc, 0, len(doc), "Add docstring", "python",
                                                        preset=DOCSTRING), max_new_tokens=64)


def test_docstring_preset_without_definitions_falls_back_to_a_rewrite() -> None:
    doc = "x = 1\ny = 2\n"
    engine = ScriptedEngine(["# two numbers\nx = 1\ny = 2\n"])
    result = run_edit(engine, EditTask(doc, 0, len(doc), "Add docstring", "python", preset=DOCSTRING),
                           max_new_tokens=64)
    assert result.new_text == "# two numbers\nx = 1\ny = 2\n"


def test_clean_summary() -> None:
    assert clean_summary("calculates the mean in Python. It loops.") == "Calculates the mean."
    assert clean_summary("`returns x`") == "Returns x."
    assert clean_summary("  ") == ""


def test_presets_per_language() -> None:
    py = [p.title for p in preset_instructions("python", ["javascript", "python", "cobol"])]
    assert py == ["Add docstring", "Add type hints", "Fix the bug", "Simplify", "Add error handling",
                  "Translate to JavaScript"]
    go = preset_instructions("go", ["rust"])
    assert "Add type hints" not in [p.title for p in go]
    assert go[0].arguments()["preset"] == DOCSTRING and go[-1].arguments()["targetLanguage"] == "rust"


def test_run_edit_refuses_a_selection_too_long_for_the_context() -> None:
    class SmallContext(ScriptedEngine):
        max_length = 300

        def count_tokens(self, text: str) -> int:
            return len(text) // 4

    body = "".join(f"    x{i} = {i}\n" for i in range(200))
    doc = "def big():\n" + body
    engine = SmallContext(["def big():\n    pass\n"])
    with pytest.raises(EditError, match="too long for the model"):
        run_edit(engine, EditTask(doc, 0, len(doc), "Simplify", "python"), max_new_tokens=64)
    assert engine.prompts == []  # refused before generating
    small = SmallContext(["x = 2\n"])
    result = run_edit(small, EditTask(doc + "x = 1\n", len(doc), len(doc) + 6, "Set x to 2", "python"),
                           max_new_tokens=64)
    assert result.replacement == "x = 2\n"


def test_process_reply_drops_echoed_prompt_markers() -> None:
    task = select(CLASS_DOC, "pass", "Return None")
    assert process_reply(task, "```python\n# <the code to edit>\nreturn None<CURSOR>\n```") == "return None"


def test_run_edit_caps_a_huge_token_budget_to_half_the_context() -> None:
    class Recording(ScriptedEngine):
        max_length = 1000

        def count_tokens(self, text: str) -> int:
            return len(text) // 4

        def generate(self, prompt, *, max_new_tokens, **kw):
            self.budgets = getattr(self, "budgets", []) + [max_new_tokens]
            return super().generate(prompt, max_new_tokens=max_new_tokens, **kw)

    engine = Recording(["def greet(self, name):\n    return name\n"])
    run_edit(engine, select(CLASS_DOC, GREET, "Return the name"), max_new_tokens=10**6)
    assert engine.budgets == [500]


def test_run_edit_with_a_base_model_uses_the_fim_template_and_reads_the_reply_in_place() -> None:
    from inference import FimParts

    class FimEngine(ScriptedEngine):
        is_instruct = False
        supports_fim = True

    # the middle continues after the selection's indentation, its later lines carry the file's indent
    engine = FimEngine(["def greet(self, name: str) -> str:\n        return 'hi ' + name\n"])
    result = run_edit(engine, select(CLASS_DOC, GREET, "Add type hints"), max_new_tokens=64)
    (prompt,) = engine.prompts
    assert isinstance(prompt, FimParts)
    assert prompt.prefix.endswith("    # Rewritten: Add type hints\n    ") and prompt.suffix.startswith("\n    def bye")
    assert "    def greet(self, name: str) -> str:\n        return 'hi ' + name\n\n    def bye" in result.new_text
