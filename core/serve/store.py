"""The app's store of long results: bounded in bytes in memory, spilled to disk so results survive a restart.

Keys are tuples of plain values (str, int, float, bool, None, nested tuples) that name the model (its
fingerprint), the image (its content hash) and the settings; the store adds the code's version (a hash of the
``core`` sources), so a changed technique never serves an old result. Values are pickled once: the length of the
pickle is the entry's size in both bounds, and the same bytes go to disk.

Disk layout: ``LENS_CACHE_DIR/results/<code version>/<aa>/<sha256 of key>.pkl``, each file
``MAGIC + sha256(payload) + payload``, written with :func:`core.files.atomic_write` (a reader never sees half a
file). A file that is truncated, fails its checksum or does not unpickle is deleted and the result recomputed.
The oldest files (by last use: a hit touches the file) go when the directory exceeds its byte bound; other code
versions' directories are removed at start-up. Pickle runs code on load: the cache directory must be the
server's own (never a shared, writable-by-others place).

Settings (environment): ``LENS_CACHE_DIR`` (:func:`core.files.cache_root`: default ``.lens-cache`` at the project
root; ``off`` disables the disk), ``LENS_RESULTS_MB`` (memory bound, default 256), ``LENS_CACHE_DISK_MB`` (disk
bound, default 2048).
"""
from __future__ import annotations

import collections
import hashlib
import os
import pickle
import shutil
import threading
from pathlib import Path
from typing import Callable

import torch

from ..files import atomic_write, cache_root
from .env import env_mb

CORE = Path(__file__).resolve().parent.parent  # the sources whose hash is the code version
MAGIC = b"LENSRES1"
_HASH = 32  # sha256 digest bytes


def code_version() -> str:
    """sha256 (16 hex digits) of every ``core/**/*.py`` source (path and content) and the torch version: changes
    with the code."""
    global _version
    if _version is None:
        h = hashlib.sha256()
        for path in sorted(CORE.rglob("*.py")):
            h.update(str(path.relative_to(CORE)).encode())
            h.update(path.read_bytes())
        h.update(torch.__version__.encode())
        _version = h.hexdigest()[:16]
    return _version


_version: str | None = None


def key_digest(key: tuple, version: str | None = None) -> str:
    """Stable sha256 hex digest of a key of plain values and the code version."""
    return hashlib.sha256(repr((version or code_version(), key)).encode()).hexdigest()


def dumps(value) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class Corrupt(Exception):
    """A stored entry that cannot be read back (it is deleted and recomputed)."""


