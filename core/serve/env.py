"""The serving layer's settings from the environment (whole numbers, megabytes and seconds, blank meaning the
default, a ValueError naming the variable for anything else) and the scheduler's defaults read from them."""
from __future__ import annotations

import os


def env_int(name: str, default: int, low: int, high: int | None = None) -> int:
    """The whole number in environment variable ``name`` (``default`` when unset or blank), from ``low`` to
    ``high``; ValueError naming the variable otherwise."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    span = f"from {low} to {high}" if high is not None else f"of at least {low}"
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number {span}, got {value!r}") from None
    if n < low or (high is not None and n > high):
        raise ValueError(f"{name} must be a whole number {span}, got {n}")
    return n


def env_mb(name: str, default: float) -> int:
    """The megabytes in environment variable ``name`` (``default`` when unset or blank), as bytes; ValueError
    naming the variable when it is not a number."""
    value = os.environ.get(name, "").strip() or str(default)
    try:
        return int(float(value) * 2**20)
    except ValueError:
        raise ValueError(f"{name} must be a number of megabytes, got {value!r}") from None


def env_seconds(name: str, default: float) -> float:
    """The non-negative seconds in environment variable ``name`` (``default`` when unset or blank); ValueError
    naming the variable otherwise."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"{name} must be a number of seconds of at least 0, got {value!r}")
    return seconds


def default_max_jobs() -> int:
    """``LENS_MAX_JOBS`` (default: half the cores, at least 1): heavy jobs running at once."""
    return env_int("LENS_MAX_JOBS", max(1, (os.cpu_count() or 1) // 2), 1)


def default_job_nice() -> int:
    """``LENS_JOB_NICE`` (default 10): how much lower than the server's the jobs' CPU priority is (0 to 19)."""
    return env_int("LENS_JOB_NICE", 10, 0, 19)


def default_job_slice() -> float:
    """``LENS_JOB_SLICE`` (default 1): seconds a job runs before it gives the cores to a less served waiting job
    (0: never, first in first out)."""
    return env_seconds("LENS_JOB_SLICE", 1.0)
