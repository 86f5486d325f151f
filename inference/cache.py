"""The user's model cache: where converted models live, and the one way anything gets written there.

Every product (an assembled GGUF, Hugging Face weights, an ONNX export, the search embedder) is built
beside its final place and renamed into it only when complete — a directory with a manifest of file
sizes, a file only once its SHA-256 matched — so a killed build, a full disk or a truncated file is
noticed and rebuilt, never loaded. Directories are created user-only (0700): the cache holds the
user's models and, through the index, their code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import platformdirs

from inference.errors import InferenceError

Progress = Callable[[str, "float | None"], None]
MANIFEST = "infill-manifest.json"
STALE_UNOWNED_S = 24 * 3600  # a build in progress whose name carries no process id (older versions) is this old
_TMP_OWNER = re.compile(r"\.(\d+)(?:\.[a-z0-9_]{8})?\.tmp$")


def cache_root() -> Path:
    """The user cache directory (overridable with INFILL_CACHE_DIR, e.g. for tests)."""
    return Path(os.environ.get("INFILL_CACHE_DIR") or platformdirs.user_cache_dir("infill"))


def make_private_dir(path: Path, tighten: bool = True) -> Path:
    """Create `path` and its missing parents readable by the user only (`mkdir(parents=True, mode=…)` gives
    the parents default permissions), and with `tighten`, make `path` itself user-only if an older version
    left it open to others (never a shared directory such as /tmp); a clear error when that is impossible."""
    missing = []
    probe = path
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    try:
        for directory in reversed(missing):
            directory.mkdir(mode=0o700, exist_ok=True)
        st = path.stat()
        if tighten and st.st_mode & 0o077 and not st.st_mode & stat.S_ISVTX and st.st_uid == os.getuid():
            path.chmod(0o700)
    except OSError as exc:
        raise InferenceError(f"cannot create the cache directory {path}: {_reason(exc)}; "
                             "set INFILL_CACHE_DIR to a writable folder") from None
    return path


def make_private(tree: Path) -> None:
    """Make every file under `tree` user-only (0600, directories 0700), whatever the writer's umask."""
    for item in tree.rglob("*"):
        if not item.is_symlink():
            item.chmod(0o700 if item.is_dir() else 0o600)


def write_private(path: Path, text: str) -> None:
    """Write a small text file created user-only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


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
    make_private_dir(target.parent)
    remove_stale_builds(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise InferenceError(f"cannot write to the cache directory {target.parent}: {_reason(exc)}") from None
    try:
        build(tmp)
        make_private(tmp)  # converters write with the process umask (often 0644)
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
        write_private(tmp / MANIFEST, json.dumps({"files": files}, indent=1))
        if is_complete(target):  # another process (a second editor window) finished the same build first
            return target
        if target.exists():  # a half-written or corrupt earlier build
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except OSError as exc:
        raise InferenceError(f"cannot build {target}: {_reason(exc)}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_verified(target: Path, blocks: Iterable[bytes], *, size: int, sha256: str,
                   progress: Progress | None = None) -> Path:
    """Stream `blocks` into `target`, hashing while writing; rename into place only if the size and
    SHA-256 match. Returns `target`; raises InferenceError (and leaves nothing behind) otherwise."""
    make_private_dir(target.parent)
    remove_stale_builds(target.parent)
    digest, written, shown = hashlib.sha256(), 0, -1
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            for block in blocks:
                digest.update(block)
                out.write(block)
                written += len(block)
                if progress and size and written * 10 // size > shown:  # every 10 %, not every block
                    shown = written * 10 // size
                    progress(f"assembling {target.name}", min(written / size, 1.0))
        if written != size or digest.hexdigest() != sha256:
            raise InferenceError(f"the assembled file is {written:,} bytes with SHA-256 {digest.hexdigest()[:16]}…, "
                                 f"expected {size:,} bytes with {sha256[:16]}…")
        os.replace(tmp, target)
    except OSError as exc:
        raise InferenceError(f"cannot write {target}: {_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _builds(parent: Path) -> list[tuple[Path, bool]]:
    """Products being built beside their place in `parent`, each with whether its builder still runs (the
    process id in its name; a name without one counts as running until it is a day old)."""
    found = []
    for path in parent.glob(".*.tmp"):
        owner = _TMP_OWNER.search(path.name)
        if owner is None:
            try:
                alive = time.time() - path.stat().st_mtime < STALE_UNOWNED_S
            except OSError:
                continue
        else:
            alive = _process_alive(int(owner.group(1)))
        found.append((path, alive))
    return found


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, another user's
        return True
    return True


def remove_stale_builds(parent: Path) -> None:
    """Delete what killed builds left (a conversion killed half-way leaves gigabytes): never loaded, since
    only complete products are renamed into place, but otherwise kept on disk for ever."""
    for path, alive in _builds(parent):
        if not alive:
            remove(path)


def remove(path: Path) -> None:
    """Delete a cache product, a folder or a file, if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def building(parent: Path) -> bool:
    """True while some live process builds a product in `parent`."""
    return any(alive for _path, alive in _builds(parent))


def _reason(exc: OSError) -> str:
    """An OSError as the few words a user acts on."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "the disk is full (or a quota or file-size limit was reached)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "it is read-only or not yours"
    return exc.strerror or str(exc)
