"""One request to the scheduler (:class:`Job`): its state, its memory estimate, its cancellation, and the
callbacks its worker thread hands back to the asking thread."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

Progress = Callable[[float, str], None]


class JobCancelled(Exception):
    """Raised inside a job (at a progress report) once it is cancelled."""


@dataclass
class Job:
    """One admitted or waiting request. ``state``: queued, running, paused (it gave its cores to another job and
    waits to go on, its memory still reserved), done, failed, cancelled. ``served``: seconds it has run, ``seq``:
    its place in arrival order."""

    key: tuple
    bytes_per_sample: int
    samples: int
    whole: bool = False  # it cannot take a smaller batch than its samples: all of them fit, or it waits
    state: str = "queued"
    batch: int = 0
    threads: int = 1
    result: object = None
    error: str = ""
    message: str = ""
    fraction: float = 0.0
    served: float = 0.0
    seq: int = 0
    slice_start: float = 0.0
    slice_live: int = 0  # the process's resident size when this slice began
    held: int = 0        # measured: what the job's finished slices left allocated (bytes)
    peak: int = 0        # measured: the most the job has held at once (bytes; 0: not measured yet)

    def __post_init__(self) -> None:
        self.done = threading.Event()
        self._cancelled = False
        self._worker: threading.Thread | None = None
        self._pending: dict[Callable, tuple] = {}
        self._pending_lock = threading.Lock()

    def relay(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` as the job may call it: on a worker thread the call is kept (the latest per function) and made
        on the asking thread by :meth:`drain`; on the asking thread itself it is ``fn``. For callbacks that
        draw (progress bars, previews): a Streamlit element belongs to its session's script thread."""
        def relayed(*args) -> None:
            if threading.current_thread() is not self._worker:
                fn(*args)
                return
            with self._pending_lock:
                self._pending.pop(fn, None)
                self._pending[fn] = args
        return relayed

    def drain(self) -> int:
        """Make the relayed calls that are waiting (on the calling thread); how many were made."""
        with self._pending_lock:
            calls, self._pending = self._pending, {}
        for fn, args in calls.items():
            fn(*args)
        return len(calls)

    def cancel(self) -> None:
        """Stop at the next progress report (a queued job leaves the queue)."""
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def bytes(self) -> int:
        """The job's memory estimate: bytes per sample times its batch (its samples before admission)."""
        return self.bytes_per_sample * max(1, self.batch or self.samples)

    @property
    def kind(self) -> str:
        """The technique of the request (the first part of its key)."""
        return str(self.key[0]) if self.key else ""
