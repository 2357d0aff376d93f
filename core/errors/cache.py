"""On-disk prediction cache: softmax probabilities per image content hash, one file per model.

``<root>/<arch>-<key>/predictions.npz`` holds ``hashes`` (N,) and ``probs`` (N, C) float32, where ``key``
hashes the weights fingerprint and the preprocessing (both change what the model sees or says). Writes go to
a temporary file that is renamed over the old one (:func:`core.files.atomic_write`), so a reader sees the
old cache or the new one; a damaged file is ignored (and replaced at the next write).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..files import atomic_write, cache_path
from ..model.identity import model_identity

FILE = "predictions.npz"


def model_directory(model, root: str | Path | None = None) -> Path:
    """The cache folder of ``model`` (weights fingerprint + preprocessing) under ``root`` (default
    ``predictions/`` under the cache root, ``LENS_CACHE_DIR``, read now)."""
    ident = model_identity(model)
    return Path(root or cache_path("predictions")) / ident.directory(ident.num_classes)


class PredictionCache:
    """Probabilities (C,) per image SHA-256 for one model; ``save`` writes atomically."""

    def __init__(self, directory: Path, num_classes: int):
        self.path = Path(directory) / FILE
        self.num_classes = num_classes
        self.probs: dict[str, np.ndarray] = {}
        self.dirty = False
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                hashes, probs = npz["hashes"], npz["probs"]
            if probs.ndim == 2 and probs.shape == (len(hashes), num_classes):
                self.probs = {str(h): p for h, p in zip(hashes, probs)}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            self.probs = {}  # no cache yet, or a damaged one: predict again

    def get(self, digest: str) -> np.ndarray | None:
        return self.probs.get(digest)

    def put(self, digest: str, probs: np.ndarray) -> None:
        self.probs[digest] = np.asarray(probs, dtype=np.float32)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        hashes = np.array(list(self.probs), dtype="U64")
        probs = (np.stack(list(self.probs.values())) if self.probs
                 else np.zeros((0, self.num_classes), np.float32))
        atomic_write(self.path, lambda f: np.savez(f, hashes=hashes, probs=probs))
        self.dirty = False
