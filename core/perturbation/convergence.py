"""The convergence stop of the mask optimisations: the evidence regions compared every few steps.

The run follows the same path as the fixed run of ``iterations`` steps (the area weight stretched over all of
them, as TorchRay's), and from SETTLE_STEPS on, every CHECK_EVERY steps, the evidence region (the top ``area`` of
each mask; the mask > 0.5 for meaningful perturbation) is compared with the one at the previous check; the run
stops once every mask's region has changed by less than the threshold (intersection over union; STABLE_IOU for
extremal perturbation) at PATIENCE checks in a row. Measured against TorchRay's 800 steps on the sample photos:
docs/performance.md.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

SETTLE_STEPS = 100
CHECK_EVERY = 10
STABLE_IOU = 0.96
PATIENCE = 3


class Stability:
    """The convergence stop: after ``settle`` steps, every CHECK_EVERY steps, the evidence regions (bool (K, n)
    from ``regions()``) against those of the previous check; True once all K have IoU ≥ ``stable_iou`` at
    PATIENCE checks in a row."""

    def __init__(self, regions: Callable[[], torch.Tensor], settle: int, stable_iou: float) -> None:
        self.regions, self.settle, self.stable_iou = regions, settle, stable_iou
        self.previous: torch.Tensor | None = None
        self.streak = 0
        self.stopped = False

    def __call__(self, t: int) -> bool:
        if t + 1 < self.settle or (t + 1 - self.settle) % CHECK_EVERY:
            return False
        current = self.regions()
        if self.previous is not None:
            stable = bool((region_iou(current, self.previous) >= self.stable_iou).all())
            self.streak = self.streak + 1 if stable else 0
        self.previous = current
        self.stopped = self.streak >= PATIENCE
        return self.stopped


def region_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of bool regions (K, ...) -> (K,); two empty regions count as equal (1)."""
    a, b = a.flatten(1), b.flatten(1)
    union = (a | b).sum(1)
    return torch.where(union > 0, (a & b).sum(1) / union.clamp(min=1), torch.ones_like(union, dtype=torch.float))


def top_regions(masks: torch.Tensor, areas: Sequence[float]) -> torch.Tensor:
    """(K, ...) masks -> bool (K, n): the round(n · area) largest values of each (ties at the threshold kept)."""
    flat = masks.detach().flatten(1)
    n = flat.shape[1]
    out = []
    for m, a in zip(flat, areas):
        k = max(1, int(round(n * a)))
        out.append(m >= m.kthvalue(n - k + 1).values)
    return torch.stack(out)
