"""Heartbeat hooks: a stopped job learns it was stopped in the middle of a forward or backward pass."""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

import torch
from torch import nn

from ..hooks import hooks_on


@contextlib.contextmanager
def heartbeat(model: nn.Module, beat: Callable[[], None], every: float = 0.25) -> Iterator[None]:
    """Call ``beat()`` at most every ``every`` seconds from inside this caller's own forward and backward passes
    of ``model`` (after each convolution or linear layer, and when the gradient reaches its output), for the
    work inside the block.

    A job reports progress once per batch, seconds apart on a slow machine; ``beat`` lets it learn that it was
    stopped mid-pass: it may raise (the scheduler's report raises :class:`~core.serve.job.JobCancelled`;
    Streamlit raises its rerun or stop at an element call), which ends the pass. The hooks belong to the caller
    (core/hooks.py): other sessions' passes on the shared model never beat. Work in other threads (model
    replicas) or on a private copy of the net beats only at its own progress reports.
    """
    last = [time.monotonic()]

    def tick(*_args) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            beat()

    def after(_module, _inputs, output) -> None:
        tick()
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(tick)  # returns None: the gradient is left as it is

    with hooks_on(model) as hooks:
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                hooks.forward(m, after)
        yield
