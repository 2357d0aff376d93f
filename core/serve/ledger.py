"""The scheduler's memory accounts (:class:`Ledger`): the budget, what the started jobs hold, what is free for
a new one, and by how much each kind of job was measured to hold more than its estimate."""
from __future__ import annotations

import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Sequence

from .. import profile
from .job import Job
from .memory import release_memory


MAX_RATIO = 20.0  # a stored ratio above this is not a measurement worth trusting


class Ledger:
    """Memory of the jobs of one :class:`~core.serve.scheduling.Scheduler` (its caller holds the lock).

    Args:
        budget: bytes for the process's memory outside jobs plus the started jobs'.
        base_bytes: the process's memory outside jobs at start-up (model weights, libraries).
        live_bytes: the process's resident size now (0: unknown, and nothing is measured).
    """

    def __init__(self, budget: int, base_bytes: Callable[[], int], live_bytes: Callable[[], int]) -> None:
        self.budget, self.base_bytes, self.live_bytes = budget, base_bytes, live_bytes
        self.ratios: dict[str, float] = {}  # kind -> the largest measured peak over estimate (> 1 only)
        self.store: Path | None = None  # where the ratios outlive the process (keep_in)
        self.sheddable: "weakref.WeakSet" = weakref.WeakSet()  # stores that can drop what they can reread
        self.shed_bytes, self.sheds, self.shed_every = 0, 0, 1.0
        self._shed_at = float("-inf")

    def charge(self, kind: str, bytes_per_sample: int) -> int:
        """The bytes per sample a new job of ``kind`` is admitted on: its estimate times its kind's ratio."""
        return int(bytes_per_sample * self.ratios.get(kind, 1.0))

    @staticmethod
    def reserved(started: Sequence[Job]) -> int:
        """The started (running or paused) jobs' memory: each its estimate or its measured peak, the larger."""
        return sum(max(j.bytes, j.peak) for j in started)

    def free(self, started: Sequence[Job]) -> int:
        """Bytes of the budget not used now by the process outside jobs and the started jobs."""
        reserved = self.reserved(started)
        # memory outside jobs grows (sessions, caches, allocator slack): count it live, not as at start-up
        outside = max(self.base_bytes(), self.live_bytes() - reserved)
        return self.budget - outside - reserved

    def fits(self, job: Job, started: Sequence[Job]) -> int:
        """How many samples ``job`` may take at once beside the ``started`` jobs (0: it must wait). A job alone
        always runs, one sample at a time if it can; a ``whole`` one takes all its samples or none."""
        if job.bytes_per_sample <= 0:
            return job.samples
        fit = min(job.samples, self.free(started) // job.bytes_per_sample)
        if job.whole and fit < job.samples:
            fit = 0
        if fit < 1 and not started:
            return job.samples if job.whole else 1
        return max(0, int(fit))

    def open_slice(self, job: Job) -> None:
        """``job`` starts or resumes: its growth is counted from the resident size now."""
        job.slice_live = self.live_bytes()

    def measure(self, job: Job, alone: bool) -> int | None:
        """Update ``job``'s measured peak from the resident size now; what it holds now (None: not measured).
        Only while it runs ``alone``: beside another running job the growth cannot be told apart."""
        if not alone or not job.slice_live:
            return None
        grown = job.held + self.live_bytes() - job.slice_live
        job.peak = max(job.peak, grown)
        return grown

    def keep_in(self, path: Path | None) -> None:
        """Start from the ratios earlier processes on this machine learnt in the table at ``path``
        (:func:`core.profile.grow`; a restarted or woken server admits a kind's first job on what it held
        before), and add what this process learns there."""
        self.store = path
        for kind, ratio in profile.read_table(path).items():
            if 1.0 < ratio <= MAX_RATIO:
                self.ratios[kind] = max(self.ratios.get(kind, 1.0), ratio)

    def learn(self, job: Job) -> None:
        """After ``job`` is done: remember by how much its kind exceeded its estimate."""
        if job.bytes_per_sample > 0 and job.peak > job.bytes:
            ratio = job.peak / job.bytes
            if ratio > self.ratios.get(job.kind, 1.0):
                self.ratios[job.kind] = ratio
                if self.store is not None:
                    profile.grow(self.store, {job.kind: min(ratio, MAX_RATIO)})

    def shed(self, short: int, lock: threading.Condition) -> bool:
        """Shed about ``short`` bytes from the :attr:`sheddable` stores, then hand freed heap back to the system,
        with ``lock`` (held by the caller) released meanwhile. False when it was done less than ``shed_every``
        seconds ago."""
        now = time.monotonic()
        if short <= 0 or now - self._shed_at < self.shed_every:
            return False
        self._shed_at = now
        stores = list(self.sheddable)
        lock.release()
        try:
            shed = 0
            for store in stores:
                if shed >= short:
                    break
                shed += int(store.shed(short - shed))
            release_memory()
        finally:
            lock.acquire()
        self.shed_bytes += shed
        self.sheds += 1
        return True
