"""Faults survived, nothing lost: a server killed mid-indexing, two indexers on one workspace, a model
conversion killed half-way, a truncated cached file, a read-only cache, a full disk.

Each fault is made for real (kill -9, a second process, a read-only or tiny tmpfs mount, or a file-size
limit where mounting is not allowed) against the real code paths: `infill serve`, `Index`, `infill model
prepare` with the tiny random model.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsp_support import SERVER, RawServer

from inference.cache import MANIFEST, is_complete
from inference.sources import _content_key

ROOT = Path(__file__).resolve().parents[1]
BOUND = 60.0


# --- the index -------------------------------------------------------------------------------------------

def make_workspace(root: Path, files: int) -> Path:
    for i in range(files):
        path = root / f"pkg{i % 10}" / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"def handler_{i}_{j}(request):\n    return request + {j}\n\n" for j in range(6)))
    return root


def progress_messages(raw: RawServer) -> list[str]:
    return [((n.get("params") or {}).get("value") or {}).get("message") or ""
            for n in list(raw.notifications) if n["method"] == "$/progress"]


def start_indexing_server(workspace: Path, index_dir: Path, log: Path) -> RawServer:
    env = {**os.environ, "INFILL_INDEX_DIR": str(index_dir)}
    raw = RawServer(SERVER, env, log)
    raw.call("initialize", {"processId": None, "rootUri": workspace.as_uri(),
                            "capabilities": {"window": {"workDoneProgress": True}},
                            "initializationOptions": {"model": "no-such-model"}}, timeout=BOUND)  # search only
    raw.notify("initialized", {})
    return raw


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def chunked(messages: list[str]) -> int:
    """How many files the last 'N files scanned, M indexed' report says were indexed."""
    counts = [int(m.split(" indexed")[0].rsplit(" ", 1)[1]) for m in messages if m.endswith(" indexed")]
    return counts[-1] if counts else 0


def index_db(index_dir: Path) -> Path:
    [db] = list(index_dir.glob("*.sqlite3"))
    return db


def test_server_killed_mid_indexing_restarts_consistent_and_finishes(tmp_path: Path) -> None:
    files = 1500
    workspace = make_workspace(tmp_path / "ws", files)
    index_dir = tmp_path / "index"
    first = start_indexing_server(workspace, index_dir, tmp_path / "first.log")
    wait_for(lambda: chunked(progress_messages(first)) >= 100, BOUND * 2, "indexing to start")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(BOUND)
    db = index_db(index_dir)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        done = conn.execute("SELECT count(*) FROM files").fetchone()[0]
    assert 0 < done < files, f"the kill was not mid-way ({done} of {files} files)"

    second = start_indexing_server(workspace, index_dir, tmp_path / "second.log")
    try:
        # search answers during the rebuild, from what the killed server left
        answer = second.call("workspace/executeCommand", {"command": "infill.search",
                                                          "arguments": [{"query": "handler_0_1"}]}, timeout=BOUND)
        assert any(hit["name"] == "handler_0_1" for hit in answer["result"]), answer
        assert not any(m.startswith("indexed ") for m in progress_messages(second)), "asked after the rebuild"
        # and the rest is indexed (the embedding that follows is not waited for)
        wait_for(lambda: any(m.startswith(("embedded", "indexed")) for m in progress_messages(second)), BOUND * 5,
                 "the rest of the files")
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("SELECT count(*) FROM files").fetchone()[0] == files
            chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            assert conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == chunks
        assert chunked(progress_messages(second)) <= files - done + 10, "the restart re-did finished work"
    finally:
        assert second.close() == 0


TWO_INDEXERS = """
import sys, time
sys.path.insert(0, {root!r})
from lsp_server.search.store import Index
index = Index({ws!r}, {db!r})
print(index.update_all(embed=False).files_changed)
"""


def test_two_indexers_on_one_workspace_share_the_work(tmp_path: Path) -> None:
    """Two servers on one workspace (two editor windows) index into one database: it stays consistent and
    the files are not all chunked twice (a file the other process committed is skipped by its hash)."""
    files = 600
    workspace = make_workspace(tmp_path / "ws", files)
    db = tmp_path / "index.sqlite3"
    code = TWO_INDEXERS.format(root=str(ROOT), ws=str(workspace), db=str(db))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    changed = [int(out.strip()) for out, _err in outputs]
    print(f"two indexers chunked {changed} of {files} files")  # the measurement, in the test log
    assert sum(changed) < 1.5 * files, changed
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*), count(DISTINCT path) FROM files").fetchone() == (files, files)
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        assert chunks == files * 6 and conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == chunks


# --- the model cache -------------------------------------------------------------------------------------

def prepare(model: Path, cache: Path, limit_bytes: int | None = None, **popen) -> subprocess.Popen:
    """`infill model prepare` for the tiny model into `cache` (optionally under a file-size limit)."""
    def limit() -> None:
        if limit_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "INFILL_CACHE_DIR": str(cache), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "lsp_server.cli", "model", "prepare", "--model", str(model),
                             "--precision", "fp32"], env=env, cwd=ROOT, preexec_fn=limit, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finished(proc: subprocess.Popen) -> tuple[int, str]:
    _out, err = proc.communicate(timeout=600)
    return proc.returncode, err


def one_clear_error(code: int, stderr: str, *needles: str) -> None:
    """A non-zero exit and one `infill: …` line after the progress lines; no traceback."""
    assert code != 0 and "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("infill: ")]
    assert len(errors) == 1, stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


def built_dirs(cache: Path) -> list[Path]:
    """Every non-temporary directory under the cache's models/ that holds files."""
    return [d for d in (cache / "models").rglob("*") if d.is_dir() and not any(p.startswith(".") for p in
            d.relative_to(cache).parts) and any(f.is_file() for f in d.iterdir())]


