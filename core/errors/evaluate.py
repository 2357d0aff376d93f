"""Evaluate a classifier on a labelled folder: confusion matrix, per-class precision/recall, mistakes.

Predictions are cached on disk per image content hash and model (:mod:`core.errors.cache`): re-running on a
grown folder runs the model on the new images only, and an unchanged image is not even decoded again.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..images import ImageError, load_image, preprocess
from ..model.device import model_device
from ..model.predict import probabilities
from ..progress import Cancel, Cancelled, Progress, is_cancelled
from .cache import PredictionCache, model_directory
from .dataset import LabelledSet, Skipped, read_labelled

ALL_CLASSES_UP_TO = 64   # heads up to this size report every class; larger ones (ImageNet) only those that occur


@dataclass(frozen=True)
class ClassStats:
    index: int
    name: str
    precision: float | None    # None when the class was never predicted
    recall: float | None       # None when the class has no image (support 0)
    support: int               # images whose true class this is


@dataclass(frozen=True)
class Mistake:
    row: int                   # position in Evaluation.images
    image: str
    path: Path
    true: int
    predicted: int
    prob: float                # probability of the predicted class
    true_prob: float           # probability of the true class


@dataclass(frozen=True)
class Evaluation:
    """The model on a labelled set.

    ``probs`` (N, num_classes) float32 softmax rows; ``true``/``predicted`` (N,) int64 class indices;
    ``classes`` the class indices the confusion matrix and per-class table cover (all classes of a head with at
    most 64 outputs, else those that occur as a true label or a prediction); ``confusion`` (K, K) int64, rows
    = true, columns = predicted, in ``classes`` order.
    """

    root: Path
    layout: str
    images: tuple[str, ...]
    paths: tuple[Path, ...]
    hashes: tuple[str, ...]
    true: np.ndarray
    predicted: np.ndarray
    probs: np.ndarray
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    confusion: np.ndarray
    per_class: tuple[ClassStats, ...]
    accuracy: float
    skipped: tuple[Skipped, ...]
    predicted_now: int          # images the model ran on in this call (the rest came from the cache)
    seconds: float

    @property
    def image_folder(self) -> Path:
        """The deepest folder that holds every image (where an activation index of them would be rooted)."""
        return Path(os.path.commonpath([str(p.resolve().parent) for p in self.paths]))

    def mistakes(self, top: int | None = None) -> list[Mistake]:
        """Wrong predictions, most confident first (ties: lower true-class probability first)."""
        rows = np.flatnonzero(self.true != self.predicted)
        out = [Mistake(int(r), self.images[r], self.paths[r], int(self.true[r]), int(self.predicted[r]),
                       float(self.probs[r, self.predicted[r]]), float(self.probs[r, self.true[r]])) for r in rows]
        out.sort(key=lambda m: (-m.prob, m.true_prob, m.image))
        return out if top is None else out[:top]

    def cell(self, true: int, predicted: int) -> list[int]:
        """Rows (positions in ``images``) with this true and predicted class, most confident first."""
        rows = np.flatnonzero((self.true == true) & (self.predicted == predicted))
        return sorted((int(r) for r in rows), key=lambda r: -float(self.probs[r, predicted]))


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Counts (K, K): entry [i, j] = images of true class ``classes[i]`` predicted as ``classes[j]``."""
    pos = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true.tolist(), predicted.tolist()):
        m[pos[t], pos[p]] += 1
    return m


def class_stats(confusion: np.ndarray, classes: Sequence[int], names: Sequence[str]) -> tuple[ClassStats, ...]:
    """Precision, recall and support per class from a confusion matrix (rows true, columns predicted)."""
    tp = np.diag(confusion)
    predicted, support = confusion.sum(0), confusion.sum(1)
    return tuple(ClassStats(int(c), names[i],
                            float(tp[i] / predicted[i]) if predicted[i] else None,
                            float(tp[i] / support[i]) if support[i] else None, int(support[i]))
                 for i, c in enumerate(classes))


