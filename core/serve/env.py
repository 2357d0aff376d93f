"""The serving layer's settings from the environment: whole numbers and megabytes, blank meaning the default, and
a ValueError that names the variable for anything else."""
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
