"""Deletion and insertion curves (Petsiuk et al. 2018, RISE), computed in batches.

Definitions (fixed so figures compare with other tools): the image is the model input ``x`` (3, H, W) in
[0, 1]; the map is (H, W). Pixels are ordered by the map's value, largest first, ties by pixel index (a stable
sort). After step k = 0..S the first round(k·H·W/S) pixels of that order are changed in all three channels, and
the score is the softmax probability of the target class. AUC is the trapezoid rule over the S + 1 scores with
spacing 1/S.

* **Deletion**: changed pixels take the baseline: ``mean`` (the model's mean colour, which the normalised model
  sees as zero, as RISE does), ``black`` (0) or ``blur`` (the Gaussian blur below). Lower AUC is better.
* **Insertion**: start from a Gaussian blur of the image (kernel 11, σ = 5, reflect padding, per channel, as
  RISE) and put the original pixels back in the same order. Higher AUC is better.

Every perturbed copy is built from a rank image (``rank < n_k``) batch by batch and goes through the model
``batch_size`` copies at a time; the unperturbed image is forwarded once and shared by both curves (deletion
step 0 and insertion step S are the same image).
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..blur import gaussian_blur
from ..model.device import model_device
from ..progress import Cancel, Cancelled, Progress, is_cancelled, report


STEPS = 50
BLUR_KERNEL = 11
BLUR_SIGMA = 5.0
BATCH_SIZE = 8  # chosen with bench/faithfulness.py (docs/performance.md, "Constants chosen by measurement")


class DeletionBaseline(str, enum.Enum):
    MEAN = "mean"
    BLACK = "black"
    BLUR = "blur"


@dataclass(frozen=True)
class Curves:
    """Deletion and insertion of one map.

    Attributes:
        deletion: S + 1 target probabilities, step 0 (the image) to S (the baseline image); () when not asked.
        insertion: S + 1 target probabilities, step 0 (the blurred image) to S (the image); () when not asked.
        deletion_auc, insertion_auc: trapezoid areas with spacing 1/S (in [0, 1]); NaN when not asked.
        steps: S.
        baseline: the deletion baseline used.
        target: the class scored.
        seconds: compute time.
    """

    deletion: tuple[float, ...]
    insertion: tuple[float, ...]
    deletion_auc: float
    insertion_auc: float
    steps: int
    baseline: str
    target: int
    seconds: float

    @property
    def difference(self) -> float:
        """insertion AUC − deletion AUC: higher is better."""
        return self.insertion_auc - self.deletion_auc


def pixel_order(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Flat pixel indices of an (H, W) map, largest value first, ties by pixel index (stable)."""
    # a stable numpy sort on the host (the map may come from any device)
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
    if not np.isfinite(v).all():
        raise ValueError("the map has NaN or infinite values")
    return np.argsort(-v, kind="stable")


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """Pixels changed after each step k = 0..S: round(k·n/S), halves up (exact integer arithmetic)."""
    k = np.arange(steps + 1, dtype=np.int64)
    return (2 * k * n_pixels + steps) // (2 * steps)


def auc(scores: Sequence[float], steps: int) -> float:
    """Trapezoid area under S + 1 scores with spacing 1/S."""
    s = np.asarray(scores, dtype=np.float64)
    return float(((s[:-1] + s[1:]) / 2).sum() / steps)


