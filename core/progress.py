"""The one progress-and-cancel protocol of every long loop in ``core``.

``progress(fraction, message)``: ``fraction`` in [0, 1], ``message`` one line for the user.
``cancel()``: returns True to stop; what was done so far is returned (or saved) and marked ``cancelled``.
A ``threading.Event`` is accepted wherever a cancel callable is (set means stop).
"""
from __future__ import annotations

import threading
from typing import Callable, Union

Progress = Callable[[float, str], None]
Cancel = Union[Callable[[], bool], threading.Event]


class Cancelled(Exception):
    """Raised inside a long loop when its ``cancel`` asks to stop; the caller returns (or keeps) what was done."""


def report(progress: Progress | None, fraction: float, message: str) -> None:
    """Call ``progress`` (if any) with ``fraction`` clamped to [0, 1]."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def is_cancelled(cancel: Cancel | None) -> bool:
    """True when ``cancel`` (a callable, a ``threading.Event`` or None) asks to stop."""
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())
