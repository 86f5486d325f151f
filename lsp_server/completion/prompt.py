"""The completion prompt: build it from the context, heal its last token, run it, read the answer back.

Shared by the server (`feature`), `infill complete` and the benchmarks, so all three run exactly the same
pipeline: `build_prompt` (context → engine prompt), `warm_prompts` (what to prefill before the user asks),
`run_completion` (generate with the streaming stop rule, then post-process). Token healing comes in two
halves: `heal_prompt` cuts the whitespace a tokenizer would glue to the next word, `heal_answer` takes it
back out of the model's answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from inference import Backend, Completion, FimParts, InferenceError
from lsp_server.completion.context import CompletionContext, build_context, uri_path
from lsp_server.completion.postprocess import postprocess, stop_rule
from lsp_server.config import Settings
from lsp_server.languages import comment_prefix
from lsp_server.syntax import OPENERS

log = logging.getLogger(__name__)


@dataclass
class Prompt:
    """What goes to the engine for one completion, and how to read its answer."""

    ctx: CompletionContext
    prompt: str | FimParts
    lead: str  # whitespace cut from the end of the prompt (token healing), expected back from the model
    max_tokens: int


def build_prompt(engine: Backend, settings: Settings, uri: str, language_id: str | None, text: str, offset: int,
                 snippets: Sequence[str] = (), keep_start: int | None = None,
                 ahead_of: int | None = None) -> Prompt | None:
    """The context and the engine prompt for a position (None when there is nothing to continue).
    `keep_start` keeps the previous prompt's cut while it fits; `ahead_of` cuts the prefix where typing
    will move that cut next (see `warm_prompts`)."""
    ctx = build_context(text, offset, language_id, count_tokens=engine.count_tokens,
                        budget_tokens=settings.context_tokens, path=uri_path(uri), snippets=snippets,
                        other_budget_tokens=settings.other_documents_tokens, keep_start=keep_start,
                        ahead_of=ahead_of)
    files: tuple[tuple[str, str], ...] = ()
    if engine.supports_repo_context:  # other files as the model was trained to see them
        files = other_files(ctx.extra, comment_prefix(language_id, uri_path(uri)))
        prefix = ctx.prefix
    else:  # as labelled comments at the top of the prefix
        prefix = "".join(s if s.endswith("\n") else s + "\n" for s in ctx.extra) + ctx.prefix
    prefix, lead = heal_prompt(prefix)
    if not prefix.strip() and not engine.supports_fim:
        return None
    max_tokens = settings.max_tokens_multi_line if ctx.multiline else settings.max_tokens_single_line
    prompt: str | FimParts = prefix
    if engine.supports_fim:
        suffix = prompt_suffix(ctx.suffix, engine.count_tokens, settings.suffix_tokens)
        prompt = FimParts(prefix, suffix, files=files, path=PurePosixPath(uri_path(uri)).name)
    return Prompt(ctx, prompt, lead, max_tokens)


def prompt_suffix(suffix: str, count_tokens, cap: int) -> str:
    """The part of the code after the cursor that the prompt carries: the rest of the cursor's line, then
    whole lines while they fit `cap` tokens. In a FIM prompt the suffix comes after the prefix, so a prompt
    laid out afresh recomputes its KV cache (keystrokes extend one instead: `Anchor`): its length is what a
    fresh layout costs (the post-processing rules still see the whole suffix)."""
    end = suffix.find("\n")
    if end < 0:
        return suffix
    kept, used = end, count_tokens(suffix[:end])
    while used < cap and kept < len(suffix):
        nxt = suffix.find("\n", kept + 1)
        nxt = len(suffix) if nxt < 0 else nxt
        cost = count_tokens(suffix[kept:nxt])
        if used + cost > cap:
            break
        kept, used = nxt, used + cost
    return suffix[:kept] + ("\n" if kept < len(suffix) else "")


def other_files(extra: Sequence[str], comment: str) -> tuple[tuple[str, str], ...]:
    """The context's labelled snippets (a "<comment> name" line, then code) as (name, code) pairs."""
    files = []
    for item in extra:
        label, _, code = item.partition("\n")
        name = label[len(comment):].strip() if label.startswith(comment) else label.strip()
        files.append((name, code))
    return tuple(files)


