"""Perturbation masks: meaningful perturbation (Fong & Vedaldi 2017) and extremal perturbation (Fong, Patrick &
Vedaldi 2019).

Both learn a smooth mask over the input by gradient descent on the mask alone (the model is fixed). A mask value
of 1 marks the *evidence*: the region kept sharp in the preserve variant, the region blurred (or faded) away in
the delete variant. Masks are aligned with the model input, (H, W) in [0, 1].

Extremal perturbation follows TorchRay's reference implementation: the mask is a smooth max over bumps centred on
a coarse grid of parameters (``step`` pixels apart, bump radius ``sigma``), the area is enforced by the ranking
constraint ``‖sort(m) - r_a‖²`` with a growing weight, blur is a pyramid of Gaussian blurs indexed by the mask
value, the image is flipped on every other step (jitter), and several areas are optimised in one batch. One
difference: the area constraint is applied to the mask inside the image (TorchRay also counts a margin around it),
so that the returned mask's mean is the requested area.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..blur import gaussian_blur
from ..inputs import check_input, resolve_target
from ..model.wrapper import LensModel
from ..progress import Cancel, Progress, is_cancelled, report
from .convergence import CHECK_EVERY, SETTLE_STEPS, STABLE_IOU, Stability, region_iou, top_regions
from .smooth_mask import SmoothMask, area_loss

Preview = Callable[[torch.Tensor, float], None]  # (K, H, W) masks on the CPU, fraction done
PREVIEW_EVERY = 10  # steps between previews after the first one

# 300 steps: the fewest tried whose extremal mask meets its area and lies on the object nearly as much as after
# TorchRay's 800 steps (after 100 it lies clearly less on it); figures in docs/perturbation.md.
EXTREMAL_ITERATIONS = 300
MEANINGFUL_ITERATIONS = 300
TORCHRAY_ITERATIONS = 800
DEFAULT_AREA = 0.1  # one extremal mask's area when none is asked for (a fraction of the image)
# TorchRay multiplies the area weight by 1.0035 per step over 800 steps; a shorter run keeps the same end weight.
_AREA_WEIGHT_START = 300.0
_AREA_WEIGHT_GROWTH_TOTAL = 1.0035 ** TORCHRAY_ITERATIONS
# The convergence stop (``converge=True``, core/perturbation/convergence.py) ends the run once the evidence
# regions hold still; SETTLE_STEPS and STABLE_IOU are read here at call time.
# Meaningful perturbation's learning rate halves every MEANINGFUL_LR_HALF_LIFE steps (Fong & Vedaldi's Adam at lr 0.1
# from the first step; with a constant rate the jittered objective keeps the mask moving for ever: docs/performance.md).
# Its stop bounds the region's remaining drift instead of using STABLE_IOU: the Jaccard distance (1 - IoU) is a
# metric, so the distance to the end of the path is at most the sum of the distances over the remaining
# CHECK_EVERY-step intervals; while those shrink with the step size (a factor r = 2^(-CHECK_EVERY / half-life) per
# interval) the sum is at most d / (1 - r) for the last interval's distance d. The stop asks d / (1 - r) ≤
# MEANINGFUL_DRIFT at PATIENCE checks in a row, i.e. IoU ≥ 1 - MEANINGFUL_DRIFT (1 - r) (0.984 at a half-life of 40).
MEANINGFUL_LR_HALF_LIFE = 40.0
MEANINGFUL_DRIFT = 0.1


class MaskMethod(str, enum.Enum):
    """Meaningful perturbation (Fong & Vedaldi 2017) or extremal perturbation (Fong et al. 2019)."""

    MEANINGFUL = "meaningful"
    EXTREMAL = "extremal"


class Variant(str, enum.Enum):
    PRESERVE = "preserve"   # keep the mask sharp, perturb the rest: is this region sufficient?
    DELETE = "delete"       # perturb the mask, keep the rest: is this region necessary?


class Perturbation(str, enum.Enum):
    BLUR = "blur"
    FADE = "fade"           # towards the model's mean colour (zero after normalisation)


@dataclass(frozen=True)
class PerturbationResult:
    """Masks for one image and target.

    Attributes:
        masks: float32 (K, H, W) in [0, 1]; 1 marks the evidence (preserved or deleted region).
        areas: the K requested areas (extremal) or achieved mask means (meaningful), fractions of the image.
        scores: float32 (K,) target probability on the perturbed images.
        perturbed: float32 (K, 3, H, W) in [0, 1], the images the model sees with each mask applied.
        loss: float32 (K, T) objective per step (lower is better); T = steps run.
        score_curve: float32 (K, T) target probability during the optimisation (jittered inputs).
        base_score: target probability on the unperturbed image.
        iterations: optimisation steps run.
        seconds: compute time.
        cancelled: True when ``cancel`` ended the run early (the masks are those of the last step).
        converged: True when the convergence stop ended the run (``converge=True``) before ``max_iterations``.
        max_iterations: the steps asked for (the most a converging run may take).
    """

    method: MaskMethod
    variant: Variant
    perturbation: Perturbation
    target: int
    masks: torch.Tensor
    areas: tuple[float, ...]
    scores: torch.Tensor
    perturbed: torch.Tensor
    loss: torch.Tensor
    score_curve: torch.Tensor
    base_score: float
    iterations: int
    seconds: float
    cancelled: bool = False
    converged: bool = False
    max_iterations: int = 0


def _mean_colour(model: LensModel, like: torch.Tensor) -> torch.Tensor:
    mean = (model.card.data_config or {}).get("mean", (0.5, 0.5, 0.5))
    return torch.tensor(mean, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


class PerturbationPyramid:
    """``levels`` versions of an image from fully perturbed (mask 0) to intact (mask 1); a mask value picks and
    linearly interpolates between two neighbouring levels."""

    def __init__(self, x: torch.Tensor, kind: Perturbation, mean: torch.Tensor, *, levels: int = 8,
                 max_blur: float = 20.0) -> None:
        steps = torch.linspace(0, 1, levels).tolist()
        if Perturbation(kind) is Perturbation.BLUR:
            pyr = [gaussian_blur(x, (1 - s) * max_blur) for s in steps]
        else:
            pyr = [mean + (x - mean) * s for s in steps]
        self.levels = levels
        self.pyramid = torch.cat(pyr, dim=0)  # (L, 3, H, W)

    def apply(self, mask: torch.Tensor) -> torch.Tensor:
        """(K, 1, H, W) mask in [0, 1] -> (K, 3, H, W) perturbed images."""
        w = mask * (self.levels - 1)
        k = w.detach().floor().clamp(0, self.levels - 1)
        frac = w - k
        k = k.long()
        y = self.pyramid.unsqueeze(0).expand(mask.shape[0], *self.pyramid.shape)
        idx0 = k.unsqueeze(2).expand(-1, 1, 3, -1, -1)
        idx1 = (k + 1).clamp(max=self.levels - 1).unsqueeze(2).expand(-1, 1, 3, -1, -1)
        y0 = torch.gather(y, 1, idx0).squeeze(1)
        y1 = torch.gather(y, 1, idx1).squeeze(1)
        return (1 - frac) * y0 + frac * y1



def _prepare(model: LensModel, x: torch.Tensor, target: int | None, iterations: int
             ) -> tuple[torch.Tensor, int, float]:
    """(x as (1, 3, H, W) float32, the target class, its probability on ``x``); checks the step count too."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    x = check_input(x, single=True)
    x = x.to(model.mean.device)  # the optimisation runs on the model's device
    with torch.no_grad():
        logits = model(x).float()
    t = int(resolve_target(model, x, target, logits=logits)[0])
    return x, t, float(logits.softmax(-1)[0, t])



