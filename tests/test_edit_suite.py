"""The edit benchmark's checks are sound: each accepts a correct edit and rejects the unedited input."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "edit_suite", Path(__file__).resolve().parents[1] / "benchmarks" / "edit_suite.py")
suite = importlib.util.module_from_spec(_spec)
sys.modules["edit_suite"] = suite  # dataclasses look their module up while the class is built
_spec.loader.exec_module(suite)

# A correct replacement for each task's selection, written by hand.
REFERENCE = {
    "py-docstring-function": 'def add(a, b):\n    """Return a + b."""\n    return a + b\n',
    "py-docstring-method": '    def push(self, item):\n        """Push item; return the new size."""\n        '
                           'self.items.append(item)\n        return len(self.items)\n',
    "py-typehints-area": "def area(width: float, height: float) -> float:\n    return width * height\n",
    "py-typehints-join": "def join_words(words: list[str], sep: str) -> str:\n    return sep.join(words)\n",
    "py-fix-index": "def last(xs):\n    return xs[-1]\n",
    "py-fix-even": "def is_even(n):\n    return n % 2 == 0\n",
    "py-fix-maximum": "def maximum(xs):\n    m = xs[0]\n    for x in xs:\n        if x > m:\n            m = x\n    "
                      "return m\n",
    "py-fix-factorial": "def factorial(n):\n    if n == 0:\n        return 1\n    return n * factorial(n - 1)\n",
    "py-simplify-loop": "def total(xs):\n    return sum(xs)\n",
    "py-simplify-bool": "def is_adult(age):\n    return age >= 18\n",
    "py-error-divide": "def divide(a, b):\n    if b == 0:\n        raise ValueError('b is zero')\n    return a / b\n",
    "py-error-port": "def parse_port(text):\n    try:\n        return int(text)\n    except ValueError:\n        "
                     "return None\n",
    "py-rename": "def mean(xs):\n    return sum(xs) / len(xs)\n",
    "py-add-parameter": "def greet(name, greeting='Hello'):\n    return greeting + ', ' + name + '!'\n",
    "py-comment-squares": "    return [x * x for x in xs]\n",
    "py-comment-palindrome": "def is_palindrome(s):\n    return s == s[::-1]\n",
    "py-comprehension": "def evens(xs):\n    return [x for x in xs if x % 2 == 0]\n",
    "py-statement-absdiff": "return abs(a - b)",
    "py-method-fix": "    def increment(self):\n        self.n += 1\n        return self.n\n",
    "js-docstring": "/** Add two numbers. */\nfunction add(a, b) {\n  return a + b;\n}\n",
    "js-fix-even": "function isEven(n) {\n  return n % 2 === 0;\n}\n",
    "js-arrow": "const double = (x) => x * 2;\n",
    "js-error": "function divide(a, b) {\n  if (b === 0) throw new Error('b is zero');\n  return a / b;\n}\n",
    "ts-types": "function area(w: number, h: number): number {\n  return w * h;\n}\n",
    "ts-interface-comment": "interface User {\n  name: string;\n  age: number;\n}\n",
    "go-doc": "// Add returns a + b.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n",
    "go-error": "func Div(a, b int) (int, error) {\n\tif b == 0 {\n\t\treturn 0, errors.New(\"zero\")\n\t}\n\treturn a "
                "/ b, nil\n}\n",
    "rust-doc": "/// Adds two numbers.\nfn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n",
    "rust-option": "fn first(xs: &[i32]) -> Option<i32> {\n    xs.first().copied()\n}\n",
    "java-javadoc": "    /** Returns x squared. */\n    int square(int x) {\n        return x * x;\n    }\n",
    "java-fix-max": "        return a > b ? a : b;",
    "c-fix-loop": "int sum(const int *xs, int n) {\n    int s = 0;\n    for (int i = 0; i < n; i++) s += xs[i];\n    "
                  "return s;\n}\n",
    "cpp-const": "  int size() const { return n; }",
    "translate-py-js": "function add(a, b) {\n  return a + b;\n}\n",
    "translate-py-rust": "fn square(x: i64) -> i64 {\n    x * x\n}\n",
}


def test_suite_has_30_tasks_in_several_languages_and_unique_ids() -> None:
    ids = [t.id for t in suite.TASKS]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    assert len({t.language for t in suite.TASKS}) >= 6
    assert set(REFERENCE) == set(ids)


@pytest.mark.parametrize("task", suite.TASKS, ids=lambda t: t.id)
def test_check_accepts_the_reference_and_rejects_the_input(task) -> None:
    et = task.edit_task()
    reference = REFERENCE[task.id]
    assert task.check(et.text[:et.start] + reference + et.text[et.end:], reference) is None
    assert task.check(et.text, et.selection) is not None
