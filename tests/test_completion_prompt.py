"""Building the completion prompt: token healing golden cases (what is cut from the prompt, and how the
answer is read back) and the prompts warmed before the user asks."""

from __future__ import annotations

import argparse
import queue
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pygls.workspace import TextDocument

from inference import FimParts
from lsp_server.completion.feature import (
    MIDDLE_MAX_CHARS,
    WARM_PAUSE_S,
    CompletionFeature,
    fresh_layout,
    latest_after_pause,
    line_anchor,
    remaining,
)
from lsp_server.completion.prompt import (
    Anchor,
    Prompt,
    auto_closers,
    build_prompt,
    heal_answer,
    heal_prompt,
    other_files,
    prompt_suffix,
    typed_since,
    warm_prompts,
    whole_lines,
)
from lsp_server.config import Settings
from lsp_server.server import create_server


@pytest.mark.parametrize("prefix,prompt,lead", [
    ("def f(x):\n    ", "def f(x):", "\n    "),  # blank indented line: the line break goes too
    ("def f(x):\n", "def f(x):", "\n"),  # at column 0 of a new line
    ("if x:\n\t\t", "if x:", "\n\t\t"),  # tabs
    ("    return x ", "    return x", " "),  # a typed space mid-line
    ("    return x", "    return x", ""),  # mid-word: nothing to heal
    ("", "", ""),
])
def test_heal_cuts_the_split_token(prefix: str, prompt: str, lead: str) -> None:
    assert heal_prompt(prefix) == (prompt, lead)
    assert prompt + lead == prefix


@pytest.mark.parametrize("answer,shown", [
    ("    return total\n    # and th", "    return total"),  # the half-written line goes
    ("    return tot", ""),  # no line finished in time: nothing (a half line is more often wrong)
    ("\n    return tot", ""),  # a line started below and not finished
    ("\n    x = 1\n    y", "\n    x = 1"),
    ("", ""),
], ids=["keeps-finished-lines", "single-unfinished", "next-line-unfinished", "next-line-finished", "empty"])
def test_an_answer_cut_by_the_budget_keeps_whole_lines(answer: str, shown: str) -> None:
    assert whole_lines(answer) == shown


def test_labelled_snippets_become_other_files() -> None:
    extra = ["# util.py\ndef helper(x):\n    return x\n", "// api.ts\nexport function get() {}\n"]
    assert other_files(extra, "#")[0] == ("util.py", "def helper(x):\n    return x\n")
    assert other_files(extra, "//")[1] == ("api.ts", "export function get() {}\n")


def test_fim_prompt_carries_other_files_in_the_repository_format(qwen_engine) -> None:
    snippets = ["# util.py\ndef helper(x):\n    return x\n"]
    prompt = build_prompt(qwen_engine, Settings(), "file:///w/main.py", "python", "import util\n", 12,
                          snippets=snippets)
    assert prompt is not None and isinstance(prompt.prompt, FimParts)
    assert prompt.prompt.files == (("util.py", "def helper(x):\n    return x\n"),)
    assert prompt.prompt.path == "main.py" and "helper" not in prompt.prompt.prefix


def words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize("suffix,cap,kept", [
    ("x)\n    return y\n\ndef g():\n    pass\n", 100, "x)\n    return y\n\ndef g():\n    pass\n"),  # all fits
    ("x)\n    return y\n\ndef g():\n    pass\n", 3, "x)\n    return y\n"),  # whole lines while they fit
    ("a b c d e f)\n    return y\n", 2, "a b c d e f)\n"),  # the cursor's own line always goes
    ("", 5, ""),
    ("tail without a newline", 1, "tail without a newline"),
], ids=["fits", "cut-at-a-line", "own-line-over-the-cap", "empty", "one-line"])
def test_the_prompt_carries_a_short_suffix(suffix: str, cap: int, kept: str) -> None:
    assert prompt_suffix(suffix, words, cap) == kept


def test_a_keystroke_recomputes_only_the_short_suffix(qwen_engine) -> None:
    """The FIM prompt's suffix follows the cursor, so its KV cache is recomputed at every keystroke: the
    prompt carries `suffix_tokens` of it, while post-processing still sees all of it."""
    source = Path(argparse.__file__).read_text()
    offset = source.index("\n", source.index("def format_help(self):")) + 1
    settings = Settings(suffix_tokens=32)
    prompt = build_prompt(qwen_engine, settings, "file:///x/argparse.py", "python", source, offset)
    assert isinstance(prompt.prompt, FimParts)
    assert qwen_engine.count_tokens(prompt.prompt.suffix) <= 32 + 8
    assert len(prompt.ctx.suffix) > 2 * len(prompt.prompt.suffix)
    assert prompt.ctx.suffix.startswith(prompt.prompt.suffix)


