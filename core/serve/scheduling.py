"""One scheduler for heavy work: a bounded number of jobs at once, first in first out, identical requests computed
once, cancellable, inside a memory budget.

A job runs on the thread that asked for it once :meth:`Scheduler.run` admits it, or, with ``job_nice`` set (the
app's scheduler: ``LENS_JOB_NICE``, default 10), on a fresh worker thread at that lower CPU priority while the
asking thread (a Streamlit session's script thread) waits, relays the job's progress and previews to its page
(:meth:`Job.relay`) and keeps polling its own stop signals. The lower priority is what keeps the server
responsive while jobs use every core: pages, the websocket and the browsers are served first, and a job gets the
rest (with nothing else to do, a niced job runs exactly as fast). The thread is fresh so that PyTorch's OpenMP
workers, which a thread creates on its first parallel region and which inherit its priority, are niced too.

- at most ``max_jobs`` run at once (``LENS_MAX_JOBS``, default: half the cores, at least one) and every job
  runs on the same number of torch intra-op threads, ``cores // max_jobs`` (at least one), whether it runs alone
  or beside others: float32 sums then add up in the same order, so a result never depends on who else was
  using the server; the running jobs together never use more threads than there are cores (a job waits while
  too few are free);
- waiting jobs are admitted in arrival order; a waiter's ``wait(n_ahead)`` callback says how many are ahead;
- a job whose key is already running or queued is not computed again: the second caller waits for the first
  and gets its result (if the first fails or is cancelled, the second computes it itself, so a failure reaches
  only its own user);
- a job stops at its next progress report once cancelled (:meth:`Job.cancel`: the user's Stop, an input change,
  the session ending) or when the caller's own ``cancel()`` says so: :class:`JobCancelled` is raised there;
- memory: a job declares bytes per sample (:func:`~core.serve.memory.per_sample_bytes`) and a sample count; it
  is admitted when the process's memory outside jobs (its live resident size less the running jobs' estimates,
  never less than at start-up) plus the running jobs' estimates plus its own fit the budget (``LENS_MEMORY_MB``,
  :func:`~core.serve.memory.default_memory_bytes`), with the number of samples it may take at once (its batch)
  lowered to what fits when that is enough, else it waits. A job alone is always admitted (with a batch of at
  least one), so nothing waits forever. When the job at the head of the queue does not fit whole, what the
  process holds outside jobs is shed first (at most once a second): the registered stores
  (:meth:`Scheduler.shed_from`, the app's result store) drop results from memory (kept on disk, reread when
  asked for), freed heap goes back to the system (``malloc_trim``), and the job's fit is checked again.

The process-wide scheduler also writes its :meth:`Scheduler.status` (and the running jobs' kinds and progress)
to ``LENS_CACHE_DIR/jobs.json`` whenever a job starts or ends (atomically), so whoever runs the server can see
what it is computing without opening a page.
"""
from __future__ import annotations

import collections
import contextvars
import json
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Callable

import torch

from ..files import atomic_write, cache_root
from .env import env_int
from .job import Job, JobCancelled, Progress
from .memory import default_memory_bytes, release_memory, rss_bytes


