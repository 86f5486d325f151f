"""Give freed C-heap memory back to the kernel after a big load.

Loading a tokenizer or an ONNX session allocates far more than it keeps (onnxruntime-genai's tokenizer:
75 MB at its peak, 31 MB kept; the session: 17 MB more than it keeps), and glibc's malloc keeps freed
pages of its heap resident until something asks for them: RSS that no one uses
(benchmarks/results/memory-2026-12-02.md). `trim()` asks malloc to return them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def trim() -> bool:
    """Return the heap's free pages to the kernel; True when some were (False where this is not glibc)."""
    function = _malloc_trim()
    return bool(function(0)) if function is not None else False
