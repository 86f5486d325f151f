"""Edit-with-instruction benchmark: pass@1 of our pipeline vs the raw model output, same model, same tasks.

Each task is a small file, a selection, an instruction and an executable check, written for this
project. Python tasks run unit tests on the edited file in a sandboxed subprocess (temporary directory,
timeout, CPU/memory limits, no network when `unshare` allows it); the other languages are checked
structurally with tree-sitter (the file parses and has the asked-for shape).

- raw: the chat prompt without our reply seeding; the reply replaces the selection verbatim.
- pipeline: `lsp_server.edit.run.run_edit`, exactly what `infill.edit` runs (reply seeded with a fence, code
  extraction, overlap trimming, re-indentation, parse validation, one retry; the "Add docstring" preset
  runs structurally: the model writes a summary, tree-sitter places it). A refused edit is a failure.

Measured here (SmolLM2-135M-Instruct, CPU, 256 new tokens): pipeline 54.3 %, raw 0.0 % over 35 tasks —
the raw replies wrap the code in prose and fences, so none of them is a valid file.

    python benchmarks/edit_suite.py [--limit N] [--only ID,...] [--max-tokens 256] [--model DIR]

Prints a human table, then one JSON line with `tasks`, `pass1_pipeline`, `pass1_raw`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tree_sitter import Node  # noqa: E402

from lsp_server import languages  # noqa: E402
from lsp_server.edit.prompts import chat_messages, enclosing_scope, preset_instructions  # noqa: E402
from lsp_server.edit.run import run_edit  # noqa: E402
from lsp_server.edit.task import EditError, EditTask  # noqa: E402

Check = Callable[[str, str], "str | None"]  # (new file text, replacement) -> failure reason or None


@dataclass(frozen=True)
class Task:
    id: str
    language: str
    source: str
    select: str | None  # exact fragment selected; "" = empty selection at `cursor_after`
    instruction: str
    check: Check
    cursor_after: str | None = None  # for an empty selection: the cursor goes right after this fragment
    target_language: str | None = None

    def edit_task(self) -> EditTask:
        if self.select:
            start = self.source.index(self.select)
            end = start + len(self.select)
        else:
            anchor = self.cursor_after or ""
            start = end = self.source.index(anchor) + len(anchor)
        structured = next((p.preset for p in preset_instructions(self.language, [])
                           if p.preset and p.instruction == self.instruction), None)  # as the code action sends it
        return EditTask(self.source, start, end, self.instruction, self.language, self.target_language,
                             structured)


def preset(language: str, title: str) -> str:
    """The instruction a preset code action sends (so the benchmark measures what users click)."""
    return next(p.instruction for p in preset_instructions(language, []) if p.title == title)


# --- checks ----------------------------------------------------------------------------------------

PY_PRELUDE = '''
import ast
import solution
from solution import *

_TREE = ast.parse(open("solution.py", encoding="utf-8").read())

def fn(name):
    for node in ast.walk(_TREE):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return node
    raise AssertionError(f"no function {name}")

def has_docstring(name):
    assert ast.get_docstring(fn(name)), f"{name} has no docstring"

def fully_annotated(name):
    f = fn(name)
    args = [a for a in f.args.args + f.args.kwonlyargs if a.arg not in ("self", "cls")]
    assert all(a.annotation is not None for a in args), "a parameter has no type hint"
    assert f.returns is not None, "no return type"

def raises(exc, call, *args):
    try:
        call(*args)
    except exc:
        return
    raise AssertionError(f"{call.__name__}{args} did not raise {exc.__name__}")
'''

SANDBOX_TIMEOUT = 10.0


def _limits() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_CPU, (5, 5))
    resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    os.setsid()


def _no_network_prefix() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


_NO_NET = _no_network_prefix()


def python_tests(tests: str) -> Check:
    """Run the edited file against unit tests in a sandboxed subprocess; never in this process."""

    def check(new_text: str, _replacement: str) -> str | None:
        with tempfile.TemporaryDirectory(prefix="infill-edit-") as tmp:
            Path(tmp, "solution.py").write_text(new_text, encoding="utf-8")
            Path(tmp, "check.py").write_text(PY_PRELUDE + tests + "\nprint('PASS')\n", encoding="utf-8")
            try:
                proc = subprocess.run(
                    _NO_NET + [sys.executable, "-E", "-s", "check.py"], cwd=tmp, capture_output=True, text=True,
                    timeout=SANDBOX_TIMEOUT, env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
                    preexec_fn=_limits, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                return "timeout"
            if proc.returncode == 0 and proc.stdout.strip().endswith("PASS"):
                return None
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            return lines[-1][:120] if lines else f"exit {proc.returncode}"

    return check


def _nodes(node: Node, types: set[str]) -> list[Node]:
    found = [node] if node.type in types else []
    for child in node.named_children:
        found += _nodes(child, types)
    return found


def _name(node: Node) -> str:
    named = node.child_by_field_name("name")
    if named is None and node.type == "function_definition":  # c/cpp: the declarator holds the name
        decl = node.child_by_field_name("declarator")
        while decl is not None and decl.child_by_field_name("declarator") is not None:
            decl = decl.child_by_field_name("declarator")
        named = decl
    return _source(named)


def _source(node: Node | None) -> str:
    """A node's source ("" for no node)."""
    return node.text.decode() if node is not None and node.text is not None else ""