def _finish(model: LensModel, images: torch.Tensor, target: int) -> torch.Tensor:
    with torch.no_grad():
        return model(images).float().softmax(-1)[:, target]


def _optimise(params: torch.Tensor, optimizer: torch.optim.Optimizer, iterations: int,
              objective: Callable[[int], tuple[torch.Tensor, torch.Tensor]], progress: Progress | None,
              cancel: Cancel | None, label: str,
              preview: tuple[Preview, Callable[[], torch.Tensor]] | None = None,
              stop: Callable[[int], bool] | None = None) -> tuple[list, list, bool]:
    """Minimise ``objective(step) -> (loss (K,), target probability (K,))`` over ``params`` kept in [0, 1].

    ``preview``: (callback, current masks (K, 1, H, W) of the last step); called after the first step and then
    every ``PREVIEW_EVERY`` steps. ``stop(step)``: called after each step (0-based), True ends the run (then a
    last preview). Returns the per-step losses and probabilities and whether ``cancel`` ended the run."""
    losses, scores = [], []
    for t in range(iterations):
        if is_cancelled(cancel):
            return losses, scores, True
        loss, prob = objective(t)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        with torch.no_grad():
            params.clamp_(0, 1)
        losses.append(loss.detach())
        scores.append(prob)
        report(progress, (t + 1) / iterations, f"{label}: step {t + 1}/{iterations}")
        done = stop is not None and stop(t)
        if preview is not None and (t == 0 or (t + 1) % PREVIEW_EVERY == 0 or done):
            callback, current = preview
            callback(current()[:, 0].detach().to(torch.device("cpu")), 1.0 if done else (t + 1) / iterations)
        if done:
            break
    return losses, scores, False




