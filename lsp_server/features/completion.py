"""Inline completion: position → context → prompt → engine → post-processing → ghost text.

What makes it feel fast on a CPU: a newer request for a document cancels the one in flight, text the
user types that the last suggestion predicted is answered from that suggestion (trimmed, not
regenerated), and the engine's KV cache is warmed where the user is typing before they ask.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Sequence

from lsprotocol import types

from inference import Completion, Engine, FimParts, InferenceError
from lsp_server.context import CompletionContext, RecentSnippets, build_context, uri_path
from lsp_server.languages import comment_prefix
from lsp_server.positions import to_offset, to_position
from lsp_server.postprocess import postprocess, stop_rule
from lsp_server.config import Settings
from lsp_server.server import Feature

log = logging.getLogger(__name__)

MAX_DOCUMENT_CHARS = 2_000_000  # larger documents (logs, minified bundles, data) get no suggestion
TYPED_THROUGH_ENTRIES = 32


@dataclass
class Suggestion:
    """A finished suggestion and the document around it, for the typed-through cache."""

    uri: str
    before: str  # document text before the cursor
    after: str  # document text after the cursor
    text: str


@dataclass
class Prompt:
    """What goes to the engine for one completion, and how to read its answer."""

    ctx: CompletionContext
    prompt: str | FimParts
    lead: str  # whitespace cut from the end of the prompt (token healing), expected back from the model
    max_tokens: int


class CompletionFeature(Feature):
    """Inline completion and its `textDocument/completion` fallback."""

    def __init__(self, server) -> None:
        super().__init__(server)
        self._inflight: dict[str, threading.Event] = {}
        self._typed: OrderedDict[tuple[str, str], Suggestion] = OrderedDict()
        self._cuts: dict[str, tuple[int, int]] = {}  # uri -> (offset, line) where its last cut prefix started
        self._recent = RecentSnippets()
        self._warm_queue: queue.Queue[tuple[str, int]] = queue.Queue()
        self._warm_cancel = threading.Event()
        self.stats = {"requests": 0, "typed_through": 0, "generated": 0, "reuse_hits": 0, "reused_tokens": 0,
                      "prompt_tokens": 0}
        threading.Thread(target=self._warm_loop, name="infill-warm", daemon=True).start()
        server.model.on_ready(lambda _engine: self._warm_open_documents())

    def register(self) -> None:
        server = self.server

        @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
        async def inline_completion(ls, params: types.InlineCompletionParams) -> types.InlineCompletionList:
            text = await self.suggest(params.text_document.uri, params.position)
            if not text:
                return types.InlineCompletionList(items=[])
            pos = params.position
            return types.InlineCompletionList(items=[
                types.InlineCompletionItem(insert_text=text, range=types.Range(start=pos, end=pos))])

        @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                        types.CompletionOptions(trigger_characters=[".", "(", " "]))
        async def completion(ls, params: types.CompletionParams) -> types.CompletionList:
            if self._client_has_inline_completion():  # the ghost text already shows it
                return types.CompletionList(is_incomplete=True, items=[])
            return await self._completion_items(params)

        @server.feature("infill/stats")
        def stats(ls, params) -> dict:
            """Counters for benchmarks and `:InfillStatus` (not part of LSP)."""
            return dict(self.stats)

    # ---------------------------------------------------------------------------------- requests
    async def suggest(self, uri: str, position: types.Position) -> str | None:
        """The suggestion at a position, or None. Never raises for bad input."""
        self.stats["requests"] += 1
        doc = self.server.workspace.text_documents.get(uri)
        if doc is None or not self.server.settings.language_enabled(doc.language_id):
            return None
        text = doc.source
        if len(text) > MAX_DOCUMENT_CHARS or "\x00" in text:
            return None
        try:
            offset = to_offset(text, position.line, position.character)
        except ValueError:
            return None
        typed = self._typed_through(uri, text, offset)
        if typed is not None:  # the user typed what we predicted (or asked again): no need to generate
            self.stats["typed_through"] += 1
            return typed
        engine = self.server.model.ready()
        if engine is None:
            return None
        previous = self._inflight.pop(uri, None)
        if previous is not None:
            previous.set()  # a newer request for this document: the old one is stale
        cancel = threading.Event()
        self._inflight[uri] = cancel
        self._warm_cancel.set()
        try:
            result = await asyncio.to_thread(self._generate, engine, doc.uri, doc.language_id, text, offset, cancel)
        except asyncio.CancelledError:  # $/cancelRequest: stop the engine between two tokens
            cancel.set()
            raise
        finally:
            if self._inflight.get(uri) is cancel:
                del self._inflight[uri]
        if result is None or cancel.is_set():
            return None
        self._remember(Suggestion(uri, text[:offset], text[offset:], result))
        return result

    def _generate(self, engine: Engine, uri: str, language_id: str | None, text: str, offset: int,
                  cancel: threading.Event) -> str | None:
        start = time.perf_counter()
        prompt = build_prompt(engine, self.server.settings, uri, language_id, text, offset,
                              self._snippets(engine, uri, language_id), keep_start=self._kept_cut(uri))
        if prompt is None:
            return None
        self._remember_cut(uri, text, prompt)
        context_ms = (time.perf_counter() - start) * 1000
        suggestion, completion = run_completion(engine, prompt, self.server.settings.temperature, cancel,
                                                budget_ms=self.server.settings.latency_budget_ms)
        if completion is not None:
            log.info("completion: context %.0f ms; %d prompt tokens (%d reused), %d generated (%d drafted, %d kept), "
                     "first token %.0f ms, total %.0f ms, %s, %s", context_ms, completion.prompt_tokens,
                     completion.reused_tokens, completion.generated_tokens, completion.drafted_tokens,
                     completion.accepted_tokens, completion.ttft_ms, completion.total_ms, completion.finish_reason,
                     "multi-line" if prompt.ctx.multiline else "single-line")
            self.stats["generated"] += 1
            self.stats["reuse_hits"] += completion.reused_tokens >= completion.prompt_tokens // 2
            self.stats["reused_tokens"] += completion.reused_tokens
            self.stats["prompt_tokens"] += completion.prompt_tokens
        return suggestion

    async def _completion_items(self, params: types.CompletionParams) -> types.CompletionList:
        """Fallback for clients without inline completion: the suggestion as one completion item."""
        text = await self.suggest(params.text_document.uri, params.position)
        doc = self.server.workspace.text_documents.get(params.text_document.uri)
        if not text or doc is None:
            return types.CompletionList(is_incomplete=True, items=[])
        source = doc.source
        offset = to_offset(source, params.position.line, params.position.character)
        word_start = offset
        while word_start > 0 and (source[word_start - 1].isalnum() or source[word_start - 1] == "_"):
            word_start -= 1
        word = source[word_start:offset]
        start = types.Position(*to_position(source, word_start))
        label = (word + text).splitlines()[0][:80] or text[:80]
        # As a snippet (escaped, so it inserts literally): Neovim 0.11 inserts only the first word of a
        # plain-text item with a text edit. Plain text for clients without snippets (Emacs eglot without
        # yasnippet), which would insert the escapes.
        snippet = self._client_has_snippets()
        item = types.CompletionItem(
            label=label, kind=types.CompletionItemKind.Text, detail="infill", filter_text=word + text,
            text_edit=types.TextEdit(range=types.Range(start=start, end=params.position),
                                     new_text=_snippet_literal(word + text) if snippet else word + text),
            insert_text_format=types.InsertTextFormat.Snippet if snippet else types.InsertTextFormat.PlainText,
            sort_text="0")
        return types.CompletionList(is_incomplete=True, items=[item])

    def _snippets(self, engine: Engine, uri: str, language_id: str | None) -> list[str]:
        """Code near recent edits in other documents (the same for a request and its warm-up)."""
        return self._recent.pick(engine.count_tokens, self.server.settings.other_documents_tokens,
                                 exclude_uri=uri, comment=comment_prefix(language_id, uri_path(uri)))

    def _client_has_snippets(self) -> bool:
        caps = self.server.client_capabilities
        completion = caps and caps.text_document and caps.text_document.completion
        return bool(completion and completion.completion_item and completion.completion_item.snippet_support)

    def _client_has_inline_completion(self) -> bool:
        caps = self.server.client_capabilities
        return bool(caps and caps.text_document and caps.text_document.inline_completion)

    # ------------------------------------------------------------------------ typed-through cache
    def _typed_through(self, uri: str, text: str, offset: int) -> str | None:
        """If the user typed the start of the last suggestion here, the rest of it."""
        for suggestion in reversed(self._typed.values()):
            if suggestion.uri != uri or text[offset:] != suggestion.after:
                continue
            before = text[:offset]
            if not before.startswith(suggestion.before):
                continue
            typed = before[len(suggestion.before):]
            if suggestion.text.startswith(typed) and len(typed) < len(suggestion.text):
                return suggestion.text[len(typed):]
        return None

    def _remember(self, suggestion: Suggestion) -> None:
        key = (suggestion.uri, suggestion.before[-200:])
        self._typed[key] = suggestion
        self._typed.move_to_end(key)
        while len(self._typed) > TYPED_THROUGH_ENTRIES:
            self._typed.popitem(last=False)

    # ------------------------------------------------------------------------------ sticky cuts
    def _kept_cut(self, uri: str) -> int | None:
        cut = self._cuts.get(uri)
        return cut[0] if cut else None

    def _remember_cut(self, uri: str, text: str, prompt: Prompt) -> None:
        """Keep where this prompt's cut prefix starts, so the next one for the document starts there too."""
        if prompt.ctx.prefix_cut:
            start = prompt.ctx.prefix_start
            self._cuts[uri] = (start, text.count("\n", 0, start))
        else:
            self._cuts.pop(uri, None)

    def _forget_cut_before(self, uri: str, changes: list) -> None:
        """An edit above the kept cut moves the text under it: choose the cut afresh next time."""
        cut = self._cuts.get(uri)
        if cut is not None and any(getattr(c, "range", None) is None or c.range.start.line < cut[1] for c in changes):
            del self._cuts[uri]

    # ---------------------------------------------------------------------------------- warming
    def on_open(self, uri: str) -> None:
        doc = self.server.workspace.text_documents.get(uri)
        if doc is not None:
            self._warm_queue.put((uri, len(doc.source)))  # no cursor yet: the whole text covers every position
            self._recent.add(uri, doc.source, 0)

    def _warm_open_documents(self) -> None:
        """Documents opened while the model was loading were not warmed: warm the latest one now."""
        for uri, doc in list(self.server.workspace.text_documents.items()):
            self._warm_queue.put((uri, len(doc.source)))

    def on_edit(self, uri: str, changes: list) -> None:
        self._forget_cut_before(uri, changes)
        doc = self.server.workspace.text_documents.get(uri)
        if doc is None or not changes:
            return
        last = changes[-1]
        rng = getattr(last, "range", None)
        if rng is None:
            return
        try:
            offset = to_offset(doc.source, rng.start.line, rng.start.character) + len(last.text)
        except ValueError:
            return
        self._recent.add(uri, doc.source, offset)
        self._warm_queue.put((uri, offset))

    def on_close(self, uri: str) -> None:
        self._recent.forget(uri)
        self._cuts.pop(uri, None)
        for key in [k for k in self._typed if k[0] == uri]:
            del self._typed[key]
        event = self._inflight.pop(uri, None)
        if event is not None:
            event.set()

    def on_settings(self) -> None:
        self._typed.clear()

    def _warm_loop(self) -> None:
        """Prefill the KV cache where the user is typing, at low priority (latest position wins)."""
        while True:
            uri, offset = self._warm_queue.get()
            time.sleep(0.1)  # debounce: a burst of keystrokes warms once, at its end
            while not self._warm_queue.empty():
                uri, offset = self._warm_queue.get_nowait()
            engine = self.server.model.ready()
            doc = self.server.workspace.text_documents.get(uri)
            if engine is None or doc is None or self._inflight:
                continue
            text = doc.source
            if len(text) > MAX_DOCUMENT_CHARS or not self.server.settings.language_enabled(doc.language_id):
                continue
            self._warm_cancel.clear()
            try:
                prompts = warm_prompts(engine, self.server.settings, uri, doc.language_id, text,
                                       min(offset, len(text)), self._snippets(engine, uri, doc.language_id),
                                       keep_start=self._kept_cut(uri))
                if prompts:
                    self._remember_cut(uri, text, prompts[0])
                for prompt in prompts:
                    if self._warm_cancel.is_set():
                        break
                    engine.prefill(prompt.prompt, max_new_tokens=prompt.max_tokens, cancel=self._warm_cancel)
            except Exception:  # warming is best effort; a real request reports real errors
                log.debug("warming failed", exc_info=True)


