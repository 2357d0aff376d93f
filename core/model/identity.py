"""The one model identity: what makes two models give the same results.

Every cache that outlives a call keys on it: the result store (:func:`core.keys.model_key`), the activation
index (its directory name and the manifest's ``spec``) and the error-analysis prediction cache. Each uses the
fields that change what it stores, so the keys and directory names written before this module existed are
still the ones found.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelIdentity:
    """The fields that identify a model's outputs.

    Attributes:
        arch: the timm architecture (``convnext_tiny``).
        fingerprint: the exact weights (:func:`weights_fingerprint`).
        data_config: the preprocessing, JSON-ready (lists, not tuples): resize, crop, mean, std.
        num_classes: the head's size.
        labels: a short digest of the class names (:func:`core.model.labels.labels_digest`).
    """

    arch: str
    fingerprint: str
    data_config: dict
    num_classes: int
    labels: str

    @property
    def key(self) -> str:
        """``arch|fingerprint|labels``: the model part of every result-store key (named results depend on labels)."""
        return f"{self.arch}|{self.fingerprint}|{self.labels}"

    def same_outputs(self, fingerprint: str, data_config: dict) -> bool:
        """Whether weights ``fingerprint`` and preprocessing ``data_config`` (as a manifest stores them) are this
        model's: the activations, and so an index built with them, would be the same."""
        return fingerprint == self.fingerprint and _jsonable(data_config) == self.data_config

    def directory(self, *extra) -> str:
        """``<arch>-<12 hex>``: a cache folder name for this weights + preprocessing (and ``extra``, JSON-able)."""
        key = json.dumps([self.fingerprint, self.data_config, *extra], sort_keys=True, default=str)
        return f"{self.arch}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def model_identity(model) -> ModelIdentity:
    """The :class:`ModelIdentity` of ``model`` (a :class:`~core.model.LensModel`)."""
    from .labels import labels_digest

    card = model.card
    return ModelIdentity(arch=card.arch, fingerprint=weights_fingerprint(model),
                         data_config=_jsonable(card.data_config), num_classes=int(card.num_classes),
                         labels=labels_digest(model.labels))


def weights_fingerprint(model) -> str:
    """The card's fingerprint; for wrapped in-memory nets (id-based) a SHA-256 of the state dict instead."""
    import torch

    fp = model.card.fingerprint
    if not fp.startswith("object:"):
        return fp
    h = hashlib.sha256()
    for name, t in model.net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "params:" + h.hexdigest()


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
