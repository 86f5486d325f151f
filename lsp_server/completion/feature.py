"""Inline completion: position → context → prompt → engine → post-processing → ghost text.

What makes it feel fast on a CPU: a newer request for a document cancels the one in flight, text the
user types that the last suggestion predicted is answered from that suggestion (trimmed, not
regenerated), the engine's KV cache is warmed where the user is typing before they ask, and keystrokes
extend the prompt computed where typing began (`Anchor`) instead of recomputing the code after the cursor.

While typing the answer is one suggestion; an explicit request (InlineCompletionTriggerKind.Invoked:
a trigger key, or cycling with Alt+]) gets up to `suggestions` different ones, the greedy one first, and
waits for a model still loading. Clients that opt in (`capabilities.experimental`) hear two small
notifications, documented in editors/README.md: `infill/pending` while suggestions are being written,
and `infill/refreshInlineCompletion` once a model is ready for documents that asked before it was; and a
client may say where its cursor rests (`infill/didMoveCursor`), which is warmed like a typing position.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from lsprotocol import types

from inference import Backend
from lsp_server.completion.context import RecentSnippets, uri_path
from lsp_server.completion.prompt import Anchor, Prompt, build_prompt, run_completion, typed_since, warm_prompts
from lsp_server.config import Settings
from lsp_server.feature import Feature
from lsp_server.languages import comment_prefix
from lsp_server.positions import encodable, to_offset, to_position

log = logging.getLogger(__name__)

MAX_DOCUMENT_CHARS = 2_000_000  # larger documents (logs, minified bundles, data) get no suggestion
TYPED_THROUGH_ENTRIES = 32
ALTERNATIVE_TRIES = 2  # first-token ranks tried per alternative wanted (some end up blank or equal to another)
PENDING_NOTIFICATION = "infill/pending"  # {"pending": n}: suggestions being written now
PENDING_CAPABILITY = "infillPending"
REFRESH_NOTIFICATION = "infill/refreshInlineCompletion"  # {"uris": [...]}: ask again, a model is ready
REFRESH_CAPABILITY = "infillRefresh"
# From the client: {"textDocument": {"uri"}, "position"} where the cursor came to rest (a click, a jump, another
# editor focused). LSP tells a server where the user types, never where they look; without it the first
# request at a new place computes its whole prompt (1.5-1.9 s for 700 tokens on 2 cores).
CURSOR_NOTIFICATION = "infill/didMoveCursor"
# Warm the cache once the keystrokes pause this long: longer than the pause after which the editor asks
# itself (the VS Code extension's `debounceMs`, 75), so warming never starts mid-burst for a position the
# user is already past. A prefill chunk cannot be interrupted: the request would wait for stale work.
WARM_PAUSE_S = 0.1
# A request extends the prompt computed where typing began (`Anchor`) while at most this much was typed since
# (~60 tokens, within the engine's TYPING_ROOM); a warm-up takes a new one once a line is finished.
MIDDLE_MAX_CHARS = 256


@dataclass
class Suggestion:
    """Finished suggestions and the document around them, for the typed-through cache."""

    uri: str
    before: str  # document text before the cursor
    after: str  # document text after the cursor
    texts: list[str]  # the greedy one first
    asked: int  # how many were asked for (an answer for one has no alternatives to offer)


class CompletionFeature(Feature):
    """Inline completion and its `textDocument/completion` fallback."""

    def __init__(self, server) -> None:
        super().__init__(server)
        self._inflight: dict[str, threading.Event] = {}
        self._typed: OrderedDict[tuple[str, str], Suggestion] = OrderedDict()
        self._cuts: dict[str, tuple[int, int]] = {}  # uri -> (offset, line) where its last cut prefix started
        self._anchors: dict[str, Anchor] = {}  # uri -> the prompt computed where typing began
        self._aheads: dict[str, tuple[Anchor, list[Prompt]]] = {}  # uri -> its anchor's `_ahead` not yet warmed
        self._recent = RecentSnippets()
        self._warm_queue: queue.Queue[tuple[str, int]] = queue.Queue()
        self._warm_cancel = threading.Event()
        self._pending = 0
        self._missed: set[str] = set()  # documents answered empty because no model was ready
        self.stats = {"requests": 0, "typed_through": 0, "generated": 0, "reuse_hits": 0, "reused_tokens": 0,
                      "prompt_tokens": 0, "generated_tokens": 0, "alternatives": 0, "first_token_ms": 0.0,
                      "generation_ms": 0.0, "warmed": 0, "anchored": 0}
        # warmed: positions whose prompts were all prefilled; anchored: generations that extended an Anchor
        threading.Thread(target=self._warm_loop, name="infill-warm", daemon=True).start()
        server.model.on_ready(lambda _engine: self._on_model_ready())

    def register(self) -> None:
        server = self.server

        @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
        async def inline_completion(ls, params: types.InlineCompletionParams) -> types.InlineCompletionList:
            invoked = params.context is not None and \
                params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
            texts = await self.suggest(params.text_document.uri, params.position,
                                       count=self.server.settings.suggestions if invoked else 1, wait=invoked)
            pos = params.position
            return types.InlineCompletionList(items=[
                types.InlineCompletionItem(insert_text=text, range=types.Range(start=pos, end=pos)) for text in texts])

        @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                        types.CompletionOptions(trigger_characters=[".", "(", " "]))
        async def completion(ls, params: types.CompletionParams) -> types.CompletionList:
            if self.client.inline_completion:  # the ghost text already shows it
                return types.CompletionList(is_incomplete=True, items=[])
            return await self._completion_items(params)

        @server.feature(CURSOR_NOTIFICATION)
        def cursor_moved(ls, params) -> None:
            target = cursor_target(params)
            if target is not None:
                self.on_cursor(*target)

        @server.feature("infill/stats")
        def stats(ls, params) -> dict:
            """Counters for benchmarks and `:InfillStatus` (not part of LSP)."""
            return dict(self.stats)

    def _document(self, uri: str):
        """The open document for a URI (pygls keys them unquoted: "my%20file.py" is "my file.py")."""
        return self.server.workspace.text_documents.get(unquote(uri))

    # ---------------------------------------------------------------------------------- requests
    async def suggest(self, uri: str, position: types.Position, count: int = 1, wait: bool = False) -> list[str]:
        """Up to `count` different suggestions at a position, the greedy one first (none: an empty list).
        `wait`: an explicit request waits for a model still loading. Never raises for bad input."""
        self.stats["requests"] += 1
        doc = self._document(uri)
        if doc is None or not self.server.settings.language_enabled(doc.language_id):
            return []
        text = encodable(doc.source)
        if len(text) > MAX_DOCUMENT_CHARS or "\x00" in text:
            return []
        try:
            offset = to_offset(text, position.line, position.character)
        except ValueError:
            return []
        typed = self._typed_through(uri, text, offset, count)
        if typed:  # the user typed what we predicted (or asked again): no need to generate
            self.stats["typed_through"] += 1
            return typed[:count]
        previous = self._inflight.pop(uri, None)
        if previous is not None:
            previous.set()  # a newer request for this document: the old one is stale
        cancel = threading.Event()
        self._inflight[uri] = cancel
        self._set_pending(+1)
        try:
            engine = self.server.model.ready()
            if engine is None and wait:
                engine = await self.server.model.until_ready()
                doc = self.server.workspace.text_documents.get(uri)
                if doc is None or doc.source != text:  # changed while waiting: a newer request comes
                    return []
            if engine is None or cancel.is_set():
                if engine is None:
                    self._missed.add(uri)
                return []
            self._warm_cancel.set()
            result = await self.off_loop(self._generate, engine, doc.uri, doc.language_id, text, offset, count,
                                         cancel)
        except asyncio.CancelledError:  # $/cancelRequest: stop the engine between two tokens
            cancel.set()
            raise
        finally:
            self._set_pending(-1)
            if self._inflight.get(uri) is cancel:
                del self._inflight[uri]
        if not result or cancel.is_set():
            return []
        self._remember(Suggestion(uri, text[:offset], text[offset:], result, count))
        return result

    def _generate(self, engine: Backend, uri: str, language_id: str | None, text: str, offset: int, count: int,
                  cancel: threading.Event) -> list[str]:
        start = time.perf_counter()
        snippets = self._snippets(engine, uri, language_id)
        prompt = build_prompt(engine, self.server.settings, uri, language_id, text, offset, snippets,
                              keep_start=self._kept_cut(uri))
        if prompt is None:
            return []
        anchored = self._anchored(engine, uri, text, offset, prompt)
        if anchored is not None:
            prompt = anchored
            self.stats["anchored"] += 1
        else:
            fresh = fresh_layout(engine, self.server.settings, uri, language_id, text, offset, prompt, snippets,
                                 keep_start=self._kept_cut(uri))
            if fresh is not None:
                self._keep_anchor(uri, fresh[0])
                prompt = fresh[1]
        context_ms = (time.perf_counter() - start) * 1000
        settings = self.server.settings
        suggestion, completion = run_completion(engine, prompt, settings.temperature, cancel,
                                                budget_ms=settings.latency_budget_ms)
        if completion is not None:
            log.info("completion: context %.0f ms; %d prompt tokens (%d reused), %d generated (%d drafted, %d kept), "
                     "first token %.0f ms, total %.0f ms, %s, %s", context_ms, completion.prompt_tokens,
                     completion.reused_tokens, completion.generated_tokens, completion.drafted_tokens,
                     completion.accepted_tokens, completion.ttft_ms, completion.total_ms, completion.finish_reason,
                     "multi-line" if prompt.ctx.multiline else "single-line")
            self.stats["generated"] += 1
            self.stats["reuse_hits"] += 0 < completion.prompt_tokens <= 2 * completion.reused_tokens  # 0: unknown
            self.stats["reused_tokens"] += completion.reused_tokens
            self.stats["prompt_tokens"] += completion.prompt_tokens
            self.stats["generated_tokens"] += completion.generated_tokens
            self.stats["first_token_ms"] += completion.ttft_ms  # prompt work: what a keystroke's change costs
            self.stats["generation_ms"] += completion.total_ms
        texts = [suggestion] if suggestion else []
        if count > 1 and completion is not None and completion.finish_reason != "cancel":
            texts += self._alternatives(engine, prompt, count - len(texts), set(texts), cancel)
        return texts

    def _alternatives(self, engine: Backend, prompt: Prompt, wanted: int, seen: set[str],
                      cancel: threading.Event) -> list[str]:
        """Suggestions that start with the next likeliest first tokens, through the same post-processing,
        each different from the others. The prompt is in the KV cache already: each costs its decoding."""
        found: list[str] = []
        for rank in range(1, wanted * ALTERNATIVE_TRIES + 1):
            if len(found) >= wanted or cancel.is_set():
                break
            start = time.perf_counter()
            text, completion = run_completion(engine, prompt, 0.0, cancel,
                                              budget_ms=self.server.settings.latency_budget_ms, first_token_rank=rank)
            self.stats["alternatives"] += 1
            log.info("alternative %d: %s in %.0f ms", rank, "kept" if text and text not in seen else
                     "blank" if not text else "a duplicate", (time.perf_counter() - start) * 1000)
            if text and text not in seen:
                seen.add(text)
                found.append(text)
        return found

    async def _completion_items(self, params: types.CompletionParams) -> types.CompletionList:
        """Fallback for clients without inline completion: the suggestion as one completion item."""
        texts = await self.suggest(params.text_document.uri, params.position)
        text = texts[0] if texts else None
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
    def _typed_through(self, uri: str, text: str, offset: int, count: int = 1) -> list[str]:
        """If the user typed the start of the last suggestions here, the rest of those that match (empty when
        none does, or when more are wanted than that answer was asked for). Closers the editor inserted as
        the user typed are in the document already: the rest ends before them."""
        for suggestion in reversed(self._typed.values()):
            found = typed_since(suggestion.before, suggestion.after, text, offset) if suggestion.uri == uri else None
            if found is None:
                continue
            rest = remaining(suggestion.texts, *found)
            if rest and (count <= 1 or suggestion.asked >= count):
                return rest
        return []

    def _remember(self, suggestion: Suggestion) -> None:
        key = (suggestion.uri, suggestion.before[-200:])
        self._typed[key] = suggestion
        self._typed.move_to_end(key)
        while len(self._typed) > TYPED_THROUGH_ENTRIES:
            self._typed.popitem(last=False)

    # ------------------------------------------------------------------------------------ anchors
    def _typed_at_anchor(self, engine: Backend, uri: str, text: str, offset: int,
                         within_line: bool = False) -> tuple[Anchor, str] | None:
        """The document's anchor and what was typed at it since, when its prompt can be extended that far:
        typing there is the only change, not too much of it (for a warm-up, not past a line: a finished line
        is worth a prompt laid out afresh), and the backend heals a middle that ends mid-word or it ends
        in a blank."""
        anchor = self._anchors.get(uri)
        typed = anchor.typed(text, offset) if anchor is not None else None
        if anchor is None or typed is None or not extendable(typed, engine) or (within_line and "\n" in typed):
            return None
        return anchor, typed

    def _anchored(self, engine: Backend, uri: str, text: str, offset: int, here: Prompt) -> Prompt | None:
        """`here` as an extension of the document's anchor (None: lay it out afresh)."""
        found = self._typed_at_anchor(engine, uri, text, offset)
        return found[0].extend(found[1], here) if found is not None else None

    def _keep_anchor(self, uri: str, anchor: Anchor) -> None:
        """`anchor`'s prompt is what the engine computes next for the document: typing at it extends it."""
        self._remember_cut(uri, anchor.before, anchor.prompt)  # the cut lies in the text before the anchor
        self._anchors[uri] = anchor


    def _warm_prompts(self, engine: Backend, uri: str, language_id: str | None, text: str,
                      offset: int) -> list[Prompt]:
        """What to prefill for a position: the anchor extended by what was typed on its line, or else the
        prompts laid out afresh from the start of the line (the first becomes the anchor), extended to it."""
        found = self._typed_at_anchor(engine, uri, text, offset, within_line=True)
        extended = found[0].extend(found[1]) if found is not None else None
        if found is not None and extended is not None:
            return [extended, *self._ahead(engine, uri, language_id, found[0])]
        at = line_anchor(text, offset, engine)
        base_text = text[:at] + text[offset:]
        prompts = warm_prompts(engine, self.server.settings, uri, language_id, base_text, at,
                               self._snippets(engine, uri, language_id), keep_start=self._kept_cut(uri))
        if not prompts:
            return []
        anchor = Anchor(base_text[:at], base_text[at:], prompts[0])
        self._keep_anchor(uri, anchor)
        return [anchor.extend(text[at:offset]) or prompts[0], *prompts[1:]]

    def _ahead(self, engine: Backend, uri: str, language_id: str | None, anchor: Anchor) -> list[Prompt]:
        """The anchor's prompt as it will start once typing moves its cut on (`warm_prompts`), when it is cut.
        Warmed with every extension and after every request, not only with a fresh layout: a fast typist
        leaves no pause for that layout's warm-up, and the request at the step would compute the whole prompt
        (~470 tokens, 1.3-1.7 s on 2 cores). Computed once per cut (a preempted warm-up is continued, not
        restarted); each new anchor adds only the lines typed since the last."""
        known = self._aheads.get(uri)
        if known is not None and known[0] is anchor:  # built once per anchor (a parse, token counts)
            return known[1]
        ctx, prompts = anchor.prompt.ctx, []
        if ctx.prefix_cut:
            ahead = build_prompt(engine, self.server.settings, uri, language_id, anchor.before + anchor.after,
                                 len(anchor.before), self._snippets(engine, uri, language_id),
                                 ahead_of=ctx.prefix_start)
            prompts = [] if ahead is None or ahead.prompt == anchor.prompt.prompt else [ahead]
        self._aheads[uri] = (anchor, prompts)
        return prompts

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

    def on_cursor(self, uri: str, line: int, character: int) -> None:
        """The cursor rests at a position: warm the prompt there, so the first keystroke finds it cached."""
        doc = self._document(uri)
        if doc is None:
            return
        try:
            offset = to_offset(doc.source, line, character)
        except ValueError:
            return
        self._warm_queue.put((uri, offset))

    def on_close(self, uri: str) -> None:
        self._recent.forget(uri)
        self._cuts.pop(uri, None)
        self._anchors.pop(uri, None)
        self._aheads.pop(uri, None)
        for key in [k for k in self._typed if k[0] == uri]:
            del self._typed[key]
        event = self._inflight.pop(uri, None)
        if event is not None:
            event.set()

    def on_settings(self) -> None:
        self._typed.clear()
        self._anchors.clear()  # the prompts may be laid out otherwise now
        self._aheads.clear()

    # ------------------------------------------------------------------------ client notifications
    def _set_pending(self, delta: int) -> None:
        """Count suggestions being written and tell a client that shows it (a spinner, a "…")."""
        self._pending = max(0, self._pending + delta)
        if self.client.experimental(PENDING_CAPABILITY):
            self.server.protocol.notify(PENDING_NOTIFICATION, {"pending": self._pending})

    def _on_model_ready(self) -> None:
        """A model serves: warm the open documents, and have the client ask again where it got nothing."""
        self._anchors.clear()  # computed by another model, perhaps in another prompt format
        self._aheads.clear()
        self._warm_open_documents()
        missed, self._missed = sorted(self._missed), set()
        if missed and self.client.experimental(REFRESH_CAPABILITY):
            self.server.protocol.notify(REFRESH_NOTIFICATION, {"uris": missed})

    def _warm_loop(self) -> None:
        """Prefill the KV cache where the user is typing, at low priority (latest position wins)."""
        while True:
            uri, offset = latest_after_pause(self._warm_queue, WARM_PAUSE_S)
            asked = bool(self._inflight)  # a request computes this position: after it, only what is ahead
            while self._inflight and self._warm_queue.empty():
                time.sleep(0.01)
            engine = self.server.model.ready()
            doc = self._document(uri)
            if engine is None or doc is None or not self._warm_queue.empty():
                continue
            text = encodable(doc.source)
            if len(text) > MAX_DOCUMENT_CHARS or not self.server.settings.language_enabled(doc.language_id):
                continue
            self._warm_cancel.clear()
            try:
                anchor = self._anchors.get(uri)
                if asked:
                    prompts = self._ahead(engine, uri, doc.language_id, anchor) if anchor is not None else []
                else:
                    prompts = self._warm_prompts(engine, uri, doc.language_id, text, min(offset, len(text)))
                for prompt in prompts:
                    if self._warm_cancel.is_set():
                        break
                    engine.prefill(prompt.prompt, max_new_tokens=prompt.max_tokens, cancel=self._warm_cancel)
                if self._warm_cancel.is_set():  # a request came (and stopped or refused the warm-up): not done
                    continue
                self.stats["warmed"] += not asked  # positions warmed (what tests and benchmarks wait for)
                if anchor is not None and self._anchors.get(uri) is anchor:
                    self._aheads[uri] = (anchor, [])  # in the cache now: nothing more to warm for it
            except Exception:  # warming is best effort; a real request reports real errors
                log.debug("warming failed", exc_info=True)


