"""Model families: detection from tokenizer files and config.json, explicit settings, FIM rendering.

The tokenizers are real byte-level BPEs trained here with each family's special tokens added, so the
tests check that the registry's templates spell tokens the family's tokenizer really has.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import FAMILY_TOKENS, build_tokenizer, write_config

from inference import FimParts, InferenceError, detect_family, family_by_name

FIM_FAMILIES = [f for f in FAMILY_TOKENS if f != "plain"]
CONFIG_TYPE = {"qwen2.5-coder": "qwen2", "codegemma": "gemma", "starcoder": "starcoder2", "santacoder": "gpt2",
               "deepseek-coder": "llama", "codellama": "llama"}


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory: pytest.TempPathFactory):
    """Factory: a model folder (tokenizer + config.json, no weights) with a family's special tokens."""
    cache: dict[tuple[tuple[str, ...], str], Path] = {}

    def make(tokens: list[str], model_type: str) -> Path:
        key = (tuple(tokens), model_type)
        if key not in cache:
            out = tmp_path_factory.mktemp("family")
            build_tokenizer(out, tokens)
            write_config(out, model_type)
            cache[key] = out
        return cache[key]

    return make


@pytest.mark.parametrize("family", FIM_FAMILIES)
def test_family_detected_from_tokenizer_special_tokens(family_dir, family: str) -> None:
    # config.json says plain llama for all of them: the tokenizer decides.
    assert detect_family(family_dir(FAMILY_TOKENS[family], "llama")).name == family


@pytest.mark.parametrize("model_type,expected", [("qwen2", "qwen2.5-coder"), ("gemma", "codegemma"),
                                                 ("llama", "plain")])
def test_config_model_type_breaks_a_tie_between_families_sharing_fim_tokens(family_dir, model_type, expected) -> None:
    # Only the three FIM tokens Qwen2.5-Coder and CodeGemma share: neither full signature matches.
    tokens = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
    assert detect_family(family_dir(tokens, model_type)).name == expected


def test_codellama_detected_with_sentencepiece_spelling(family_dir) -> None:
    """Real CodeLlama tokenizers list their FIM tokens as "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"."""
    tokens = ["</s>", "\u2581<PRE>", "\u2581<SUF>", "\u2581<MID>", "\u2581<EOT>"]
    assert detect_family(family_dir(tokens, "llama")).name == "codellama"


def test_explicit_family_wins_over_tokenizer(family_dir) -> None:
    qwen = family_dir(FAMILY_TOKENS["qwen2.5-coder"], "qwen2")
    assert detect_family(qwen, "starcoder").name == "starcoder"
    assert detect_family(qwen, " CodeLlama ").name == "codellama"  # settings are forgiving about case/space


def test_unknown_explicit_family_is_a_clear_error(family_dir) -> None:
    with pytest.raises(InferenceError, match="unknown model family 'gpt-9'.*qwen2.5-coder"):
        detect_family(family_dir(FAMILY_TOKENS["plain"], "llama"), "gpt-9")


def test_model_without_fim_tokens_is_plain(family_dir, tmp_path: Path) -> None:
    assert detect_family(family_dir(FAMILY_TOKENS["plain"], "qwen2")).name == "plain"
    write_config(tmp_path, "llama")  # no tokenizer files at all
    assert detect_family(tmp_path).name == "plain"
    (tmp_path / "tokenizer.json").write_text("{not json")  # unreadable tokenizer: still plain, no crash
    assert detect_family(tmp_path).name == "plain"


def test_onnx_folder_family_from_genai_config(family_dir, tmp_path: Path) -> None:
    """An exported folder has genai_config.json instead of config.json; tokens still decide."""
    src = family_dir(FAMILY_TOKENS["starcoder"], "starcoder2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    (tmp_path / "genai_config.json").write_text('{"model": {"type": "starcoder2"}}')
    assert detect_family(tmp_path).name == "starcoder"


@pytest.mark.parametrize("family", FIM_FAMILIES)
def test_fim_template_uses_the_familys_real_special_tokens(family_dir, family: str) -> None:
    """Rendered with the family's tokenizer, the prompt is: FIM tokens as single ids around the two texts,
    prefix before suffix in the family's order, and each stop token the family names is one id."""
    from transformers import AutoTokenizer

    folder = family_dir(FAMILY_TOKENS[family], CONFIG_TYPE[family])
    tok = AutoTokenizer.from_pretrained(str(folder))
    fam = family_by_name(family)
    prompt = fam.render(FimParts("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"))
    ids = tok.encode(prompt, add_special_tokens=False)
    special = set(tok.all_special_ids)
    fim_ids = [i for i in ids if i in special]
    assert len(fim_ids) == 3, f"{family}: {tok.convert_ids_to_tokens(ids)}"
    assert fim_ids == [tok.convert_tokens_to_ids(t) for t in FAMILY_TOKENS[family][1:4]], family
    assert ids[0] == fim_ids[0] and ids[-1] == fim_ids[2]  # starts with the prefix token, ends on the middle
    text = tok.decode(ids, skip_special_tokens=True)
    assert text.index("return") < text.index("print(add")
    present = [t for t in fam.stop_tokens if t in FAMILY_TOKENS[family]]
    assert present, f"{family}: none of its stop tokens is in its tokenizer"
    for token in present:
        assert len(tok.encode(token, add_special_tokens=False)) == 1


def test_plain_family_renders_prefix_only() -> None:
    plain = family_by_name("plain")
    assert not plain.supports_fim
    assert plain.render(FimParts("x = ", "\ny = 2\n")) == "x = "
    assert family_by_name("smollm2") is plain


@pytest.mark.parametrize("family", FIM_FAMILIES)
def test_families_render_the_suffix(family: str) -> None:
    rendered = family_by_name(family).render(FimParts("PREFIX", "SUFFIX"))
    assert rendered.index("PREFIX") < rendered.index("SUFFIX")
    assert family_by_name(family).supports_fim
