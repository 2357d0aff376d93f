"""Gradient attributions: saliency, input × gradient, and integrated gradients (Captum).

All return signed per-channel maps (``raw`` (N, 3, H, W)); ``map`` is their channel sum. Integrated gradients
integrate from a baseline image to ``x`` (Sundararajan et al. 2017) with Captum's ``IntegratedGradients``
(Gauss-Legendre steps, evaluated ``batch_size`` steps at a time); the map sums to about
``logit(x) - logit(baseline)`` and the gap is reported as a note.
"""
from __future__ import annotations

import enum
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .spec import MethodSpec, Option
from .base import (Attribution, Progress, batches, check_input, from_raw, input_gradient, report,
                        resolve_target)


class Baseline(str, enum.Enum):
    BLACK = "black"
    BLUR = "blur"
    NOISE = "noise"


def saliency(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
             batch_size: int = 8, progress: Progress | None = None) -> Attribution:
    """Vanilla gradient of the target logit (Simonyan et al. 2014). x: (N, 3, H, W) in [0, 1]."""
    started = time.perf_counter()
    x = check_input(x)
    t = resolve_target(model, x, target)
    raw = _batched(model, x, t, batch_size, progress, "saliency")
    return from_raw(raw, "saliency", t.tolist(), started)


def input_x_gradient(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
                     batch_size: int = 8, progress: Progress | None = None) -> Attribution:
    """Input × gradient (Shrikumar et al. 2016): gradient times the [0, 1] pixel values."""
    started = time.perf_counter()
    x = check_input(x)
    t = resolve_target(model, x, target)
    raw = _batched(model, x, t, batch_size, progress, "input × gradient") * x
    return from_raw(raw, "input-x-gradient", t.tolist(), started)


def _batched(model, x, t, batch_size, progress, label) -> torch.Tensor:
    parts = []
    chunks = batches(x.shape[0], batch_size)
    for i, sl in enumerate(chunks):
        parts.append(input_gradient(model, x[sl], t[sl]))
        report(progress, (i + 1) / len(chunks), f"{label}: batch {i + 1}/{len(chunks)}")
    return torch.cat(parts)


def make_baseline(x: torch.Tensor, kind: Baseline | str = Baseline.BLACK, *, seed: int = 0,
                  blur_sigma: float = 0.05) -> torch.Tensor:
    """A baseline image per input, (N, 3, H, W) in [0, 1].

    ``black``: zeros. ``blur``: a Gaussian blur with sigma ``blur_sigma`` × the image side (information
    removed, colours kept). ``noise``: uniform noise from ``seed``.
    """
    kind = Baseline(kind)
    if kind is Baseline.BLACK:
        return torch.zeros_like(x)
    if kind is Baseline.NOISE:
        g = torch.Generator().manual_seed(int(seed))
        return torch.rand(x.shape, generator=g).to(x)
    sigma = max(0.5, blur_sigma * max(x.shape[-2:]))
    radius = int(3 * sigma)
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(k ** 2) / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1)
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k, groups=3)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.transpose(-1, -2), groups=3).clamp(0, 1)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None,
                         *, steps: int = 32, baseline: Baseline | str = Baseline.BLACK, seed: int = 0,
                         batch_size: int = 8, progress: Progress | None = None) -> Attribution:
    """Integrated gradients from ``baseline`` to ``x`` with ``steps`` Gauss-Legendre points.

    Returns per-channel attributions whose sum approximates logit(x) - logit(baseline); the largest
    absolute gap over the batch is given in ``notes`` (a check on ``steps``).
    """
    from captum.attr import IntegratedGradients

    started = time.perf_counter()
    x = check_input(x)
    t = resolve_target(model, x, target)
    if steps < 1:
        raise ValueError("steps must be at least 1")
    base = make_baseline(x, baseline, seed=seed)
    ig = IntegratedGradients(model)
    parts, gaps = [], []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone().requires_grad_(True)
        attr, delta = ig.attribute(xi, baselines=base[i:i + 1], target=int(t[i]), n_steps=int(steps),
                                   internal_batch_size=max(1, int(batch_size)), return_convergence_delta=True)
        parts.append(attr.detach())
        gaps.append(float(delta.abs().max()))
        report(progress, (i + 1) / x.shape[0], f"integrated gradients: image {i + 1}/{x.shape[0]}")
    notes = [f"baseline {Baseline(baseline).value}, {steps} steps; completeness gap "
             f"|sum - (logit(x) - logit(baseline))| = {max(gaps):.3g}"]
    return from_raw(torch.cat(parts), "integrated-gradients", t.tolist(), started, notes=notes,
                    options={"steps": int(steps), "baseline": Baseline(baseline).value})


SALIENCY = MethodSpec("saliency", saliency, "Saliency", "gradient of the class logit with respect to each pixel")
INPUT_X_GRADIENT = MethodSpec("input-x-gradient", input_x_gradient, "Input × gradient", "gradient times pixel value")
STEPS = Option("steps", int, "path points from the baseline to the image", label="Steps", low=4, high=128)
BASELINE = Option("baseline", Baseline, "the start image of the path", label="Baseline")
INTEGRATED_GRADIENTS = MethodSpec(
    "integrated-gradients", integrated_gradients, "Integrated gradients",
    "gradients averaged along the path from a baseline image; sums to the logit change",
    options=(STEPS, BASELINE,
             Option("seed", int, "seed of the noise baseline", low=0, high=10_000, number_input=True,
                    visible=lambda o: o.get("baseline") == Baseline.NOISE.value)))