def cursor_target(params: object) -> tuple[str, int, int] | None:
    """(uri, line, character) from an `infill/didMoveCursor` notification; None when it is malformed."""
    uri = getattr(getattr(params, "textDocument", None), "uri", None)
    position = getattr(params, "position", None)
    line, character = getattr(position, "line", None), getattr(position, "character", None)
    if not isinstance(uri, str) or type(line) is not int or type(character) is not int or min(line, character) < 0:
        return None  # `type(...) is int`: JSON's true/false arrive as bools, which are ints to isinstance
    return uri, line, character


def remaining(texts: list[str], typed: str, closers: str) -> list[str]:
    """What is left to show of suggestions once the user typed `typed` of them and the editor inserted
    `closers` after the cursor: each that starts with `typed` and ends with `closers` (accepting the rest then
    gives the text the whole suggestion would have), without them; none that is used up."""
    rest = (t[len(typed):] for t in texts if t.startswith(typed))
    return [r[:len(r) - len(closers)] for r in rest if r.endswith(closers) and len(r) > len(closers)]


def extendable(typed: str, engine: Backend) -> bool:
    """Whether a prompt can take `typed` as the start of its middle: not too much of it, and either the
    backend heals a middle that ends mid-word or it ends in a blank."""
    return len(typed) <= MIDDLE_MAX_CHARS and (not typed or typed[-1].isspace() or engine.heals_middle)


