"""User settings: what `initializationOptions` and `workspace/didChangeConfiguration` may say.

Settings arrive as loose JSON from many editors, so parsing is forgiving: a known key with a value of the
wrong type keeps its default (logged), an unknown key is ignored (logged), and nothing raises.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


BACKEND_KINDS = ("openai", "llama.cpp", "ollama")
_KIND_ALIASES = {"llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "llama_cpp": "llama.cpp", "vllm": "openai",
                 "sglang": "openai", "lmstudio": "openai"}


@dataclass
class BackendSettings:
    """A serving engine to use instead of the in-process model (`backend` in JSON); no `url`, no remote."""

    url: str = ""
    kind: str = "openai"  # openai | llama.cpp | ollama
    model: str = ""  # empty: the first model the server lists
    api_key_env: str = ""  # name of an environment variable holding the bearer token (never the key itself)
    timeout_ms: int = 30_000

    @classmethod
    def parse(cls, raw: Any) -> BackendSettings | None:
        """From a JSON object, field by field: a field of the wrong type keeps its default (logged)."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            return None
        parsed = cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            name = _snake(key)
            if name not in fields:
                log.info("infill: ignoring unknown setting backend.%s", key)
                continue
            coerced = _coerce(value, getattr(parsed, name))
            if name == "kind" and isinstance(coerced, str):
                coerced = _KIND_ALIASES.get(coerced.strip().lower(), coerced.strip().lower())
            if coerced is _BAD or coerced is None or (name == "kind" and coerced not in BACKEND_KINDS):
                log.info("infill: ignoring setting backend.%s: unexpected value %r", key, value)
                continue
            setattr(parsed, name, coerced.strip() if isinstance(coerced, str) else coerced)
        return parsed


@dataclass
class Settings:
    """Everything a user can configure. Field names are the camelCase-free JSON keys (snake_case)."""

    model: str | None = None  # catalogue name, .gguf file, HF or ONNX folder; None = best installed catalogue model
    family: str | None = None  # force a model family (FIM template) instead of detecting it
    device: str = "auto"  # auto | cpu | cuda
    precision: str | None = None  # export precision of a GGUF/HF model (fp32 | fp16 | int8 | int4); None = default
    # A local model runs in a worker process, so the event loop never waits on it (the model holds the GIL
    # while it computes); false runs it on a thread of the server (debugging, the benchmarks' baseline).
    model_worker: bool = True
    max_tokens_single_line: int = 48
    max_tokens_multi_line: int = 128
    latency_budget_ms: int = 1000  # decoding stops here; what is complete by then is shown (CPU-sized)
    temperature: float = 0.0
    context_tokens: int = 768  # prompt budget for the prefix + suffix (+ other documents); CPU-sized
    other_documents_tokens: int = 128  # part of the budget spent on snippets from other open documents
    # Code after the cursor in a FIM prompt: computed again wherever the prompt is laid out afresh (a jump, a
    # finished line; keystrokes extend it: `Anchor`), so it is kept short on a CPU (latency-2026-12-02.md).
    suffix_tokens: int = 64
    # Inline suggestions offered when the user asks for them (an invoked request, or cycling with Alt+]):
    # the greedy one, then alternatives that start with the next likeliest first tokens. Typing gets one.
    suggestions: int = 3
    enable: bool = True  # master switch for inline completion
    disabled_languages: list[str] = field(default_factory=list)
    edit_max_tokens: int = 384
    # An edit is shown for confirmation before it is applied, where the client can (LSP change annotations
    # with needsConfirmation: VS Code's Refactor Preview). Off: applied at once (undo is the review).
    edit_preview: bool = True
    translate_languages: list[str] = field(default_factory=lambda: ["javascript", "rust"])
    index_enable: bool = True
    backend: BackendSettings = field(default_factory=BackendSettings)  # a serving engine, when `url` is set

    def language_enabled(self, language_id: str | None) -> bool:
        return self.enable and (language_id or "") not in self.disabled_languages

    def update(self, raw: Any) -> list[str]:
        """Apply a settings object (optionally nested under "infill"); return the keys ignored."""
        if isinstance(raw, dict) and isinstance(raw.get("infill"), dict):
            raw = raw["infill"]
        if not isinstance(raw, dict):
            return []
        fields = {f.name: f for f in dataclasses.fields(self)}
        ignored = []
        for key, value in raw.items():
            name = _snake(key)
            if name not in fields:
                log.info("infill: ignoring unknown setting %r", key)
                ignored.append(key)
                continue
            current = getattr(self, name)
            coerced = BackendSettings.parse(value) if isinstance(current, BackendSettings) else _coerce(value, current)
            if coerced is None and isinstance(current, BackendSettings):
                coerced = _BAD
            if coerced is _BAD:
                log.info("infill: ignoring setting %r: unexpected value %r", key, value)
                ignored.append(key)
                continue
            setattr(self, name, coerced)
        return ignored


def setting_names() -> list[str]:
    """Every setting's JSON key, camelCase as the docs spell it."""
    return [_camel(f.name) for f in dataclasses.fields(Settings)]


def describe_ignored(key: str) -> str:
    """Why a key `Settings.update` ignored was ignored, with the closest valid key for a misspelt one.

    Pure, so the server decides how to tell the user (a `window/showMessage` warning) and how often."""
    names = setting_names()
    if _camel(_snake(key)) in names:
        return f"infill: setting {key!r} has a value of the wrong type; its default is used"
    lowered = {name.lower(): name for name in names}
    close = difflib.get_close_matches(key.replace("_", "").lower(), list(lowered), n=1, cutoff=0.6)
    hint = f"; did you mean {lowered[close[0]]!r}?" if close else f"; valid settings: {', '.join(names)}"
    return f"infill: unknown setting {key!r} is ignored{hint}"


_BAD = object()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key).lstrip("_")


def _coerce(value: Any, current: Any) -> Any:
    """Coerce a JSON value to the type of the current value, or _BAD."""
    if value is None:
        return None if current is None or isinstance(current, str) else _BAD
    if isinstance(current, bool):
        return value if isinstance(value, bool) else _BAD
    if isinstance(current, int) and not isinstance(current, bool):
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else _BAD
    if isinstance(current, float):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _BAD
    if isinstance(current, list):
        return [str(v) for v in value] if isinstance(value, list) else _BAD
    return str(value) if isinstance(value, str) else _BAD