@pytest.mark.parametrize("answer,lead,expected", [
    ("\n    return x", "\n    ", "return x"),  # the model wrote what the user already has
    (" ** 2", " ", "** 2"),
    ("\n  return x", "\n    ", "return x"),  # a shallower indent than typed: still only the blanks go
    ("return x", "", "return x"),
    # A FIM model starts the new line without the break: the line is the answer, not something appended
    # to the line above (HumanEval/18 L6: `    return times` was dropped and a comment shown instead).
    ("    return times\n\n# Check", "\n", "    return times\n\n# Check"),
    ("        return x", "\n    ", "    return x"),  # only the indentation the user typed goes
    (" # done\n    y = 2", "\n    ", "y = 2"),  # a comment appended to the line above still goes
    ("  # done\n    y = 2", "\n    ", "y = 2"),  # an inline comment (two blanks) goes too
])
def test_answer_loses_the_lead_the_user_already_typed(answer: str, lead: str, expected: str) -> None:
    assert heal_answer(answer, lead) == expected


ANCHORED = "def area(w, h):\n    \n\n\ndef volume(w, h, d):\n    return area(w, h) * d\n"
AT = ANCHORED.index("\n    \n") + 5  # the empty line of area's body


@pytest.mark.parametrize("text,offset,typed", [
    (ANCHORED, AT, ""),
    (ANCHORED[:AT] + "return w" + ANCHORED[AT:], AT + 8, "return w"),  # typed at the anchor
    (ANCHORED[:AT] + "return w" + ANCHORED[AT:], AT + 6, None),  # the cursor left what was typed
    (ANCHORED[:AT - 1] + ANCHORED[AT:], AT - 1, None),  # deleted before the anchor
    (ANCHORED[:AT] + "r" + ANCHORED[AT:].replace("* d", "* 2"), AT + 1, None),  # the code after it changed
    ("# note\n" + ANCHORED[:AT] + "r" + ANCHORED[AT:], AT + 8, None),  # an edit above
], ids=["nothing-yet", "typed", "cursor-moved", "deleted-before", "suffix-changed", "edited-above"])
def test_an_anchor_sees_only_typing_at_its_position(text: str, offset: int, typed: str | None) -> None:
    anchor = Anchor(ANCHORED[:AT], ANCHORED[AT:], Prompt(None, FimParts("x", "y"), "", 8))
    assert anchor.typed(text, offset) == typed


@pytest.mark.parametrize("typed,closers,found", [
    ("return area(", ")", ("return area(", ")")),  # VS Code typed `(` as `()`
    ("return area(w, f(", "))", ("return area(w, f(", "))")),
    ("return area(w, f(", ")", ("return area(w, f(", ")")),  # one of them not closed by the editor
    ("print(\"", "\")", ("print(\"", "\")")),
    ("return area(", "]", None),  # not the closer of what was typed
    ("return area(", "))", None),  # more closers than openers
    ("return area()", ")", None),  # the typed bracket is closed: that `)` came from elsewhere
    ("return w", "x", None),  # any other text after the cursor
], ids=["call", "nested", "partly-closed", "quote", "wrong-kind", "too-many", "closed", "other-text"])
def test_closers_an_editor_inserted_are_not_a_change(typed: str, closers: str, found) -> None:
    text = ANCHORED[:AT] + typed + closers + ANCHORED[AT:]
    assert typed_since(ANCHORED[:AT], ANCHORED[AT:], text, AT + len(typed)) == found
    anchor = Anchor(ANCHORED[:AT], ANCHORED[AT:], Prompt(None, FimParts("x", "y"), "", 8))
    assert anchor.typed(text, AT + len(typed)) == (found[0] if found else None)


@pytest.mark.parametrize("typed,closers", [
    ("return area(", ")"),
    ("print(\"x", "\")"),  # innermost first
    ("x = foo(bar(1), [2", "])"),  # closed pairs leave nothing behind
    ("s = 'it\\'s", "'"),  # an escaped quote does not close
    ("s = \"a(b\"", ""),  # brackets inside a string do not count (nor an f-string's braces: a miss, not an error)
    ("f(\"a\nb", ")"),  # a quote does not span lines...
    ("`a\nb", "`"),  # ... except a template literal
    ("x = 1", ""),
], ids=["call", "nested", "closed-pairs", "escaped-quote", "bracket-in-string", "line-break", "backtick", "none"])
def test_auto_closers_are_those_an_editor_inserted(typed: str, closers: str) -> None:
    assert auto_closers(typed) == closers


