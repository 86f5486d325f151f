"""The generation engine: onnxruntime-genai with KV caches kept between calls.

Consecutive keystrokes share almost all of their prompt, so the engine keeps a few generators alive
(LRU "slots"), each remembering the tokens its KV cache holds. A new prompt goes to the slot sharing its
longest token prefix, which is rewound to that prefix; only the new tail is computed. The decode loop is
ours (logits → token → append), so greedy, temperature sampling and per-step stop rules need no
per-request generator parameters, and a cancel is honoured between any two tokens. Greedy decoding
feeds each chosen token together with a prompt-lookup draft (`inference.lookup`) and keeps the drafted
tokens the model agrees with: the same tokens in fewer forward passes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime_genai as og

from inference import memory
from inference.backend import Cancel, Completion, GenerationStats, ModelInfo, Prompt, StopRule, StreamCut, over_budget
from inference.errors import InferenceError
from inference.lookup import DraftLength, draft
from inference.registry import FimParts
from inference.sources import PreparedModel, prepare
from inference.tokenizer import load_decoder, read_chat_template, render_chat

TokenRule = Callable[[int, np.ndarray], bool]
TYPING_ROOM = 96  # tokens a cache slot keeps spare for what is typed after its prompt (~400 characters)
HEAL_CANDIDATES = 64  # the likeliest tokens searched for one that agrees with a middle's taken-back last token
PREFILL_CHUNK = 64  # tokens per forward pass while prefilling, so a cancel or a preemption lands quickly
WARM_CHUNK = 32  # a warm-up's passes are shorter: a request that preempts one waits for the pass running (~90 ms)
# A warm-up's last pass computes this many tokens (0: no split). onnxruntime-genai keeps the last pass's logits,
# padded to one row per token fed (64 x 151,936 x 4 B = 39 MB for a full chunk of the default model), until
# the slot's next pass; three warmed slots kept up to ~115 MB. A request replaces them at its first decode step.
WARM_LAST_PASS = 1
# ONNX Runtime session options for a graph that gathers its input embeddings from the 4-bit output table
# it shares with the output projection (GatherBlockQuantized: what the export of a tied model makes). Constant
# folding copied that table (a Reshape of the shared weight, 65 MB for Qwen2.5-Coder-0.5B) into memory of its
# own; unfolded, the Reshape is a view of the mapped weight file, whose untouched rows `memory.page_out` leaves
# on disk. Laid over genai_config.json when the engine loads (the cached export is never rewritten); measured
# in benchmarks/results/memory-2026-12-02.md.
TIED_TABLE_OPTIONS: dict[str, object] = {"optimization.constant_folding_max_output_size_in_bytes": str(16 * 2**20)}
GRAPH_SCAN_LIMIT = 64 * 2**20  # a graph file bigger than this holds its weights: not read just to look at it

@dataclass
class _Slot:
    generator: og.Generator
    capacity: int  # tokens its KV buffers hold (prompt + generation must fit)
    tokens: list[int] = field(default_factory=list)  # exactly what the KV cache holds
    last_used: float = 0.0


def choose_device(requested: str = "auto") -> tuple[str, str]:
    """Pick cpu or cuda, and say why (for `infill doctor` and `model info`)."""
    cuda_ok = False
    try:
        cuda_ok = bool(og.is_cuda_available())
    except Exception:  # older/CPU builds may not expose the probe
        cuda_ok = False
    if requested == "cpu":
        return "cpu", "requested"
    if requested == "cuda":
        if not cuda_ok:
            raise InferenceError("device 'cuda' requested but this onnxruntime-genai build has no CUDA; "
                                 "install `infill-lsp[gpu]` on a machine with an NVIDIA GPU, or use device 'cpu'")
        return "cuda", "requested"
    if cuda_ok:
        return "cuda", "onnxruntime-genai-cuda and a GPU are present"
    return "cpu", "no CUDA build of onnxruntime-genai or no GPU found"


class Engine:
    """A loaded model: tokenizer, prompt conventions, and a thread-safe generate with prefix reuse."""

    def __init__(self, prepared: PreparedModel, *, device: str = "auto", max_length: int = 2048,
                 cache_slots: int = 3, slot_tokens: int = 1024, session_options: dict | None = None) -> None:
        """`session_options` replaces the ones chosen for this export (`memory_options`), to measure others."""
        self.prepared = prepared
        self.family = prepared.family
        self.device, reason = choose_device(device)
        config = og.Config(str(prepared.onnx_dir))
        config.clear_providers()
        if self.device == "cuda":
            config.append_provider("cuda")
        options = memory_options(prepared.onnx_dir) if session_options is None else session_options
        if options:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self._open(prepared.onnx_dir, config)
        genai = json.loads((prepared.onnx_dir / "genai_config.json").read_text())["model"]
        self.context_length = int(genai.get("context_length", max_length))
        self.max_length = min(max_length, self.context_length)
        self._cache_slots = max(1, cache_slots)
        # KV buffers are allocated whole when a generator is made (94 MB at 2,048 tokens for the default
        # model), so each slot gets a multiple of slot_tokens that fits its request, not max_length.
        self._slot_tokens = max(1, min(slot_tokens, self.max_length))
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self._preempt = threading.Event()
        self._chat_template = read_chat_template(prepared.onnx_dir)
        self._eos_ids = self._stop_token_ids(genai)
        self._repo_context = bool(self.family.repo_tokens) and all(
            self._is_special(t) for t in self.family.repo_tokens or ())
        self._lookup = True  # turned off for good if the graph cannot return logits for several positions
        self.info = ModelInfo(
            name=prepared.name, source=prepared.source, family=self.family.name, fim=self.family.supports_fim,
            instruct=self._chat_template is not None, device=self.device, device_reason=reason,
            precision=prepared.precision, reason=prepared.reason, path=str(prepared.onnx_dir),
            size_mb=round(sum(p.stat().st_size for p in prepared.onnx_dir.iterdir() if p.is_file()) / 2**20, 1),
            context_length=self.context_length,
        )

    def _open(self, onnx_dir: Path, config: og.Config) -> None:
        """Decoder, session and tokenizer, the smallest load peak first; what each load frees is given back
        before the next one starts, so their peaks do not stack (benchmarks/results/memory-2026-12-02.md)."""
        self._decoder = load_decoder(onnx_dir)
        memory.trim_heap()
        try:
            self._model = og.Model(config)
            memory.trim_heap()
            memory.page_out(onnx_dir)  # weight-file pages read while loading, most of them never again
            self._tokenizer = og.Tokenizer(self._model)
        except Exception as exc:
            raise InferenceError(f"cannot load the ONNX model in {onnx_dir}: {exc}; "
                                 "delete that folder to rebuild it") from None
        memory.trim_heap()

    @classmethod
    def load(cls, model: str | None = None, *, family: str | None = None, device: str = "auto",
             precision: str | None = None, progress: Callable[[str, float | None], None] | None = None,
             **kwargs) -> Engine:
        """Prepare (convert on first use) and load a model: a catalogue name, a .gguf file, a Hugging Face or
        ONNX folder; `None` is the best installed catalogue model for the device."""
        device_kind, _ = choose_device(device)
        prepared = prepare(model, family=family, precision=precision, device=device_kind, progress=progress)
        if progress:
            progress(f"loading {prepared.name}", 0.97)
        return cls(prepared, device=device, **kwargs)

    # ----------------------------------------------------------------------------------------- text
    @property
    def supports_fim(self) -> bool:
        return self.family.supports_fim

    @property
    def heals_middle(self) -> bool:
        return self.family.supports_fim

    @property
    def supports_repo_context(self) -> bool:
        """Whether FIM prompts can carry other files in the family's repository format: the family has
        one and this tokenizer spells its markers as single special tokens (checked, not assumed)."""
        return self._repo_context

    @property
    def is_instruct(self) -> bool:
        return self._chat_template is not None

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text)] if text else []

    def decode(self, ids: Sequence[int]) -> str:
        if not len(ids):
            return ""
        if self._decoder is not None:
            return self._decoder.decode([int(i) for i in ids], skip_special_tokens=True)
        return self._tokenizer.decode(np.asarray(ids, dtype=np.int32))

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def chat_prompt(self, messages: list[dict]) -> str:
        """The model's chat template applied to messages, ending where the assistant starts."""
        return render_chat(self._chat_template, messages, self.info.name)

    def render(self, prompt: Prompt, max_new_tokens: int) -> list[int]:
        """Token ids of a prompt, cut at its far ends (start of the prefix, end of a FIM suffix) to fit the context."""
        budget = self.max_length - max_new_tokens - 1
        if budget < 1:
            raise InferenceError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt "
                                 f"in a {self.max_length}-token context")
        if isinstance(prompt, FimParts):
            if prompt.files and not self._repo_context:
                prompt = replace(prompt, files=())
            ids = self.encode(self.family.render(prompt))
            if len(ids) > budget:
                ids = self._fit_fim(prompt, budget, len(ids))
        else:
            ids = self.encode(prompt)[-budget:]
        if not ids:
            raise InferenceError("empty prompt: give the model some text to continue")
        return ids

    def _fit_fim(self, parts: FimParts, budget: int, total: int) -> list[int]:
        """Cut a FIM prompt to `budget` tokens at its far ends: the start of the prefix and the end of the
        suffix, never the template's own tokens. The suffix keeps at most a quarter of the room while the
        prefix needs the rest (the code just before the cursor matters most)."""
        prefix_ids, suffix_ids = self.encode(parts.prefix), self.encode(parts.suffix)
        room = max(0, budget - max(0, total - len(prefix_ids) - len(suffix_ids)))  # what the template leaves
        keep_suffix = min(len(suffix_ids), max(room // 4, room - len(prefix_ids)))
        keep_prefix = min(len(prefix_ids), room - keep_suffix)
        for _ in range(8):  # re-encoding the cut text can merge or split a token at a cut: shave and retry
            prefix = self.decode(prefix_ids[len(prefix_ids) - keep_prefix:]) if keep_prefix > 0 else ""
            ids = self.encode(self.family.render(replace(parts, prefix=prefix,
                                                         suffix=self.decode(suffix_ids[:keep_suffix]))))
            over = len(ids) - budget
            if over <= 0:
                return ids
            if keep_prefix > over + 1:
                keep_prefix -= over + 1
            else:
                keep_prefix, keep_suffix = 0, max(0, keep_suffix - over - 1)
        raise InferenceError(f"the FIM template alone does not fit in {budget} tokens; lower max_new_tokens")

    # ------------------------------------------------------------------------------------ generate
    def generate(self, prompt: Prompt, *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 stop_rule: StopRule | None = None, token_rule: TokenRule | None = None,
                 temperature: float = 0.0, cancel: Cancel | None = None,
                 seed: int | None = None, lookup: bool = True, max_decode_ms: float | None = None,
                 stats: GenerationStats | None = None, first_token_rank: int = 0) -> Generator[str, None, None]:
        """Stream text deltas. Stops at a stop string (cut before it), when `stop_rule(text so far)` or
        `token_rule(token, logits)` says so, at EOS or a family stop token, after `max_new_tokens`, when
        `cancel` is set, or `max_decode_ms` after the first token (finish reason "budget": a latency budget
        bounds decoding, the one cost that grows with the answer). Greedy unless `temperature` > 0. Greedy
        decoding verifies prompt-lookup drafts (`lookup`), which changes how many forward passes it takes;
        the tokens are the same at fp32, and at int4 (int8 activations round a multi-row pass a little
        differently) differ only where two candidates are nearly tied. `first_token_rank` > 0 makes the first
        token the rank-th likeliest one that is not an end of text (0 is the likeliest): alternatives to the
        greedy answer that reuse its cached prompt and cost only their own decoding."""
        stats = stats if stats is not None else GenerationStats()
        ids, heal = self._heal_middle(prompt, self.render(prompt, max_new_tokens))
        rng = np.random.default_rng(seed)
        cut = StreamCut(stop, stop_rule)
        start = time.perf_counter()
        self._preempt.set()  # a running prefill yields to us
        with self._lock:
            self._preempt.clear()
            need = len(ids) + max_new_tokens + 1
            slot = self._slot_for(ids, need)
            stats.prompt_tokens = len(ids)
            stats.reused_tokens = self._feed(slot, ids, cancel, need=need)
            if stats.reused_tokens < 0:
                stats.reused_tokens, stats.finish_reason = 0, "cancel"
                return
            stats.ttft_ms = (time.perf_counter() - start) * 1000
            drafts = DraftLength() if lookup and temperature <= 0 and self._lookup else None
            pending: list[tuple[int, np.ndarray]] = []  # drafted tokens the model agreed with, with their logits
            next_logits = slot.generator.get_logits()[0, -1]  # the model's logits for the next new token
            generated: list[int] = []
            text = ""
            healing = bool(heal)  # the answer has not written the taken-back text yet
            budget = over_budget(max_decode_ms, start, stats)

            def at_length() -> str | None:
                return "length" if len(generated) >= max_new_tokens else None

            while True:
                if cancel is not None and cancel.is_set():
                    stats.finish_reason = "cancel"
                    break
                fed = bool(pending)  # an agreed draft token is in the KV cache already
                if fed:
                    token, logits = pending.pop(0)
                else:
                    logits = next_logits
                    if healing:
                        token = self._agreeing(logits, generated, heal, 0 if generated else first_token_rank)
                    elif first_token_rank > 0 and not generated:
                        token = _ranked(logits, first_token_rank, self._eos_ids)
                    else:
                        token = _pick(logits, temperature, rng)
                if token in self._eos_ids:
                    stats.finish_reason = "eos"
                    if delta := cut.finish(text):  # what was held back for a stop string that never came
                        yield delta
                    break
                generated.append(token)
                if healing:
                    if len(self.decode(generated)) < len(heal):  # not written yet: nothing to show
                        if at_length():
                            stats.finish_reason = "length"
                            break
                        pending, next_logits = self._advance(slot, token, None, 0, stats)
                        continue
                    healing = False
                text = self.decode(generated)[len(heal):]
                delta, reason = cut.step(text, partial(_token_reason, token_rule, token, logits), at_length, budget)
                if reason is not None:
                    stats.finish_reason = reason
                if delta:
                    yield delta
                if reason is not None:
                    break
                if not fed:
                    room = max_new_tokens - len(generated) - 1
                    pending, next_logits = self._advance(slot, token, drafts, room, stats)
            stats.generated_tokens = len(generated)
            stats.total_ms = (time.perf_counter() - start) * 1000

    def _heal_middle(self, prompt: Prompt, ids: list[int]) -> tuple[list[int], str]:
        """Token healing for a prompt whose middle ends mid-word (`FimParts.middle`: typed text). Its last
        token is how the tokenizer split the *prompt*, not how the model writes: `e` where the model would
        write `enumerate` is a token it never saw followed by `numerate`. That token goes back, and the answer
        must begin with its text (`_agreeing`), which is not shown again. (A prefix that ends mid-word has
        the same problem and no cure here: the server puts the cursor line's text in the middle instead.)"""
        if not isinstance(prompt, FimParts) or not prompt.middle or prompt.middle[-1].isspace() or len(ids) < 2:
            return ids, ""
        text = self.decode(ids[-1:])
        if not text or not prompt.middle.endswith(text):  # a cut prompt, or a token that is not the middle's
            return ids, ""
        return ids[:-1], text

    def _agreeing(self, logits: np.ndarray, generated: list[int], heal: str, rank: int = 0) -> int:
        """The likeliest token (the rank-th, for alternatives) that keeps the answer in agreement with `heal`:
        the text so far and the token either start with it or are a start of it. Among the likeliest
        `HEAL_CANDIDATES`; failing those, the tokenizer's own next token of it."""
        written = self.decode(generated)
        k = min(HEAL_CANDIDATES, len(logits) - 1)
        order = np.argpartition(-logits, k)[:k]
        found = []
        for token in order[np.argsort(-logits[order], kind="stable")]:
            if int(token) in self._eos_ids:
                continue
            text = self.decode([*generated, int(token)])
            if len(text) > len(written) and (text.startswith(heal) or heal.startswith(text)):
                found.append(int(token))
                if len(found) > rank:
                    return found[rank]
        if found:
            return found[-1]
        return self.encode(heal[len(written):])[0]

    def _advance(self, slot: _Slot, token: int, drafts: DraftLength | None, room: int,
                 stats: GenerationStats) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
        """Feed the chosen token, plus a lookup draft when there is one, in one forward pass. Returns the
        drafted tokens the model's greedy choice agrees with (each with the logits that chose it) and the
        logits for the token after them; the KV cache keeps exactly the tokens fed and agreed with."""
        guess = draft(np.asarray(slot.tokens + [token]), min(drafts.current, room)) if drafts and room > 0 else []
        fed = [token, *guess]
        slot.generator.append_tokens(np.asarray(fed, dtype=np.int32))
        if not guess:
            slot.tokens.append(token)
            return [], slot.generator.get_logits()[0, -1]
        rows = slot.generator.get_output("logits")[0]
        if rows.shape[0] < len(fed):  # this graph returns the last position only: no drafts for it
            self._lookup = False
            slot.generator.rewind_to(len(slot.tokens))
            slot.generator.append_tokens(np.asarray([token], dtype=np.int32))
            slot.tokens.append(token)
            return [], slot.generator.get_logits()[0, -1]
        rows = rows[-len(fed):]
        assert drafts is not None  # a guess was drafted
        accepted = 0
        while accepted < len(guess) and int(np.argmax(rows[accepted])) == guess[accepted]:
            accepted += 1
        if accepted < len(guess):
            slot.generator.rewind_to(len(slot.tokens) + 1 + accepted)
        slot.tokens.extend(fed[:1 + accepted])
        drafts.update(len(guess), accepted)
        stats.drafted_tokens += len(guess)
        stats.accepted_tokens += accepted
        return [(guess[i], rows[i]) for i in range(accepted)], rows[accepted]

    def complete(self, prompt: Prompt, **kwargs) -> Completion:
        """Run `generate` to the end and return the whole text with timings."""
        stats = GenerationStats()
        return stats.completion("".join(self.generate(prompt, stats=stats, **kwargs)))

    def prefill(self, prompt: Prompt, *, max_new_tokens: int = 64,
                cancel: Cancel | None = None) -> int:
        """Warm a KV cache for a prompt the user is likely to ask about next. Low priority: it gives up
        between chunks as soon as a real request arrives. Returns the tokens computed."""
        try:
            ids = self.render(prompt, max_new_tokens)
        except InferenceError:
            return 0
        if not self._lock.acquire(timeout=0.05):  # busy with a real request: warming would only delay it
            return 0
        try:
            self._preempt.clear()
            need = len(ids) + max_new_tokens + 1
            slot = self._slot_for(ids, need)
            reused = self._feed(slot, ids, cancel, preemptible=True, need=need)
            return 0 if reused < 0 else len(ids) - reused
        finally:
            self._lock.release()

    def close(self) -> None:
        """Drop the KV caches; the ONNX session goes with the last reference to the engine."""
        with self._lock:
            self._slots.clear()

    def cached_prefixes(self) -> list[int]:
        """Lengths of the token prefixes currently cached (for tests and benchmarks)."""
        return [len(s.tokens) for s in self._slots]

    def slot_capacities(self) -> list[int]:
        """Tokens each cache slot's KV buffers hold (for tests and benchmarks)."""
        return [s.capacity for s in self._slots]

    # ------------------------------------------------------------------------------------ KV cache
    def _slot_for(self, ids: list[int], need: int) -> _Slot:
        """The slot sharing the longest prefix with `ids`; a fresh or evicted one if none shares much. A slot
        holding only a start of `ids` (a warm-up a request preempted) is continued, however short."""
        best, best_common = None, -1
        for slot in self._slots:
            common = _common_prefix(slot.tokens, ids)
            if common > best_common:
                best, best_common = slot, common
        shares = best is not None and (best_common >= len(ids) // 2 or 0 < best_common == len(best.tokens))
        if best is None or (not shares and len(self._slots) < self._cache_slots):
            capacity = self._capacity(need)
            best = _Slot(self._new_generator(capacity), capacity)
            self._slots.append(best)
        elif not shares:  # nothing shares much: recycle the least recently used
            best = min(self._slots, key=lambda s: s.last_used)
        best.last_used = time.monotonic()
        return best

    def _capacity(self, need: int) -> int:
        """The smallest multiple of slot_tokens holding `need` tokens and `TYPING_ROOM` more, at most
        max_length: a prompt typed on (`FimParts.middle`) grows past its first need, and a buffer too small
        for it would be recomputed from the start."""
        return min(self.max_length, -(-max(1, need + TYPING_ROOM) // self._slot_tokens) * self._slot_tokens)

    def _new_generator(self, capacity: int) -> og.Generator:
        params = og.GeneratorParams(self._model)
        params.set_search_options(max_length=capacity, do_sample=False)
        return og.Generator(self._model, params)

    def _feed(self, slot: _Slot, ids: list[int], cancel: Cancel | None, *, need: int,
              preemptible: bool = False) -> int:
        """Make `slot` hold exactly `ids` with logits for the last one, with room for `need` tokens in all.
        Returns the tokens reused, or -1 when cancelled/preempted midway (the slot then holds a valid
        shorter prefix)."""
        common = _common_prefix(slot.tokens, ids)
        common = min(common, len(ids) - 1)  # the last prompt token must be fed to get its logits
        if slot.capacity < need:  # too small for this request: the cache starts over in a bigger buffer
            common = 0
        if common == 0 and (slot.tokens or slot.capacity < need):
            # Nothing to keep: a buffer sized for this request (a big one is given back).
            slot.capacity = self._capacity(need)
            slot.generator = self._new_generator(slot.capacity)
        elif common < len(slot.tokens):
            slot.generator.rewind_to(common)
        del slot.tokens[common:]
        bounds = [*range(common, len(ids), WARM_CHUNK if preemptible else PREFILL_CHUNK), len(ids)]
        if preemptible and WARM_LAST_PASS and len(ids) - bounds[-2] > WARM_LAST_PASS:
            bounds.insert(-1, len(ids) - WARM_LAST_PASS)  # a warm-up keeps small logits (WARM_LAST_PASS)
        for start, end in zip(bounds, bounds[1:]):
            if (cancel is not None and cancel.is_set()) or (preemptible and self._preempt.is_set()):
                return -1
            chunk = ids[start:end]
            slot.generator.append_tokens(np.asarray(chunk, dtype=np.int32))
            slot.tokens.extend(chunk)
        return common

    def _stop_token_ids(self, genai: dict) -> set[int]:
        eos = genai.get("eos_token_id", [])
        ids = set(eos if isinstance(eos, list) else [eos])
        ids.update(self.encode(token)[0] for token in self.family.stop_tokens if self._is_special(token))
        return ids

    def _is_special(self, token: str) -> bool:
        """Whether this vocabulary spells `token` as one token of its own (a real special token). Asked of
        the vocabulary itself: decoders skip or garble special tokens, so decoding cannot tell."""
        encoded = self.encode(token)
        if len(encoded) != 1:
            return False
        if self._decoder is not None:
            return self._decoder.id_to_token(encoded[0]) == token
        return self._tokenizer.decode(np.asarray(encoded, dtype=np.int32)) == token


def memory_options(onnx_dir: Path) -> dict[str, object]:
    """The session options an export gets: `TIED_TABLE_OPTIONS` when its graph gathers from a shared 4-bit
    table, none otherwise (a cap on constant folding could cost another graph a per-pass recomputation)."""
    try:
        decoder = json.loads((onnx_dir / "genai_config.json").read_text())["model"]["decoder"]
        graph = onnx_dir / decoder.get("filename", "model.onnx")
        if graph.stat().st_size > GRAPH_SCAN_LIMIT:
            return {}
        return dict(TIED_TABLE_OPTIONS) if b"GatherBlockQuantized" in graph.read_bytes() else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _token_reason(rule: TokenRule | None, token: int, logits: np.ndarray) -> str | None:
    """`token_rule` as a `StreamCut.step` reason, bound to one token (asked only if no stop fired first)."""
    return "rule" if rule is not None and rule(token, logits) else None


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    p = np.exp(z)
    return int(rng.choice(len(p), p=p / p.sum()))


def _ranked(logits: np.ndarray, rank: int, skip: set[int]) -> int:
    """The rank-th likeliest token (0 = the likeliest) that is not in `skip`."""
    order = np.argpartition(-logits, min(len(logits) - 1, rank + len(skip)))[:rank + len(skip) + 1]
    order = order[np.argsort(-logits[order], kind="stable")]
    return int([t for t in order if int(t) not in skip][rank])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
