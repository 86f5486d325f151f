"""The engine's byte-level decode table decodes exactly as `tokenizers` does (issue 11: it replaces a second
full tokenizer in the model's process), for every token and for sequences that spell invalid UTF-8; and the
server's token count agrees with `encode` without holding the GIL (issue 14: the event loop runs meanwhile)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from inference.tokenizer import ByteDecoder, load_decoder, load_tokenizer, tokens_in


def _pair(model_dir: Path) -> tuple[ByteDecoder, Tokenizer]:
    table, full = ByteDecoder.from_file(model_dir), load_tokenizer(model_dir)
    assert table is not None and full is not None
    return table, full


@pytest.fixture(scope="module")
def tiny_pair(tiny_model) -> tuple[ByteDecoder, Tokenizer]:
    """The tiny Qwen2.5-Coder model's trained byte-level BPE (with its special tokens)."""
    return _pair(tiny_model("qwen2.5-coder", "qwen2"))


@pytest.fixture(scope="module")
def odd_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE whose vocabulary also holds what real ones sometimes do: entries spelled outside the
    byte alphabet (a raw space, CJK) and an added token that is not special."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    n = len(vocab)
    vocab.update({"ĠĠ": n, "日本": n + 1, "a b": n + 2, "éé": n + 3, "ĊĊ": n + 4})
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(["<|endoftext|>", "<|fim_prefix|>"])
    bpe.add_tokens(["<tool_call>"])
    out = tmp_path_factory.mktemp("odd-vocab")
    bpe.save(str(out / "tokenizer.json"))
    return out


def test_every_token_decodes_as_tokenizers_does(tiny_pair) -> None:
    table, full = tiny_pair
    size = full.get_vocab_size(with_added_tokens=True)
    for i in range(size + 3):  # and a few ids past the vocabulary, which both skip
        assert table.decode([i]) == full.decode([i], skip_special_tokens=True), i
        assert table.id_to_token(i) == full.id_to_token(i), i


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=24))
def test_any_id_sequence_decodes_as_tokenizers_does(tiny_pair, ids: list[int]) -> None:
    """Random ids: special tokens skipped, broken multi-byte characters become U+FFFD in the same places."""
    table, full = tiny_pair
    assert table.decode(ids) == full.decode(ids, skip_special_tokens=True)


def test_entries_outside_the_byte_alphabet_and_added_tokens(odd_vocab: Path) -> None:
    table, full = _pair(odd_vocab)
    ids = list(range(full.get_vocab_size(with_added_tokens=True) + 3))
    assert [table.decode([i]) for i in ids] == [full.decode([i], skip_special_tokens=True) for i in ids]
    assert [table.id_to_token(i) for i in ids] == [full.id_to_token(i) for i in ids]
    rng = random.Random(0)
    for _ in range(500):
        seq = [rng.choice(ids) for _ in range(rng.randint(1, 8))]
        assert table.decode(seq) == full.decode(seq, skip_special_tokens=True), seq
    cjk, tool = full.token_to_id("日本"), full.token_to_id("<tool_call>")  # the odd entries are really there
    assert cjk is not None and table.decode([cjk]) == "日本"
    assert tool is not None and table.decode([tool]) == "<tool_call>"


def test_a_tokenizer_that_is_not_byte_level_keeps_the_full_decoder(tmp_path: Path) -> None:
    """A SentencePiece-style decoder (Metaspace, byte fallback) is not what the table reproduces."""
    bpe = Tokenizer(models.BPE(vocab={"▁a": 0, "b": 1, "<0x41>": 2}, merges=[], byte_fallback=True))
    bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    bpe.save(str(tmp_path / "tokenizer.json"))
    assert ByteDecoder.from_file(tmp_path) is None
    decoder = load_decoder(tmp_path)
    assert isinstance(decoder, Tokenizer) and decoder.decode([0, 1, 2]) == " abA"
    assert load_decoder(tmp_path / "missing") is None


def test_the_engine_decodes_with_the_table(qwen_engine) -> None:
    assert isinstance(qwen_engine._decoder, ByteDecoder)
    assert qwen_engine.decode(qwen_engine.encode("def naïve(x):\n    return x  # ✓")) == \
        "def naïve(x):\n    return x  # ✓"


@pytest.mark.slow
def test_the_default_models_table_decodes_every_token_and_stray_bytes_as_tokenizers_does(default_engine) -> None:
    """All 151,936 ids one by one, then random sequences: of any ids, and of single-byte tokens only (the
    stray bytes a model emits mid-character, where invalid UTF-8 has to become U+FFFD in the same places)."""
    table, full = _pair(default_engine.prepared.onnx_dir)
    size = full.get_vocab_size(with_added_tokens=True)
    assert [i for i in range(size) if table.decode([i]) != full.decode([i], skip_special_tokens=True)] == []
    assert [i for i in range(size) if table.id_to_token(i) != full.id_to_token(i)] == []
    single = [i for i in range(size) if len(full.id_to_token(i) or "") == 1]  # one byte each
    assert len(single) == 256
    rng = random.Random(0)
    for k in range(10_000):
        seq = [rng.choice(single) if k % 2 else rng.randrange(size) for _ in range(rng.randint(1, 12))]
        assert table.decode(seq) == full.decode(seq, skip_special_tokens=True), seq


@pytest.mark.parametrize("special", [False, True])
def test_tokens_in_counts_as_encode_does(tiny_pair, special: bool) -> None:
    _, full = tiny_pair
    texts = ["", "def f(x):\n    return x\n", "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>", "naïve 日本語 😀\r\n\t"]
    for text in texts:
        assert tokens_in(full, text, special) == len(full.encode(text, add_special_tokens=special).ids), text


def test_tokens_in_lets_other_threads_run(tiny_pair) -> None:
    """A long count leaves the GIL free: a ticking thread keeps ticking through it. (`encode` holds the GIL
    for the whole call: no tick would land inside it.)"""
    _, full = tiny_pair
    text = "".join(f"def handler_{i}(request, limit={i}):\n    return request.items[:limit] + [{i}]\n"
                   for i in range(8000))
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        time.sleep(0.01)
        start = time.perf_counter()
        tokens_in(full, text)
        end = time.perf_counter()
    finally:
        stop.set()
        ticker.join()
    assert end - start > 0.05, "the text is too short to tell"
    inside = [t for t in ticks if start + 0.01 < t < end - 0.01]
    assert len(inside) >= 10, f"{len(inside)} ticks in a {end - start:.3f} s count"
