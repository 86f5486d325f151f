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
from urllib.parse import unquote

from lsprotocol import types

from inference import Backend
from lsp_server.completion.context import RecentSnippets, uri_path
from lsp_server.completion.prompt import Prompt, build_prompt, run_completion, warm_prompts
from lsp_server.feature import Feature
from lsp_server.languages import comment_prefix
from lsp_server.positions import encodable, to_offset, to_position

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
                      "prompt_tokens": 0, "generated_tokens": 0}
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
            if self.client.inline_completion:  # the ghost text already shows it
                return types.CompletionList(is_incomplete=True, items=[])
            return await self._completion_items(params)

        @server.feature("infill/stats")
        def stats(ls, params) -> dict:
            """Counters for benchmarks and `:InfillStatus` (not part of LSP)."""
            return dict(self.stats)

    def _document(self, uri: str):
        """The open document for a URI (pygls keys them unquoted: "my%20file.py" is "my file.py")."""
        return self.server.workspace.text_documents.get(unquote(uri))

    # ---------------------------------------------------------------------------------- requests
    async def suggest(self, uri: str, position: types.Position) -> str | None:
        """The suggestion at a position, or None. Never raises for bad input."""
        self.stats["requests"] += 1
        doc = self._document(uri)
        if doc is None or not self.server.settings.language_enabled(doc.language_id):
            return None
        text = encodable(doc.source)
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
            result = await self.off_loop(self._generate, engine, doc.uri, doc.language_id, text, offset, cancel)
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

    def _generate(self, engine: Backend, uri: str, language_id: str | None, text: str, offset: int,
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
            self.stats["generated_tokens"] += completion.generated_tokens
        return suggestion

    async def _completion_items(self, params: types.CompletionParams) -> types.CompletionList:
        """Fallback for clients without inline completion: the suggestion as one completion item."""
        text = await self.suggest(params.text_document.uri, params.position)
        doc = self._document(params.text_document.uri)
        if not text or doc is None:
            return types.CompletionList(is_incomplete=True, items=[])
        source = encodable(doc.source)
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
        snippet = self.client.snippets
        item = types.CompletionItem(
            label=label, kind=types.CompletionItemKind.Text, detail="infill", filter_text=word + text,
            text_edit=types.TextEdit(range=types.Range(start=start, end=params.position),
                                     new_text=_snippet_literal(word + text) if snippet else word + text),
            insert_text_format=types.InsertTextFormat.Snippet if snippet else types.InsertTextFormat.PlainText,
            sort_text="0")
        return types.CompletionList(is_incomplete=True, items=[item])

    def _snippets(self, engine: Backend, uri: str, language_id: str | None) -> list[str]:
        """Code near recent edits in other documents (the same for a request and its warm-up)."""
        return self._recent.pick(engine.count_tokens, self.server.settings.other_documents_tokens,
                                 exclude_uri=uri, comment=comment_prefix(language_id, uri_path(uri)))

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
        doc = self._document(uri)
        if doc is not None:
            self._warm_queue.put((uri, len(doc.source)))  # no cursor yet: the whole text covers every position
            self._recent.add(uri, encodable(doc.source), 0)

    def _warm_open_documents(self) -> None:
        """Documents opened while the model was loading were not warmed: warm the latest one now."""
        for uri, doc in list(self.server.workspace.text_documents.items()):
            self._warm_queue.put((uri, len(doc.source)))

    def on_change(self, uri: str, changes: list[types.TextDocumentContentChangeEvent]) -> None:
        self._forget_cut_before(uri, changes)
        doc = self._document(uri)
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
        self._recent.add(uri, encodable(doc.source), offset)
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
            doc = self._document(uri)
            if engine is None or doc is None or self._inflight:
                continue
            text = encodable(doc.source)
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


def _snippet_literal(text: str) -> str:
    """Escape text so that a snippet inserts it as is."""
    return text.replace("\\", "\\\\").replace("$", "\\$").replace("}", "\\}")
