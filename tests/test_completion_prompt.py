"""Token healing golden cases: what is cut from the prompt, and how the answer is read back."""

from __future__ import annotations

import pytest

from lsp_server.features.completion import _heal, heal


@pytest.mark.parametrize("prefix,prompt,lead", [
    ("def f(x):\n    ", "def f(x):", "\n    "),  # blank indented line: the line break goes too
    ("def f(x):\n", "def f(x):", "\n"),  # at column 0 of a new line
    ("if x:\n\t\t", "if x:", "\n\t\t"),  # tabs
    ("    return x ", "    return x", " "),  # a typed space mid-line
    ("    return x", "    return x", ""),  # mid-word: nothing to heal
    ("", "", ""),
])
def test_heal_cuts_the_split_token(prefix: str, prompt: str, lead: str) -> None:
    assert heal(prefix) == (prompt, lead)
    assert prompt + lead == prefix


@pytest.mark.parametrize("answer,lead,expected", [
    ("\n    return x", "\n    ", "return x"),  # the model wrote what the user already has
    (" ** 2", " ", "** 2"),
    ("\n  return x", "\n    ", "return x"),  # a shallower indent than typed: still only the blanks go
    ("return x", "", "return x"),
])
def test_answer_loses_the_lead_the_user_already_typed(answer: str, lead: str, expected: str) -> None:
    assert _heal(answer, lead) == expected
