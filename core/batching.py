"""Batch sizes of forward passes, measured rather than fixed.

The batch fastest per image depends on the model and the CPU, and a large one is often not it: activations too
large for the allocator's reused memory are mapped afresh on every pass and cost page faults (the figures are in
docs/performance.md). So a pass over many images asks :func:`forward_batch`, which measures once per
architecture, device, input shape and thread count, and remembers.
"""
from __future__ import annotations

import threading
import time
from typing import Sequence

import torch

FORWARD_TRIALS = (1, 2, 4, 8, 16, 32)  # tried in order; a larger one only while the last was faster per image
TIMED_IMAGES = 8  # a small batch is timed over several passes: one pass of a few milliseconds is mostly noise
NEAR_TIE = 1.15  # per-image times closer than this are timed once more before one is chosen
_known: dict[tuple, int] = {}
_locks: dict[tuple, threading.Lock] = {}
_guard = threading.Lock()


def _key(model, shape: Sequence[int]) -> tuple:
    card = model.card
    return card.arch, getattr(card, "device", "cpu"), tuple(int(s) for s in shape), torch.get_num_threads()


def known_forward_batch(model, shape: Sequence[int]) -> int | None:
    """The batch :func:`forward_batch` measured for ``model`` at ``shape`` (3, H, W) on this thread's thread
    count; None before it was measured."""
    return _known.get(_key(model, shape))


def forward_batch(model, shape: Sequence[int], *, trials: Sequence[int] = FORWARD_TRIALS) -> int:
    """The batch of no-autograd forward passes fastest per image for ``model`` at input ``shape`` (3, H, W).

    Measured once per architecture, device, shape and intra-op thread count (replicas and reloads of a model
    share it) on random input: at each of ``trials`` in increasing order an untimed pass, then timed passes over
    at least ``TIMED_IMAGES`` images (the steady state: whether a batch's memory is mapped afresh on every pass
    depends on the process's allocator settings, see :func:`core.serve.tuning.keep_freed_memory`), stopping at
    the first batch slower per image than the fastest so far. A batch within ``NEAR_TIE`` of the fastest so far
    is timed once more, and so is that one, each keeping its faster time: one pass's noise would otherwise choose
    between them. Threads asking for the same key while it is measured wait for that measurement. About 50
    images' forward passes for a small network, 80 for a large one, more on near ties.
    """
    key = _key(model, shape)
    best = _known.get(key)
    if best is not None:
        return best
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        best = _known.get(key)
        if best is None:
            best = _known[key] = _measure(model, tuple(key[2]), trials)
    return best


def _measure(model, shape: tuple, trials: Sequence[int]) -> int:
    from .model.device import model_device

    device = model_device(model)
    generator = torch.Generator().manual_seed(0)
    inputs: dict[int, torch.Tensor] = {}
    per_image: dict[int, float] = {}

    def timed(size: int) -> float:
        passes = -(-TIMED_IMAGES // size)
        started = time.perf_counter()
        for _ in range(passes):
            model(inputs[size]).float().sum().item()  # .item(): the pass has finished on any device
        return (time.perf_counter() - started) / (size * passes)

    with torch.inference_mode():
        for size in trials:
            inputs[size] = torch.rand(size, *shape, generator=generator).to(device)
            # untimed first: a batch's first pass pays its one-off costs (kernels, and the pages of memory the
            # allocator has not held yet); a pass over many images pays what every later pass pays
            model(inputs[size]).float().sum().item()
            per_image[size] = timed(size)
            others = {k: v for k, v in per_image.items() if k != size}
            if others:
                rival = min(others, key=others.get)
                if max(per_image[size], per_image[rival]) < NEAR_TIE * min(per_image[size], per_image[rival]):
                    # a near tie, which one pass's noise could decide: each once more, the faster time kept
                    for k in (size, rival):
                        per_image[k] = min(per_image[k], timed(k))
            if per_image[size] > min(per_image.values()):
                break
    return min(per_image, key=per_image.get)
