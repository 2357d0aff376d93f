"""Gradient attributions: saliency, input × gradient, and integrated gradients.

All return signed per-channel maps (``raw`` (N, 3, H, W)); ``map`` is their channel sum. Integrated gradients
integrate from a baseline image to ``x`` (Sundararajan et al. 2017) with the Gauss-Legendre points of Captum's
``IntegratedGradients`` (Captum is the reference in the tests), in our own loop of ``batch_size`` points at a
time; the map sums to about ``logit(x) - logit(baseline)`` and the gap is reported as a note.
"""
from __future__ import annotations

import enum
import time
from typing import Callable, Sequence

import torch
from torch import nn

from ..blur import gaussian_blur
from ..progress import Progress, report
from .spec import MethodSpec, Option
from .base import (PREVIEW_BATCH, TRIAL_BATCHES, Attribution, MeasuredBatches, batches, check_input, from_raw,
                   input_gradient, resolve_target)


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
    return gaussian_blur(x, sigma, border="replicate").clamp(0, 1)


def gauss_legendre(steps: int) -> tuple[list[float], list[float]]:
    """Captum's Gauss-Legendre rule on [0, 1]: (alphas, weights), ``steps`` points each; weights sum to 1."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()


def spread_order(n: int, k: int) -> list[int]:
    """0..n-1 reordered so that every run of ``k`` covers the whole range (0, s, 2s, ..., then 1, 1+s, ...)."""
    stride = max(1, -(-n // k))
    return [i for r in range(stride) for i in range(r, n, stride)]


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None,
                         *, steps: int = 32, baseline: Baseline | str = Baseline.BLACK, seed: int = 0,
                         batch_size: int | None = None, progress: Progress | None = None,
                         preview: Callable[[torch.Tensor, float], None] | None = None) -> Attribution:
    """Integrated gradients from ``baseline`` to ``x`` with ``steps`` Gauss-Legendre points.

    The same quadrature as Captum's ``IntegratedGradients`` (its default ``gausslegendre`` method), computed
    ``batch_size`` points at a time in one loop (None: the batch fastest per image, measured on the run's own
    first passes and remembered, :class:`~.base.MeasuredBatches`); the points are visited so that every prefix
    spans the whole path, so ``preview`` (called after each batch with the (N, H, W) map so far and the fraction
    done) shows a coarse map at once, after PREVIEW_BATCH points.

    Returns per-channel attributions whose sum approximates logit(x) - logit(baseline); the largest
    absolute gap over the batch is given in ``notes`` (a check on ``steps``).
    """
    started = time.perf_counter()
    x = check_input(x)
    t = resolve_target(model, x, target)
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError("batch_size must be at least 1")
    base = make_baseline(x, baseline, seed=seed)
    alphas, weights = gauss_legendre(steps)
    order = spread_order(len(alphas), int(batch_size or TRIAL_BATCHES[0]))
    if preview is not None:  # the first picture after PREVIEW_BATCH points at the middles of equal parts of the path
        m = min(PREVIEW_BATCH, len(alphas))
        head = [int((j + 0.5) * len(alphas) / m) for j in range(m)]
        order = head + [k for k in order if k not in head]
    # the first chunk: the preview's, or a short one that pays the one-off costs before the batch is timed
    first = PREVIEW_BATCH if preview is not None or batch_size is None else int(batch_size)
    sizes = MeasuredBatches(model, x.shape[1:], "gradient", batch_size, first=first)
    n = x.shape[0]
    out = torch.zeros_like(x)
    gaps = []
    for i in range(n):
        xi, bi, delta = x[i:i + 1], base[i:i + 1], x[i:i + 1] - base[i:i + 1]
        total = torch.zeros_like(xi[0])
        used = 0.0
        start = 0
        while start < len(order):
            idx = order[start:start + sizes.next()]
            start += len(idx)
            a = torch.tensor([alphas[k] for k in idx], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
            w = [weights[k] for k in idx]
            began = time.perf_counter()
            grad = input_gradient(model, bi + a * delta, t[i:i + 1].expand(len(idx)))
            if sizes.measuring:
                float(grad[0, 0, 0, 0])  # the pass has finished on any device before the clock is read
                sizes.timed(len(idx), time.perf_counter() - began)
            total.add_((grad * torch.tensor(w, dtype=grad.dtype, device=grad.device).view(-1, 1, 1, 1)).sum(0))
            used += sum(w)
            done = (i * len(order) + start) / (n * len(order))
            report(progress, done, f"integrated gradients: image {i + 1}/{n}, {start}/{steps} steps")
            if preview is not None:
                current = out.clone()
                current[i] = total * delta[0] / used
                preview(current[: i + 1].sum(1), done)
        out[i] = total * delta[0]
        with torch.no_grad():
            ends = model(torch.cat([xi, bi]))[:, int(t[i])].float()
        gaps.append(abs(float(out[i].sum()) - float(ends[0] - ends[1])))
    notes = [f"baseline {Baseline(baseline).value}, {steps} steps; completeness gap "
             f"|sum - (logit(x) - logit(baseline))| = {max(gaps):.3g}"]
    return from_raw(out, "integrated-gradients", t.tolist(), started, notes=notes,
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
                    visible=lambda o: o.get("baseline") == Baseline.NOISE.value)),
    measured_passes="gradient")