FUNCTION_TYPES = {"function_declaration", "function_item", "method_declaration", "function_definition",
                  "method_definition", "variable_declarator"}


def structure(language: str, predicate: Callable[[Node, str], str | None], on_replacement: bool = False) -> Check:
    """The text parses as `language` and `predicate(root, text)` finds the asked-for shape."""

    def check(new_text: str, replacement: str) -> str | None:
        text = replacement if on_replacement else new_text
        tree = languages.parse(text, language)
        if tree is None:
            return f"no {language} grammar"
        if tree.root_node.has_error:
            return "does not parse"
        return predicate(tree.root_node, text)

    return check


def function_named(name: str) -> Callable[[Node, str], str | None]:
    def predicate(root: Node, _text: str) -> str | None:
        found = [n for n in _nodes(root, FUNCTION_TYPES) if _name(n) == name]
        return None if found else f"no function {name}"
    return predicate


def doc_comment_before(name: str, starts: tuple[str, ...]) -> Callable[[Node, str], str | None]:
    """A comment starting with one of `starts` right before the definition named `name`."""
    def predicate(root: Node, _text: str) -> str | None:
        for node in _nodes(root, FUNCTION_TYPES):
            if _name(node) != name:
                continue
            target = node.parent if node.type == "variable_declarator" and node.parent is not None else node
            previous = target.prev_named_sibling
            while previous is not None and previous.type in {"attribute_item", "decorator"}:
                previous = previous.prev_named_sibling
            if previous is not None and "comment" in previous.type and _source(previous).startswith(starts):
                return None
            return "no doc comment right before it"
        return f"no function {name}"
    return predicate


def text_of_function(name: str, wanted: Callable[[str], bool], why: str) -> Callable[[Node, str], str | None]:
    """The function's source (whitespace removed) satisfies `wanted`."""
    def predicate(root: Node, _text: str) -> str | None:
        for node in _nodes(root, FUNCTION_TYPES):
            if _name(node) == name:
                return None if wanted("".join(_source(node).split())) else why
        return f"no function {name}"
    return predicate


def has_node(name: str, node_types: set[str], why: str) -> Callable[[Node, str], str | None]:
    """The function `name` contains a node of one of `node_types`."""
    def predicate(root: Node, _text: str) -> str | None:
        for node in _nodes(root, FUNCTION_TYPES):
            if _name(node) == name:
                return None if _nodes(node, node_types) else why
        return f"no function {name}"
    return predicate


def all_of(*predicates: Callable[[Node, str], str | None]) -> Callable[[Node, str], str | None]:
    def predicate(root: Node, text: str) -> str | None:
        for p in predicates:
            if (why := p(root, text)) is not None:
                return why
        return None
    return predicate


# --- the tasks -------------------------------------------------------------------------------------

STACK = '''class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)
        return len(self.items)

    def pop(self):
        return self.items.pop()
'''