def extremal_perturbation(model: LensModel, x: torch.Tensor, target: int | None = None, *,
                          areas: Sequence[float] = (DEFAULT_AREA,), variant: Variant = Variant.PRESERVE,
                          perturbation: Perturbation = Perturbation.BLUR, iterations: int = EXTREMAL_ITERATIONS,
                          step: int | None = None, sigma: float | None = None, learning_rate: float = 0.05,
                          jitter: bool = True, converge: bool = False,
                          progress: Progress | None = None, cancel: Cancel | None = None,
                          preview: Preview | None = None) -> PerturbationResult:
    """Extremal perturbations of ``x`` for ``target``, one mask per area, optimised together.

    Args:
        x: float (1, 3, H, W) or (3, H, W) in [0, 1]; not modified.
        target: class index; None means the top-1 class of ``x``.
        areas: mask areas as fractions of the image, each in (0, 1).
        variant: preserve (maximise the target keeping only the mask) or delete (minimise it removing the mask).
        iterations: optimisation steps; the area weight schedule is stretched to end where TorchRay's does.
            With ``converge``: the most steps taken.
        converge: the run of ``iterations`` steps, ended early once the top-``area`` region of every mask holds
            still after SETTLE_STEPS (``result.converged``, ``result.iterations`` the steps used).
        step, sigma: parameter grid spacing and bump radius in pixels; None scales TorchRay's 7 and 21 at
            224 px to the input size.
        learning_rate: SGD step with momentum 0.9 (TorchRay uses 0.01 over 800 steps).
        preview: called with the masks so far (K, H, W) on the CPU and the fraction done, after the first step
            and every ``PREVIEW_EVERY`` steps.

    Returns:
        A :class:`PerturbationResult` with masks (K, H, W), K = len(areas).
    """
    areas = tuple(float(a) for a in areas)
    if not areas or any(not 0 < a < 1 for a in areas):
        raise ValueError("areas must be fractions strictly between 0 and 1")
    started = time.perf_counter()
    variant, perturbation = Variant(variant), Perturbation(perturbation)
    x, target, base = _prepare(model, x, target, iterations)
    h, w = x.shape[-2:]
    pyramid = PerturbationPyramid(x, perturbation, _mean_colour(model, x))
    scale = min(h, w) / 224.0
    gen = SmoothMask((h, w), step or max(1, round(7 * scale)), sigma or 21.0 * scale, device=x.device)
    # start from the whole image; grid points outside it start off, or their bumps leave a frame that the area
    # constraint (counted inside the image only) is slow to remove
    params = gen.inside().expand(len(areas), 1, -1, -1).clone().requires_grad_(True)
    ones = [h * w - int(round(h * w * (1 - a))) for a in areas]  # the area reference: n (1 - a) zeros, then ones
    optimizer = torch.optim.SGD([params], lr=learning_rate, momentum=0.9, dampening=0.9)
    schedule = iterations  # the stop ends the same path early: never a compressed schedule
    growth = _AREA_WEIGHT_GROWTH_TOTAL ** (1.0 / schedule)
    area_weight = _AREA_WEIGHT_START
    sign = 1.0 if variant is Variant.PRESERVE else -1.0

    last: dict[str, torch.Tensor] = {}

    def objective(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = last["mask"] = gen(params)
        images = pyramid.apply(mask if variant is Variant.PRESERVE else 1 - mask)
        if jitter and t % 2 == 0:
            images = torch.flip(images, dims=(3,))
        logits = model(images).float()
        constraint = area_loss(mask.view(len(areas), -1), ones) * area_weight * growth ** min(t, schedule)
        return constraint - sign * logits[:, target], logits.detach().softmax(-1)[:, target]

    stability = (Stability(lambda: top_regions(last["mask"], areas), min(SETTLE_STEPS, iterations), STABLE_IOU)
                 if converge else None)
    losses, scores, cancelled = _optimise(params, optimizer, iterations, objective, progress, cancel,
                                          "extremal perturbation",
                                          (preview, lambda: last["mask"]) if preview is not None else None,
                                          stability)
    with torch.no_grad():
        mask = gen(params)
        images = pyramid.apply(mask if variant is Variant.PRESERVE else 1 - mask)
    return _to_cpu(PerturbationResult(
        MaskMethod.EXTREMAL, variant, perturbation, target, mask[:, 0].detach(), areas,
        _finish(model, images, target), images.detach(), _stack(losses, len(areas)), _stack(scores, len(areas)),
        base, len(losses), time.perf_counter() - started, cancelled,
        stability is not None and stability.stopped, iterations))


def _to_cpu(r: PerturbationResult) -> PerturbationResult:
    """The result with its tensors on the CPU, for display (the optimisation ran on the model's device)."""
    cpu = torch.device("cpu")
    return replace(r, masks=r.masks.to(cpu), scores=r.scores.to(cpu), perturbed=r.perturbed.to(cpu),
                   loss=r.loss.to(cpu), score_curve=r.score_curve.to(cpu))


def _stack(rows: list[torch.Tensor], k: int) -> torch.Tensor:
    return torch.stack(rows, dim=1).float() if rows else torch.zeros(k, 0)


def total_variation(m: torch.Tensor, beta: float = 3.0) -> torch.Tensor:
    """Mean of |∇m|^beta over neighbouring pixel pairs of (K, 1, h, w) masks -> (K,)."""
    dy = (m[..., 1:, :] - m[..., :-1, :]).abs().pow(beta).flatten(1).mean(1)
    dx = (m[..., :, 1:] - m[..., :, :-1]).abs().pow(beta).flatten(1).mean(1)
    return dy + dx


def meaningful_perturbation(model: LensModel, x: torch.Tensor, target: int | None = None, *,
                            variant: Variant = Variant.DELETE, perturbation: Perturbation = Perturbation.BLUR,
                            iterations: int = MEANINGFUL_ITERATIONS, l1: float = 0.05, tv: float = 0.2,
                            tv_beta: float = 3.0, blur_sigma: float = 10.0, mask_stride: int = 8,
                            learning_rate: float = 0.1, lr_half_life: float | None = MEANINGFUL_LR_HALF_LIFE,
                            jitter: int = 4, seed: int = 0, converge: bool = False,
                            progress: Progress | None = None, cancel: Cancel | None = None,
                            preview: Preview | None = None) -> PerturbationResult:
    """Meaningful perturbation: the smallest smooth region whose perturbation most changes the target.

    Minimises ``l1 · area + tv · TV_beta(m) ± p_target(x ⊙ m' + blur(x) ⊙ (1 - m'))`` over a coarse mask
    (one value per ``mask_stride`` pixels, upsampled bilinearly) with Adam; ``m'`` keeps the image where the
    mask is off (delete game) or on (preserve game). Jitter: the composite is shifted by up to ``jitter`` pixels
    at random on each step. Settings of the authors' code (ruthcfong/perturb_explanations, optimize_mask.py: Adam
    at lr 0.1, 300 steps, TV exponent 3, jitter 4, a 28 × 28 mask at 224 px, blur σ 10), with one addition: the
    learning rate halves every ``lr_half_life`` steps (a decaying step size, the standard condition for a
    stochastic objective such as the jittered one to converge: at a constant rate the mask never settles).

    Args:
        x: float (1, 3, H, W) or (3, H, W) in [0, 1]; not modified.
        target: class index; None means the top-1 class of ``x``.
        iterations: optimisation steps; with ``converge``, the most steps taken.
        lr_half_life: steps over which the learning rate halves; None keeps it constant (the original method).
        converge: after ``min(SETTLE_STEPS, iterations)`` steps, stop once the region where the mask is above
            0.5 holds still: with a decaying rate, once its remaining drift is bounded by MEANINGFUL_DRIFT (see
            there), else by STABLE_IOU (``result.converged``, ``result.iterations`` the steps used).

    Returns:
        A :class:`PerturbationResult` with one mask (1, H, W); ``areas`` holds its mean.
    """
    started = time.perf_counter()
    variant, perturbation = Variant(variant), Perturbation(perturbation)
    x, target, base = _prepare(model, x, target, iterations)
    h, w = x.shape[-2:]
    if perturbation is Perturbation.BLUR:
        background = gaussian_blur(x, blur_sigma)
    else:
        background = _mean_colour(model, x).expand_as(x)
    gen = torch.Generator().manual_seed(seed)
    # the evidence mask starts empty: nothing deleted (delete game) / nothing but a faint whole image (preserve)
    start = 0.0 if variant is Variant.DELETE else 0.5
    params = torch.full((1, 1, max(2, h // mask_stride), max(2, w // mask_stride)), start, device=x.device,
                        requires_grad=True)
    optimizer = torch.optim.Adam([params], lr=learning_rate)

    def compose(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        evidence = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        keep = evidence if variant is Variant.PRESERVE else 1 - evidence
        return evidence, x * keep + background * (1 - keep)

    def objective(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        if lr_half_life:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * 0.5 ** (t / lr_half_life)
        _, images = compose(params)
        if jitter > 0:
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
            images = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
        prob = model(images).float().softmax(-1)[:, target]
        evidence_term = prob if variant is Variant.DELETE else 1 - prob
        return (l1 * params.abs().flatten(1).mean(1) + tv * total_variation(params, tv_beta) + evidence_term,
                prob.detach())

    def current() -> torch.Tensor:
        with torch.no_grad():
            return compose(params)[0]

    stable_iou = (1 - MEANINGFUL_DRIFT * (1 - 0.5 ** (CHECK_EVERY / lr_half_life))) if lr_half_life else STABLE_IOU
    stability = (Stability(lambda: current()[:, 0] > 0.5, min(SETTLE_STEPS, iterations), stable_iou) if converge
                 else None)
    losses, scores, cancelled = _optimise(params, optimizer, iterations, objective, progress, cancel,
                                          "meaningful perturbation", (preview, current) if preview is not None else None,
                                          stability)
    with torch.no_grad():
        evidence, images = compose(params)
    mask = evidence[:, 0].detach()
    return _to_cpu(PerturbationResult(
        MaskMethod.MEANINGFUL, variant, perturbation, target, mask, (float(mask.mean()),),
        _finish(model, images, target), images.detach(), _stack(losses, 1), _stack(scores, 1), base, len(losses),
        time.perf_counter() - started, cancelled, stability is not None and stability.stopped, iterations))


def perturbation_masks(model: LensModel, x: torch.Tensor, target: int | None = None, *,
                       method: MaskMethod = MaskMethod.EXTREMAL, areas: Sequence[float] = (DEFAULT_AREA,),
                       variant: Variant | None = None, iterations: int | None = None,
                       perturbation: Perturbation = Perturbation.BLUR, converge: bool = False,
                       progress: Progress | None = None, cancel: Cancel | None = None,
                       preview: Preview | None = None) -> PerturbationResult:
    """Either method with its own defaults (``variant`` None: preserve for extremal, delete for meaningful);
    ``converge``: stop once the masks hold still, ``iterations`` at most."""
    if MaskMethod(method) is MaskMethod.EXTREMAL:
        return extremal_perturbation(model, x, target, areas=areas, variant=variant or Variant.PRESERVE,
                                     perturbation=perturbation, iterations=iterations or EXTREMAL_ITERATIONS,
                                     converge=converge, progress=progress, cancel=cancel, preview=preview)
    return meaningful_perturbation(model, x, target, variant=variant or Variant.DELETE, perturbation=perturbation,
                                   iterations=iterations or MEANINGFUL_ITERATIONS, converge=converge,
                                   progress=progress, cancel=cancel, preview=preview)
