"""The engine in its worker process (`inference.worker`), on tiny random models: the same text as the
in-process engine, cancel, a killed worker restarted, tokens counted in the server, a fast close.

Nothing here hard-codes model output: each expectation comes from the in-process engine on the same
exported model.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import load_tiny

from inference import FimParts, GenerationStats, InferenceError
from inference.worker import WorkerBackend

PROMPTS = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    FimParts("class Config:\n    def __init__(self, path):\n        self.", "\n\n    def load(self):\n        pass\n"),
    "naïve = 'café'  # 日本語 😀\nfor i, line in enumerate(",
]


def open_worker(model_dir: Path, cache: Path, notify=None, **kwargs) -> WorkerBackend:
    """A worker on a tiny model; the child inherits INFILL_CACHE_DIR, so it finds the session's export."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFILL_CACHE_DIR", str(cache))
        return WorkerBackend(str(model_dir), precision="fp32", notify=notify, **kwargs)


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_cache):
    """The in-process engine the worker is compared with (no test-only stop-token changes)."""
    return load_tiny(tiny_model("qwen2.5-coder", "qwen2"), tiny_cache)


@pytest.fixture(scope="module")
def worker(tiny_model, tiny_cache, engine):
    backend = open_worker(tiny_model("qwen2.5-coder", "qwen2"), tiny_cache)
    yield backend
    backend.close()


@pytest.fixture
def plain_worker(tiny_model, tiny_cache):
    """A worker whose model stops only at its configured EOS (family "plain"): long answers to cancel."""
    messages: list[str] = []
    backend = open_worker(tiny_model("qwen2.5-coder", "qwen2"), tiny_cache, notify=messages.append, family="plain")
    backend.messages = messages
    yield backend
    backend.close()


def streamed(backend, prompt, **kwargs) -> tuple[list[str], GenerationStats]:
    stats = GenerationStats()
    return list(backend.generate(prompt, stats=stats, **kwargs)), stats


@pytest.mark.parametrize("prompt", PROMPTS, ids=["text", "fim", "unicode"])
def test_worker_streams_the_same_text_as_the_engine(worker, engine, prompt) -> None:
    for kwargs in ({"max_new_tokens": 24}, {"max_new_tokens": 24, "stop": ["\n", "()"]},
                   {"max_new_tokens": 24, "stop_rule": lambda text: len(text) > 10}):
        expected, expected_stats = streamed(engine, prompt, **kwargs)
        deltas, stats = streamed(worker, prompt, **kwargs)
        assert "".join(deltas) == "".join(expected), kwargs
        assert stats.finish_reason == expected_stats.finish_reason, kwargs
        assert stats.generated_tokens == expected_stats.generated_tokens, kwargs
        assert stats.prompt_tokens == expected_stats.prompt_tokens > 0
    assert any(streamed(engine, p, max_new_tokens=24)[0] for p in PROMPTS), "the comparison needs some text"


def test_worker_describes_its_model_like_the_engine(worker, engine) -> None:
    assert worker.info.as_dict() == engine.info.as_dict()
    assert worker.max_length == engine.max_length
    assert (worker.supports_fim, worker.supports_repo_context, worker.heals_middle, worker.is_instruct) == \
        (engine.supports_fim, engine.supports_repo_context, engine.heals_middle, engine.is_instruct)


def test_tokens_are_counted_in_the_server_exactly_as_the_engine_counts(worker, engine) -> None:
    assert worker._tokenizer is not None, "tokenizer.json should count like the engine for this model"
    root = Path(__file__).resolve().parents[1]
    texts = [p.read_text(encoding="utf-8")[:4000] for p in sorted((root / "lsp_server").rglob("*.py"))[:20]]
    texts += ["", " ", "\n\n\t", "x" * 1000, "😀" * 50, "<|fim_prefix|><|fim_middle|>", "\r\n".join("abc")]
    assert [worker.count_tokens(t) for t in texts] == [engine.count_tokens(t) for t in texts]


def test_prefill_warms_the_workers_cache(worker, engine) -> None:
    prompt = "import os\n\ndef walk(root):\n    for name in os.listdir(root):\n        yield"
    computed = worker.prefill(prompt, max_new_tokens=8)
    assert computed == engine.count_tokens(prompt)
    _deltas, stats = streamed(worker, prompt, max_new_tokens=4)
    assert stats.reused_tokens == computed - 1  # the last prompt token is fed again for its logits


def test_engine_only_arguments_are_refused(worker) -> None:
    with pytest.raises(TypeError, match="token_rule"):
        list(worker.generate("x = 1", token_rule=lambda token, logits: False))


