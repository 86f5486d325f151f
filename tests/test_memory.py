"""Issue 11, memory: what was cut to shrink the processes changes nothing they compute.

The figures themselves come from benchmarks/memory.py (benchmarks/results/memory-2026-12-02.md); these tests
hold the cuts to their promise: the heap really is given back, and the session options chosen for memory
give the same tokens and the same search vectors as ONNX Runtime's defaults.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import pytest

from inference import heap

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or heap._malloc_trim() is None,
                                reason="malloc_trim is glibc's")


def _rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@glibc_only
def test_trim_gives_the_pages_of_freed_heap_chunks_back() -> None:
    """Small chunks freed below a live one stay resident (glibc only shrinks the heap from its top) until
    `heap.trim()`; that is what a tokenizer's load leaves behind."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    chunks = [libc.malloc(64 * 1024) for _ in range(2400)]  # 150 MB under the mmap threshold: on the heap
    for chunk in chunks:
        ctypes.memset(chunk, 1, 64 * 1024)
    pin = libc.malloc(64 * 1024)  # keeps the heap's top in use, as a long-lived object does
    for chunk in chunks:
        libc.free(chunk)
    before = _rss_mb()
    assert heap.trim()
    assert before - _rss_mb() > 100
    libc.free(pin)


def test_the_embedder_gives_the_vectors_onnx_runtimes_defaults_give() -> None:
    """Its memory options (no memory pattern) must not change a search vector, bit for bit."""
    import onnxruntime as ort

    from inference.embed import Embedder, _mean_pool

    embedder = Embedder.load()
    model = Path(embedder._session._model_path)
    plain = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    texts = ["parse the config file", "def parse_config(path):\n    return json.load(open(path))",
             "class Mailer:\n    def send_email(self, to, body): ...", "x" * 300]
    for text in texts:  # one at a time: a batch pads, and padding alone moves the last bits
        ids = np.array([embedder._tokenizer.encode(text).ids], dtype=np.int64)
        mask = np.ones_like(ids)
        hidden = plain.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        assert np.array_equal(_mean_pool(hidden, mask)[0], embedder.embed([text])[0]), text