def evaluate(model, source: str | Path, *, cache_dir: str | Path | None = None, use_cache: bool = True,
             batch_size: int = 16, progress: Progress | None = None,
             cancel: Cancel | None = None) -> Evaluation:
    """Run ``model`` over the labelled images of ``source`` (see :func:`core.errors.dataset.read_labelled`).

    Args:
        model: a LensModel; its class names (``model.labels``) are what folder names and CSV labels match.
        source: an ImageFolder root, a folder with ``labels.csv``, or a CSV file.
        cache_dir: root of the prediction cache (default ``predictions/`` under ``LENS_CACHE_DIR``).
        use_cache: False predicts every image and writes nothing.
        batch_size: images decoded and predicted between two progress reports (the forward passes use the
            measured batch, :func:`core.batching.forward_batch`).
        progress: ``(fraction, message)`` after each batch; cancel: checked before each batch.

    Raises:
        ImageError: no labelled image; Cancelled: ``cancel()`` answered True.
    """
    start = time.perf_counter()
    labelled: LabelledSet = read_labelled(source, model.labels)
    cache = PredictionCache(model_directory(model, cache_dir), model.card.num_classes) if use_cache else None
    skipped = list(labelled.skipped)
    kept, digests, todo = [], [], []   # todo: (position in kept, tensor)
    found: dict[int, np.ndarray] = {}
    for item in labelled.items:
        try:
            data = item.path.read_bytes()
        except OSError as e:
            skipped.append(Skipped(item.name, f"cannot read ({e.strerror or e})"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        hit = cache.get(digest) if cache is not None else None
        if hit is None:
            try:
                x = preprocess(load_image(data, name=item.name), model.card.data_config).tensor
            except ImageError as e:
                skipped.append(Skipped(item.name, str(e).removeprefix(f"{item.name}: ")))
                continue
            todo.append((len(kept), x))
        else:
            found[len(kept)] = hit
        kept.append(item)
        digests.append(digest)
    try:
        for b in range(0, len(todo), batch_size):
            if is_cancelled(cancel):
                raise Cancelled(f"stopped after {b} of {len(todo)} new images")
            chunk = todo[b:b + batch_size]
            probs = _predict(model, torch.stack([x for _, x in chunk]))
            for (pos, _), p in zip(chunk, probs):
                found[pos] = p
                if cache is not None:
                    cache.put(digests[pos], p)
            if progress is not None:
                progress(min(1.0, (b + len(chunk)) / len(todo)), f"predicted {b + len(chunk)} of {len(todo)} new images")
    finally:
        if cache is not None:
            cache.save()
    if not kept:
        raise ImageError(f"{source}: none of the labelled images could be read ({skipped[0].item}: {skipped[0].reason})")
    probs = np.stack([found[i] for i in range(len(kept))]).astype(np.float32)
    true = np.array([it.label for it in kept], dtype=np.int64)
    predicted = probs.argmax(1).astype(np.int64)
    if model.card.num_classes <= ALL_CLASSES_UP_TO:
        classes = tuple(range(model.card.num_classes))
    else:
        classes = tuple(sorted(set(true.tolist()) | set(predicted.tolist())))
    names = tuple(model.label(c) for c in classes)
    confusion = confusion_matrix(true, predicted, classes)
    return Evaluation(
        root=labelled.root, layout=labelled.layout, images=tuple(it.name for it in kept),
        paths=tuple(it.path for it in kept), hashes=tuple(digests), true=true, predicted=predicted, probs=probs,
        classes=classes, class_names=names, confusion=confusion, per_class=class_stats(confusion, classes, names),
        accuracy=float((true == predicted).mean()), skipped=tuple(skipped), predicted_now=len(todo),
        seconds=time.perf_counter() - start)


def _predict(model, x: torch.Tensor) -> np.ndarray:
    """Softmax rows (N, classes) of images ``x`` (on the CPU, as decoded) run on the model's device, in the
    measured batch (:func:`core.batching.forward_batch`)."""
    probs = probabilities(model, x.to(model_device(model)), batch_size=None)
    return probs.cpu().numpy()  # for the prediction cache and the confusion matrix (host-side, numpy)


def report(evaluation: Evaluation, top: int | None = None) -> dict:
    """The JSON contract of ``python -m core errors``."""
    e = evaluation
    return {
        "images": len(e.images),
        "accuracy": e.accuracy,
        "classes": list(e.class_names),
        "confusion": e.confusion.tolist(),
        "per_class": [{"class": s.name, "precision": s.precision, "recall": s.recall, "support": s.support}
                      for s in e.per_class],
        "mistakes": [{"image": m.image, "true": e.class_names[e.classes.index(m.true)],
                      "predicted": e.class_names[e.classes.index(m.predicted)], "prob": m.prob,
                      "true_prob": m.true_prob} for m in e.mistakes(top)],
        "errors": [s.as_dict() for s in e.skipped],
    }
