"""Where a scheduled job runs: on the asking thread, or on a fresh niced worker thread while the asking thread
draws its progress (see :mod:`.scheduling`)."""
from __future__ import annotations

import contextvars
import os
import threading
import time
from typing import Callable

import torch

from .job import Job, Progress


def run_inline(job: Job, compute, report):
    """``compute(job, report)`` on this thread with the job's torch threads (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        return compute(job, report)
    finally:
        torch.set_num_threads(previous)


def run_on_worker(job: Job, compute, report, progress: Progress | None, cancel, nice: int,
                  on_worker: Callable[[threading.Thread], None] | None = None, draw_every: float = 0.25,
                  keepalive: float = 1.0):
    """``compute(job, report)`` on a fresh thread at ``nice`` lower priority (in a copy of this thread's context,
    so hooks owned here stay owned), while this thread makes the relayed calls (at most every ``draw_every``
    seconds: each is a message to the browser, which shares the CPU with the jobs) and repeats the last progress
    after ``keepalive`` seconds without one (Streamlit stops a script at its element calls, so a closed tab or a
    Stop is noticed within about a second). When this thread is stopped (an exception from a relayed call or
    ``cancel()``), the job is cancelled and waited for: it ends at its next report, so it never runs on beside
    a job admitted after it."""
    outcome: dict[str, object] = {}
    finished = threading.Event()
    context = contextvars.copy_context()

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
