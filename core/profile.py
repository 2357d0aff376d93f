"""Choices measured on this machine, kept across processes (the precision SmoothGrad's ``auto`` picks), and
tables that only grow (how much more memory each kind of job held than its estimate: :func:`grow`).

A choice timed while the machine is busy can fall either way where two options are close, and a reduced precision
changes the map: a server restarted under load would then draw another map for the same setting than the one
before it. So the first process to measure a choice writes it here and every later process on the machine reads
it. Folder: ``LENS_PROFILE_DIR`` (read at call time), default ``~/.cache/convnext-lens/profile``; ``off`` keeps
choices in memory only, as does a folder that cannot be written.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
import threading
from pathlib import Path
from typing import Callable

from .files import OFF

_memory: dict[str, str] = {}
_guard = threading.Lock()


def profile_dir() -> Path | None:
    """The folder of remembered choices; None when ``LENS_PROFILE_DIR`` is ``off``."""
    value = os.environ.get("LENS_PROFILE_DIR", "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "convnext-lens" / "profile"


@functools.cache
def machine() -> dict:
    """What makes a timing this machine's: the CPU's model name, the processor count and torch's version (read
    once per process)."""
    import torch

    name = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return {"cpu": name, "cpus": os.cpu_count(), "torch": torch.__version__}


def architecture(model) -> str:
    """A short digest of ``model``'s parameter names and shapes: replicas, reloads and other weights of one
    architecture share it, another architecture or head does not."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(f"{name}:{tuple(p.shape)};".encode())
    return digest.hexdigest()[:16]


def remembered(kind: str, key: dict, measure: Callable[[], str]) -> str:
    """The choice of ``kind`` for ``key`` (JSON-able) on this machine: the one a process stored before, else
    ``measure()``, stored for every later process. When two processes measure at once, the first to store wins
    and both return its choice."""
    full = json.dumps({"kind": kind, "machine": machine(), **key}, sort_keys=True, default=str)
    name = f"{kind}-{hashlib.sha256(full.encode()).hexdigest()[:24]}.json"
    with _guard:
        if name in _memory:
            return _memory[name]
    folder = profile_dir()
    stored = _read(folder / name, full) if folder else None
    if stored is None:
        stored = measure()
        if folder:
            stored = _store(folder / name, full, stored)
    with _guard:
        return _memory.setdefault(name, stored)


def table(name: str) -> Path | None:
    """This machine's file of the table ``name`` (see :func:`grow`); None when the folder is off."""
    folder = profile_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(json.dumps(machine(), sort_keys=True, default=str).encode()).hexdigest()[:16]
    return folder / f"{name}-{digest}.json"


def read_table(path: Path | None) -> dict[str, float]:
    """The table at ``path`` ({} when missing, unreadable or not a table of numbers)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def grow(path: Path | None, updates: dict[str, float]) -> dict[str, float]:
    """Merge ``updates`` into the table at ``path``, each key keeping the largest value any process stored, and
    write it atomically; returns the merged table (the merge in memory when it cannot be written). Two processes
    growing it at once may lose one update: the table only sets a floor, and the next growth writes it again."""
    merged = read_table(path)
    for key, value in updates.items():
        merged[key] = max(merged.get(key, value), value)
    tmp = _beside(path, merged) if path is not None else None
    if tmp is not None:
        try:
            os.replace(tmp, path)
        except OSError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return merged


def forget() -> None:
    """Drop the choices this process holds in memory (the files stay): the next call reads them afresh."""
    with _guard:
        _memory.clear()


def _read(path: Path, full: str) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("value") if isinstance(data, dict) and data.get("key") == full else None


def _store(path: Path, full: str, value: str) -> str:
    """Store ``value`` unless another process stored one first (a hard link does not replace an existing file);
    the stored value either way."""
    tmp = _beside(path, {"key": full, "value": value})
    if tmp is None:
        return value
    try:
        os.link(tmp, path)
    except FileExistsError:
        theirs = _read(path, full)
        if theirs is not None:
            return theirs
        try:
            os.replace(tmp, path)  # an unreadable or foreign file under our name: ours replaces it
        except OSError:
            pass
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return value


def _beside(path: Path, data) -> Path | None:
    """``data`` as JSON in a new temporary file in ``path``'s folder (made if missing); None when it cannot be
    written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError:
        return None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return None
    return Path(tmp)
