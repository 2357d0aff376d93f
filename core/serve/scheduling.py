"""One scheduler for heavy work: a bounded number of jobs at once sharing the cores in time slices, the least
served first, identical requests computed once, cancellable, inside a memory budget.

A job runs on the thread that asked for it once :meth:`Scheduler.run` admits it, or, with ``job_nice`` set (the
app's scheduler: ``LENS_JOB_NICE``, default 10), on a fresh worker thread at that lower CPU priority while the
asking thread relays its progress and previews to its page (:mod:`.worker`): the server stays responsive while
jobs use every core.

- at most ``max_jobs`` run at once (``LENS_MAX_JOBS``, default: half the cores, at least one) and every job
  runs on the same number of torch intra-op threads, ``cores // max_jobs`` (at least one), whether it runs alone
  or beside others: float32 sums then add up in the same order, so a result never depends on who else was
  using the server; the running jobs together never use more threads than there are cores (a job waits while
  too few are free);
- time slices: a job that has run ``slice_seconds`` (``LENS_JOB_SLICE``, default 1; 0: first in first out)
  since it was last admitted gives its cores, at its next progress report or heartbeat, to a waiting job served
  less (seconds run so far; a new job none), then waits ("paused": its memory still reserved, its threads
  unchanged) for its turn. The least served waiting job goes first (ties in arrival order): a short job that
  arrives while a long one runs starts at the long one's next report, and jobs of equal service take turns. A
  job that never reports runs to its end. A waiter's ``wait(n_ahead)`` callback says how many are ahead;
- a job whose key is already running or queued is not computed again: the second caller waits for the first
  and gets its result (if the first fails or is cancelled, the second computes it itself, so a failure reaches
  only its own user);
- a job stops at its next progress report once cancelled (:meth:`Job.cancel`: the user's Stop, an input change,
  the session ending) or when the caller's own ``cancel()`` says so: :class:`JobCancelled` is raised there;
- memory: a job declares bytes per sample (:func:`~core.serve.memory.per_sample_bytes`) and a sample count; it
  is admitted when the process's memory outside jobs (its live resident size less the started jobs' estimates,
  never less than at start-up) plus the started (running or paused) jobs' estimates plus its own fit the budget
  (``LENS_MEMORY_MB``, :func:`~core.serve.memory.default_memory_bytes`), with the number of samples it may take
  at once (its batch) lowered to what fits when that is enough, else it waits (a ``whole`` job, which takes
  all its samples at once, waits until they all fit). A job alone is always admitted
  (with a batch of at least one), so nothing waits forever; a new job that does not fit holds back the new jobs
  behind it, not the paused ones (their memory is reserved already). When the first new job does not fit
  whole, what the process holds outside jobs is shed first (at most once a second): the registered stores
  (:meth:`Scheduler.shed_from`, the app's result store) drop results from memory (kept on disk, reread when
  asked for), freed heap goes back to the system (``malloc_trim``), and the job's fit is checked again.
  Estimates are checked against what jobs hold: while a job runs alone, the growth of the resident size since
  it started (over its slices) is its measured peak; a started job reserves the larger of its estimate and
  that peak, and once a job of a kind (its key's first part) has held more than its estimate, later jobs of
  that kind are admitted on their estimate times the largest such ratio seen (:meth:`Scheduler.learned`; the
  process-wide scheduler keeps the ratios per machine in ``LENS_PROFILE_DIR``, so a restart starts from them).

The process-wide scheduler also writes its :meth:`Scheduler.status` (and the started jobs' kinds and progress)
to ``LENS_CACHE_DIR/jobs.json`` whenever a job starts, pauses or ends (atomically), so whoever runs the server can see
what it is computing without opening a page.
"""
from __future__ import annotations

import collections
import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from .. import profile
from ..files import atomic_write, cache_root
from .env import default_job_nice, default_job_slice, default_max_jobs  # noqa: F401 (re-exported)
from .job import Job, JobCancelled, Progress
from .ledger import Ledger
from .memory import default_memory_bytes, release_memory, rss_bytes
from .worker import run_inline, run_on_worker


