"""Issue 11, memory: what was cut to shrink the processes changes nothing they compute.

The figures themselves come from benchmarks/memory.py (benchmarks/results/memory-2026-12-02.md); these tests
hold the cuts to their promise: the heap and the weight-file pages really are given back, and the session
options chosen for memory give the same tokens and the same search vectors as ONNX Runtime's defaults.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference import memory

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or memory._libc() is None,
                                reason="malloc_trim is glibc's")


def _rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _resident_mb(folder: Path) -> float:
    """Resident MB of this process's mappings of files under `folder` (from /proc/self/smaps)."""
    root, total, inside = str(folder.resolve()) + "/", 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            inside = len(fields) > 5 and fields[5].startswith(root)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total / 1024


def _digest(buffer) -> str:
    return hashlib.sha256(buffer).hexdigest()


def _mapped_elsewhere(path: Path) -> bool:
    """Another process maps `path` (its pages are then shared, and the kernel will not page them out)."""
    me, target = Path("/proc/self").resolve().name, str(path.resolve())
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if maps.parent.name != me and target in maps.read_text():
                return True
        except OSError:
            continue
    return False


ARENA_PROBE = """
import ctypes, re, sys, tempfile, threading
from inference import memory
if sys.argv[1] == "capped":
    assert memory.limit_arenas(2)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
together = threading.Barrier(8)

def request():  # what a request's thread does: allocate, work, free, end
    together.wait()
    chunks = [libc.malloc(16 * 1024) for _ in range(500)]
    for chunk in chunks:
        ctypes.memset(chunk, 1, 16 * 1024)
    together.wait()
    for chunk in chunks:
        libc.free(chunk)

threads = [threading.Thread(target=request) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with tempfile.NamedTemporaryFile("r") as out:
    f = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    print(len(re.findall(r'<heap nr=', out.read())))
"""


@glibc_only
def test_arenas_are_capped_so_a_thread_per_request_does_not_keep_memory_of_its_own() -> None:
    """Eight request threads allocating at once: glibc gives each an arena (which keeps its freed memory)
    unless `limit_arenas` capped them; capped, they share two."""
    def heaps(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", ARENA_PROBE, mode], capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).resolve().parents[1])
        assert run.returncode == 0, run.stderr
        return int(run.stdout.split()[-1])

    assert heaps("capped") <= 2 < heaps("default")


@glibc_only
def test_trim_gives_the_pages_of_freed_heap_chunks_back() -> None:
    """Small chunks freed below a live one stay resident (glibc only shrinks the heap from its top) until
    `memory.trim_heap()`; that is what a tokenizer's load leaves behind."""
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
    assert memory.trim_heap()
    assert before - _rss_mb() > 100
    libc.free(pin)


def test_only_a_graph_gathering_from_a_shared_4bit_table_gets_the_folding_cap(qwen_engine, tmp_path: Path) -> None:
    """The tiny fp32 export has no such table: no options, so no folding it relied on is lost."""
    from inference.engine import TIED_TABLE_OPTIONS, memory_options

    assert memory_options(qwen_engine.prepared.onnx_dir) == {}
    (tmp_path / "genai_config.json").write_text('{"model": {"decoder": {"filename": "model.onnx"}}}')
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07...op_type: GatherBlockQuantized...")
    assert memory_options(tmp_path) == TIED_TABLE_OPTIONS
    assert memory_options(tmp_path / "missing") == {}


@glibc_only
def test_page_out_drops_the_pages_of_a_mapped_file_and_keeps_its_content(tmp_path: Path) -> None:
    """What ONNX Runtime does with the weight file (a private, writable mapping, read once), then
    `memory.page_out`: the pages leave, and reading them again gives the same bytes back."""
    import mmap
    import os

    data = os.urandom(32 * 2**20)
    (tmp_path / "weights.data").write_bytes(data)
    with open(tmp_path / "weights.data", "r+b") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    assert _digest(mapped) == _digest(data)  # every page read: resident
    assert _resident_mb(tmp_path) > 30
    if memory.page_out(tmp_path) == 0:
        pytest.skip("this kernel has no MADV_PAGEOUT (Linux < 5.4)")
    assert _resident_mb(tmp_path) < 4
    assert _digest(mapped) == _digest(data)
    assert memory.page_out(tmp_path / "elsewhere") == 0  # only what is under the folder
    mapped.close()


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


RELEASE_PROBE = """
import json, sysconfig
from pathlib import Path
import numpy as np
from inference.embed import Embedder

def rss():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

lines = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text(encoding="utf-8").splitlines()
texts = ["\\n".join(lines[i * 8:i * 8 + 8]) for i in range(96)]
embedder = Embedder.load(threads=1)
first = embedder.embed(texts)
busy = rss()
embedder.release_memory()
released = rss()
again = embedder.embed(texts)
print(json.dumps({"busy": busy, "released": released, "same": bool(np.array_equal(first, again))}))
"""


@glibc_only
def test_the_embedder_gives_back_its_buffers_after_a_burst_and_embeds_the_same_after() -> None:
    """After an index pass ONNX Runtime's arena keeps the batches' buffers (tens of MB beside a 64 MB model);
    `release_memory` hands them back, and what is embedded afterwards is bit-identical. A fresh process: the
    test's own allocations would blur the figure."""
    run = subprocess.run([sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["busy"] - result["released"] > 20, result
    assert result["same"]


@pytest.mark.slow
def test_the_engines_session_options_change_no_token_of_the_default_model(default_engine) -> None:
    """The options the engine lays over genai_config.json (no constant folding of the 65 MB embedding
    table) against none: the same greedy tokens, with and without lookup drafts."""
    from inference import Engine
    from inference.engine import TIED_TABLE_OPTIONS, memory_options

    assert memory_options(default_engine.prepared.onnx_dir) == TIED_TABLE_OPTIONS
    plain = Engine(default_engine.prepared, session_options={})
    prompts = ["def quicksort(items):\n    ", "import json\n\n\ndef load_config(path):\n    ",
               "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"]
    for prompt in prompts:
        for lookup in (True, False):
            ids: list[list[int]] = [[], []]
            for engine, out in ((default_engine, ids[0]), (plain, ids[1])):
                engine.close()  # cold, so both compute the same passes
                engine.complete(prompt, max_new_tokens=32, lookup=lookup,
                                token_rule=lambda token, _logits, out=out: out.append(token) or False)
            assert ids[0] == ids[1] and len(ids[0]) > 4, (prompt, lookup)


@pytest.mark.slow
def test_the_default_models_weight_file_stays_mostly_on_disk(default_engine) -> None:
    """After loading and generating, little of the 325 MB weight file is resident (132 MB without
    `page_out` and the session options) unless another process maps it too (then the kernel keeps it)."""
    folder = default_engine.prepared.onnx_dir
    if any(_mapped_elsewhere(path) for path in folder.iterdir() if path.suffix == ".data"):
        pytest.skip("another process maps the model's weights: shared pages are not paged out")
    default_engine.complete("def quicksort(items):\n    ", max_new_tokens=16)
    assert _resident_mb(folder) < 40
