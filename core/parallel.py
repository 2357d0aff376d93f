"""Batch-parallel inference: worker threads, each with a private model replica and a share of torch's threads.

On a small CPU, one stream of work that overlaps image decoding with a two-thread forward pass loses: the decode
thread preempts an OpenMP thread and the other waits at every barrier, so the forward loses much of its
throughput. Two streams, each decoding its own batch and running its forward pass on one intra-op thread,
keep both cores busy with no barrier to wait at; one-thread convolutions are also more efficient than split
ones. See ``bench/activation_index.py`` (figures: docs/performance.md).

``torch.set_num_threads`` is per thread for the calling thread's OpenMP pool, but torch also remembers the last
value for threads that start later (a Streamlit rerun starts a new thread), so a thread born while workers run
inherits a worker's count. :func:`ordered_map` therefore sizes its workers from the process-wide count (what a
newly started thread gets, read before the first of any overlapping calls began), not from the calling thread,
and restores that count when the last call ends.
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Callable, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 4  # beyond this, replicas multiply activation memory for little gain

_threads_lock = threading.Lock()
_active = 0            # ordered_map calls running in this process
_baseline_threads = 0  # torch's thread count before the first of them began


def process_threads() -> int:
    """torch's process-wide intra-op thread count: what a newly started thread gets, or, while
    :func:`ordered_map` calls run, what it got before the first of them began."""
    with _threads_lock:
        if _active:
            return _baseline_threads
    return _fresh_thread_count()


def _fresh_thread_count() -> int:
    seen: list[int] = []
    probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    probe.start()
    probe.join()
    return seen[0]


def default_workers() -> int:
    """One worker per intra-op thread of the process, at most :data:`MAX_WORKERS`."""
    return _workers_for(process_threads())


def _workers_for(threads: int) -> int:
    return max(1, min(threads, MAX_WORKERS))


def ordered_map(model, fn: Callable[[object, T], R], items: Iterable[T], *, workers: int | None = None) -> Iterator[R]:
    """``fn(replica, item)`` for every item, run on ``workers`` threads, yielded in the order of ``items``.

    Each worker thread gets its own :meth:`core.model.LensModel.replica` of ``model`` (so its hooks are private
    and the shared model's lock is never held) and ``threads // workers`` intra-op threads, where ``threads`` is
    :func:`process_threads`. At most ``2 * workers`` items are in flight. Closing the iterator early cancels
    the items not started and waits for the running ones; an exception in ``fn`` is raised here.
    """
    global _active, _baseline_threads
    with _threads_lock:
        if _active == 0:
            _baseline_threads = _fresh_thread_count()
        _active += 1
        threads = _baseline_threads
    workers = workers or _workers_for(threads)
    per_worker = max(1, threads // workers)
    local = threading.local()

    def run(item: T) -> R:
        replica = getattr(local, "replica", None)
        if replica is None:
            torch.set_num_threads(per_worker)
            replica = local.replica = model.replica()
        return fn(replica, item)

    try:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lens-worker")
        try:
            queue: collections.deque = collections.deque()
            it = iter(items)
            for item in it:
                queue.append(pool.submit(run, item))
                if len(queue) >= 2 * workers:
                    break
            while queue:
                result = queue.popleft().result()
                nxt = next(it, _END)
                if nxt is not _END:
                    queue.append(pool.submit(run, nxt))
                yield result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        with _threads_lock:
            _active -= 1
            if _active == 0:  # threads started later take the last value set by anyone
                torch.set_num_threads(_baseline_threads)


_END = object()
