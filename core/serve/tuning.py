"""Process-wide tuning, applied once per process.

For a long-running server, :func:`tune_process`: glibc's malloc arenas capped (``LENS_MALLOC_ARENAS``), then the
start-up objects frozen out of the garbage collector (``LENS_GC_FREEZE``); the dashboard calls it once, after the
first model is loaded (the freeze is meant for the long-lived start-up objects: libraries and a model). For a
batch command, :func:`keep_freed_memory` (``LENS_HEAP_KEEP_MB``): the command line calls it before its command.
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass

from .env import env_int

# glibc's mallopt parameter numbers
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest threshold older glibc versions accept
GLIBC_HEAP_MAX = 2 * GLIBC_MMAP_THRESHOLD_MAX  # a thread arena's heaps are at most this large (64-bit)


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt``; False where it refused the value or where there is no glibc."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(param, int(value)))
    except (OSError, AttributeError):
        return False


def default_heap_arenas() -> int:
    """``LENS_MALLOC_ARENAS`` (default 2): glibc malloc arenas the server's threads share; 0 leaves glibc's own
    (eight per core)."""
    return env_int("LENS_MALLOC_ARENAS", 2, 0)


def limit_heap_arenas(n: int | None = None) -> bool:
    """Cap glibc's malloc arenas at ``n`` (default :func:`default_heap_arenas`) for every thread that allocates
    from now on, as ``MALLOC_ARENA_MAX`` does when it is set before the process starts. Sessions, jobs and
    PyTorch's workers allocate from many threads, and each extra arena keeps freed memory the others do not
    reuse. Skipped (False) when ``n`` is 0, when ``MALLOC_ARENA_MAX`` is in the environment (glibc has applied
    it) and where there is no glibc."""
    n = default_heap_arenas() if n is None else n
    if n <= 0 or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return _mallopt(M_ARENA_MAX, n)


def default_heap_keep_mb() -> int:
    """``LENS_HEAP_KEEP_MB`` (default 1024; 0: glibc's own policy): the freed memory a batch command keeps for its
    next batch (:func:`keep_freed_memory`)."""
    return env_int("LENS_HEAP_KEEP_MB", 1024, 0)


def keep_freed_memory(mb: int | None = None) -> bool:
    """Let glibc keep up to ``mb`` megabytes (default :func:`default_heap_keep_mb`) of freed memory for the next
    allocations rather than return it to the kernel: blocks of up to ``mb / 2`` come from the heap instead of a
    fresh mapping of their own, the heap's top is trimmed only above ``mb``, and a thread's arena keeps its heaps
    when they fall empty (glibc's top pad at least a heap).

    For a process that runs one pass after another over batches (the command line's dataset commands): by
    default every block above glibc's mapping threshold (at most 32 MB, often an activation of a batch) is
    mapped anew, its pages faulted in, and unmapped when freed, and a batch's passes spend much of their time in
    the kernel. Kept, the process's resident size stays near its peak batch's. Not for the server (its budget
    counts resident memory: :func:`core.serve.memory.release_memory` hands memory back instead).

    Returns:
        Whether glibc took it; False when ``mb`` is 0, when ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``
        is in the environment (glibc has applied it), and where there is no glibc.
    """
    mb = default_heap_keep_mb() if mb is None else mb
    if mb <= 0 or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    keep = int(mb) * 2**20
    mapped = _mallopt(M_MMAP_THRESHOLD, keep // 2) or _mallopt(M_MMAP_THRESHOLD, min(keep // 2, GLIBC_MMAP_THRESHOLD_MAX))
    # a thread's arena unmaps a wholly free heap unless the top pad is at least a heap: threads keep theirs too
    return mapped and _mallopt(M_TRIM_THRESHOLD, keep) and _mallopt(M_TOP_PAD, min(keep, GLIBC_HEAP_MAX))


@dataclass(frozen=True)
class HeapFreeze:
    """What :func:`freeze_heap` did: objects moved out of the garbage collector's sight, and a full collection's
    milliseconds before and after."""

    objects: int
    full_collection_ms_before: float
    full_collection_ms_after: float


def default_gc_freeze() -> bool:
    """``LENS_GC_FREEZE`` (default 1): whether the app freezes its start-up objects (:func:`freeze_heap`)."""
    return bool(env_int("LENS_GC_FREEZE", 1, 0, 1))


def freeze_heap() -> HeapFreeze:
    """Collect the garbage once, then freeze every object alive now (``gc.freeze``): later full collections skip
    them. For a server after its start-up: PyTorch, timm, pandas, Streamlit and a model are hundreds of thousands
    of tracked objects, and Streamlit runs a full collection after every script run (``runner.postScriptGC``)
    holding the GIL, so every rerun of every session stalled all the others. Frozen objects are still freed by
    reference counting when dropped; only a reference cycle among them is never collected, hence once per
    process, after the imports and the first model (the long-lived objects)."""
    start = time.perf_counter()
    gc.collect()
    before = time.perf_counter() - start
    gc.freeze()
    start = time.perf_counter()
    gc.collect()
    after = time.perf_counter() - start
    return HeapFreeze(gc.get_freeze_count(), round(before * 1e3, 1), round(after * 1e3, 1))


def tune_process() -> dict[str, str]:
    """Cap the malloc arenas, then freeze the heap, each as its environment says; call once per process.

    Returns:
        Model-card rows: {"malloc arenas": what was done, "garbage collector": what was done}. A bad setting is
        described there instead of raised (the server runs untuned).
    """
    return {"malloc arenas": _arenas(), "garbage collector": _freeze()}


def _arenas() -> str:
    if "MALLOC_ARENA_MAX" in os.environ:
        return f"{os.environ['MALLOC_ARENA_MAX']} (MALLOC_ARENA_MAX from the environment)"
    try:
        n = default_heap_arenas()
    except ValueError as e:
        return f"glibc's default: {e}"
    if not n:
        return "glibc's default (LENS_MALLOC_ARENAS=0)"
    return f"{n} (LENS_MALLOC_ARENAS)" if limit_heap_arenas(n) else "glibc's default (no glibc here)"


def _freeze() -> str:
    try:
        if not default_gc_freeze():
            return "not frozen (LENS_GC_FREEZE=0)"
    except ValueError as e:
        return f"not frozen: {e}"
    f = freeze_heap()
    return (f"{f.objects:,} start-up objects frozen (LENS_GC_FREEZE): a full collection, which Streamlit runs after "
            f"every script run, took {f.full_collection_ms_before:.0f} ms before and "
            f"{f.full_collection_ms_after:.0f} ms after")