def rise_blur(x: torch.Tensor) -> torch.Tensor:
    """RISE's blurred image: Gaussian kernel 11, σ = 5, reflect padding, per channel. x (N, 3, H, W) -> same."""
    return gaussian_blur(x, BLUR_SIGMA, radius=BLUR_KERNEL // 2)


def baseline_image(model: nn.Module, x: torch.Tensor, baseline: DeletionBaseline | str) -> torch.Tensor:
    """The fully deleted image (1, 3, H, W) for ``baseline``; ``mean`` is the model's normalisation mean."""
    baseline = DeletionBaseline(baseline)
    if baseline is DeletionBaseline.BLACK:
        return torch.zeros_like(x)
    if baseline is DeletionBaseline.BLUR:
        return rise_blur(x)
    mean = getattr(model, "mean", None)
    if mean is None:
        raise ValueError("the mean baseline needs a model that owns its normalisation (a LensModel)")
    return mean.to(x.dtype).view(1, 3, 1, 1).expand_as(x).clone()


def target_probs(model: nn.Module, images: torch.Tensor, target: int) -> torch.Tensor:
    """Softmax probability of ``target`` for each image of (B, 3, H, W): float64 (B,)."""
    with torch.inference_mode():
        return model(images).double().softmax(-1)[:, target]


def curves(model: nn.Module, x: torch.Tensor, values: torch.Tensor | np.ndarray, target: int, *,
           steps: int = STEPS, baseline: DeletionBaseline | str = DeletionBaseline.MEAN,
           batch_size: int = BATCH_SIZE, deletion: bool = True, insertion: bool = True,
           progress: Progress | None = None, cancel: Cancel | None = None) -> Curves:
    """Deletion and insertion curves of one map.

    Args:
        x: the model input, float (3, H, W) or (1, 3, H, W) in [0, 1].
        values: the map, (H, W) at the model input size (any real values; larger = more important).
        target: the class whose softmax probability is scored.
        steps: S (≥ 1).
        baseline: what deleted pixels become.
        batch_size: perturbed copies per forward pass.
        deletion, insertion: which curves to compute.
        cancel: polled between batches; when it returns True, :class:`Cancelled` is raised.

    Returns:
        :class:`Curves` (2·S + 1 images forwarded for both curves, S + 1 for one)
    """
    start = time.perf_counter()
    device = model_device(model)
    x = _one_image(x).to(device)
    h, w = x.shape[-2:]
    if tuple(values.shape) != (h, w):
        raise ValueError(f"the map is {tuple(values.shape)}, the model input is {h}x{w}: a map must be H x W at "
                         "the model input size")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    baseline = DeletionBaseline(baseline)
    rank = torch.empty(h * w, dtype=torch.long, device=device)
    rank[torch.from_numpy(pixel_order(values)).to(device)] = torch.arange(h * w, device=device)
    rank = rank.view(1, 1, h, w)
    counts = torch.from_numpy(step_counts(h * w, steps))
    if not (deletion or insertion):
        raise ValueError("ask for deletion, insertion or both")
    # One stream of 2S + 1 images: the image, deletion k = 1..S, insertion k = 0..S-1 (deletion 0 = insertion S).
    jobs = [(x, x, 0)]
    if deletion:
        deleted = baseline_image(model, x, baseline)
        jobs += [(x, deleted, int(n)) for n in counts[1:]]
    if insertion:
        blurred = rise_blur(x)
        jobs += [(blurred, x, int(n)) for n in counts[:-1]]
    scores = []
    for i in range(0, len(jobs), max(1, int(batch_size))):
        if is_cancelled(cancel):
            raise Cancelled("deletion/insertion cancelled")
        chunk = jobs[i:i + batch_size]
        batch = torch.cat([torch.where(rank < n, changed, kept) for kept, changed, n in chunk])
        scores.append(target_probs(model, batch, target))
        report(progress, (i + len(chunk)) / len(jobs), f"deletion/insertion: {i + len(chunk)}/{len(jobs)} images")
    s = torch.cat(scores).tolist()
    dele = tuple(s[:steps + 1]) if deletion else ()
    ins = tuple(s[-steps:]) + (s[0],) if insertion else ()
    return Curves(deletion=dele, insertion=ins, deletion_auc=auc(dele, steps) if dele else float("nan"),
                  insertion_auc=auc(ins, steps) if ins else float("nan"), steps=steps, baseline=baseline.value,
                  target=int(target), seconds=time.perf_counter() - start)


def _one_image(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) float32 from a (3, H, W) or (1, 3, H, W) tensor in [0, 1]."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected one RGB image (3, H, W), got shape {tuple(x.shape)}")
    return x.detach().float()
