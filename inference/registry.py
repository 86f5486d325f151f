"""Model families: how each one spells fill-in-the-middle, and which tokens end its answer.

Detection order (DESIGN.md): an explicit setting always wins, then the tokenizer's special tokens
(the FIM tokens a model was trained with are the surest sign), then `config.json`. A model we do not
recognise gets the `plain` family: prefix-only completion with suffix-aware stopping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from inference.errors import InferenceError


@dataclass(frozen=True)
class FimParts:
    """The code before and after the cursor, and (for families with a repository format) other files."""

    prefix: str
    suffix: str = ""
    files: tuple[tuple[str, str], ...] = ()  # (path, text) of other files, least likely to change first
    path: str = ""  # this file's path, as the repository format names it
    # The start of the middle, already written: text typed since prefix and suffix were cut. The prompt then
    # extends one already computed (its keys and values cached) instead of recomputing the suffix.
    middle: str = ""


@dataclass(frozen=True)
class Family:
    """One model family's prompt conventions."""

    name: str
    fim_template: str | None  # with {prefix} and {suffix}; None = not FIM-trained
    stop_tokens: tuple[str, ...] = ()  # special tokens that end a completion (besides EOS)
    signature: tuple[str, ...] = ()  # special tokens whose presence identifies the family
    model_types: tuple[str, ...] = ()  # config.json model_type values that suggest the family
    aliases: tuple[str, ...] = field(default=())
    repo_tokens: tuple[str, str] | None = None  # (repo name, file separator) of its repository format

    @property
    def supports_fim(self) -> bool:
        return self.fim_template is not None

    def render(self, parts: FimParts) -> str:
        """The prompt for a FIM request; prefix-only for families without FIM. Other files go first, in the
        family's repository format (they change least, so a server's prompt cache keeps them)."""
        if self.fim_template is None:
            return parts.prefix + parts.middle
        body = self.fim_template.format(prefix=parts.prefix, suffix=parts.suffix) + parts.middle
        if not parts.files or self.repo_tokens is None:
            return body
        repo, sep = self.repo_tokens
        files = "".join(f"{sep}{path}\n{text.rstrip(chr(10))}\n" for path, text in parts.files)
        return f"{repo}workspace\n{files}{sep}{parts.path or 'untitled'}\n{body}"


FAMILIES: tuple[Family, ...] = (
    Family("qwen2.5-coder", "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
           ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>", "<|fim_prefix|>"),
           ("<|fim_prefix|>", "<|fim_pad|>"), ("qwen2",), ("qwen", "qwen2"), ("<|repo_name|>", "<|file_sep|>")),
    Family("codegemma", "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
           ("<|file_separator|>", "<eos>", "<|fim_prefix|>", "<end_of_turn>"),
           ("<|fim_prefix|>", "<|file_separator|>"), ("gemma",), ("gemma",)),
    Family("starcoder", "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
           ("<|endoftext|>", "<file_sep>", "<fim_prefix>"),
           ("<fim_prefix>", "<fim_middle>"), ("starcoder2", "gpt_bigcode"), ("starcoder2",),
           ("<repo_name>", "<file_sep>")),
    Family("santacoder", "<fim-prefix>{prefix}<fim-suffix>{suffix}<fim-middle>",
           ("<|endoftext|>", "<fim-prefix>"), ("<fim-prefix>", "<fim-middle>"), ()),
    Family("deepseek-coder", "<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>",
           ("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>"),
           ("<｜fim▁begin｜>", "<｜fim▁hole｜>"), (), ("deepseek",)),
    Family("codellama", "<PRE> {prefix} <SUF>{suffix} <MID>", ("<EOT>", "</s>", "<PRE>"),
           ("<PRE>", "<MID>"), (), ("code-llama",)),
    Family("plain", None, ("<|endoftext|>", "<|im_end|>", "</s>"), (), (), ("smollm2", "smollm", "none")),
)

_BY_NAME = {alias: f for f in FAMILIES for alias in (f.name, *f.aliases)}


def family_by_name(name: str) -> Family:
    """A family from a user setting; unknown names are a clear error listing the known ones."""
    family = _BY_NAME.get(name.strip().lower())
    if family is None:
        known = ", ".join(f.name for f in FAMILIES)
        raise InferenceError(f"unknown model family {name!r}; use one of: {known}")
    return family


def detect_family(model_dir: Path, explicit: str | None = None) -> Family:
    """The family of a model directory (HF or exported ONNX): setting, special tokens, config.json."""
    if explicit:
        return family_by_name(explicit)
    tokens = special_tokens(model_dir)
    for family in FAMILIES:
        if family.signature and all(t in tokens for t in family.signature):
            return family
    model_type = _config_model_type(model_dir)
    for family in FAMILIES:
        if model_type and model_type in family.model_types and family.signature and \
                any(t in tokens for t in family.signature):
            return family
    return _BY_NAME["plain"]


def special_tokens(model_dir: Path) -> set[str]:
    """Every added/special token the tokenizer files of a model directory declare."""
    found: set[str] = set()
    tok_json = model_dir / "tokenizer.json"
    if tok_json.is_file():
        try:
            data = json.loads(tok_json.read_text(encoding="utf-8"))
            found.update(t.get("content", "") for t in data.get("added_tokens", []))
        except (OSError, ValueError):
            pass
    tok_cfg = model_dir / "tokenizer_config.json"
    if tok_cfg.is_file():
        try:
            cfg = json.loads(tok_cfg.read_text(encoding="utf-8"))
            for t in (cfg.get("added_tokens_decoder") or {}).values():
                if isinstance(t, dict):
                    found.add(t.get("content", ""))
            for t in cfg.get("additional_special_tokens") or []:
                found.add(t if isinstance(t, str) else t.get("content", ""))
        except (OSError, ValueError):
            pass
    found.discard("")
    # SentencePiece vocabularies spell some control tokens with a word-start mark (CodeLlama: "▁<PRE>").
    found.update(t[1:] for t in list(found) if t.startswith("\u2581") and len(t) > 1)
    return found


def _config_model_type(model_dir: Path) -> str | None:
    path = model_dir / "config.json"
    if not path.is_file():
        path = model_dir / "genai_config.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())["model"]["type"]
        except (OSError, ValueError, KeyError):
            return None
    try:
        return json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError):
        return None
