"""Temporary hooks on a shared model.

Streamlit shares one model object across sessions and threads, so hook-based techniques must (a) never leave a
hook behind, even when the work raises, and (b) not see each other's hooks. :func:`hooks_on` holds the model's
lock for the whole time its hooks exist and removes them in ``finally``.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class HookSet:
    """Registers hooks and remembers their handles; use only through :func:`hooks_on`."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def forward(self, module: nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_hook(fn))

    def forward_pre(self, module: nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_pre_hook(fn))

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()


def _lock_of(model: nn.Module) -> contextlib.AbstractContextManager:
    lock = getattr(model, "lock", None)
    return lock if isinstance(lock, type(threading.RLock())) else contextlib.nullcontext()


@contextlib.contextmanager
def hooks_on(model: nn.Module) -> Iterator[HookSet]:
    """Yield a :class:`HookSet` whose hooks are removed on exit; holds ``model.lock`` meanwhile."""
    with _lock_of(model):
        hooks = HookSet()
        try:
            yield hooks
        finally:
            hooks.remove()


@contextlib.contextmanager
def capture(model: nn.Module, layers: dict[str, nn.Module], *, detach: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of ``layers`` (name -> module) during forward passes inside the block."""
    out: dict[str, torch.Tensor] = {}
    with hooks_on(model) as hooks:
        for name, module in layers.items():
            def keep(_m, _inp, output, name=name):
                t = output[0] if isinstance(output, (tuple, list)) else output
                out[name] = t.detach() if detach else t
            hooks.forward(module, keep)
        yield out


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")  # nn.Module's


def hook_count(model: nn.Module) -> int:
    """Number of hooks of any kind on ``model`` and its submodules (tests use it to prove none are left)."""
    total = 0
    for m in model.modules():
        for attr in HOOK_DICTS:
            total += len(getattr(m, attr, None) or {})
    return total
