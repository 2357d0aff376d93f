"""The serving layer: what lets many sessions share one process.

:mod:`.scheduling` (bounded concurrent jobs in time slices, identical requests once, the memory budget, ``jobs.json``),
:mod:`.worker` (where a job runs),
:mod:`.job` (one request and its relayed callbacks), :mod:`.memory` (resident size, bytes per sample, the budget),
:mod:`.heartbeats` (a stopped job ends mid-pass), :mod:`.tuning` (malloc arenas and the heap freeze, once per
process), :mod:`.store` (the result store, spilled under the cache root), :mod:`.env` (their settings).
"""
from .heartbeats import heartbeat  # noqa: F401
from .job import Job, JobCancelled, Progress  # noqa: F401
from .memory import default_memory_bytes, per_sample_bytes, release_memory, rss_bytes  # noqa: F401
from .scheduling import Scheduler, default_job_nice, default_job_slice, default_max_jobs, scheduler  # noqa: F401
from .store import Corrupt, ResultStore, code_version, key_digest  # noqa: F401
from .tuning import (HeapFreeze, default_gc_freeze, default_heap_arenas, freeze_heap,  # noqa: F401
                     limit_heap_arenas, tune_process)