TASKS: list[Task] = [
    # Python: unit tests in a sandbox.
    Task("py-docstring-function", "python", "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a + b\n",
         preset("python", "Add docstring"), python_tests("has_docstring('add')\nassert add(2, 3) == 5")),
    Task("py-docstring-method", "python", STACK, "    def push(self, item):\n        self.items.append(item)\n        "
                                                 "return len(self.items)\n",
         preset("python", "Add docstring"),
         python_tests("has_docstring('push')\ns = Stack()\nassert s.push(1) == 1 and s.push(2) == 2 and s.pop() == 2")),
    Task("py-typehints-area", "python", "def area(width, height):\n    return width * height\n",
         "def area(width, height):\n    return width * height\n", preset("python", "Add type hints"),
         python_tests("fully_annotated('area')\nassert area(2, 3) == 6")),
    Task("py-typehints-join", "python", "def join_words(words, sep):\n    return sep.join(words)\n",
         "def join_words(words, sep):\n    return sep.join(words)\n", preset("python", "Add type hints"),
         python_tests("fully_annotated('join_words')\nassert join_words(['a', 'b'], '-') == 'a-b'")),
    Task("py-fix-index", "python", "def last(xs):\n    return xs[len(xs)]\n", "def last(xs):\n    return xs[len(xs)]\n",
         preset("python", "Fix the bug"), python_tests("assert last([1, 2, 3]) == 3 and last(['a']) == 'a'")),
    Task("py-fix-even", "python", "def is_even(n):\n    return n % 2 == 1\n"
                                  "", "def is_even(n):\n    return n % 2 == 1\n",
         preset("python", "Fix the bug"), python_tests("assert is_even(4) and not is_even(3) and is_even(0)")),
    Task("py-fix-maximum", "python",
         "def maximum(xs):\n    m = 0\n    for x in xs:\n        if x > m:\n            m = x\n    return m\n",
         "def maximum(xs):\n    m = 0\n    for x in xs:\n        if x > m:\n            m = x\n    return m\n",
         "Fix the bug: it returns 0 when all the numbers are negative.",
         python_tests("assert maximum([-3, -1, -2]) == -1 and maximum([1, 5, 2]) == 5")),
    Task("py-fix-factorial", "python",
         "def factorial(n):\n    if n == 0:\n        return 0\n    return n * factorial(n - 1)\n",
         "def factorial(n):\n    if n == 0:\n        return 0\n    return n * factorial(n - 1)\n",
         preset("python", "Fix the bug"), python_tests("assert factorial(5) == 120 and factorial(0) == 1")),
    Task("py-simplify-loop", "python",
         "def total(xs):\n    t = 0\n    for i in range(len(xs)):\n        t = t + xs[i]\n    return t\n",
         "def total(xs):\n    t = 0\n    for i in range(len(xs)):\n        t = t + xs[i]\n    return t\n",
         preset("python", "Simplify"),
         python_tests("assert total([1, 2, 3]) == 6 and total([]) == 0\n"
                      "assert len(fn('total').body) < 3, 'not simpler'")),
    Task("py-simplify-bool", "python",
         "def is_adult(age):\n    if age >= 18:\n        return True\n    else:\n        return False\n",
         "def is_adult(age):\n    if age >= 18:\n        return True\n    else:\n        return False\n",
         preset("python", "Simplify"),
         python_tests("assert is_adult(18) and not is_adult(3)\n"
                      "assert not any(isinstance(n, ast.If) for n in ast.walk(fn('is_adult'))), 'not simpler'")),
    Task("py-error-divide", "python", "def divide(a, b):\n    return a / b\n", "def divide(a, b):\n    return a / b\n",
         "Raise ValueError when b is zero.",
         python_tests("assert divide(6, 3) == 2\nraises(ValueError, divide, 1, 0)")),
    Task("py-error-port", "python", "def parse_port(text):\n    return int(text)\n"
                                    "", "def parse_port(text):\n    return int(text)\n",
         "Return None when text is not a valid integer instead of raising.",
         python_tests("assert parse_port('80') == 80 and parse_port('http') is None")),
    Task("py-rename", "python", "def avg(xs):\n    return sum(xs) / len(xs)\n"
                                "", "def avg(xs):\n    return sum(xs) / len(xs)\n",
         "Rename the function to mean.", python_tests("assert solution.mean([1, 2, 3]) == 2")),
    Task("py-add-parameter", "python", "def greet(name):\n    return 'Hello, ' + name + '!'\n",
         "def greet(name):\n    return 'Hello, ' + name + '!'\n",
         "Add a parameter greeting with the default value 'Hello' and use it instead of the fixed 'Hello'.",
         python_tests("assert greet('Bob') == 'Hello, Bob!' and greet('Bob', 'Hi') == 'Hi, Bob!'")),
    Task("py-comment-squares", "python", "def squares(xs):\n    # return the squares of the numbers in xs\n", "",
         "Write the code this comment asks for: return the squares of the numbers in xs",
         python_tests("assert squares([1, 2, 3]) == [1, 4, "
                      "9]"), cursor_after="# return the squares of the numbers in xs\n"),
    Task("py-comment-palindrome", "python",
         "# is_palindrome(s): True when s reads the same forwards and backwards\n", "",
         "Write the code this comment asks for: is_palindrome(s): True when s reads the same forwards and backwards",
         python_tests("assert is_palindrome('abba') and not is_palindrome('abc')"),
         cursor_after="backwards\n"),
    Task("py-comprehension", "python",
         "def evens(xs):\n    out = []\n    for x in xs:\n        if x % 2 == 0:\n            out.append(x)\n    "
         "return out\n",
         "def evens(xs):\n    out = []\n    for x in xs:\n        if x % 2 == 0:\n            out.append(x)\n    "
         "return out\n",
         "Use a list comprehension.",
         python_tests("assert evens([1, 2, 3, 4]) == [2, 4]\nassert any(isinstance(n, ast.ListComp) for n in "
                      "ast.walk(fn('evens')))")),
    Task("py-statement-absdiff", "python", "def diff(a, b):\n    return a - b\n", "return a - b",
         "Return the absolute difference of a and b.", python_tests("assert diff(1, 3) == 2 and diff(5, 2) == 3")),
    Task("py-method-fix", "python",
         "class Counter:\n    def __init__(self):\n        self.n = 0\n\n    def increment(self):\n        self.n - 1\n"
         "        return self.n\n",
         "    def increment(self):\n        self.n - 1\n        return self.n\n",
         "Fix the bug: increment should add one to self.n.",
         python_tests("c = Counter()\nassert c.increment() == 1 and c.increment() == 2")),
    # JavaScript / TypeScript: structure.
    Task("js-docstring", "javascript", "function add(a, b) {\n  return a + b;\n}\n"
                                       "", "function add(a, b) {\n  return a + b;\n}\n",
         preset("javascript", "Add docstring"), structure("javascript", doc_comment_before("add", ("/**", "//")))),
    Task("js-fix-even", "javascript", "function isEven(n) {\n  return n % 2 === 1;\n}\n",
         "function isEven(n) {\n  return n % 2 === 1;\n}\n", preset("javascript", "Fix the bug"),
         structure("javascript", text_of_function("isEven", lambda s: "%2===0" in s or "%2==0" in s or "%2!==1" in s,
                                                  "still compares with 1"))),
    Task("js-arrow", "javascript", "function double(x) {\n  return x * 2;\n}\n"
                                   "", "function double(x) {\n  return x * 2;\n}\n",
         "Convert this function to an arrow function assigned to a const.",
         structure("javascript", all_of(function_named("double"),
                                        lambda root, _t: None if _nodes(root, {"arrow_function"}) and not
                                        _nodes(root, {"function_declaration"}) else "not an arrow function"))),
    Task("js-error", "javascript", "function divide(a, b) {\n  return a / b;\n}\n"
                                   "", "function divide(a, b) {\n  return a / b;\n}\n",
         "Throw an Error when b is "
         "zero.", structure("javascript", has_node("divide", {"throw_statement"}, "no throw"))),
    Task("ts-types", "typescript", "function area(w, h) {\n  return w * h;\n}\n"
                                   "", "function area(w, h) {\n  return w * h;\n}\n",
         preset("typescript", "Add type hints"),
         structure("typescript", lambda root, _t: None if len(_nodes(root, {"type_annotation"})) >= 3
                   else "not every parameter and the return value are typed")),
    Task("ts-interface-comment", "typescript", "// interface User with a name (string) and an age (number)\n", "",
         "Write the code this comment asks for: interface User with a name (string) and an age (number)",
         structure("typescript", lambda root, _t: None if any(
             _name(n) == "User" and len(_nodes(n, {"property_signature"})) >= 2
             for n in _nodes(root, {"interface_declaration", "type_alias_declaration"})) else "no User interface"),
         cursor_after="(number)\n"),
    # Go, Rust, Java, C, C++: structure.
    Task("go-doc", "go", "package calc\n\nfunc Add(a, b int) int {\n\treturn a + b\n}\n",
         "func Add(a, b int) int {\n\treturn a + b\n}\n", preset("go", "Add docstring"),
         structure("go", doc_comment_before("Add", ("// Add", "//Add", "/*")))),
    Task("go-error", "go", "package calc\n\nfunc Div(a, b int) int {\n\treturn a / b\n}\n",
         "func Div(a, b int) int {\n\treturn a / b\n}\n", "Return an error as a second result when b is zero.",
         structure("go", text_of_function("Div", lambda s: "error)" in s and "nil" in s, "no error result"))),
    Task("rust-doc", "rust", "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n"
                             "", "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n",
         preset("rust", "Add docstring"), structure("rust", doc_comment_before("add", ("///",)))),
    Task("rust-option", "rust", "fn first(xs: &[i32]) -> i32 {\n    xs[0]\n}\n"
                                "", "fn first(xs: &[i32]) -> i32 {\n    xs[0]\n}\n",
         "Return None when the slice is empty: make the return type Option<i32>.",
         structure("rust", text_of_function(
             "first", lambda s: "->Option<i32>" in s and ("None" in s or ".first()" in s or ".get(0)" in s),
             "does not return Option<i32>"))),
    Task("java-javadoc", "java", "class MathUtil {\n    int square(int x) {\n        return x * x;\n    }\n}\n",
         "    int square(int x) {\n        return x * x;\n    }\n", preset("java", "Add docstring"),
         structure("java", doc_comment_before("square", ("/**",)))),
    Task("java-fix-max", "java", "class MathUtil {\n    int max(int a, int b) {\n        return a < b ? a : b;\n    }\n"
                                 "}\n",
         "        return a < b ? a : b;", "Fix the bug: max must return the larger number.",
         structure("java", text_of_function(
             "max", lambda s: any(k in s for k in ("a>b?a:b", "a<b?b:a", "Math.max(a,b)", "a>=b?a:b", "b>a?b:a")),
             "still returns the smaller"))),
    Task("c-fix-loop", "c", "int sum(const int *xs, int n) {\n    int s = 0;\n    for (int i = 0; i <= n; i++) s += "
                            "xs[i];\n    return s;\n}\n",
         "int sum(const int *xs, int n) {\n    int s = 0;\n    for (int i = 0; i <= n; i++) s += xs[i];\n    return "
         "s;\n}\n",
         "Fix the bug: the loop reads one element past the end.",
         structure("c", text_of_function("sum", lambda s: "i<n" in s and "i<=n" not in s, "loop bound still wrong"))),
    Task("cpp-const", "cpp", "class Buffer {\n  int n = 0;\n public:\n  int size() { return n; }\n};\n",
         "  int size() { return n; }", "Make the size method const.",
         structure("cpp", text_of_function("size", lambda s: "size()const" in s, "not const"))),
    # Translation: the replacement is checked in the target language.
    Task("translate-py-js", "python", "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a + b\n",
         next(p.instruction for p in preset_instructions("python", ["javascript"]) if p.target_language),
         structure("javascript", function_named("add"), on_replacement=True), target_language="javascript"),
    Task("translate-py-rust", "python", "def square(x):\n    return x * x\n", "def square(x):\n    return x * x\n",
         next(p.instruction for p in preset_instructions("python", ["rust"]) if p.target_language),
         structure("rust", function_named("square"), on_replacement=True), target_language="rust"),
]


