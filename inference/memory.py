"""Keep the model's process to the memory it uses: give freed heap back, and let the kernel drop weight-file
pages that ONNX Runtime read once and never touches again (benchmarks/results/memory-2026-12-02.md).

- `limit_arenas()`: glibc gives each thread that allocates an arena of its own (up to 8 per core), and each
  keeps what was freed in it resident. The worker serves every request on a new thread and the server runs
  requests on a pool: after 5,000 requests of a soak the worker's seven thread arenas held ~60 MB each, almost
  all of it free (389 MB of its 855 MB malloc'd), and RSS rose by 25-45 MB per 1,000 requests.
- `trim_heap()`: loading a tokenizer or an ONNX session allocates far more than it keeps (onnxruntime-genai's
  tokenizer: 75 MB at its peak, 31 MB kept), and glibc's malloc keeps freed pages of its heap resident
  until something asks for them.
- `page_out(folder)`: ONNX Runtime maps the model's external weight file and packs the 4-bit weights into
  its own buffers; the mapped originals of what it packed (scales, zero points) are then never read again,
  and the embedding table is read one row per input token. Their pages stay resident all the same (67 MB
  for Qwen2.5-Coder-0.5B, 132 MB with the embedding table mapped). MADV_PAGEOUT asks the kernel to reclaim
  them; a page that is read again is read back from the file, so nothing computed changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from pathlib import Path

MADV_PAGEOUT = 21  # Linux 5.4+; older kernels refuse it (EINVAL) and nothing happens
M_ARENA_MAX = -8  # mallopt parameter (malloc.h)
ARENAS = 2  # the main arena and one more: the model's threads are serialised by its lock anyway


@functools.cache
def _libc():
    """glibc (None where the C library is another: macOS, Windows, musl lack malloc_trim)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def limit_arenas(count: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `count` for this process (call before its threads allocate), so memory
    one request's thread freed is reused by the next instead of staying resident in an arena of its own.
    True when glibc took it (False where this is not glibc)."""
    libc = _libc()
    return bool(libc.mallopt(M_ARENA_MAX, count)) if libc is not None else False


def trim_heap() -> bool:
    """Return the heap's free pages to the kernel; True when some were (False where this is not glibc)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def mapped_files(folder: Path) -> list[tuple[int, int, str]]:
    """This process's mappings of files under `folder`: (start address, length, path)."""
    if not sys.platform.startswith("linux"):
        return []
    root = str(folder.resolve()) + "/"
    found = []
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # no /proc (a sandbox): nothing to advise
        return []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(root):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found.append((start, end - start, fields[5]))
    return found


def page_out(folder: Path) -> int:
    """Ask the kernel to reclaim the resident pages of this process's mappings of files under `folder`
    (pages another process maps too are left alone). Returns the bytes it accepted the advice for."""
    libc = _libc()
    if libc is None:
        return 0
    return sum(length for start, length, _ in mapped_files(folder) if libc.madvise(start, length, MADV_PAGEOUT) == 0)