def warm_prompts(engine: Backend, settings: Settings, uri: str, language_id: str | None, text: str, offset: int,
                 snippets: Sequence[str] = (), keep_start: int | None = None) -> list[Prompt]:
    """The prompts worth having in the KV cache before the user asks at `offset`, most urgent first.

    The prompt for the position itself; and when its prefix is cut, the prompt as it will start once
    typing pushes the cut one step on. Without the second, that step costs a cold prefill of the whole
    context (0.7-1 s here, every few screenfuls typed); with it, the request after the step extends a
    cached prefix like any other.
    """
    prompt = build_prompt(engine, settings, uri, language_id, text, offset, snippets, keep_start=keep_start)
    if prompt is None:
        return []
    if not prompt.ctx.prefix_cut:
        return [prompt]
    ahead = build_prompt(engine, settings, uri, language_id, text, offset, snippets,
                         ahead_of=prompt.ctx.prefix_start)
    return [prompt] if ahead is None or ahead.prompt == prompt.prompt else [prompt, ahead]


@dataclass(frozen=True)
class Anchor:
    """A prompt the engine has computed at a position (warmed or asked for), and the document around it.

    Typing at that position changes only the text before the cursor, yet a FIM prompt that takes the new
    text into its prefix recomputes everything after it: the suffix window, ~70 tokens, most of a
    keystroke's cost on a CPU. `extend` instead writes what was typed since as the start of the middle
    (`<|fim_middle|>` + typed): the same document, the hole at the same place, and the anchor's prompt
    stays a cached prefix of the new one, so a keystroke computes only the tokens it typed. A FIM-trained
    model reads a middle it did not write as one it did; one that ends mid-word needs its last token healed
    (`Backend.heals_middle`). Measured in benchmarks/results/fim_quality-2026-12-03.md (`--typed --anchored`).
    """

    before: str  # document text before the anchor's position
    after: str  # document text after it
    prompt: Prompt

    def typed(self, text: str, offset: int) -> str | None:
        """What was typed at the anchor since, when that is the only change to `text` (None otherwise). The
        closers an editor inserted for it (`typed_since`) stay out of the prompt: the model writes them and
        post-processing, which reads the document, cuts them (fim_quality `--auto-close`)."""
        found = typed_since(self.before, self.after, text, offset)
        return found[0] if found is not None else None

    def extend(self, typed: str, here: Prompt | None = None) -> Prompt | None:
        """The anchor's engine prompt with `typed` as the start of its middle, healed like a prefix; read back
        with `here`'s context (the prompt built at the cursor). None when the anchor's prompt is not FIM."""
        parts = self.prompt.prompt
        if not isinstance(parts, FimParts):
            return None
        middle, lead = heal_prompt(self.prompt.lead + typed)
        base = here or self.prompt
        return Prompt(base.ctx, replace(parts, middle=middle), lead, base.max_tokens)


QUOTES = "\"'`"


def auto_closers(typed: str) -> str:
    """The closers an editor that auto-closes brackets and quotes (VS Code's default) holds after the cursor
    once `typed` was typed: those of the brackets and quotes `typed` leaves open, innermost first.

    A rough scan without a language (a quote in a comment counts, `\"\"\"` opens one quote, strings end at
    a line break): callers only compare what it finds with the document, so a miss costs a prompt laid out
    afresh, never a wrong one.
    """
    stack: list[str] = []
    escaped = False
    for ch in typed:
        if stack and stack[-1] in QUOTES:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == stack[-1]:
                stack.pop()
            elif ch == "\n" and stack[-1] != "`":
                stack.pop()
        elif ch in OPENERS or ch in QUOTES:
            stack.append(ch)
        elif stack and OPENERS.get(stack[-1]) == ch:
            stack.pop()
    return "".join(OPENERS.get(ch, ch) for ch in reversed(stack))


