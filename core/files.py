"""Files the library writes: the one cache root and the one atomic write.

Everything the product keeps between runs lives under :func:`cache_root` (``LENS_CACHE_DIR``): the result store
(``results/``), the activation indexes (``index/``) and the error-analysis predictions (``predictions/``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

ROOT = Path(__file__).resolve().parent.parent  # the project root (the folder holding core/)
OFF = ("off", "none", "0")


def hosted() -> bool:
    """Whether ``LENS_HOSTED`` is set (``1``, ``true``, ``yes``, ``on``), read at call time: the app serves
    visitors, and :mod:`core.dataroots` confines the folders they may name."""
    return os.environ.get("LENS_HOSTED", "").strip().lower() in ("1", "true", "yes", "on")


def cache_root() -> Path | None:
    """The cache root: ``LENS_CACHE_DIR``, default ``.lens-cache`` at the project root; None when it is ``off``."""
    value = os.environ.get("LENS_CACHE_DIR", "").strip()
    if value.lower() in OFF:
        return None
    return Path(value).expanduser() if value else ROOT / ".lens-cache"


def cache_path(*parts: str) -> Path:
    """A folder under :func:`cache_root` (``.lens-cache`` at the project root when the root is off: indexes and
    predictions are files a user asked for, not a spill)."""
    root = cache_root() or ROOT / ".lens-cache"
    return root.joinpath(*parts)


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or ``write(file)``) to a temporary file beside ``path``, flush it to disk and rename
    it over ``path``: a reader sees the old file or the whole new one, never half of it.

    Raises:
        OSError: the folder cannot be written (nothing is left behind).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
