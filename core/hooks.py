"""Temporary hooks on a shared model that belong to their caller.

Streamlit shares one model object across sessions and threads. A hook is an attribute of a module, so a hook
installed by one session would run inside every other session's forward pass (and a plain forward, such as a
prediction, an attack or SmoothGrad, takes no lock). Every hook installed through :class:`HookSet` (and so
through :func:`hooks_on` and :func:`capture`) is therefore wrapped: it runs only when the pass that reaches it
runs in its owner's scope, i.e. inside the owner's ``with hooks_on(...)`` block, and does nothing anywhere
else. The scope is a :mod:`contextvars` token: a new thread (another Streamlit session, a worker of
:func:`core.parallel.ordered_map`) starts with an empty context and never matches. Only module forward and
forward-pre hooks are installed this way, and a forward pass runs on the thread that calls it on every device.
What happens during backward (a tensor hook that a forward hook put on the owner's own output, a custom autograd
function) belongs to the owner's tensors alone, so it needs no guard: on the CPU autograd runs it on the calling
thread, on CUDA on autograd's device threads, whose empty context would silence a guarded module backward hook
(which is why none is used).

So plain forwards need no lock and can never be touched by another job's hooks. ``model.lock`` is held only
where the module tree itself changes: while a hook is added or removed and while the tree is deep-copied
(:meth:`core.model.loading.LensModel.replica`, LRP's private copy), so a copy never iterates over a hook
dict that is changing size. Hooks are removed in ``finally``, even when the work raises.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import threading
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

_owners: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("lens_hook_owners", default=frozenset())
_tokens = itertools.count(1)
_STRUCTURE = threading.RLock()  # for modules without a ``lock`` (private copies of a net)


def structure_lock(model: nn.Module) -> contextlib.AbstractContextManager:
    """The lock held while hooks are added to or removed from ``model`` (or it is deep-copied)."""
    lock = getattr(model, "lock", None)
    return lock if isinstance(lock, type(threading.RLock())) else _STRUCTURE


class HookSet:
    """Registers hooks that fire only in the owner's scope and remembers their handles; use only through
    :func:`hooks_on`, which opens that scope."""

    def __init__(self, lock: contextlib.AbstractContextManager | None = None) -> None:
        self._handles: list[RemovableHandle] = []
        self._lock = lock or _STRUCTURE
        self.token = next(_tokens)

    def _guard(self, fn: Callable) -> Callable:
        token = self.token

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            if token in _owners.get():
                return fn(*args, **kwargs)
            return None  # another job's pass: leave it untouched
        return guarded

    def _add(self, register: Callable, fn: Callable) -> None:
        with self._lock:
            self._handles.append(register(self._guard(fn)))

    def forward(self, module: nn.Module, fn: Callable) -> None:
        self._add(module.register_forward_hook, fn)

    def forward_pre(self, module: nn.Module, fn: Callable) -> None:
        self._add(module.register_forward_pre_hook, fn)

    def remove(self) -> None:
        with self._lock:
            while self._handles:
                self._handles.pop().remove()


@contextlib.contextmanager
def hooks_on(model: nn.Module) -> Iterator[HookSet]:
    """Yield a :class:`HookSet` whose hooks fire only inside this block (in this thread's context) and are
    removed on exit. Holds no lock while the block runs."""
    hooks = HookSet(structure_lock(model))
    reset = _owners.set(_owners.get() | {hooks.token})
    try:
        yield hooks
    finally:
        try:
            hooks.remove()
        finally:
            _owners.reset(reset)


@contextlib.contextmanager
def capture(model: nn.Module, layers: dict[str, nn.Module], *, detach: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of ``layers`` (name -> module) during this caller's forward passes inside the block."""
    out: dict[str, torch.Tensor] = {}
    with hooks_on(model) as hooks:
        for name, module in layers.items():
            def keep(_m, _inp, output, name=name):
                t = output[0] if isinstance(output, (tuple, list)) else output
                out[name] = t.detach() if detach else t
            hooks.forward(module, keep)
        yield out


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")  # nn.Module's


def clear_hooks(module: nn.Module) -> None:
    """Drop every hook of ``module`` and its submodules (for a fresh deep copy of a shared tree)."""
    for m in module.modules():
        for attr in HOOK_DICTS:
            getattr(m, attr).clear()


def private_copy(module: nn.Module, lock_holder: nn.Module | None = None, memo: dict | None = None) -> nn.Module:
    """``copy.deepcopy(module, memo)`` taken under the structure lock of ``lock_holder`` (default ``module``),
    with no hook copied (other jobs' hooks would be dead weight on the copy)."""
    import copy

    with structure_lock(lock_holder if lock_holder is not None else module):
        twin = copy.deepcopy(module, memo)
    clear_hooks(twin)
    return twin


def hook_count(model: nn.Module) -> int:
    """Number of hooks of any kind on ``model`` and its submodules (tests use it to prove none are left)."""
    total = 0
    for m in model.modules():
        for attr in HOOK_DICTS:
            total += len(getattr(m, attr, None) or {})
    return total
