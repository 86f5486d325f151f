"""Turn a model into what the engine runs: GGUF → Hugging Face weights → ONNX with a KV cache.

Every product is built in a temporary directory and renamed into place only when complete, with a
manifest of file sizes, so a killed conversion or a truncated file is detected and rebuilt — never used.
Conversion runs in a subprocess (onnxruntime-genai's model builder) so that nothing it prints can reach
stdout, which is the LSP channel when the server runs over stdio.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from inference.errors import InferenceError

Progress = Callable[[str, "float | None"], None]
MANIFEST = "infill-manifest.json"
BUILDER_PRECISIONS = ("fp32", "fp16", "int8", "int4")


def is_complete(directory: Path) -> bool:
    """True when a built directory has its manifest and every listed file at its recorded size."""
    manifest = directory / MANIFEST
    try:
        sizes = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        return all((directory / name).stat().st_size == size for name, size in sizes.items())
    except OSError:
        return False


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp_dir)`, write the manifest, and rename tmp_dir to `target` (replacing a broken one)."""
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        build(tmp)
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
        if target.exists():  # a half-written or corrupt earlier build
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_to_hf(gguf: Path, out: Path, progress: Progress) -> None:
    """De-quantize a GGUF into a float32 Hugging Face folder (weights as safetensors, tokenizer files)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    progress(f"reading {gguf.name}", 0.05)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - a broken install
        raise InferenceError(f"converting a GGUF needs transformers ({exc}); reinstall infill-lsp") from None
    with contextlib.redirect_stdout(sys.stderr):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            progress("de-quantizing GGUF weights", 0.15)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        except (ValueError, OSError, KeyError, RuntimeError) as exc:
            raise InferenceError(f"cannot parse GGUF file {gguf}: {exc}") from None
        # The weights are plain floats now; transformers only refuses to save because the GGUF quantizer
        # marker is still attached.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        progress("saving Hugging Face weights", 0.3)
        model.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))


def hf_to_onnx(hf_dir: Path, out: Path, precision: str, progress: Progress, threads: int | None = None) -> None:
    """Export a Hugging Face causal LM to an onnxruntime-genai folder with past key/values."""
    if precision not in BUILDER_PRECISIONS:
        raise InferenceError(f"unknown precision {precision!r}; use one of {', '.join(BUILDER_PRECISIONS)}")
    extra = ["prune_lm_head=true"]
    if precision in ("int4", "int8"):
        # Asymmetric weights keep more of a small model; tied embeddings cannot be shared once quantized.
        extra += ["shared_embeddings=false", "is_symmetric=false", "accuracy_level=4"]
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
           "-p", precision, "-e", "cpu", "-c", str(out / ".builder-cache"), "--extra_options", *extra]
    progress(f"exporting to ONNX ({precision})", 0.5)
    log = out.parent / f"{out.name}.builder.log"
    with open(log, "w") as fh:
        result = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    shutil.rmtree(out / ".builder-cache", ignore_errors=True)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise InferenceError(f"ONNX export of {hf_dir} failed: {tail[0][:300]} (full log: {log})")
    log.unlink(missing_ok=True)
    tune_genai_config(out, threads=threads)
    progress("ONNX model ready", 0.95)


def tune_genai_config(onnx_dir: Path, threads: int | None = None) -> None:
    """Pin ONNX Runtime's thread count: its spinning threads must not outnumber the cores."""
    path = onnx_dir / "genai_config.json"
    cfg = json.loads(path.read_text())
    opts = cfg["model"]["decoder"].setdefault("session_options", {})
    opts["intra_op_num_threads"] = threads or min(4, os.cpu_count() or 2)
    opts["inter_op_num_threads"] = 1
    path.write_text(json.dumps(cfg, indent=4))