def typed_since(before: str, after: str, text: str, offset: int) -> tuple[str, str] | None:
    """(typed, closers) when `text`, with the cursor at `offset`, is `before` + typed + closers + `after`: only
    typing at that position changed the document, and the closers are ones an auto-closing editor inserted for
    brackets and quotes typed there (`auto_closers`; possibly fewer, where it did not close one). None when
    anything else changed."""
    end = len(text) - len(after)
    if not len(before) <= offset <= end or not text.startswith(before) or not text.endswith(after):
        return None
    typed, closers = text[len(before):offset], text[offset:end]
    if closers:
        opened = iter(auto_closers(typed))
        if not all(ch in opened for ch in closers):  # in order, each one typed and still open
            return None
    return typed, closers


def run_completion(engine: Backend, prompt: Prompt, temperature: float = 0.0,
                   cancel: threading.Event | None = None, budget_ms: float | None = None,
                   first_token_rank: int = 0) -> tuple[str | None, Completion | None]:
    """Generate with the streaming stop rule, then post-process: (suggestion or None, raw completion).
    Decoding stops `budget_ms` after the first token; then only whole lines are kept (none: nothing).
    `first_token_rank` > 0 asks for an alternative that starts with a less likely first token."""
    rule = stop_rule(prompt.ctx)
    extra = {"first_token_rank": first_token_rank} if first_token_rank else {}  # a backend without it still serves
    try:
        completion = engine.complete(prompt.prompt, max_new_tokens=prompt.max_tokens, cancel=cancel,
                                     temperature=temperature, stop_rule=lambda t: rule(heal_answer(t, prompt.lead)),
                                     max_decode_ms=budget_ms, **extra)
    except InferenceError as exc:
        log.info("no completion: %s", exc)
        return None, None
    if completion.finish_reason == "cancel":
        return None, completion
    text = heal_answer(completion.text, prompt.lead)
    if completion.finish_reason == "budget":
        text = whole_lines(text)
    return postprocess(text, prompt.ctx), completion


def whole_lines(text: str) -> str:
    """The lines of an answer cut short that are complete: a half-written line is more often wrong than
    right, and the user would have to read it to know."""
    code = len(text) - len(text.lstrip("\n"))
    end = text.rfind("\n", code)
    return text[:end] if end > 0 else ""


def heal_prompt(prefix: str) -> tuple[str, str]:
    """Token healing: (prompt prefix, text the answer is expected to start with).

    Tokenizers merge a line break with the indentation after it ("\\n    "), so a
    prompt ending at a line start (blanks or not) splits that token and small models restart at
    column 0 (comments, prose): cut the line break and the blanks and expect them back in the answer.
    Mid-line, BPE vocabularies glue a space to the word after it (" return"), so a prompt ending in a
    typed space is healed the same way: that one space moves into the expected answer.
    """
    stripped = prefix.rstrip(" \t")
    lead = prefix[len(stripped) - 1:] if stripped.endswith("\n") else (" " if prefix.endswith(" ") else "")
    return prefix[:len(prefix) - len(lead)], lead


def heal_answer(text: str, lead: str) -> str:
    """Remove from the model's answer the line break and indentation `heal_prompt` cut from the prompt.
    An answer that starts with indentation and code began the new line itself, without the break (FIM
    models do: Qwen2.5-Coder answers a hole at a line start this way, and dropping that line threw the
    right answer away). Any other text the model appends to the line before the cursor (a trailing
    comment, more of that line) cannot be shown there: it goes."""
    if not lead:
        return text
    if lead.startswith("\n"):
        if _starts_a_line(text):
            lead = lead[1:]
        else:
            nl = text.find("\n")
            text, lead = ("", "") if nl < 0 else (text[nl + 1:], lead[1:])
        if not lead:
            return text
    if text.startswith(lead):
        return text[len(lead):]
    blank = len(text) - len(text.lstrip(" \t"))
    return text[blank:] if lead.startswith(text[:blank]) else text


def _starts_a_line(text: str) -> bool:
    """Indentation (a tab, or two blanks or more) followed by code, not by a comment."""
    code = text.lstrip(" \t")
    blanks = text[:len(text) - len(code)]
    return ("\t" in blanks or len(blanks) >= 2) and bool(code) and not code.startswith(("#", "//", "\n"))