@pytest.mark.parametrize("typed,middle,lead", [
    ("", "", "\n    "),  # nothing typed: the anchor's own prompt
    ("return", "\n    return", ""),
    ("return ", "\n    return", " "),  # a typed space is healed in the middle as in a prefix
    ("x = 1\n    ", "\n    x = 1", "\n    "),  # a finished line: the new line's break and blanks heal
])
def test_typing_at_an_anchor_extends_its_prompt(qwen_engine, typed: str, middle: str, lead: str) -> None:
    """What was typed since the anchor starts the FIM middle, healed like a prefix, and the anchor's tokens
    stay a prefix of the new prompt's (checked with the model's tokenizer: that is what the cache reuses)."""
    settings = Settings()
    base = build_prompt(qwen_engine, settings, "file:///x/area.py", "python", ANCHORED, AT)
    assert base is not None and base.lead == "\n    "
    anchor = Anchor(ANCHORED[:AT], ANCHORED[AT:], base)
    text = ANCHORED[:AT] + typed + ANCHORED[AT:]
    here = build_prompt(qwen_engine, settings, "file:///x/area.py", "python", text, AT + len(typed))
    extended = anchor.extend(anchor.typed(text, AT + len(typed)) or "", here)
    assert extended is not None and isinstance(extended.prompt, FimParts)
    assert (extended.prompt.middle, extended.lead) == (middle, lead)
    assert extended.ctx is here.ctx and extended.prompt.suffix == base.prompt.suffix
    anchor_ids, ids = qwen_engine.render(base.prompt, 8), qwen_engine.render(extended.prompt, 8)
    assert ids[:len(anchor_ids)] == anchor_ids and len(ids) - len(anchor_ids) <= len(typed) + 2


@pytest.mark.parametrize("text,offset,heals,at", [
    ("x = 1\nif rea", 12, True, 6),  # mid-line: from the line's start, the typed part healed
    ("x = 1\nif rea", 12, False, 12),  # a backend that cannot heal a middle ending mid-word: at the cursor
    ("x = 1\nif ", 9, False, 6),  # ... unless it ends in a blank
    ("x = 1\n", 6, True, 6),  # at a line's start already
    ("a" * (MIDDLE_MAX_CHARS + 1), MIDDLE_MAX_CHARS + 1, True, MIDDLE_MAX_CHARS + 1),  # the line's start too far
], ids=["mid-line", "no-healing", "after-a-blank", "line-start", "long-line"])
def test_a_fresh_prompt_is_anchored_at_the_line_start(text: str, offset: int, heals: bool, at: int) -> None:
    backend = SimpleNamespace(supports_fim=True, heals_middle=heals)
    assert line_anchor(text, offset, backend) == at
    assert line_anchor(text, offset, SimpleNamespace(supports_fim=False, heals_middle=False)) == offset  # no FIM


def test_a_fresh_layout_keeps_the_line_start_and_extends_it_to_the_cursor(qwen_engine) -> None:
    """Mid-line, the anchor kept for the next keystrokes is the prompt at the line's start, and the prompt
    asked for is that one with the line's typed part as the start of its middle, read back with the
    cursor's context; at a line's start both are the prompt built at the cursor."""
    settings = Settings()
    text, offset = ANCHORED[:AT] + "return w" + ANCHORED[AT:], AT + 8
    here = build_prompt(qwen_engine, settings, "file:///x/area.py", "python", text, offset)
    assert here is not None
    fresh = fresh_layout(qwen_engine, settings, "file:///x/area.py", "python", text, offset, here)
    assert fresh is not None
    anchor, prompt = fresh
    assert (anchor.before, anchor.after) == (ANCHORED[:AT - 4], ANCHORED[AT:])  # the line laid out from its start
    assert anchor.typed(text, offset) == "    return w" and prompt.ctx is here.ctx
    anchor_ids, ids = qwen_engine.render(anchor.prompt.prompt, 8), qwen_engine.render(prompt.prompt, 8)
    assert ids[:len(anchor_ids)] == anchor_ids  # a keystroke computes only what it typed
    here = build_prompt(qwen_engine, settings, "file:///x/area.py", "python", ANCHORED, AT - 4)  # column 0
    assert here is not None
    fresh = fresh_layout(qwen_engine, settings, "file:///x/area.py", "python", ANCHORED, AT - 4, here)
    assert fresh is not None and fresh[0].prompt is here and fresh[1].prompt == here.prompt