def build_prompt(engine: Engine, settings: Settings, uri: str, language_id: str | None, text: str, offset: int,
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
    prefix, lead = heal(prefix)
    if not prefix.strip() and not engine.supports_fim:
        return None
    max_tokens = settings.max_tokens_multi_line if ctx.multiline else settings.max_tokens_single_line
    prompt: str | FimParts = prefix
    if engine.supports_fim:
        prompt = FimParts(prefix, ctx.suffix, files=files, path=PurePosixPath(uri_path(uri)).name)
    return Prompt(ctx, prompt, lead, max_tokens)


def other_files(extra: Sequence[str], comment: str) -> tuple[tuple[str, str], ...]:
    """The context's labelled snippets (a "<comment> name" line, then code) as (name, code) pairs."""
    files = []
    for item in extra:
        label, _, code = item.partition("\n")
        name = label[len(comment):].strip() if label.startswith(comment) else label.strip()
        files.append((name, code))
    return tuple(files)


def warm_prompts(engine: Engine, settings: Settings, uri: str, language_id: str | None, text: str, offset: int,
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


def run_completion(engine: Engine, prompt: Prompt, temperature: float = 0.0,
                   cancel: threading.Event | None = None,
                   budget_ms: float | None = None) -> tuple[str | None, Completion | None]:
    """Generate with the streaming stop rule, then post-process: (suggestion or None, raw completion).
    Decoding stops `budget_ms` after the first token; then only whole lines are kept (none: nothing)."""
    rule = stop_rule(prompt.ctx)
    try:
        completion = engine.complete(prompt.prompt, max_new_tokens=prompt.max_tokens, cancel=cancel,
                                     temperature=temperature, stop_rule=lambda t: rule(_heal(t, prompt.lead)),
                                     max_decode_ms=budget_ms)
    except InferenceError as exc:
        log.info("no completion: %s", exc)
        return None, None
    if completion.finish_reason == "cancel":
        return None, completion
    text = _heal(completion.text, prompt.lead)
    if completion.finish_reason == "budget":
        text = whole_lines(text)
    return postprocess(text, prompt.ctx), completion


def whole_lines(text: str) -> str:
    """The lines of an answer cut short that are complete: a half-written line is more often wrong than
    right, and the user would have to read it to know."""
    code = len(text) - len(text.lstrip("\n"))
    end = text.rfind("\n", code)
    return text[:end] if end > 0 else ""


def _starts_a_line(text: str) -> bool:
    """Indentation (a tab, or two blanks or more) followed by code, not by a comment."""
    code = text.lstrip(" \t")
    blanks = text[:len(text) - len(code)]
    return ("\t" in blanks or len(blanks) >= 2) and bool(code) and not code.startswith(("#", "//", "\n"))


def _snippet_literal(text: str) -> str:
    """Escape text so that a snippet inserts it as is."""
    return text.replace("\\", "\\\\").replace("$", "\\$").replace("}", "\\}")


def heal(prefix: str) -> tuple[str, str]:
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


def _heal(text: str, lead: str) -> str:
    """Remove from the model's answer the line break and indentation the prompt had cut (see token
    healing). An answer that starts with indentation and code began the new line itself, without the
    break (FIM models do: Qwen2.5-Coder answers a hole at a line start this way, and dropping that line
    threw the right answer away). Any other text the model appends to the line before the cursor (a
    trailing comment, more of that line) cannot be shown there: it goes."""
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
