"""Rank statistics shared by the techniques: one Spearman correlation.

SmoothGrad's convergence stop compares two half-maps with it on the model's device; the randomisation sanity
check compares each cascade step's map with the original.
"""
from __future__ import annotations

import numpy as np
import torch


def ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks 1..n of the flattened ``v`` (ties share their mean rank, as ``scipy.stats.rankdata``).

    Returns:
        Float64 (n,) on ``v``'s device (float32 on MPS, which has no float64).
    """
    v = v.flatten()
    dtype = torch.float32 if v.device.type == "mps" else torch.float64
    values, order = v.sort(stable=True)
    _, group, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    counts = counts.to(dtype)
    mean_rank = counts.cumsum(0) - (counts - 1) / 2  # a group of c ending at rank e holds e-c+1..e
    out = torch.empty_like(v, dtype=dtype)
    out[order] = mean_rank[group]
    return out


def spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman's rank correlation in [-1, 1] of two same-sized maps (any shape; average ranks for ties).

    Computed on ``a``'s device. Returns 0 when either map is constant.
    """
    a = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    b = b if isinstance(b, torch.Tensor) else torch.from_numpy(np.asarray(b))
    b = b if b.device == a.device else b.to(a.device)
    if a.numel() != b.numel():
        raise ValueError(f"maps of {a.numel()} and {b.numel()} values")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.square().sum() * rb.square().sum()).sqrt()
    if float(den) == 0:
        return 0.0
    return float((ra * rb).sum() / den)
