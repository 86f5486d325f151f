"""What a model folder says about text, read without loading the model: its tokenizer and chat template.

The engine uses these beside onnxruntime-genai; the server process uses them alone when the engine runs in
a worker process (`inference.worker`), to count tokens and render chat prompts on every keystroke
without a round trip to a busy model.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inference.errors import InferenceError


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that spells each byte in a vocabulary, mapped
    back to the byte (the table `tokenizers`' ByteLevel decoder uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    char_of = {b: b for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in char_of):
        char_of[b] = 256 + n
    return {chr(c): b for b, c in char_of.items()}


_BYTE_OF = _byte_alphabet()
_CHAR_OF = {b: c for c, b in _BYTE_OF.items()}
_TO_LATIN1 = str.maketrans({c: chr(b) for c, b in _BYTE_OF.items()})  # then .encode("latin-1") gives the bytes
_OUTSIDE = re.compile("[^" + "".join(re.escape(c) for c in _BYTE_OF) + "]")


class ByteDecoder:
    """Token ids to text for a byte-level BPE, decoding exactly as `tokenizers` does with special tokens
    skipped (U+FFFD where the ids spell invalid UTF-8), from one table of each token's bytes.

    The engine decodes with this instead of a second full tokenizer: `tokenizers.Tokenizer` holds the
    vocabulary and merges again beside onnxruntime-genai's (48 MB retained, 125 MB peak while loading,
    for Qwen2.5-Coder's 152k tokens), and decoding needs neither the merges nor a hash map.
    """

    def __init__(self, vocab: dict[str, int], added: list[dict]) -> None:
        """`vocab` and `added` as tokenizer.json spells them (model.vocab, added_tokens)."""
        size = max([*vocab.values(), *(int(t["id"]) for t in added)], default=-1) + 1
        pieces = [b""] * size
        self._unspelled: dict[int, str] = {}  # entries outside the byte alphabet: they stand for their UTF-8
        for token, i in vocab.items():
            pieces[i] = self._spell(token, i)
        self._added = {int(t["id"]): str(t["content"]) for t in added}
        for t in added:  # an added token wins over a vocabulary entry with its id; a special one is skipped
            i = int(t["id"])
            self._unspelled.pop(i, None)
            pieces[i] = b"" if t.get("special") else self._spell(t["content"], i)
        self._offsets = array("q", [0])  # token i is _blob[_offsets[i]:_offsets[i + 1]]
        for piece in pieces:
            self._offsets.append(self._offsets[-1] + len(piece))
        self._blob = b"".join(pieces)

    def _spell(self, token: str, i: int) -> bytes:
        """The bytes a vocabulary entry stands for (its own UTF-8 when a character is outside the alphabet,
        as `tokenizers`' ByteLevel decoder does)."""
        if _OUTSIDE.search(token):
            self._unspelled[i] = token
            return token.encode("utf-8")
        return token.translate(_TO_LATIN1).encode("latin-1")

    @classmethod
    def from_file(cls, model_dir: Path) -> ByteDecoder | None:
        """The decoder for the folder's tokenizer.json, or None unless it is a byte-level BPE (a tokenizer
        whose decode this table would not reproduce)."""
        try:
            spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
        vocab = model.get("vocab")
        if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel" or not isinstance(vocab, dict):
            return None
        return cls(vocab, spec.get("added_tokens") or [])

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """The text of `ids`; special tokens are always skipped, unknown ids too (as `tokenizers` does)."""
        if not skip_special_tokens:
            raise ValueError("ByteDecoder decodes with special tokens skipped only")
        blob, offsets, size = self._blob, self._offsets, len(self._offsets) - 1
        return b"".join([blob[offsets[i]:offsets[i + 1]] for i in ids if 0 <= i < size]).decode("utf-8", "replace")

    def id_to_token(self, i: int) -> str | None:
        """The vocabulary's spelling of token `i` (an added token's content), or None for an unknown id."""
        if i in self._added:
            return self._added[i]
        if i in self._unspelled:
            return self._unspelled[i]
        if not 0 <= i < len(self._offsets) - 1 or self._offsets[i] == self._offsets[i + 1]:
            return None
        return "".join(_CHAR_OF[b] for b in self._blob[self._offsets[i]:self._offsets[i + 1]])


def load_decoder(model_dir: Path) -> Any:
    """What the engine decodes with: a `ByteDecoder` for a byte-level BPE, else the folder's full
    `tokenizers.Tokenizer` (see `load_tokenizer`), else None (onnxruntime-genai's own decode)."""
    return ByteDecoder.from_file(model_dir) or load_tokenizer(model_dir)


def load_tokenizer(model_dir: Path):
    """The folder's tokenizer.json as a `tokenizers.Tokenizer`, or None. The server counts tokens with it;
    the engine decodes with it when the vocabulary is not a byte-level BPE (`ByteDecoder`):
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


def tokens_in(tokenizer: Any, text: str, special: bool = False) -> int:
    """Tokens a `tokenizers.Tokenizer` gives `text`. Through `encode_batch`, which lets go of the GIL while
    it works: `encode` holds it (~5 ms per 2,000 tokens, several times per keystroke's context fitting),
    and the server's event loop could answer nothing meanwhile."""
    return len(tokenizer.encode_batch([text], add_special_tokens=special)[0].ids) if text else 0


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
