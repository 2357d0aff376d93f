"""ROAD: RemOve And Debias (Rong et al. 2022), as pytorch-grad-cam's ``ROADCombined`` computes it.

Deleting pixels to a constant colour shows the model images it never saw: the score may drop because the image
is out of distribution, not because the evidence is gone. ROAD fills removed pixels by *noisy linear
imputation*: each removed pixel is the weighted mean of its 8 neighbours (weights 1/6 edge, 1/12 corner), solved
as one sparse linear system per channel, plus Gaussian noise (σ = 0.01 of the pixel range). The filled region
carries no sharp edge that would reveal the mask's shape.

At percentile p (10, 20, ..., 90), with the map's values ``m``:

* most relevant first (MoRF): pixels with ``m >= percentile(m, p)`` are imputed (the top 100 − p %),
* least relevant first (LeRF): pixels with ``1 - m >= percentile(1 - m, p)`` are imputed (the bottom 100 − p %),

and the score is the softmax probability of the target minus that of the intact image. The combined score is
(mean LeRF − mean MoRF) / 2: higher is better (removing unimportant pixels keeps the class, removing the
important ones loses it). This is pytorch-grad-cam's ``ROADCombined`` with ``ClassifierOutputSoftmaxTarget``,
thresholds included; the noise is drawn from a seeded generator in the same order (LeRF 10..90, then MoRF
10..90), so with the global seed set to ours the two agree to float precision.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..model.device import model_device
from ..progress import Cancel, Cancelled, Progress, is_cancelled, report
from .curves import BATCH_SIZE, _one_image, target_probs

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
NOISE = 0.01
# (row offset, column offset), weight: the 8-neighbourhood of Rong et al.'s imputer
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
              ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


@dataclass(frozen=True)
class Road:
    """ROAD of one map.

    Attributes:
        score: (mean LeRF − mean MoRF) / 2 of probability changes; higher is better.
        percentiles: the percentiles p.
        morf, lerf: target probability minus the intact image's, per percentile.
        base: the intact image's target probability.
        seconds: compute time.
    """

    score: float
    percentiles: tuple[int, ...]
    morf: tuple[float, ...]
    lerf: tuple[float, ...]
    base: float
    seconds: float


def impute(img: torch.Tensor, keep: np.ndarray, *, noise: float = NOISE,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy linear imputation of the pixels where ``keep`` is False.

    Args:
        img: float (C, H, W).
        keep: bool (H, W); True = known pixel.
        noise: σ of the Gaussian noise added to imputed values (absolute units of ``img``).

    Returns:
        float32 (C, H, W): known pixels unchanged.
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = img.shape
    known = keep.reshape(-1)
    missing = np.flatnonzero(~known)
    flat = img.reshape(c, -1).double().numpy()
    out = img.reshape(c, -1).clone().float()
    if missing.size == 0:
        return out.reshape(c, h, w)
    var = np.full(h * w, -1, dtype=np.int64)
    var[missing] = np.arange(missing.size)
    rows, cols, vals = [], [], []
    b = np.zeros((missing.size, c))
    diag = np.ones(missing.size)
    r0, c0 = missing // w, missing % w
    for (dr, dc), weight in NEIGHBOURS:
        r, cc = r0 + dr, c0 + dc
        valid = (r >= 0) & (r < h) & (cc >= 0) & (cc < w)
        diag[~valid] -= weight
        eq = np.flatnonzero(valid)
        nb = r[valid] * w + cc[valid]
        has = known[nb]
        b[eq[has]] -= weight * flat[:, nb[has]].T
        rows.append(eq[~has])
        cols.append(var[nb[~has]])
        vals.append(np.full((~has).sum(), weight))
    rows.append(np.arange(missing.size))
    cols.append(np.arange(missing.size))
    vals.append(-diag)
    a = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(missing.size, missing.size))
    sol = torch.tensor(spsolve(a, b), dtype=torch.float).reshape(missing.size, c)
    filled = sol.t()
    if noise:
        filled = filled + noise * torch.randn(filled.shape, generator=generator)
    out[:, torch.from_numpy(missing)] = filled
    return out.reshape(c, h, w)


def removal_masks(values: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """(MoRF keep, LeRF keep) bool (H, W) at ``percentile``, thresholds as pytorch-grad-cam computes them."""
    v = np.asarray(values, dtype=np.float32)
    morf_keep = v < np.percentile(v, percentile)
    inv = (1 - torch.from_numpy(v)).numpy()  # the float32 rounding of their `1 - mask`
    lerf_keep = inv < np.percentile(inv, percentile)
    return morf_keep, lerf_keep


def road(model: nn.Module, x: torch.Tensor, values: torch.Tensor | np.ndarray, target: int, *,
         percentiles: Sequence[int] = PERCENTILES, noise: float = NOISE, seed: int = 0,
         batch_size: int = BATCH_SIZE, progress: Progress | None = None, cancel: Cancel | None = None) -> Road:
    """ROAD combined score of one map (see the module docstring).

    Args:
        x: the model input, float (3, H, W) or (1, 3, H, W) in [0, 1].
        values: the map (H, W) at the model input size.
        target: the class scored (softmax probability).
        noise, seed: imputation noise σ and the seed of its generator.
    """
    start = time.perf_counter()
    # the imputation is a scipy sparse solve on the host: the image and the map go there, the imputed copies
    # come back to the model's device for the forward passes
    x = _one_image(x).cpu()
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float32)
    if v.shape != tuple(x.shape[-2:]):
        raise ValueError(f"the map is {v.shape}, the model input is {tuple(x.shape[-2:])}")
    gen = torch.Generator().manual_seed(int(seed))
    masks = [removal_masks(v, p) for p in percentiles]
    keeps = [lerf for _, lerf in masks] + [morf for morf, _ in masks]  # their order: LeRF first
    images = []
    for i, keep in enumerate(keeps):
        if is_cancelled(cancel):
            raise Cancelled("ROAD cancelled")
        images.append(impute(x[0], keep, noise=noise, generator=gen))
        report(progress, 0.9 * (i + 1) / len(keeps), f"ROAD: imputed {i + 1}/{len(keeps)}")
    batch = torch.stack([x[0]] + images).to(model_device(model))
    probs = torch.cat([target_probs(model, batch[i:i + batch_size], target)
                       for i in range(0, len(batch), batch_size)]).tolist()
    report(progress, 1.0, "ROAD: done")
    base, n = probs[0], len(percentiles)
    lerf = tuple(p - base for p in probs[1:1 + n])
    morf = tuple(p - base for p in probs[1 + n:])
    score = (float(np.mean(lerf)) - float(np.mean(morf))) / 2
    return Road(score=score, percentiles=tuple(int(p) for p in percentiles), morf=morf, lerf=lerf, base=base,
                seconds=time.perf_counter() - start)