def assert_nothing_half_written(cache: Path) -> None:
    for directory in built_dirs(cache):
        if (directory / MANIFEST).exists() or any(directory.glob("*.onnx")):
            assert is_complete(directory), f"{directory} is a half-written model"


def test_conversion_killed_half_way_is_rebuilt_never_loaded(tiny_model, tmp_path: Path) -> None:
    model = tiny_model("qwen2.5-coder", "qwen2")
    cache = tmp_path / "cache"
    proc = prepare(model, cache)
    wait_for(lambda: any(p.name.endswith(".tmp") for p in cache.rglob("*")) or proc.poll() is not None, BOUND * 3,
             "the conversion to start writing")
    time.sleep(0.3)
    proc.kill()
    proc.communicate(timeout=BOUND)
    assert proc.returncode == -signal.SIGKILL, "the conversion finished before the kill"
    assert_nothing_half_written(cache)
    code, err = finished(prepare(model, cache))
    assert code == 0, err[-3000:]
    complete = [d for d in built_dirs(cache) if is_complete(d)]
    assert complete, "no complete model after the second run"
    assert_nothing_half_written(cache)


def test_truncated_cached_file_is_rebuilt_not_loaded(tiny_model, tiny_cache: Path, qwen_engine, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache / "models", cache / "models", symlinks=True)
    model = tiny_model("qwen2.5-coder", "qwen2")
    root = cache / "models" / f"{model.name}-{_content_key(model)[:16]}"  # this model's exports, not another's
    export = next(d for d in built_dirs(cache) if d.is_relative_to(root) and d.name.startswith("onnx-fp32")
                  and (d / MANIFEST).exists() and any(d.glob("*.onnx*")))
    sizes = json.loads((export / MANIFEST).read_text())["files"]
    name, size = max(sizes.items(), key=lambda kv: kv[1])
    with open(export / name, "r+b") as fh:
        fh.truncate(size // 2)
    assert not is_complete(export)
    code, err = finished(prepare(model, cache))
    assert code == 0, err[-3000:]
    assert (export / name).stat().st_size == size and is_complete(export)


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A tmpfs at `path` (root only); yields False where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_cache_is_one_clear_message(tiny_model, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with mounted_tmpfs(cache, "ro,size=1m") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root ignores permissions and mounting is not allowed here")
            cache.chmod(0o500)
        code, err = finished(prepare(tiny_model("qwen2.5-coder", "qwen2"), cache))
        one_clear_error(code, err, str(cache), "read-only")


def test_full_disk_is_one_clear_message_and_nothing_half_written(tiny_model, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with mounted_tmpfs(cache, "size=256k") as mounted:
        proc = prepare(tiny_model("qwen2.5-coder", "qwen2"), cache, limit_bytes=None if mounted else 256 * 1024)
        code, err = finished(proc)
        one_clear_error(code, err, "disk is full")
        assert_nothing_half_written(cache)
        leftovers = [p for p in cache.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, f"temporary files left behind: {leftovers}"