def line_anchor(text: str, offset: int, engine: Backend) -> int:
    """Where a prompt laid out afresh for `offset` is anchored: the start of the cursor's line, so that what
    the line holds before the cursor starts the middle, healed where it ends mid-word (lines typed in part
    pass more often this way than with a prefix that ends mid-line: fim_quality `--typed`); the cursor itself
    when the line's start is too far back, its text cannot be extended (`extendable`), or the model has no
    FIM (its prompt is the text before the cursor: no middle)."""
    start = text.rfind("\n", 0, offset) + 1
    typed = text[start:offset]
    return start if typed and engine.supports_fim and extendable(typed, engine) else offset


def fresh_layout(engine: Backend, settings: Settings, uri: str, language_id: str | None, text: str, offset: int,
                 here: Prompt, snippets: Sequence[str] = (), keep_start: int | None = None
                 ) -> tuple[Anchor, Prompt] | None:
    """A prompt laid out afresh for `offset`: the anchor at the start of its line (`line_anchor`), to keep for
    the keystrokes that follow, and that anchor extended by what the line holds before the cursor, read back
    with `here`'s context (the prompt built at the cursor). None when no prompt fits at the line's start.
    The server's requests and fim_quality's `--anchored` share it, so the benchmark measures what runs."""
    at = line_anchor(text, offset, engine)
    base_text = text[:at] + text[offset:]
    base = here if at == offset else build_prompt(engine, settings, uri, language_id, base_text, at, snippets,
                                                  keep_start=keep_start)
    if base is None:
        return None
    anchor = Anchor(base_text[:at], base_text[at:], base)
    return anchor, anchor.extend(text[at:offset], here) or here


def latest_after_pause(items: queue.Queue, pause: float):
    """The newest item once none has arrived for `pause` seconds (blocks until there is one): a burst of
    keystrokes yields its last position, and only after the burst ends."""
    item = items.get()
    while True:
        try:
            item = items.get(timeout=pause)
        except queue.Empty:
            return item


def _snippet_literal(text: str) -> str:
    """Escape text so that a snippet inserts it as is."""
    return text.replace("\\", "\\\\").replace("$", "\\$").replace("}", "\\}")
