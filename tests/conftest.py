"""Shared fixtures. Append new fixtures below; do not rewrite others' sections."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helper modules (tiny_models, nvim_harness)
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repo root: benchmarks/ holds scripts


# ------------------------------------------------------------------------------------- engine fixtures
# Tiny random models are exported into a per-session temporary cache; the default model uses the user's
# cache, so a machine (or CI run) converts it once.


def load_tiny(model_dir: Path, cache_dir: Path, **kwargs):
    """`Engine.load(model_dir)` with INFILL_CACHE_DIR pointing at `cache_dir` while it exports (at fp32
    unless told otherwise: the parity tests compare with torch token for token)."""
    from inference import Engine

    kwargs.setdefault("precision", "fp32")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFILL_CACHE_DIR", str(cache_dir))
        return Engine.load(str(model_dir), **kwargs)


def only_config_eos(engine):
    """A random tiny model emits its special tokens by chance, so which family stop token ends an answer
    changes with the tokenizer (trained on this repository's sources): tests that need long answers from
    one stop at the configured EOS only."""
    import json

    eos = json.loads((engine.prepared.onnx_dir / "genai_config.json").read_text())["model"].get("eos_token_id", [])
    engine._eos_ids = set(eos if isinstance(eos, list) else [eos])
    return engine


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infill-cache")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: `tiny_model(family, arch)` builds (once per session) a random 2-layer model folder."""
    import torch
    from tiny_models import build_model

    torch.set_num_threads(1)
    built: dict[tuple[str, str], Path] = {}

    def make(family: str = "qwen2.5-coder", arch: str = "qwen2") -> Path:
        if (family, arch) not in built:
            out = tmp_path_factory.mktemp(f"tiny-{arch}-{family.replace('.', '')}")
            built[(family, arch)] = build_model(out, family=family, arch=arch)
        return built[(family, arch)]

    return make


@pytest.fixture(scope="session")
def qwen_engine(tiny_model, tiny_cache):
    """A tiny qwen2 with Qwen2.5-Coder FIM tokens, exported to ONNX."""
    return only_config_eos(load_tiny(tiny_model("qwen2.5-coder", "qwen2"), tiny_cache))


@pytest.fixture(scope="session")
def llama_engine(tiny_model, tiny_cache):
    """A tiny llama with CodeLlama FIM tokens, exported to ONNX."""
    return only_config_eos(load_tiny(tiny_model("codellama", "llama"), tiny_cache))


@pytest.fixture(scope="session")
def copy_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, str], Path]:
    """Factory: a copy of a model folder under a new name (its own cache entry)."""
    def copy(src: Path, name: str) -> Path:
        dst = tmp_path_factory.mktemp("copies") / name
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def default_engine():
    """The default catalogue model at its shipped precision (converted once into the user cache)."""
    from inference import Engine

    return Engine.load()


@pytest.fixture(scope="session")
def default_reference(default_engine):
    """The fp32 torch reference of the default model, from the HF folder the conversion left in the cache."""
    from inference.reference import TorchReference

    hf_dir = default_engine.prepared.hf_dir
    assert hf_dir is not None, "the default model's HF folder is missing from the cache"
    return TorchReference(hf_dir, threads=1)  # 2 threads collapse when the cores are shared


# ------------------------------------------------------------------------------- llama.cpp server (remote)
@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    """A real llama.cpp server (xllamacpp) on 127.0.0.1 serving the default model's GGUF, for the session."""
    pytest.importorskip("xllamacpp")
    from llama_server import LlamaServer, default_gguf

    server = LlamaServer(default_gguf(), log_path=tmp_path_factory.mktemp("llama") / "server.log")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def keyed_llama_server(tmp_path_factory: pytest.TempPathFactory):
    """A second llama.cpp server that wants the API key `sesame-123`."""
    pytest.importorskip("xllamacpp")
    from llama_server import LlamaServer, default_gguf

    server = LlamaServer(default_gguf(), api_key="sesame-123", log_path=tmp_path_factory.mktemp("llama") / "log")
    server.start()
    yield server
    server.kill()
