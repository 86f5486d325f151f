"""User settings: what `initializationOptions` and `workspace/didChangeConfiguration` may say.

Settings arrive as loose JSON from many editors, so parsing is forgiving: a known key with a value of the
wrong type keeps its default (logged), an unknown key is ignored (logged), and nothing raises.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """Everything a user can configure. Field names are the camelCase-free JSON keys (snake_case)."""

    model: str | None = None  # catalogue name, .gguf file, HF or ONNX folder; None = best installed catalogue model
    family: str | None = None  # force a model family (FIM template) instead of detecting it
    device: str = "auto"  # auto | cpu | cuda
    precision: str | None = None  # export precision of a GGUF/HF model (fp32 | fp16 | int8 | int4); None = default
    max_tokens_single_line: int = 48
    max_tokens_multi_line: int = 128
    latency_budget_ms: int = 1000  # decoding stops here; what is complete by then is shown (CPU-sized)
    temperature: float = 0.0
    context_tokens: int = 768  # prompt budget for the prefix + suffix (+ other documents); CPU-sized
    other_documents_tokens: int = 128  # part of the budget spent on snippets from other open documents
    # Code after the cursor in a FIM prompt: each keystroke recomputes it (it follows the cursor), so it
    # is kept short on a CPU (benchmarks/results/latency-2026-12-02.md).
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
            coerced = _coerce(value, getattr(self, name))
            if coerced is _BAD:
                log.info("infill: ignoring setting %r: unexpected value %r", key, value)
                ignored.append(key)
                continue
            setattr(self, name, coerced)
        return ignored


_BAD = object()


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
