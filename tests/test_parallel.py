"""Batch-parallel inference: replicas share weights and keep hooks private; ordered_map keeps order, raises,
cancels, and leaves torch's thread count as it found it."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from core.hooks import capture, hook_count, hooks_on
from core.parallel import default_workers, ordered_map
from tests.conftest import make_tiny


def _new_thread_count() -> int:
    """torch's thread count as a newly started thread sees it (the process-wide value)."""
    seen = []
    probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    probe.start()
    probe.join()
    return seen[0]


def _blocking(running: threading.Event, release: threading.Event):
    """A map function that says it runs, then waits to be released."""
    def fn(_replica, i):
        running.set()
        release.wait(10)
        return i
    return fn


@pytest.fixture(scope="module")
def atto():
    return make_tiny("convnext_atto", seed=3, num_classes=10)


def test_replica_shares_weights_has_its_own_lock_and_hooks(atto):
    x = torch.rand(2, 3, 64, 64)
    with hooks_on(atto) as hooks:  # a hook of this thread on the shared model is not copied
        hooks.forward(atto.net.stem, lambda *_: None)
        twin = atto.replica()
    assert hook_count(twin) == 0 and hook_count(atto) == 0
    assert twin.lock is not atto.lock
    shared = {p.data_ptr() for p in atto.parameters()} | {b.data_ptr() for b in atto.buffers()}
    assert {p.data_ptr() for p in twin.parameters()} | {b.data_ptr() for b in twin.buffers()} == shared
    assert not any(p.requires_grad for p in twin.parameters()) and not twin.training
    with torch.no_grad():
        torch.testing.assert_close(twin(x), atto(x), rtol=0, atol=0)
    with capture(twin, {"stages.1": twin.layer("stages.1")}) as out:  # hooks on the twin: invisible to atto
        assert hook_count(atto) == 0 and hook_count(twin) == 1
        assert atto.lock.acquire(timeout=1)  # the twin's hooks do not hold the shared lock
        atto.lock.release()
        with torch.no_grad():
            twin(x)
    assert out["stages.1"].shape[0] == 2 and hook_count(twin) == 0


def test_ordered_map_keeps_order_with_uneven_work(atto):
    def fn(replica, i):
        time.sleep(0.02 if i % 3 == 0 else 0.0)  # early items finish last
        return i, threading.get_ident(), id(replica)

    out = list(ordered_map(atto, fn, range(20), workers=3))
    assert [i for i, _, _ in out] == list(range(20))
    by_thread = {}
    for _, thread, replica in out:
        by_thread.setdefault(thread, set()).add(replica)
    assert len(by_thread) > 1  # the work was spread over threads...
    assert all(len(r) == 1 for r in by_thread.values())  # ...each with one replica of its own
    assert len(set().union(*by_thread.values())) == len(by_thread) and id(atto) not in set().union(*by_thread.values())


def test_ordered_map_raises_and_cancels_the_rest(atto):
    started = []

    def fn(_replica, i):
        started.append(i)
        if i == 2:
            raise RuntimeError("bad batch")
        time.sleep(0.01)
        return i

    with pytest.raises(RuntimeError, match="bad batch"):
        list(ordered_map(atto, fn, range(100), workers=2))
    assert len(started) <= 8  # at most 2 * workers in flight when the error reached the caller

    started.clear()
    it = ordered_map(atto, fn, range(3, 100), workers=2)
    assert [next(it), next(it)] == [3, 4]
    it.close()
    assert len(started) <= 6


def test_worker_threads_leave_torch_threads_as_found(atto):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seen = list(ordered_map(atto, lambda _r, _i: torch.get_num_threads(), range(4), workers=2))
        assert seen == [1, 1, 1, 1]  # each worker gets its share of the caller's two
        assert torch.get_num_threads() == 2
        assert _new_thread_count() == 2  # a thread started afterwards does not inherit the workers' setting
    finally:
        torch.set_num_threads(before)


def test_overlapping_maps_restore_the_count_from_before_the_first(atto):
    """A map started from a thread born during another map inherits one thread and, ending last, must not
    leave that count to the threads started afterwards."""
    before = torch.get_num_threads()
    outer_running, inner_running = threading.Event(), threading.Event()
    release_outer, release_inner = threading.Event(), threading.Event()

    seen, outer_out, inner_out = [], [], []

    def inner():
        seen.append(torch.get_num_threads())  # born while the outer map's workers run: inherits their 1
        inner_out.extend(ordered_map(atto, _blocking(inner_running, release_inner), range(3), workers=2))

    try:
        torch.set_num_threads(2)
        threads = [threading.Thread(target=lambda: outer_out.extend(
            ordered_map(atto, _blocking(outer_running, release_outer), range(2), workers=2)))]
        threads[0].start()
        assert outer_running.wait(10)
        threads.append(threading.Thread(target=inner))
        threads[1].start()
        assert inner_running.wait(10)
        release_outer.set()  # the outer map ends first...
        threads[0].join()
        release_inner.set()  # ...then the inner one
        threads[1].join()
        assert outer_out == [0, 1] and inner_out == [0, 1, 2] and seen == [1]
        assert _new_thread_count() == 2  # a thread started afterwards gets the count from before
    finally:
        release_outer.set()
        release_inner.set()
        torch.set_num_threads(before)


def test_a_thread_born_during_a_map_does_not_pass_on_its_count(atto):
    """Sequential case: the thread inherits one thread during the first map and runs the second after it ended."""
    before = torch.get_num_threads()
    running, release, first_done = threading.Event(), threading.Event(), threading.Event()
    seen, split = [], []

    def late():
        seen.append(torch.get_num_threads())  # inherited from the first map's workers
        first_done.wait(10)
        split.append(default_workers())  # sized from the process's count, not this thread's
        split.extend(ordered_map(atto, lambda _r, _i: torch.get_num_threads(), range(2)))

    try:
        torch.set_num_threads(2)
        first = threading.Thread(target=lambda: list(ordered_map(atto, _blocking(running, release), range(2), workers=2)))
        first.start()
        assert running.wait(10)
        t = threading.Thread(target=late)
        t.start()
        release.set()
        first.join()
        first_done.set()
        t.join()
        assert seen == [1] and split == [2, 1, 1]  # the second map still splits the process's two threads
        assert _new_thread_count() == 2  # a thread started afterwards gets the count from before
    finally:
        release.set()
        first_done.set()
        torch.set_num_threads(before)