class ResultStore:
    """Thread-safe store of computed results: LRU in memory within ``memory_bytes``, spilled to ``directory``
    within ``disk_bytes``.

    Args:
        memory_bytes: bound on the pickled size of the results kept in memory.
        directory: where results are spilled (None: memory only).
        disk_bytes: bound on the bytes of the files in ``directory``.
        version: the code version in every key (default :func:`code_version`).
    """

    def __init__(self, memory_bytes: int, directory: str | os.PathLike | None = None, *, disk_bytes: int = 2 << 30,
                 version: str | None = None) -> None:
        self.memory_bytes, self.disk_bytes = int(memory_bytes), int(disk_bytes)
        self.version = version or code_version()
        self.lock = threading.Lock()
        self._items: collections.OrderedDict[str, tuple[object, int]] = collections.OrderedDict()
        self._used = 0
        self.hits = {"memory": 0, "disk": 0, "computed": 0, "corrupt": 0}
        self.shed_bytes = 0  # dropped from memory under memory pressure (see :meth:`shed`)
        self.directory = Path(directory) / "results" / self.version if directory is not None else None
        self._files: dict[str, int] = {}
        if self.directory is not None:
            self._open_directory()

    @classmethod
    def from_env(cls) -> "ResultStore":
        """A store sized by ``LENS_RESULTS_MB`` / ``LENS_CACHE_DISK_MB`` under :func:`core.files.cache_root`."""
        return cls(env_mb("LENS_RESULTS_MB", 256), cache_root(), disk_bytes=env_mb("LENS_CACHE_DISK_MB", 2048))

    # --------------------------------------------------------------------------------------------- public

    @property
    def memory_used(self) -> int:
        return self._used

    @property
    def disk_used(self) -> int:
        with self.lock:
            return sum(self._files.values())

    def get(self, key: tuple, default=None):
        """The stored value for ``key`` (memory, then disk), or ``default``."""
        digest = key_digest(key, self.version)
        with self.lock:
            if digest in self._items:
                self._items.move_to_end(digest)
                self.hits["memory"] += 1
                return self._items[digest][0]
        try:
            found = self._read(digest)
        except Corrupt:
            with self.lock:
                self.hits["corrupt"] += 1
            return default
        if found is None:
            return default
        value, size = found
        with self.lock:
            self.hits["disk"] += 1
            self._remember(digest, value, size)
        return value

    def __contains__(self, key: tuple) -> bool:
        digest = key_digest(key, self.version)
        with self.lock:
            return digest in self._items or digest in self._files

    def put(self, key: tuple, value) -> None:
        """Store ``value`` (in memory if it fits the bound, and on disk); an unpicklable value stays in memory."""
        digest = key_digest(key, self.version)
        try:
            blob = dumps(value)
        except Exception:  # noqa: BLE001 - anything that does not pickle stays in memory only
            with self.lock:
                self._remember(digest, value, 0)
            return
        with self.lock:
            self._remember(digest, value, len(blob))
        if self.directory is not None:
            self._write(digest, blob)

    def get_or_compute(self, key: tuple, compute: Callable[[], object]):
        """The stored value, or ``compute()`` stored and returned. Computes outside the lock; a raising
        ``compute`` stores nothing."""
        missing = object()
        value = self.get(key, missing)
        if value is not missing:
            return value
        value = compute()
        with self.lock:
            self.hits["computed"] += 1
        self.put(key, value)
        return value

    def clear_memory(self) -> None:
        with self.lock:
            self._items.clear()
            self._used = 0

    def shed(self, n_bytes: int) -> int:
        """Give back memory under pressure: drop results from memory, least recently used first, until ``n_bytes``
        (of their pickles) are gone or none is left. An entry already on disk is only dropped (a later ``get``
        rereads it); one that is not is written to disk first when there is a directory (else it is recomputed
        when asked for again). Returns the bytes dropped (also added to :attr:`shed_bytes`)."""
        freed = 0
        while freed < n_bytes:
            with self.lock:
                if not self._items:
                    break
                digest, (value, size) = next(iter(self._items.items()))
                on_disk = self.directory is None or digest in self._files
            if not on_disk:  # written outside the lock (pickling and I/O); a full disk only loses the spill
                try:
                    self._write(digest, dumps(value))
                except Exception:  # noqa: BLE001 - an unpicklable value is recomputed when asked for again
                    pass
            with self.lock:
                entry = self._items.get(digest)
                if entry is not None and entry[0] is value:  # unless another thread replaced it meanwhile
                    del self._items[digest]
                    self._used -= entry[1]
                    freed += entry[1]
                    self.shed_bytes += entry[1]
        return freed

    # ---------------------------------------------------------------------------------------------- memory

    def _remember(self, digest: str, value, size: int) -> None:
        if size > self.memory_bytes:
            return  # larger than the whole bound: disk only
        old = self._items.pop(digest, None)
        if old is not None:
            self._used -= old[1]
        self._items[digest] = (value, size)
        self._used += size
        while self._used > self.memory_bytes and self._items:
            _, (_, dropped) = self._items.popitem(last=False)
            self._used -= dropped

    # ------------------------------------------------------------------------------------------------ disk

    def _path(self, digest: str) -> Path:
        return self.directory / digest[:2] / f"{digest}.pkl"

    def _open_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for other in self.directory.parent.iterdir():  # results of other code versions can never be hit
            if other.is_dir() and other.name != self.version:
                shutil.rmtree(other, ignore_errors=True)
        for path in self.directory.glob("*/*.pkl"):
            try:
                self._files[path.stem] = path.stat().st_size
            except OSError:
                pass
        for tmp in self.directory.glob("*/.*.tmp"):  # a writer killed mid-write
            tmp.unlink(missing_ok=True)

    def _read(self, digest: str) -> tuple[object, int] | None:
        """(value, pickled size) from disk, None when absent; raises :class:`Corrupt` (file deleted)."""
        if self.directory is None:
            return None
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            with self.lock:
                self._files.pop(digest, None)
            return None
        except OSError:
            return None
        payload = data[len(MAGIC) + _HASH:]
        value, ok = None, (data.startswith(MAGIC)
                           and hashlib.sha256(payload).digest() == data[len(MAGIC):len(MAGIC) + _HASH])
        if ok:
            try:
                value = pickle.loads(payload)
            except Exception:  # noqa: BLE001 - any unreadable pickle is a corrupt entry
                ok = False
        if not ok:
            path.unlink(missing_ok=True)
            with self.lock:
                self._files.pop(digest, None)
            raise Corrupt(str(path))
        try:
            os.utime(path)  # last use, for eviction
        except OSError:
            pass
        return value, len(payload)

    def _write(self, digest: str, blob: bytes) -> None:
        path = self._path(digest)
        if len(blob) + len(MAGIC) + _HASH > self.disk_bytes:
            return
        try:
            atomic_write(path, MAGIC + hashlib.sha256(blob).digest() + blob)
        except OSError:
            return  # a full or read-only disk only loses the spill, never the result
        with self.lock:
            self._files[digest] = len(blob) + len(MAGIC) + _HASH
            over = sum(self._files.values()) - self.disk_bytes
        if over > 0:
            self._evict(over, keep=digest)

    def _evict(self, over: int, keep: str) -> None:
        with self.lock:
            names = [d for d in self._files if d != keep]
        aged = []
        for d in names:
            try:
                aged.append((self._path(d).stat().st_mtime, d))
            except OSError:
                aged.append((0.0, d))
        for _, d in sorted(aged):
            if over <= 0:
                break
            self._path(d).unlink(missing_ok=True)
            with self.lock:
                over -= self._files.pop(d, 0)
