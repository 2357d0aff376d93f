"""One memo per model: values computed once for a model object and dropped with it.

Measured batches, chosen precisions, the layer catalogue, LRP's prepared copy and the memory a sample needs are
facts about one model object; :class:`PerModel` keeps them in a weak dictionary (a model that is gone takes its
entries with it) behind one lock, so sessions sharing the model see one value.
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable, Generic, TypeVar

V = TypeVar("V")


class PerModel(Generic[V]):
    """A thread-safe weak map from a model (any weak-referenceable object) to a value.

    ``get_or_make(model, make)`` computes ``make()`` outside the lock (it may run a forward pass) and keeps the
    first value stored, so two threads that race agree on one.
    """

    def __init__(self) -> None:
        self._values: "weakref.WeakKeyDictionary[object, V]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, model, default=None):
        with self._lock:
            return self._values.get(model, default)

    def set(self, model, value: V) -> V:
        with self._lock:
            self._values[model] = value
        return value

    def get_or_make(self, model, make: Callable[[], V]) -> V:
        with self._lock:
            if model in self._values:
                return self._values[model]
        value = make()
        with self._lock:
            return self._values.setdefault(model, value)

    def update(self, model, change: Callable[[V | None], V]) -> V:
        """Replace the value with ``change(old)`` under the lock (``old`` None when absent); returns it."""
        with self._lock:
            value = change(self._values.get(model))
            self._values[model] = value
            return value

    def __contains__(self, model) -> bool:
        with self._lock:
            return model in self._values

    def pop(self, model, default=None):
        with self._lock:
            return self._values.pop(model, default)


def add_to(registry: dict, name: str, item, what: str, *, replace_existing: bool = False):
    """Put ``item`` in ``registry`` under ``name`` (a technique or method registry); returns ``item``.

    Raises:
        ValueError: the name is taken (unless ``replace_existing``); ``what`` names the kind in the message.
    """
    if name in registry and not replace_existing:
        raise ValueError(f"{what} named {name!r} is already registered")
    registry[name] = item
    return item