def default_max_jobs() -> int:
    """``LENS_MAX_JOBS`` (default: half the cores, at least 1): heavy jobs running at once."""
    return env_int("LENS_MAX_JOBS", max(1, (os.cpu_count() or 1) // 2), 1)


def default_job_nice() -> int:
    """``LENS_JOB_NICE`` (default 10): how much lower than the server's the jobs' CPU priority is (0 to 19)."""
    return env_int("LENS_JOB_NICE", 10, 0, 19)


class Scheduler:
    """The app-wide job queue (one per process; see :func:`scheduler`)."""

    def __init__(self, max_jobs: int | None = None, memory_bytes: int | None = None, cores: int | None = None,
                 base_bytes: Callable[[], int] | None = None, max_threads: int | None = None,
                 status_path: str | Path | None = None, live_bytes: Callable[[], int] | None = None,
                 job_nice: int | None = None) -> None:
        self.max_jobs = max_jobs or default_max_jobs()
        self.memory_bytes = memory_bytes if memory_bytes is not None else default_memory_bytes()
        self.cores = cores or max(1, os.cpu_count() or 1)
        self.max_threads = max_threads or self.cores  # per job
        self.base_bytes = base_bytes or (lambda: 0)  # memory already used outside jobs (model, caches)
        self.live_bytes = live_bytes or (lambda: 0)  # the process's resident size now (0: unknown)
        self.status_path = Path(status_path) if status_path is not None else None
        self.job_nice = job_nice  # None: a job runs on the asking thread
        self._cv = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._by_key: dict[tuple, Job] = {}
        self.finished = 0
        self._sheddable: "weakref.WeakSet" = weakref.WeakSet()
        self.shed_bytes, self.sheds, self.shed_every = 0, 0, 1.0
        self._shed_at = float("-inf")

    def shed_from(self, store) -> None:
        """Let the scheduler shed ``store`` under memory pressure: ``store.shed(n_bytes)`` drops about ``n_bytes``
        of what can be recomputed or reread and returns the bytes dropped (held weakly: a store that is gone is
        forgotten)."""
        with self._cv:
            self._sheddable.add(store)

    # ------------------------------------------------------------------------------------------ status

    def status(self) -> dict:
        """Running and queued counts, memory budget and the running jobs' estimate (bytes)."""
        with self._cv:
            return {"running": len(self._running), "queued": len(self._queue), "max_jobs": self.max_jobs,
                    "threads": sum(j.threads for j in self._running), "cores": self.cores,
                    "memory_budget": self.memory_bytes,
                    "memory_reserved": sum(j.bytes for j in self._running), "finished": self.finished,
                    "memory_shed": self.shed_bytes, "memory_sheds": self.sheds}

    def _write_status(self) -> None:
        """Write :meth:`status` plus the running jobs (kind, progress) to ``status_path`` atomically (caller holds
        the lock; a failed write is ignored: the file is for people, not for the jobs)."""
        if self.status_path is None:
            return
        data = {**self.status(), "time": time.time(), "pid": os.getpid(),
                "jobs": [{"kind": str(j.key[0]) if j.key else "", "fraction": round(j.fraction, 3),
                          "threads": j.threads, "batch": j.batch} for j in self._running]}
        try:
            atomic_write(self.status_path, json.dumps(data).encode())
        except OSError:
            pass

    def ahead_of(self, job: Job) -> int:
        with self._cv:
            try:
                return self._queue.index(job)
            except ValueError:
                return 0

    # ------------------------------------------------------------------------------------------- running

    def run(self, key: tuple, compute: Callable[[Job, Progress], object], *, progress: Progress | None = None,
            bytes_per_sample: int = 0, samples: int = 1, wait: Callable[[int], None] | None = None,
            cancel: Callable[[], bool] | None = None, poll: float = 0.1,
            on_worker: Callable[[threading.Thread], None] | None = None):
        """``compute(job, progress)`` as a scheduled job, or the result of an identical job in flight.

        Args:
            key: identifies the request (model fingerprint, image hash, settings).
            compute: does the work on this thread; reads ``job.batch`` (samples at once) and reports progress
                through the ``progress`` it is given (which raises :class:`JobCancelled` once cancelled).
            progress: the caller's own progress callback.
            bytes_per_sample, samples: the memory estimate (see :func:`per_sample_bytes`).
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
                    job = Job(key, int(bytes_per_sample), max(1, int(samples)))
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
            # a repeat (the heartbeat's) is not drawn again: every draw is a message to a browser
            if relayed is not None and (self.job_nice is None or shown[0] != (fraction, message)):
                shown[0] = (fraction, message)
                relayed(fraction, message)

        try:
            if self.job_nice is None:
                result = self._inline(job, compute, report)
            else:
                result = self._on_worker(job, compute, report, progress, cancel, on_worker)
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

    @staticmethod
    def _inline(job: Job, compute, report):
        previous = torch.get_num_threads()
        torch.set_num_threads(job.threads)
        try:
            return compute(job, report)
        finally:
            torch.set_num_threads(previous)

    def _on_worker(self, job: Job, compute, report, progress: Progress | None, cancel,
                   on_worker: Callable[[threading.Thread], None] | None = None, draw_every: float = 0.25,
                   keepalive: float = 1.0):
        """``compute(job, report)`` on a fresh thread at the jobs' priority (in a copy of this thread's context,
        so hooks owned here stay owned), while this thread makes the relayed calls (at most every
        ``draw_every`` seconds: each is a message to the browser, which shares the CPU with the jobs) and repeats
        the last progress after ``keepalive`` seconds without one (Streamlit stops a script at its element
        calls, so a closed tab or a Stop is noticed within about a second). When this thread
        is stopped (an exception from a relayed call or ``cancel()``), the job is cancelled and waited for: it
        ends at its next report, so it never runs on beside a job admitted after it."""
        outcome: dict[str, object] = {}
        finished = threading.Event()
        context = contextvars.copy_context()
        nice = int(self.job_nice or 0)

        def work() -> None:
            try:
                if nice:
                    try:
                        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(
                            os.PRIO_PROCESS, threading.get_native_id()) + nice)
                    except (OSError, AttributeError):
                        pass  # no per-thread priority here: the job runs at the server's
                torch.set_num_threads(job.threads)
                outcome["result"] = context.run(compute, job, report)
            except BaseException as e:  # noqa: BLE001 - handed to the asking thread
                outcome["error"] = e
            finally:
                finished.set()

        worker = threading.Thread(target=work, name="lens-job", daemon=True)
        job._worker = worker
        if on_worker is not None:
            on_worker(worker)
        worker.start()
        try:
            last = time.monotonic()
            while not finished.wait(draw_every):
                if job.drain():
                    last = time.monotonic()
                elif progress is not None and time.monotonic() - last >= keepalive:
                    progress(job.fraction, job.message or "running")
                    last = time.monotonic()
                if cancel is not None and cancel():
                    job.cancel()
            job.drain()
        except BaseException:
            job.cancel()
            finished.wait()
            raise
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["result"]

    def _threads(self) -> int:
        """Intra-op threads for the job at the head of the queue now (0: too few cores are free).

        Always ``cores // max_jobs`` (at least one, at most ``max_threads``), never the share of the moment: the
        same request gives the same numbers alone or beside others."""
        per_job = max(1, min(self.cores // self.max_jobs, self.max_threads))
        free = self.cores - sum(j.threads for j in self._running)
        if self._running and free < per_job:
            return 0
        return per_job

    def _free(self) -> int:
        """Bytes of the budget not used now by the process outside jobs and the running jobs' estimates."""
        reserved = sum(j.bytes for j in self._running)
        # memory outside jobs grows (sessions, caches, allocator slack): count it live, not as at start-up
        outside = max(self.base_bytes(), self.live_bytes() - reserved)
        return self.memory_bytes - outside - reserved

    def _fits(self, job: Job) -> int:
        """How many samples ``job`` may take at once now (0: it must wait)."""
        if len(self._running) >= self.max_jobs:
            return 0
        if job.bytes_per_sample <= 0:
            return job.samples
        fit = min(job.samples, self._free() // job.bytes_per_sample)
        if fit < 1 and not self._running:
            return 1  # alone: always runs, one sample at a time
        return max(0, int(fit))

    def _admit(self, job: Job, wait, cancel, poll: float) -> None:
        told: list = [None, 0.0]  # the queue position last said, and when
        with self._cv:
            while True:
                if job.cancelled or (cancel is not None and cancel()):
                    raise JobCancelled("stopped while queued")
                if self._queue[0] is job:
                    fit, threads = self._fits(job), self._threads()
                    if (threads and len(self._running) < self.max_jobs and job.bytes_per_sample > 0
                            and self._shed(job.bytes_per_sample * job.samples - self._free())):
                        continue  # memory was given back: check the fit again at once
                    if fit and threads:
                        self._queue.popleft()
                        job.batch, job.threads, job.state = fit, threads, "running"
                        self._running.append(job)
                        self._write_status()
                        self._cv.notify_all()
                        return
                ahead = self._queue.index(job)
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

    def _shed(self, short: int) -> bool:
        """Shed about ``short`` bytes from the registered stores, then hand freed heap back to the system (caller
        holds the lock; it is released meanwhile). False when it was done less than ``shed_every`` seconds ago."""
        now = time.monotonic()
        if short <= 0 or now - self._shed_at < self.shed_every:
            return False
        self._shed_at = now
        stores = list(self._sheddable)
        self._cv.release()
        try:
            shed = 0
            for store in stores:
                if shed >= short:
                    break
                shed += int(store.shed(short - shed))
            release_memory()
        finally:
            self._cv.acquire()
        self.shed_bytes += shed
        self.sheds += 1
        return True

    def _finish(self, job: Job, state: str) -> None:
        with self._cv:
            job.state = state
            if job in self._running:
                self._running.remove(job)
            if job in self._queue:
                self._queue.remove(job)
            if self._by_key.get(job.key) is job:
                del self._by_key[job.key]
            self.finished += 1
            if not self._running:
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
        return _scheduler
