"""Your own class names: from a file (``--labels``, the sidebar upload) or carried by the weights file.

A class-names file is UTF-8 text with one name per line (blank lines at the end ignored), or a JSON list of
strings. Weights files carry names as timm does (``label_names`` in a checkpoint's ``pretrained_cfg``, or in a
``config.json`` beside the file, as timm's hub layout has it) or as ``label_names`` in safetensors metadata
(a JSON list in a string). Every name list is checked against the model's head: a count that does not match is
a one-line :class:`LabelsError`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .wrapper import LensModel, ModelLoadError

MAX_LABEL_BYTES = 4 * 1024 * 1024
METADATA_KEY = "label_names"


class LabelsError(ModelLoadError):
    """Class names that cannot be used (unreadable, empty, or not one per output of the head); one line."""


def parse_labels(data: bytes | str, name: str = "labels") -> list[str]:
    """Class names from the bytes of a text file (one per line) or a JSON list.

    Raises:
        LabelsError: empty, not UTF-8, a JSON value that is not a list of strings, a blank name.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_LABEL_BYTES:
            raise LabelsError(f"{name}: over {MAX_LABEL_BYTES // 2**20} MB, not a class-names file")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LabelsError(f"{name}: not UTF-8 text (expected one class name per line, or a JSON list)") from None
    text = data.strip()
    if not text:
        raise LabelsError(f"{name}: empty (expected one class name per line, or a JSON list)")
    if text[0] in "[{\"":
        try:
            value = json.loads(text)
        except ValueError as e:
            raise LabelsError(f"{name}: starts like JSON but is not valid JSON ({e})") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LabelsError(f"{name}: JSON must be a list of strings (one class name per output)")
        labels = [v.strip() for v in value]
    else:
        labels = [line.strip() for line in text.splitlines()]
    return _checked(labels, name)


def _checked(labels: list[str], name: str) -> list[str]:
    if not labels:
        raise LabelsError(f"{name}: no class names")
    blank = [i for i, v in enumerate(labels) if not v]
    if blank:
        raise LabelsError(f"{name}: class {blank[0]} has an empty name (line {blank[0] + 1})")
    return labels


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a file (see :func:`parse_labels`). Raises LabelsError (also for a missing file)."""
    p = Path(path)
    if not p.is_file():
        raise LabelsError(f"class-names file not found: {p}")
    return parse_labels(p.read_bytes(), p.name)


def check_count(labels: Sequence[str], num_classes: int, source: str) -> list[str]:
    """``labels`` when there is one per output of the head; otherwise a one-line LabelsError."""
    if len(labels) != num_classes:
        raise LabelsError(f"{source} has {len(labels)} class names but the model's head has {num_classes} outputs")
    return list(labels)


def labels_from_weights(path: str | os.PathLike) -> list[str] | None:
    """Class names a weights file carries, or None when it carries none.

    Looked for in: safetensors metadata ``label_names``; a ``.pth`` checkpoint's ``label_names`` or
    ``pretrained_cfg["label_names"]``; a ``config.json`` beside the file (timm's hub layout).
    """
    p = Path(path)
    found = None
    if p.suffix.lower() == ".safetensors":
        found = _safetensors_labels(p)
    elif p.suffix.lower() in (".pth", ".pt", ".bin", ".ckpt"):
        found = _checkpoint_labels(p)
    if found is None:
        config = p.with_name("config.json")
        if config.is_file():
            try:
                cfg = json.loads(config.read_text())
            except (OSError, ValueError):
                cfg = None
            found = _from_config(cfg)
    return None if found is None else _checked([str(v).strip() for v in found], f"{p.name} (label_names)")


def _from_config(cfg) -> list | None:
    if not isinstance(cfg, dict):
        return None
    for holder in (cfg, cfg.get("pretrained_cfg")):
        if isinstance(holder, dict) and isinstance(holder.get(METADATA_KEY), list):
            return holder[METADATA_KEY]
    return None


def _safetensors_labels(p: Path) -> list | None:
    try:
        from safetensors import safe_open
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # an unreadable file is reported by the weights loader, not here
        return None
    if METADATA_KEY not in meta:
        return None
    try:
        value = json.loads(meta[METADATA_KEY])
    except ValueError:
        raise LabelsError(f"{p.name}: metadata {METADATA_KEY} is not a JSON list") from None
    if not isinstance(value, list):
        raise LabelsError(f"{p.name}: metadata {METADATA_KEY} is not a JSON list")
    return value


def _checkpoint_labels(p: Path) -> list | None:
    import torch

    try:
        ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception:
        return None
    return _from_config(ckpt) if isinstance(ckpt, dict) else None


def apply_weights_labels(model: LensModel, weights: str | os.PathLike) -> LensModel:
    """Give ``model`` (just built from the file ``weights``) the class names the file carries, if any."""
    found = labels_from_weights(weights)
    if found is not None:
        model.labels = check_count(found, model.card.num_classes, f"{Path(weights).name} (label_names)")
    return model


def with_labels(model: LensModel, labels: Sequence[str], source: str = "class-names file") -> LensModel:
    """A copy of ``model`` that shares its weights and names its classes ``labels`` (checked against the head).

    The copy is a :meth:`LensModel.replica` (own hooks and lock), so a shared model is never changed.
    """
    labels = check_count(_checked([str(v) for v in labels], source), model.card.num_classes, source)
    twin = model.replica()
    twin.labels = labels
    return twin


def labels_digest(labels: Sequence[str]) -> str:
    """A short key that changes whenever the class names do (for caches of named results)."""
    return hashlib.sha256("\n".join(labels).encode()).hexdigest()[:12]


def same_classes(first: LensModel, second: LensModel) -> bool:
    """Whether class ``i`` means the same to both models: the same class names in the same order. Models that
    name their classes only ``class i`` share no known label space."""
    return (first.card.num_classes == second.card.num_classes and list(first.labels) == list(second.labels)
            and any(name != f"class {i}" for i, name in enumerate(first.labels)))


@dataclass(frozen=True)
class PairedTarget:
    """The class a second model explains next to the first model's.

    Attributes:
        target: the second model's class index, or None for its own predicted class.
        rule: one line saying how it was chosen.
    """

    target: int | None
    rule: str


def paired_target(first: LensModel, second: LensModel, target: int | None) -> PairedTarget:
    """The second model's class when ``first`` explains class ``target`` (None: its predicted class).

    Each model explains its own top class unless a class is chosen; a chosen class is the same index for the
    second model only when both share their class names (:func:`same_classes`), since class ``i`` of one label
    space may not exist in the other. Otherwise the second model explains its own top class.
    """
    if target is None:
        return PairedTarget(None, "each model explains its own top class")
    if same_classes(first, second):
        return PairedTarget(int(target), f"both models explain class {int(target)} ({first.label(int(target))}): "
                                         "they share their class names")
    return PairedTarget(None, f"class {int(target)} is the first model's; the second model's "
                              f"{second.card.num_classes} classes are not named as the first's, so it explains "
                              "its own top class")
