"""An edit streamed into a preview while it is written: the drafts `run_edit` reports, and the throttled,
once-ended `infill/editStream` notifications (`lsp_server.edit.stream`). No model: scripted replies.
The same over LSP, with the real model, is in test_edit_lsp.py."""

from __future__ import annotations

import threading

import pytest
from test_edit import CLASS_DOC, GREET, ScriptedEngine, select

from lsp_server.edit.run import run_edit
from lsp_server.edit.stream import DEFAULT_INTERVAL_MS, EditStream, stream_interval
from lsp_server.edit.task import DOCSTRING, EditCancelled, EditTask

# --- drafts from the run loop ----------------------------------------------------------------------


def test_drafts_are_the_replacement_so_far_at_each_line_end_and_end_at_the_result() -> None:
    reply = "def greet(self, name: str) -> str:\n    # say hi\n    return 'hi ' + name\n"
    drafts: list[str] = []
    result = run_edit(ScriptedEngine([reply]), select(CLASS_DOC, GREET, "Add type hints"), max_new_tokens=64,
                      draft=drafts.append)
    assert len(drafts) == reply.count("\n")  # one per completed line, never a half line
    assert drafts[0] == "    def greet(self, name: str) -> str:\n"  # read and re-indented like the final reply
    assert all(later.startswith(earlier.rstrip("\n")) for earlier, later in zip(drafts, drafts[1:]))
    assert drafts[-1] == result.replacement


def test_a_retry_drafts_afresh() -> None:
    drafts: list[str] = []
    run_edit(ScriptedEngine(["def greet(self, name:\n    return 1\n", "def greet(self, name):\n    return 2\n"]),
             select(CLASS_DOC, GREET, "Fix the bug"), max_new_tokens=64, draft=drafts.append)
    assert [d.splitlines()[-1].strip() for d in drafts] == ["def greet(self, name:", "return 1",
                                                            "def greet(self, name):", "return 2"]


def test_a_cancelled_edit_drafts_nothing_after_the_cancel() -> None:
    drafts: list[str] = []
    with pytest.raises(EditCancelled):
        run_edit(ScriptedEngine(["def greet(self, name):\n    return 'x'\n"], cancel_after=30),
                 select(CLASS_DOC, GREET, "Fix the bug"), max_new_tokens=64, cancel=threading.Event(),
                 draft=drafts.append)
    assert drafts == ["    def greet(self, name):\n"]


def test_docstring_drafts_one_definition_at_a_time() -> None:
    doc = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
    drafts: list[str] = []
    result = run_edit(ScriptedEngine([" adds a and b.", " subtracts b from a."]),
                      EditTask(doc, 0, len(doc), "Add docstring", "python", preset=DOCSTRING),
                      max_new_tokens=64, draft=drafts.append)
    assert len(drafts) == 2 and drafts[-1] == result.replacement
    assert '"""Adds a and b."""' in drafts[0] and "Subtracts" not in drafts[0]


# --- the notifications -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


HEAD = {"id": 7, "uri": "file:///a.py", "version": 3, "range": {}}


def test_stream_sends_the_first_draft_at_once_then_at_most_one_per_interval() -> None:
    sent: list[dict] = []
    clock = Clock()
    stream = EditStream(sent.append, HEAD, 0.1, clock)
    stream.draft("a\n")
    clock.now = 0.05
    stream.draft("a\nb\n")  # too soon: dropped (the next draft carries it)
    clock.now = 0.15
    stream.draft("a\nb\nc\n")
    stream.draft("a\nb\nc\n")
    assert [s["text"] for s in sent] == ["a\n", "a\nb\nc\n"]
    assert all(s | HEAD == s and s["done"] is False for s in sent)


def test_stream_skips_empty_and_unchanged_drafts() -> None:
    sent: list[dict] = []
    stream = EditStream(sent.append, HEAD, 0.0)
    for text in ("", "  \n", "x\n", "x\n"):
        stream.draft(text)
    assert [s["text"] for s in sent] == ["x\n"]


def test_stream_ends_once_with_the_final_text_and_nothing_follows() -> None:
    sent: list[dict] = []
    stream = EditStream(sent.append, HEAD, 0.0)
    stream.draft("x\n")
    stream.finish("x\ny\n")
    stream.draft("late\n")
    stream.fail("too late")
    assert sent[-1] == HEAD | {"text": "x\ny\n", "done": True} and len(sent) == 2


def test_stream_failure_keeps_the_last_text_and_says_why() -> None:
    sent: list[dict] = []
    stream = EditStream(sent.append, HEAD, 0.0)
    stream.draft("x\n")
    stream.fail("The edit was cancelled.", cancelled=True)
    assert sent[-1] == HEAD | {"text": "x\n", "done": True, "error": "The edit was cancelled.", "cancelled": True}


@pytest.mark.parametrize("opt_in, seconds", [
    (True, DEFAULT_INTERVAL_MS / 1000), ({}, DEFAULT_INTERVAL_MS / 1000), ({"intervalMs": 0}, 0.0),
    ({"intervalMs": 250}, 0.25), ({"intervalMs": -1}, DEFAULT_INTERVAL_MS / 1000),
    ({"intervalMs": "fast"}, DEFAULT_INTERVAL_MS / 1000), ({"intervalMs": True}, DEFAULT_INTERVAL_MS / 1000),
    (None, None), (False, None), ("yes", None), (1, None),
])
def test_stream_interval_from_the_client_opt_in(opt_in, seconds) -> None:
    assert stream_interval(opt_in) == seconds
