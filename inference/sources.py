"""Where a model comes from: a catalogue name, a GGUF file, a Hugging Face folder or an ONNX folder.

Each source ends as one `PreparedModel`: an onnxruntime-genai folder in the user's cache (or the user's
own ONNX folder), plus the family that decides its prompts. Nothing is ever fetched from a model hub:
catalogue models come from installed packages (`inference.catalog`), everything else from local paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from inference import catalog
from inference.cache import Progress, build_atomically, building, cache_root, is_complete, remove
from inference.errors import InferenceError
from inference.export import BUILDER_PRECISIONS, EXPORT_REVISION, gguf_to_hf, hf_to_onnx
from inference.registry import Family, detect_family

# What onnxruntime-genai's model builder can export (config.json model_type)…
SUPPORTED_ARCHITECTURES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "phi", "starcoder2",
                           "gpt_bigcode", "granite", "olmo", "nemotron", "chatglm"}
# …and of those, what transformers can read from a GGUF (general.architecture).
GGUF_ARCHITECTURES = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "starcoder2", "nemotron"}
USER_MODEL_PRECISION = "int4"  # a user's GGUF or HF model, unless the precision setting says otherwise


@dataclass(frozen=True)
class PreparedModel:
    """A model ready for the engine."""

    name: str
    source: str  # what the user pointed at (catalogue name, file or directory)
    onnx_dir: Path
    hf_dir: Path | None  # float weights for the torch reference backend, when we have them
    family: Family
    precision: str
    reason: str = "configured"  # why this model (for `infill doctor` / `model info`)


def _silent(_message: str, _fraction: float | None = None) -> None:
    """Progress nobody listens to."""


def prepare(model: str | None = None, *, family: str | None = None, precision: str | None = None,
            device: str = "cpu", progress: Progress | None = None) -> PreparedModel:
    """Resolve and, if needed, convert a model. `model=None` means the best installed catalogue model."""
    report: Progress = progress or _silent
    precision = precision or os.environ.get("INFILL_PRECISION") or None
    if precision is not None and precision not in BUILDER_PRECISIONS:
        raise InferenceError(f"unknown precision {precision!r}; use one of {', '.join(BUILDER_PRECISIONS)}")
    if model is None or not model.strip():
        default, reason = catalog.default_model(device)
        return _prepare_catalog(default, family, precision, report, reason)
    entry = catalog.lookup(model)
    if entry is not None:
        return _prepare_catalog(entry, family, precision, report, "configured")
    path = Path(model).expanduser()
    if not path.exists():
        if os.sep not in model and not model.endswith(".gguf"):
            catalog.by_name(model)  # raises: an unknown name, listing the known ones
        raise InferenceError(f"model path {path} does not exist; point the model setting at a catalogue "
                             "name, a .gguf file, or a Hugging Face or ONNX model directory")
    if path.is_file():
        return _prepare_gguf(path, family, precision or USER_MODEL_PRECISION, report)
    if (path / "genai_config.json").is_file():
        return PreparedModel(path.name, str(path), path, None, detect_family(path, family), "as exported")
    if (path / "config.json").is_file():
        return _prepare_hf(path, family, precision or USER_MODEL_PRECISION, report)
    raise InferenceError(f"{path} is not a model directory: it has neither config.json (Hugging Face) "
                         "nor genai_config.json (ONNX)")


def _prepare_catalog(entry: catalog.CatalogModel, family: str | None, precision: str | None,
                     report: Progress, reason: str) -> PreparedModel:
    precision = precision or entry.precision
    root = entry.cache_dir()
    onnx_dir = _onnx_dir(root, precision)
    if not is_complete(onnx_dir):
        report(f"preparing {entry.name} (first use only)", 0.0)
        _convert_gguf(entry.gguf(report), root / "hf", onnx_dir, precision, report)
    _remove_intermediates(onnx_dir, [root / "hf", root / entry.gguf_name])
    hf_dir = root / "hf"
    return PreparedModel(entry.name, entry.title, onnx_dir, hf_dir if is_complete(hf_dir) else None,
                         detect_family(onnx_dir, family or entry.family), precision, reason)


def _prepare_gguf(path: Path, family: str | None, precision: str, report: Progress) -> PreparedModel:
    arch = gguf_architecture(path)
    root = cache_root() / "models" / f"{path.stem}-{_content_key(path)[:16]}"
    onnx_dir = _onnx_dir(root, precision)
    if not is_complete(onnx_dir):
        report(f"converting {path.name} ({arch}; first use only)", 0.0)
        _convert_gguf(path, root / "hf", onnx_dir, precision, report)
    _remove_intermediates(onnx_dir, [root / "hf"])
    hf_dir = root / "hf"
    return PreparedModel(path.stem, str(path), onnx_dir, hf_dir if is_complete(hf_dir) else None,
                         detect_family(onnx_dir, family), precision)


def _convert_gguf(gguf: Path, hf_dir: Path, onnx_dir: Path, precision: str, report: Progress) -> None:
    build_atomically(hf_dir, lambda tmp: gguf_to_hf(gguf, tmp, report))
    build_atomically(onnx_dir, lambda tmp: hf_to_onnx(hf_dir, tmp, precision, report))
    _remove_older_exports(onnx_dir)


def _remove_intermediates(export: Path, paths: list[Path]) -> None:
    """Drop what only the conversion needed once the export is built: the float Hugging Face folder (6× the
    int4 export: 2 GB for the default model), an assembled catalogue GGUF (its packages still hold the bytes).
    Only what is older than the export (what `float_weights` or a llama.cpp test rebuilt later stays), and
    not while another process (a second editor window) is still building beside it."""
    try:
        built = export.stat().st_mtime
    except OSError:
        return
    if building(export.parent):
        return
    for path in paths:
        try:
            if path.stat().st_mtime > built:
                continue
        except OSError:
            continue
        remove(path)


def float_weights(prepared: PreparedModel, progress: Progress | None = None) -> Path:
    """The float Hugging Face folder behind a model (the torch reference and precision probes load it):
    the user's own folder, or rebuilt from the model's GGUF, which the conversion removes once exported."""
    if prepared.hf_dir is not None:
        return prepared.hf_dir
    entry = catalog.lookup(prepared.name)
    if entry is not None:
        gguf = entry.gguf(progress)
    elif prepared.source.endswith(".gguf"):
        gguf = Path(prepared.source)
    else:
        raise InferenceError(f"{prepared.source} has no float weights to load (an ONNX folder)")
    hf_dir = prepared.onnx_dir.parent / "hf"
    return build_atomically(hf_dir, lambda tmp: gguf_to_hf(gguf, tmp, progress or _silent))


def gguf_architecture(path: Path) -> str:
    """The architecture a GGUF file declares, checked before any conversion starts."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InferenceError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise InferenceError(f"{path} is not a GGUF file (a model file must be .gguf; for other formats "
                             "point the model setting at a Hugging Face or ONNX folder)")
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(path)).fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except Exception as exc:  # a truncated or corrupt header: gguf raises many kinds
        raise InferenceError(f"cannot read the GGUF header of {path}: {exc}") from None
    if arch not in GGUF_ARCHITECTURES:
        raise InferenceError(f"unsupported GGUF architecture {arch!r} in {path}; supported: "
                             f"{', '.join(sorted(GGUF_ARCHITECTURES))}")
    return arch


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
    onnx_dir = _onnx_dir(cache_root() / "models" / f"{path.name}-{_content_key(path)[:16]}", precision)
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


def _content_key(path: Path) -> str:
    """Content key of a model file or folder: small files hashed whole, weights by name, size and a sampled
    hash (head and tail are enough to tell checkpoints apart without reading GBs at every start)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for file in files:
        digest.update(file.name.encode())
        size = file.stat().st_size
        digest.update(str(size).encode())
        with open(file, "rb") as fh:
            if size <= 4 << 20:
                digest.update(fh.read())
            else:
                digest.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()
