"""The parts of every result-store key that are not a technique's values: the model, an image's content, a
folder's images, and an attribution (whose options are its method's, :class:`core.attribution.spec.MethodSpec`).

The pages (``ui/cache.py``) and ``python -m core warm`` build keys from these functions and from
:meth:`core.spec.Technique.key`, so what warm writes is what the pages read.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from .model.identity import model_identity


def model_key(model) -> str:
    """The model part of every result key: architecture, weights fingerprint and class names (they are part of
    named results)."""
    return model_identity(model).key


def content_key(data: bytes) -> str:
    """The image part of every result key: hash of the file's bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def attribution_key(model_key: str, image_key: str, method: str, target: int, options: dict) -> tuple:
    """Result-store key of one attribution (the Attribution page's key)."""
    return ("attribution", model_key, image_key, method, int(target), json.dumps(options, sort_keys=True, default=str))


def images_key(paths: Sequence[str | Path]) -> tuple[tuple[str, str], ...]:
    """The images of a folder-wide result: (absolute path, content hash) of each file in order (a file that
    cannot be read gets an empty hash: the computation names the problem)."""
    from .hashing import file_sha256

    out = []
    for p in paths:
        try:
            digest = file_sha256(p)[:16]
        except OSError:
            digest = ""
        out.append((str(Path(p).resolve()), digest))
    return tuple(out)
