"""The one interface the features use to run a model, wherever it runs.

Completion, edit and warm-up talk to a `Backend`: the in-process ONNX engine (`inference.engine`) or a
serving engine a team already runs, reached over HTTP. Prompts are built on this side for every kind
(the FIM template comes from `inference.registry`), and stop strings and stop rules are applied here
too, by `StreamCut`, to the text as it streams, so a suggestion ends the same way whichever backend
wrote it. A backend that cannot apply a rule inside its own decode loop stops when the caller's
`cancel` is set or when the stream is closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from inference.registry import FimParts

StopRule = Callable[[str], bool]
Reason = Callable[[], str | None]  # a finish reason asked for only while no earlier one fired, e.g. a budget
Prompt = str | FimParts


class Cancel(Protocol):
    """Anything polled between tokens: a `threading.Event`, or several combined."""

    def is_set(self) -> bool: ...


@dataclass
class ModelInfo:
    """What `infill model info` prints."""

    name: str
    source: str
    family: str
    fim: bool
    instruct: bool
    device: str
    device_reason: str
    precision: str
    reason: str  # why this model: configured, or the best installed one
    path: str  # a folder for a local model, the URL for a remote one
    size_mb: float
    context_length: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Completion:
    """One finished generation, with the numbers the benchmarks and `--json` report."""

    text: str
    finish_reason: str  # stop | rule | eos | length | budget | cancel | error
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    ttft_ms: float
    total_ms: float
    drafted_tokens: int = 0  # prompt-lookup guesses fed to the model
    accepted_tokens: int = 0  # of those, the ones the model agreed with (each saved a forward pass)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationStats:
    """Filled in while a generation streams; read after it ends."""

    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens a cache already held (KV slot, or the server's prompt cache)
    generated_tokens: int = 0
    finish_reason: str = "length"
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    drafted_tokens: int = 0
    accepted_tokens: int = 0

    def completion(self, text: str) -> Completion:
        return Completion(text, self.finish_reason, self.prompt_tokens, self.reused_tokens,
                          self.generated_tokens, round(self.ttft_ms, 2), round(self.total_ms or self.ttft_ms, 2),
                          self.drafted_tokens, self.accepted_tokens)


class Backend(Protocol):
    """What completion, edit and warm-up need of a model."""

    info: ModelInfo
    max_length: int  # prompt + answer tokens one request may use

    @property
    def supports_fim(self) -> bool: ...

    @property
    def supports_repo_context(self) -> bool: ...

    @property
    def heals_middle(self) -> bool:
        """Whether a FIM prompt's typed middle (`FimParts.middle`) is answered as well as a prompt laid out
        afresh: its last token taken back when it ends mid-word (the engine's token healing)."""
        ...

    @property
    def is_instruct(self) -> bool: ...

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` (exact where the backend can tell, a close estimate where it cannot)."""
        ...

    def chat_prompt(self, messages: list[dict]) -> str:
        """The model's chat template applied to messages, ending where the assistant starts."""
        ...

    def generate(self, prompt: Prompt, *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 stop_rule: StopRule | None = None, temperature: float = 0.0, cancel: Cancel | None = None,
                 max_decode_ms: float | None = None, stats: GenerationStats | None = None,
                 first_token_rank: int = 0) -> Iterator[str]:
        """Stream text deltas, cut before a stop string or where `stop_rule(text so far)` fires; stop when
        `cancel` is set. `stats.finish_reason` says why it ended. `first_token_rank` > 0 starts the answer
        with the model's rank-th likeliest first token instead of its likeliest (then decodes as usual):
        the cheap way to several different suggestions for one prompt (0, the default, changes nothing)."""
        ...

    def complete(self, prompt: Prompt, **kwargs) -> Completion:
        """Run `generate` to the end; the whole text with timings."""
        ...

    def prefill(self, prompt: Prompt, *, max_new_tokens: int = 64, cancel: Cancel | None = None) -> int:
        """Warm the cache for a prompt the user is likely to ask about next; returns tokens computed
        (0 when the backend was busy or keeps no cache it can warm)."""
        ...

    def close(self) -> None:
        """Free what the backend holds (processes, connections); it is not used again."""
        ...


class StreamCut:
    """Stop strings and a stop rule applied to a growing answer, and how much of it is safe to stream.

    Text that could still become a stop string, or ends in half a character, is held back until the
    next token decides it. Every backend ends a suggestion through `step` and `finish`, so the same
    tokens give the same deltas and finish reason wherever they were decoded. A cancel is not a cut: a
    cancelled answer is abandoned, so its caller stops without asking for the rest.
    """

    def __init__(self, stop: Sequence[str] = (), stop_rule: StopRule | None = None) -> None:
        self._stops = tuple(s for s in stop if s)
        self._rule = stop_rule
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self.emitted = ""

    def step(self, text: str, *extra: Reason) -> tuple[str, str | None]:
        """The answer so far after one more token: the delta to stream and why it is finished (None: go
        on). A stop string or the stop rule comes first, then each of `extra` in order, each asked only
        while none before it fired (a token rule, the length, a latency budget); a finished answer
        streams everything it kept, an unfinished one only what no later token can take back."""
        shown, reason = self.check(text)
        for ask in extra:
            if reason is not None:
                break
            reason = ask()
        return (self.ready(shown), None) if reason is None else (self.rest(shown), reason)

    def finish(self, text: str) -> str:
        """What is left to stream when the answer ended by itself (EOS, the server's end of stream): the
        held-back text, cut before a stop string it completes."""
        return self.rest(self.check(text)[0])

    def check(self, text: str) -> tuple[str, str | None]:
        """The answer so far, cut before a stop string, and "stop" or "rule" when it is finished."""
        cuts = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if cuts:
            return text[:min(cuts)], "stop"
        if self._rule is not None and self._rule(text):
            return text, "rule"
        return text, None

    def ready(self, text: str) -> str:
        """The new part of an unfinished answer that no later token can take back."""
        safe = len(text) - self._hold
        while safe > len(self.emitted) and text[safe - 1] == "\ufffd":
            safe -= 1
        return self._emit(text[:safe]) if safe > len(self.emitted) else ""

    def rest(self, text: str) -> str:
        """What is left to stream of a finished answer, without half a character at its end (an answer
        cut by length or the latency budget inside a multi-byte character would end in U+FFFD)."""
        text = text.rstrip("\ufffd")
        return self._emit(text) if len(text) > len(self.emitted) else ""

    def _emit(self, text: str) -> str:
        delta, self.emitted = text[len(self.emitted):], text
        return delta


def over_budget(max_decode_ms: float | None, start: float, stats: GenerationStats) -> Reason:
    """The latency budget as a `StreamCut.step` reason: "budget" once decoding has run `max_decode_ms`
    past the first token (`stats.ttft_ms` after `start`, a `time.perf_counter()`); never when None."""
    def reason() -> str | None:
        if max_decode_ms is not None and (time.perf_counter() - start) * 1000 - stats.ttft_ms > max_decode_ms:
            return "budget"
        return None
    return reason