def long_answer(backend) -> tuple[str, list[str]]:
    """A prompt the random model answers at full length (it may emit its EOS by chance on some), and the
    answer. The tiny tokenizer is trained on these sources, so which prompts those are changes with them."""
    for prompt in [*PROMPTS[:1], *(f"value_{i} = compute({i})\n" for i in range(12))]:
        full, stats = streamed(backend, prompt, max_new_tokens=400)
        if stats.finish_reason == "length":
            return prompt, full
    raise AssertionError("every prompt ended at EOS: nothing long enough to cancel")


def test_cancel_stops_the_workers_generation(plain_worker) -> None:
    prompt, full = long_answer(plain_worker)
    cancel = threading.Event()
    stats = GenerationStats()
    text = ""
    for delta in plain_worker.generate(prompt, max_new_tokens=400, cancel=cancel, stats=stats):
        text += delta
        cancel.set()
    assert stats.finish_reason == "cancel" and stats.generated_tokens < 50
    assert "".join(full).startswith(text)
    # The worker stopped too: its next answer is the whole one, not one queued behind 400 tokens.
    again, again_stats = streamed(plain_worker, prompt, max_new_tokens=400)
    assert again == full and again_stats.finish_reason == "length"


def test_closing_the_stream_early_cancels_the_generation(plain_worker) -> None:
    stream = plain_worker.generate(PROMPTS[0], max_new_tokens=400)
    next(stream)
    stream.close()
    assert plain_worker.complete("x = 1\n", max_new_tokens=3).generated_tokens == 3


def test_killed_worker_is_restarted_and_requests_in_flight_fail_cleanly(plain_worker, tiny_cache: Path) -> None:
    old = plain_worker.pid
    os.kill(old, signal.SIGSTOP)  # frozen: the request below is surely still in flight when it dies
    result: list[BaseException | str] = []

    def run() -> None:
        try:
            result.append(plain_worker.complete(PROMPTS[0], max_new_tokens=400).text)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)
    assert not result, "a frozen worker cannot have answered"
    os.kill(old, signal.SIGKILL)
    thread.join(10)
    assert len(result) == 1 and isinstance(result[0], InferenceError)
    assert "stopped" in str(result[0])
    deadline = time.monotonic() + 60
    while plain_worker.pid in (None, old) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert plain_worker.pid not in (None, old), "the worker was not restarted"
    assert len(plain_worker.messages) == 1 and "restarting" in plain_worker.messages[0]
    assert plain_worker.complete(PROMPTS[0], max_new_tokens=5).generated_tokens == 5
    # in the environment it was first started in (its cache folder), not the one around the restart
    environ = Path(f"/proc/{plain_worker.pid}/environ").read_bytes().split(b"\0")
    assert f"INFILL_CACHE_DIR={tiny_cache}".encode() in environ


def test_close_ends_a_busy_worker_at_once(plain_worker) -> None:
    pid = plain_worker.pid
    os.kill(pid, signal.SIGSTOP)  # stuck mid-generation: it will never read its stdin closing
    start = time.monotonic()
    plain_worker.close()
    assert time.monotonic() - start < 2, "close waits EXIT_GRACE_S, then kills"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(InferenceError):
        plain_worker.complete("x", max_new_tokens=2)
    assert plain_worker.prefill("x") == 0


def test_a_model_that_cannot_load_is_one_clear_error(tmp_path: Path, tiny_cache: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(InferenceError, match="not a model"):
        open_worker(tmp_path, tiny_cache)


@pytest.mark.slow
def test_the_default_models_tokens_are_counted_in_the_server_exactly(default_engine) -> None:
    """tokenizer.json of the default model counts like onnxruntime-genai's tokenizer, over real code."""
    import sysconfig

    from inference.worker import COUNT_PROBES

    onnx_dir = default_engine.prepared.onnx_dir
    tokenizer, special = WorkerBackend._parent_tokenizer(onnx_dir, [default_engine.count_tokens(t)
                                                                    for t in COUNT_PROBES])
    assert tokenizer is not None
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / f"{name}.py").read_text(encoding="utf-8")[:20000]
             for name in ("argparse", "textwrap", "difflib", "json/decoder", "locale")]
    texts += ["naïve café — 日本語 😀\r\n\t", "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>", " " * 37, "x" * 5000]
    counts = [len(tokenizer.encode(t, add_special_tokens=special).ids) for t in texts]
    assert counts == [default_engine.count_tokens(t) for t in texts]
