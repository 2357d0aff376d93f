"""A small fine-tuned model to try error analysis offline: a new linear head on the embedded EfficientNet-Lite0.

The sample photos (``assets/samples``) are grouped into six coarse classes in ``assets/demo/coarse.csv``
(animal, food, interior, object, outdoor, person). :func:`train_demo_head` fits a linear head on the embedded
model's pooled features (1280) of every other photo of each class (sorted by file name), keeps the rest
unseen, and writes a head-only weights file (:mod:`core.model.heads`, a few KB) that carries its class names.
``python -m core demo-head`` runs it; the shipped file is ``assets/demo/coarse-head.safetensors``.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..images import ASSETS, load_image, preprocess
from ..model.heads import pooled_features, save_head
from ..progress import Progress
from .dataset import read_labelled

DEMO_CSV = ASSETS / "demo" / "coarse.csv"
DEMO_HEAD = ASSETS / "demo" / "coarse-head.safetensors"


@dataclass(frozen=True)
class DemoHead:
    path: Path
    classes: tuple[str, ...]
    trained_on: tuple[str, ...]      # CSV names of the training photos
    held_out: tuple[str, ...]        # the photos the head never saw
    train_accuracy: float
    held_out_accuracy: float
    seconds: float


def csv_classes(path: Path) -> list[str]:
    """The distinct labels of a ``file,label`` CSV, sorted (the head's class order)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if len(r) >= 2]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["file", "label"]:
        rows = rows[1:]
    return sorted({r[1].strip() for r in rows if r[1].strip()})


def train_demo_head(model, csv_path: str | Path = DEMO_CSV, out: str | Path = DEMO_HEAD, *, seed: int = 0,
                    steps: int = 300, weight_decay: float = 1e-3,
                    progress: Progress | None = None) -> DemoHead:
    """Fit and save a linear head on ``model``'s (the embedded model's) pooled features.

    Every other labelled photo of each class trains (class-balanced cross-entropy, Adam, ``steps`` full-batch
    steps, seeded); the others are held out. Returns the file written and both accuracies.
    """
    start = time.perf_counter()
    classes = csv_classes(Path(csv_path))
    labelled = read_labelled(csv_path, classes)
    train, held = [], []
    for c in range(len(classes)):
        members = sorted((it for it in labelled.items if it.label == c), key=lambda it: it.name)
        train += members[0::2]
        held += members[1::2]
    if progress:
        progress(0.0, f"features of {len(labelled.items)} photos")
    everything = train + held
    x = torch.stack([preprocess(load_image(it.path), model.card.data_config).tensor for it in everything])
    feats = pooled_features(model, x)
    y = torch.tensor([it.label for it in everything])
    n = len(train)
    torch.manual_seed(seed)
    head = nn.Linear(feats.shape[1], len(classes))
    counts = torch.bincount(y[:n], minlength=len(classes)).float().clamp(min=1)
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (len(classes) * counts))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=weight_decay)
    for step in range(steps):
        opt.zero_grad()
        loss_fn(head(feats[:n]), y[:n]).backward()
        opt.step()
        if progress and step % 50 == 0:
            progress(step / steps, f"training the head, step {step}")
    with torch.no_grad():
        right = head(feats).argmax(1) == y
    path = save_head(out, head, classes, extra={"trained_on": f"{n} photos of {Path(csv_path).name}", "seed": seed})
    return DemoHead(path, tuple(classes), tuple(it.name for it in train), tuple(it.name for it in held),
                    float(right[:n].float().mean()), float(right[n:].float().mean()) if held else float("nan"),
                    time.perf_counter() - start)