@pytest.mark.parametrize("typed,closers,rest", [
    ("ret", "", ["urn area(w, h)", "urn w"]),
    ("return area(", ")", ["w, h"]),  # the editor's `)` is the suggestion's own: shown once, not twice
    ("return area(w, h", ")", []),  # all that is left is the closer the document has
    ("return area(", "]", []),  # a closer the suggestion does not end with
    ("return  ", "", []),  # typed something else
], ids=["typed", "auto-closed", "used-up", "other-closer", "diverged"])
def test_typing_through_a_suggestion_leaves_the_rest(typed: str, closers: str, rest: list[str]) -> None:
    assert remaining(["return area(w, h)", "return w"], typed, closers) == rest


def test_an_anchor_without_fim_is_not_extended() -> None:
    anchor = Anchor("a", "", Prompt(None, "a", "", 8))
    assert anchor.extend("b") is None


def test_warming_covers_the_next_cut_of_a_long_file(qwen_engine) -> None:
    source = Path(argparse.__file__).read_text()
    offset = source.index("\n", source.index("def format_help(self):")) + 1
    settings = Settings(context_tokens=400)
    prompts = warm_prompts(qwen_engine, settings, "file:///x/argparse.py", "python", source, offset)
    assert len(prompts) == 2
    now, ahead = prompts
    assert now.prompt == build_prompt(qwen_engine, settings, "file:///x/argparse.py", "python", source, offset).prompt
    assert isinstance(ahead.prompt, FimParts) and ahead.prompt.suffix == now.prompt.suffix
    assert len(ahead.prompt.prefix) < len(now.prompt.prefix) and ahead.ctx.prefix_cut


def test_after_a_request_the_warm_up_computes_what_is_ahead_of_the_cut(qwen_engine, monkeypatch) -> None:
    """A fast typist leaves no pause without a request in flight: the warm-up for a keystroke finds its request
    running. Once that ends, the anchor's prompt as it will start after its cut moves is prefilled (without it
    the request at that step computes the whole prompt), and the position does not count as warmed."""
    prefilled: list = []

    class Recording:  # the real (tiny) engine, its warm-ups recorded
        def __getattr__(self, name: str):
            return getattr(qwen_engine, name)

        def prefill(self, prompt, **kwargs) -> int:
            prefilled.append(prompt)
            return qwen_engine.prefill(prompt, **kwargs)

    server = create_server()
    server.settings.context_tokens = 400
    engine = Recording()
    monkeypatch.setattr(server.model, "ready", lambda: engine)
    feature = CompletionFeature(server)
    uri, source = "file:///x/argparse.py", Path(argparse.__file__).read_text()
    offset = source.index("\n", source.index("def format_help(self):")) + 1
    document = TextDocument(uri, source, language_id="python")
    monkeypatch.setattr(feature, "_document", lambda _uri: document)  # as if opened (no client here)
    feature._generate(engine, uri, "python", source, offset, 1, threading.Event())  # the request: it anchors
    anchor = feature._anchors[uri]
    ahead = warm_prompts(engine, server.settings, uri, "python", anchor.before + anchor.after, len(anchor.before))
    assert len(ahead) == 2 and ahead[1].ctx.prefix_cut
    feature._inflight[uri] = threading.Event()  # the keystroke's request is running...
    feature._warm_queue.put((uri, offset))
    time.sleep(3 * WARM_PAUSE_S)
    assert prefilled == []  # ... so nothing is warmed beside it
    del feature._inflight[uri]
    for _ in range(200):
        if prefilled:
            break
        time.sleep(0.05)
    assert prefilled == [ahead[1].prompt] and feature.stats["warmed"] == 0


def test_warming_a_short_file_is_one_prompt(qwen_engine) -> None:
    text = "import os\n\ndef f():\n    return os.getcwd()\n"
    prompts = warm_prompts(qwen_engine, Settings(), "file:///x/short.py", "python", text, text.index("os.getcwd"))
    assert [p.ctx.prefix_cut for p in prompts] == [False]


def test_warming_waits_for_a_burst_of_keystrokes_to_end() -> None:
    """Keystrokes 20 ms apart: the warm-up gets the last position, not one the user typed past mid-burst
    (a prefill chunk for a stale position would make the next request wait)."""
    changes: queue.Queue = queue.Queue()

    def type_a_word() -> None:
        for offset in range(10):
            changes.put(("file:///x/a.py", offset))
            time.sleep(0.02)

    typist = threading.Thread(target=type_a_word)
    typist.start()
    got = latest_after_pause(changes, 0.5)
    typist.join()
    assert got == ("file:///x/a.py", 9) and changes.empty()