# --- running ---------------------------------------------------------------------------------------


def run_raw(engine, task: Task, max_new_tokens: int) -> tuple[str, str]:
    """The model's reply to the same chat prompt, spliced in verbatim: (new text, replacement)."""
    et = task.edit_task()
    prompt = engine.chat_prompt(chat_messages(et, enclosing_scope(et)))
    reply = engine.complete(prompt, max_new_tokens=max_new_tokens).text
    return et.text[:et.start] + reply + et.text[et.end:], reply


def run_pipeline(engine, task: Task, max_new_tokens: int) -> tuple[str | None, str, int]:
    """(new text or None if refused, replacement or the refusal, attempts)."""
    try:
        result = run_edit(engine, task.edit_task(), max_new_tokens=max_new_tokens)
    except EditError as exc:
        return None, str(exc), 2
    return result.new_text, result.replacement, result.attempts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="local model directory (default: the embedded model)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, help="run only the first N tasks")
    parser.add_argument("--only", help="comma-separated task ids")
    parser.add_argument("--verbose", action="store_true", help="print each failure's reason")
    args = parser.parse_args(argv)

    from inference import Engine

    tasks = TASKS
    if args.only:
        wanted = set(args.only.split(","))
        tasks = [t for t in tasks if t.id in wanted]
    if args.limit:
        tasks = tasks[:args.limit]
    engine = Engine.load(args.model)
    rows: list[dict] = []
    started = time.perf_counter()
    for task in tasks:
        t0 = time.perf_counter()
        raw_text, raw_reply = run_raw(engine, task, args.max_tokens)
        raw_why = task.check(raw_text, raw_reply)
        t1 = time.perf_counter()
        new_text, replacement, attempts = run_pipeline(engine, task, args.max_tokens)
        pipe_why = "refused: " + replacement if new_text is None else task.check(new_text, replacement)
        rows.append({"id": task.id, "language": task.language, "raw": raw_why is None, "pipeline": pipe_why is None,
                     "attempts": attempts, "raw_s": t1 - t0, "pipeline_s": time.perf_counter() - t1,
                     "raw_why": raw_why, "pipeline_why": pipe_why})
        if args.verbose:
            print(f"{task.id}: raw={raw_why or 'pass'} | pipeline={pipe_why or 'pass'}", file=sys.stderr, flush=True)

    print(f"{'task':26} {'lang':11} {'raw':>4} {'ours':>4} {'tries':>5} {'raw s':>6} {'ours s':>6}  why ours failed")
    for r in rows:
        print(f"{r['id']:26} {r['language']:11} {'✓' if r['raw'] else '✗':>4} {'✓' if r['pipeline'] else '✗':>4} "
              f"{r['attempts']:>5} {r['raw_s']:6.1f} {r['pipeline_s']:6.1f}  {(r['pipeline_why'] or '')[:70]}")
    n = len(rows) or 1
    pass_raw = sum(r["raw"] for r in rows) / n
    pass_pipe = sum(r["pipeline"] for r in rows) / n
    by_language: dict[str, dict[str, float]] = {}
    for r in rows:
        entry = by_language.setdefault(r["language"], {"tasks": 0, "raw": 0, "pipeline": 0})
        entry["tasks"] += 1
        entry["raw"] += r["raw"]
        entry["pipeline"] += r["pipeline"]
    print(f"\npass@1: pipeline {pass_pipe:.1%}  raw {pass_raw:.1%}  over {len(rows)} tasks "
          f"({time.perf_counter() - started:.0f} s, model {engine.info.name})")
    print(json.dumps({
        "benchmark": "edit_suite", "tasks": len(rows), "pass1_pipeline": round(pass_pipe, 4),
        "pass1_raw": round(pass_raw, 4), "model": engine.info.name, "max_new_tokens": args.max_tokens,
        "by_language": by_language, "seconds": round(time.perf_counter() - started, 1),
        "sandboxed_network": bool(_NO_NET),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
