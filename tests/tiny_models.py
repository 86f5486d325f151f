"""Tiny randomly-initialised models for engine tests, built on the spot (never downloaded).

A byte-level BPE is trained on a few standard-library modules, each family's special tokens are added
to it, and a 2-layer llama or qwen2 with random weights is saved next to it as safetensors. The
weights are drawn wider than a real initialisation so that greedy choices have clear margins: parity
between two float32 backends should then not hinge on rounding.
"""

from __future__ import annotations

import functools
import json
import sysconfig
from pathlib import Path

# Each family's special tokens as its real tokenizer spells them; the first one listed is the EOS.
FAMILY_TOKENS: dict[str, list[str]] = {
    "qwen2.5-coder": ["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
                      "<|file_sep|>", "<|repo_name|>"],
    "starcoder": ["<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<file_sep>"],
    "santacoder": ["<|endoftext|>", "<fim-prefix>", "<fim-suffix>", "<fim-middle>", "<fim-pad>"],
    "deepseek-coder": ["<｜end▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<|EOT|>"],
    "codellama": ["</s>", "<PRE>", "<SUF>", "<MID>", "<EOT>"],
    "codegemma": ["<eos>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>"],
    "plain": ["<|endoftext|>"],
}


# Standard-library modules present in every supported Python, in this order: real code that no commit here
# changes. (Trained on this repository's sources, every edit to them re-rolled every tiny model's outputs.)
CORPUS_MODULES = ("textwrap.py", "shlex.py", "string.py", "fnmatch.py", "glob.py", "heapq.py", "bisect.py",
                  "posixpath.py", "genericpath.py", "copy.py", "functools.py")


def training_text(limit: int = 60_000) -> str:
    """A few tens of KB of real Python: standard-library modules of the running interpreter."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    size = 0
    for name in CORPUS_MODULES:
        text = (stdlib / name).read_text(encoding="utf-8")
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "\n".join(parts)


@functools.cache
def _trained_bpe(vocab_size: int) -> str:
    """A byte-level BPE trained on `training_text()`, as JSON (trained once per session)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([training_text()], trainer=trainer)
    return bpe.to_str()


def build_tokenizer(out: Path, special: list[str], vocab_size: int = 384):
    """A trained byte-level BPE plus `special` as special tokens, saved as HF tokenizer files into `out`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer.from_str(_trained_bpe(vocab_size))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=special[0], bos_token=None)
    tok.add_special_tokens({"additional_special_tokens": special[1:]})
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    return tok


def build_model(out: Path, family: str = "qwen2.5-coder", arch: str = "qwen2", seed: int = 0,
                init_std: float = 0.4) -> Path:
    """A 2-layer `arch` (llama or qwen2) with random weights and a `family` tokenizer, in `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer(out, FAMILY_TOKENS[family])
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, initializer_range=init_std,
                  tie_word_embeddings=False)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**common)).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def set_model_type(model_dir: Path, model_type: str) -> None:
    """Rewrite config.json's model_type (for detection and bad-architecture tests)."""
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg["model_type"] = model_type
    path.write_text(json.dumps(cfg))


def write_config(model_dir: Path, model_type: str) -> None:
    """A bare config.json naming only `model_type` (enough for family detection)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps({"model_type": model_type}))
