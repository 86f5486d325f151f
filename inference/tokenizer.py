"""What a model folder says about text, read without loading the model: its tokenizer and chat template.

The engine uses these beside onnxruntime-genai; the server process uses them alone when the engine runs in
a worker process (`inference.worker`), to count tokens and render chat prompts on every keystroke
without a round trip to a busy model.
"""

from __future__ import annotations

import json
from pathlib import Path

from inference.errors import InferenceError


def load_tokenizer(model_dir: Path):
    """The folder's tokenizer.json as a `tokenizers.Tokenizer`, or None. The engine decodes with it:
    onnxruntime-genai's decode drops everything after an invalid UTF-8 byte sequence (a stray byte token
    from the model), which would silently eat the rest of a completion; `tokenizers` writes U+FFFD there
    and goes on."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    except Exception:  # a tokenizer.json only onnxruntime-genai understands: keep its decoder
        return None


def read_chat_template(model_dir: Path):
    """The model's Jinja chat template, compiled in a sandbox (templates ship with models)."""
    source = None
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        source = jinja_file.read_text(encoding="utf-8")
    else:
        cfg = model_dir / "tokenizer_config.json"
        if cfg.is_file():
            try:
                source = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
            except ValueError:
                source = None
    if not isinstance(source, str) or not source.strip():
        return None
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(source)


def render_chat(template, messages: list[dict], model_name: str) -> str:
    """A chat template applied to messages, ending where the assistant starts. A template is code from
    whoever shipped the model: one that reaches for Python internals is refused, and nothing runs."""
    if template is None:
        raise InferenceError(f"{model_name} has no chat template; use an instruct model for chat prompts")
    from jinja2.exceptions import SecurityError

    try:
        return template.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
    except SecurityError as exc:
        raise InferenceError(f"{model_name}'s chat template was refused: it tried something unsafe "
                             f"({exc}); templates run in Jinja's sandbox") from None
