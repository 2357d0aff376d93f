"""A linear head for your own labels: fitted on the frozen embedded backbone's pooled features of a labelled set.

The class names are the labelled set's own (:func:`set_classes`: the class folders' names, or a CSV's distinct
labels, sorted). Features are computed in batches under ``torch.inference_mode`` (forward only, no autograd),
the images decoded between the passes on two threads; the head is a :class:`torch.nn.Linear` (1280 → C)
fitted by class-balanced cross-entropy with Adam in mini-batches, seeded. The file written is a head-only
weights file (:mod:`core.model.heads`, a few KB) that carries its class names: ``--weights FILE`` loads it
everywhere.
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..images import ImageError, is_image_name, list_images
from ..model.heads import pooled_features, save_head
from ..progress import Cancel, Cancelled, Progress, is_cancelled, report
from .dataset import CSV_NAME, LabelledImage, decode_step, decoding_helper, read_labelled, read_pixels

FIT_BATCH = 256     # features per optimiser step
DEFAULT_EPOCHS = 100


@dataclass(frozen=True)
class FittedHead:
    path: Path
    classes: tuple[str, ...]
    images: int                 # images the head was fitted on
    train_accuracy: float       # in [0, 1]
    skipped: tuple[dict, ...]   # ``{"image", "error"}`` of what could not be used
    seconds: float


def set_classes(source: str | os.PathLike) -> list[str]:
    """The class names a labelled set defines, sorted: its class folders' names, or a CSV's distinct labels.

    Raises:
        ImageError: not a folder or CSV, or fewer than two classes.
    """
    src = Path(source)
    if src.is_dir() and (src / CSV_NAME).is_file():
        src = src / CSV_NAME
    if src.is_file() and src.suffix.lower() == ".csv":
        with open(src, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if len(r) >= 2]
        if rows and [c.strip().lower() for c in rows[0][:2]] in (["file", "label"], ["image", "label"],
                                                                 ["path", "label"], ["filename", "label"]):
            rows = rows[1:]
        names = sorted({r[1].strip() for r in rows if r[1].strip()})
    elif src.is_dir():
        names = sorted(d.name for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")
                       and any(is_image_name(f) for f in list_images(d, any_file=True)))
    else:
        raise ImageError(f"{src}: not a folder or a .csv file")
    if len(names) < 2:
        raise ImageError(f"{src}: a head needs at least two classes (found {len(names)}: one sub-folder per class, "
                         "or a CSV of file,label)")
    return names


def features_of(model, items: Sequence[LabelledImage], *, batch_size: int | None = None,
                progress: Progress | None = None, cancel: Cancel | None = None
                ) -> tuple[torch.Tensor, list[int], list[dict]]:
    """Pooled features (N, D) of the readable ``items``, their positions in ``items``, and the unreadable ones.

    The forward passes run on the calling thread with all its intra-op threads, in the measured batch
    (:func:`core.batching.forward_batch`; ``batch_size`` overrides it); between them each step of
    ``DECODE_STEP`` images is decoded, on two threads where this thread may use two cores
    (:func:`core.errors.dataset.read_pixels`).
    """
    from ..batching import forward_batch

    size = batch_size or forward_batch(model, tuple(model.card.data_config["input_size"]))
    step = decode_step(size)
    feats, kept, errors = [], [], []
    with decoding_helper() as helper:
        for start in range(0, len(items), step):
            if is_cancelled(cancel):
                raise Cancelled(f"stopped after {len(kept)} of {len(items)} images")
            stop = min(len(items), start + step)
            x, k, e = read_pixels(model, items, start, stop, helper=helper)
            if x is not None:
                feats.append(pooled_features(model, x, batch_size=size))
            kept += k
            errors += e
            report(progress, stop / max(1, len(items)), f"features of {stop} of {len(items)} images")
    return (torch.cat(feats) if feats else torch.zeros(0, 0)), kept, errors


def train_linear(feats: torch.Tensor, y: torch.Tensor, classes: int, *, epochs: int = DEFAULT_EPOCHS, seed: int = 0,
                 weight_decay: float = 1e-3, lr: float = 1e-2, batch_size: int = FIT_BATCH) -> nn.Linear:
    """A linear classifier of ``feats`` (N, D) → ``classes`` fitted to labels ``y`` (N,): class-balanced
    cross-entropy, Adam, ``epochs`` passes in shuffled mini-batches (one full batch when N ≤ ``batch_size``)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = nn.Linear(feats.shape[1], classes)
    counts = torch.bincount(y, minlength=classes).float().clamp(min=1)
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (classes * counts))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for chunk in order.split(batch_size):
            opt.zero_grad()
            loss_fn(head(feats[chunk]), y[chunk]).backward()
            opt.step()
    return head


def fit_head(model, source: str | os.PathLike, out: str | os.PathLike, *, epochs: int = DEFAULT_EPOCHS,
             seed: int = 0, progress: Progress | None = None, cancel: Cancel | None = None) -> FittedHead:
    """Fit and save a linear head on ``model``'s (the embedded model's) pooled features of a labelled set.

    Raises:
        ImageError: no labelled image, fewer than two classes, or none readable.
    """
    start = time.perf_counter()
    classes = set_classes(source)
    labelled = read_labelled(source, classes)
    feats, kept, errors = features_of(model, labelled.items, progress=progress, cancel=cancel)
    if not kept:
        raise ImageError(f"{source}: none of the labelled images could be read ({errors[0]['error']})")
    y = torch.tensor([labelled.items[i].label for i in kept])
    report(progress, 1.0, f"fitting the head on {len(kept)} images")
    head = train_linear(feats, y, len(classes), epochs=epochs, seed=seed)
    with torch.no_grad():
        accuracy = float((head(feats).argmax(1) == y).float().mean())
    path = save_head(out, head, classes, extra={"trained_on": f"{len(kept)} images of {Path(source).name}",
                                                "seed": seed, "epochs": epochs})
    skipped = tuple(s.as_dict() for s in labelled.skipped) + tuple(errors)
    return FittedHead(path, tuple(classes), len(kept), accuracy, skipped, time.perf_counter() - start)