class Scheduler:
    """The app-wide job queue (one per process; see :func:`scheduler`)."""

    def __init__(self, max_jobs: int | None = None, memory_bytes: int | None = None, cores: int | None = None,
                 base_bytes: Callable[[], int] | None = None, max_threads: int | None = None,
                 status_path: str | Path | None = None, live_bytes: Callable[[], int] | None = None,
                 job_nice: int | None = None, slice_seconds: float | None = None) -> None:
        self.max_jobs = max_jobs or default_max_jobs()
        self.cores = cores or max(1, os.cpu_count() or 1)
        self.max_threads = max_threads or self.cores  # per job
        self.ledger = Ledger(memory_bytes if memory_bytes is not None else default_memory_bytes(),
                             base_bytes or (lambda: 0), live_bytes or (lambda: 0))
        self.status_path = Path(status_path) if status_path is not None else None
        self.job_nice = job_nice  # None: a job runs on the asking thread
        self.slice_seconds = default_job_slice() if slice_seconds is None else float(slice_seconds)
        self._cv = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._paused: list[Job] = []  # started, waiting in the queue for their turn again
        self._arrivals = itertools.count()
        self._by_key: dict[tuple, Job] = {}
        self.finished = 0

    def shed_from(self, store) -> None:
        """Let the scheduler shed ``store`` under memory pressure: ``store.shed(n_bytes)`` drops about ``n_bytes``
        of what can be recomputed or reread and returns the bytes dropped (held weakly: a store that is gone is
        forgotten)."""
        with self._cv:
            self.ledger.sheddable.add(store)

    # ------------------------------------------------------------------------------------------ status

    def status(self) -> dict:
        """Running, paused and queued (not started) counts, memory budget and the started jobs' estimate (bytes)."""
        with self._cv:
            return {"running": len(self._running), "queued": len(self._queue) - len(self._paused),
                    "paused": len(self._paused), "max_jobs": self.max_jobs,
                    "threads": sum(j.threads for j in self._running), "cores": self.cores,
                    "memory_budget": self.ledger.budget,
                    "memory_reserved": self.ledger.reserved(self._started()), "finished": self.finished,
                    "memory_shed": self.ledger.shed_bytes, "memory_sheds": self.ledger.sheds,
                    "memory_learned": {k: round(v, 2) for k, v in self.ledger.ratios.items()}}

    def learned(self, kind: str) -> float:
        """How much more than their estimate jobs of ``kind`` have been measured to hold (1.0: not more)."""
        with self._cv:
            return self.ledger.ratios.get(kind, 1.0)

    def _write_status(self) -> None:
        """Write :meth:`status` plus the started jobs (kind, progress) to ``status_path`` atomically (caller holds
        the lock; a failed write is ignored: the file is for people, not for the jobs)."""
        if self.status_path is None:
            return
        data = {**self.status(), "time": time.time(), "pid": os.getpid(),
                "jobs": [{"kind": j.kind, "fraction": round(j.fraction, 3), "threads": j.threads, "batch": j.batch,
                          "state": j.state, "served": round(j.served, 1), "estimate_mb": round(j.bytes / 2**20),
                          "peak_mb": round(j.peak / 2**20)}
                         for j in self._running + self._paused]}
        try:
            atomic_write(self.status_path, json.dumps(data).encode())
        except OSError:
            pass

    def ahead_of(self, job: Job) -> int:
        """How many waiting jobs go before ``job`` (0 when it is not waiting)."""
        with self._cv:
            order = self._order()
            return order.index(job) if job in order else 0

    # ------------------------------------------------------------------------------------------- running

    def run(self, key: tuple, compute: Callable[[Job, Progress], object], *, progress: Progress | None = None,
            bytes_per_sample: int = 0, samples: int = 1, wait: Callable[[int], None] | None = None,
            cancel: Callable[[], bool] | None = None, poll: float = 0.1,
            on_worker: Callable[[threading.Thread], None] | None = None, whole: bool = False):
        """``compute(job, progress)`` as a scheduled job, or the result of an identical job in flight.

        Args:
            key: identifies the request (model fingerprint, image hash, settings).
            compute: does the work on this thread; reads ``job.batch`` (samples at once) and reports progress
                through the ``progress`` it is given (which raises :class:`JobCancelled` once cancelled).
            progress: the caller's own progress callback.
            bytes_per_sample, samples: the memory estimate (see :func:`per_sample_bytes`).
            whole: ``compute`` does not read ``job.batch`` (it always takes ``samples`` at once): it is admitted
                only when all of them fit (or when it is alone), never on a lowered batch it would ignore.
            wait: called with the number of jobs ahead while queued (about every ``poll`` seconds).
            cancel: the caller's own stop signal (checked while queued and at every progress report).
            on_worker: called with the worker thread before it starts (with ``job_nice`` set), e.g. to give it
                the caller's Streamlit script context.

        Raises:
            JobCancelled: cancelled before or while running. Any exception of ``compute`` (the job failed).
        """
        while True:
            with self._cv:
                other = self._by_key.get(key)
                if other is None:
                    job = Job(key, self.ledger.charge(str(key[0]) if key else "", bytes_per_sample),
                              max(1, int(samples)), whole, seq=next(self._arrivals))
                    self._by_key[key] = job
                    self._queue.append(job)
                    break
            # an identical request is in flight: wait for it and take its result
            while not other.done.wait(poll):
                if cancel is not None and cancel():
                    raise JobCancelled("stopped while waiting for an identical job")
                if wait is not None:
                    wait(self.ahead_of(other))
            if other.state == "done":
                return other.result
            # it failed or was cancelled: its reason is its own user's; compute it ourselves

        try:
            self._admit(job, wait, cancel, poll)
        except BaseException:
            self._finish(job, "cancelled")
            raise
        relayed = job.relay(progress) if progress is not None else None
        shown: list = [None]

        def report(fraction: float, message: str) -> None:
            if job.cancelled or (cancel is not None and cancel()):
                job.cancel()
                raise JobCancelled("stopped")
            job.fraction, job.message = fraction, message
            self.ledger.measure(job, self._running == [job])
            # a repeat (the heartbeat's) is not drawn again: every draw is a message to a browser
            if relayed is not None and (self.job_nice is None or shown[0] != (fraction, message)):
                shown[0] = (fraction, message)
                relayed(fraction, message)
            if self.slice_seconds > 0 and len(self._queue) and \
                    time.monotonic() - job.slice_start >= self.slice_seconds:
                self._take_turns(job, cancel, relayed, poll)

        try:
            if self.job_nice is None:
                result = run_inline(job, compute, report)
            else:
                result = run_on_worker(job, compute, report, progress, cancel, int(self.job_nice), on_worker)
            if job.cancelled:
                raise JobCancelled("stopped")
        except Exception as e:  # noqa: BLE001 - recorded, then raised to this job's own caller
            if isinstance(e, JobCancelled):
                self._finish(job, "cancelled")
                raise
            job.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self._finish(job, "failed")
            raise
        except BaseException:  # the session's rerun/stop (Streamlit), KeyboardInterrupt: the job was stopped
            self._finish(job, "cancelled")
            raise
        job.result = result
        self._finish(job, "done")
        return result

    def _threads(self) -> int:
        """Intra-op threads for the job at the head of the queue now (0: too few cores are free).

        Always ``cores // max_jobs`` (at least one, at most ``max_threads``), never the share of the moment: the
        same request gives the same numbers alone or beside others."""
        per_job = max(1, min(self.cores // self.max_jobs, self.max_threads))
        free = self.cores - sum(j.threads for j in self._running)
        if self._running and free < per_job:
            return 0
        return per_job

    def _started(self) -> list[Job]:
        return self._running + self._paused

    def _free(self) -> int:
        return self.ledger.free(self._started())

    def _fits(self, job: Job) -> int:
        """How many samples ``job`` may take at once now (0: it must wait)."""
        if len(self._running) >= self.max_jobs:
            return 0
        return self.ledger.fits(job, self._started())

    def _order(self) -> list[Job]:
        """The waiting jobs, the next to go first: the least served, then the earliest."""
        return sorted(self._queue, key=lambda j: (j.served, j.seq))

    def _first_new(self) -> Job | None:
        return next((j for j in self._order() if j.state == "queued"), None)

    def _next(self) -> Job | None:
        """The waiting job to start or resume now (None: none can). A paused job needs only a slot and its
        threads; a new one also its memory, and the first new one that does not fit holds back the new ones
        behind it (not the paused ones)."""
        if len(self._running) >= self.max_jobs or not self._threads():
            return None
        blocked = False
        for job in self._order():
            if job.state == "paused":
                return job
            if not blocked:
                if self._fits(job):
                    return job
                blocked = True
        return None

    def _start(self, job: Job) -> None:
        """Admit or resume ``job`` (caller holds the lock and chose it with :meth:`_next`)."""
        self._queue.remove(job)
        if job.state == "paused":
            self._paused.remove(job)
        else:
            job.batch, job.threads = self._fits(job), self._threads()
        job.state, job.slice_start = "running", time.monotonic()
        self._running.append(job)
        self.ledger.open_slice(job)
        self._write_status()
        self._cv.notify_all()

    def _admit(self, job: Job, wait, cancel, poll: float) -> None:
        told: list = [None, 0.0]  # the queue position last said, and when
        with self._cv:
            while True:
                if job.cancelled or (cancel is not None and cancel()):
                    raise JobCancelled("stopped while queued")
                if (self._first_new() is job and self._threads() and len(self._running) < self.max_jobs
                        and job.bytes_per_sample > 0
                        and self._shed(job.bytes_per_sample * job.samples - self._free())):
                    continue  # memory was given back: check the fit again at once
                if self._next() is job:
                    self._start(job)
                    return
                ahead = self._order().index(job)
                now = time.monotonic()
                # said again when it changes, else once a second (a page's progress call is where Streamlit
                # stops a closed or stopped session; more often would only make its browser redraw)
                if wait is not None and (ahead != told[0] or now - told[1] >= 1.0):
                    told[:] = ahead, now
                    self._cv.release()
                    try:
                        wait(ahead)
                    finally:
                        self._cv.acquire()
                self._cv.wait(poll)

    def _take_turns(self, job: Job, cancel, relayed, poll: float) -> None:
        """At a report of running ``job`` whose slice is over: when a less served waiting job can run in its place,
        give it the cores and wait, paused and polling the stop signals, until it is this job's turn again."""
        with self._cv:
            first = self._first_new()
            if first is not None and first.bytes_per_sample > 0:  # a new job short of memory: shed for it first
                self._shed(first.bytes_per_sample * first.samples - self._free())
            served = job.served + time.monotonic() - job.slice_start
            holds = self.ledger.measure(job, self._running == [job])
            self._running.remove(job)
            self._paused.append(job)
            job.state = "paused"
            other = self._next()
            if other is None or (other.served, other.seq) > (served, job.seq):
                self._paused.remove(job)
                self._running.append(job)
                job.state = "running"
                return  # nobody to give way to: asked again at the next report
            job.served = served
            if holds is not None:  # what this slice left allocated stays the job's while it waits
                job.held = max(0, holds)
            self._queue.append(job)
            self._write_status()
            self._cv.notify_all()
            message, told = job.message, float("-inf")
            try:
                while True:
                    if job.cancelled or (cancel is not None and cancel()):
                        job.cancel()
                        raise JobCancelled("stopped while paused")
                    if self._next() is job:
                        self._start(job)
                        return
                    if relayed is not None and time.monotonic() - told >= 1.0:
                        told = time.monotonic()
                        job.message = f"{message} (paused: sharing the cores with another job)"
                        self._cv.release()
                        try:
                            relayed(job.fraction, job.message)
                        finally:
                            self._cv.acquire()
                    self._cv.wait(poll)
            finally:
                job.message = message

    def _shed(self, short: int) -> bool:
        """:meth:`Ledger.shed` with the lock released meanwhile (caller holds it)."""
        return self.ledger.shed(short, self._cv)

    def _finish(self, job: Job, state: str) -> None:
        with self._cv:
            if state == "done":
                self.ledger.measure(job, self._running == [job])
                self.ledger.learn(job)
            job.state = state
            if job in self._running:
                self._running.remove(job)
            if job in self._paused:
                self._paused.remove(job)
            if job in self._queue:
                self._queue.remove(job)
            if self._by_key.get(job.key) is job:
                del self._by_key[job.key]
            self.finished += 1
            if not self._running and not self._paused:
                release_memory()
            self._write_status()
            job.done.set()
            self._cv.notify_all()


_scheduler: Scheduler | None = None
_scheduler_lock = threading.Lock()


def scheduler() -> Scheduler:
    """The process-wide scheduler, sized by ``LENS_MAX_JOBS`` and ``LENS_MEMORY_MB``, its jobs on worker threads
    at ``LENS_JOB_NICE``, with the process's memory outside jobs measured once at creation (model weights,
    libraries) counted against the budget, and its status in ``jobs.json`` under the cache root."""
    global _scheduler
    with _scheduler_lock:
        if _scheduler is None:
            base = rss_bytes()
            root = cache_root()
            _scheduler = Scheduler(base_bytes=lambda: base, live_bytes=rss_bytes,
                                   status_path=root / "jobs.json" if root else None, job_nice=default_job_nice())
            _scheduler.ledger.keep_in(profile.table("memory-learned"))
        return _scheduler
