"""Net2Vec (Fong & Vedaldi 2018): concepts as weighted combinations of a layer's channels.

For each concept, a weight vector ``w`` (C,) and bias ``b`` are learnt so that ``w · a(p) + b > 0`` segments the
concept at every position ``p`` (class-balanced binary cross-entropy, as in the paper; the cut is then moved to
the one with the best training IoU, as for the single channels). The result is
compared with the best single channel at its best threshold (a stronger baseline than Network Dissection's fixed
top-0.5 % threshold). Scores are set IoUs, Σ|M ∩ L| / Σ|M ∪ L| over all images, measured on
held-out images (every other image) when there are at least four, otherwise on the training images.

Activations are standardised per channel (so weights compare across channels) and upsampled bilinearly to a
``size`` x ``size`` grid, where the concept masks are also sampled.

Concepts come from :func:`colour_concepts` (the eleven colour terms of Broden, named per pixel from its colour with
no labels) or :func:`load_concept_masks` (a user folder of binary masks).
"""
from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..catalogue import LayerInfo, find_layer, layer_outputs
from ..images import ImageError, list_images
from ..model.device import model_device
from ..model.wrapper import LensModel
from ..progress import Progress, report


DEFAULT_SIZE = 56

# Prototype sRGB colours of the eleven basic colour terms (Berlin & Kay; the terms of Broden's colour concepts).
COLOUR_TERMS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20), "blue": (40, 70, 200), "brown": (120, 75, 35), "grey": (128, 128, 128),
    "green": (50, 150, 50), "orange": (240, 140, 20), "pink": (245, 160, 190), "purple": (120, 50, 150),
    "red": (200, 30, 30), "white": (240, 240, 240), "yellow": (240, 220, 40),
}


class ConceptSource(str, enum.Enum):
    COLORS = "colors"
    MASKS = "masks"


@dataclass(frozen=True)
class ConceptFit:
    """One concept's learnt channel combination and its comparison with the best single channel.

    Attributes:
        weights: float32 (C,) over standardised channels; bias: the offset.
        iou: set IoU of the learnt combination on the evaluation images, in [0, 1].
        iou_best_channel: set IoU of the best single channel at its best threshold, in [0, 1].
        best_channel: that channel's index.
        top_channels: channels with the largest positive weights, strongest first.
        predicted: bool (N, size, size), the combination's masks for every image.
        held_out: True when the IoUs were measured on images not used for fitting.
        positives: fraction of concept pixels over all images.
        seconds: compute time of the fit.
    """

    name: str
    weights: torch.Tensor
    bias: float
    iou: float
    iou_best_channel: float
    best_channel: int
    best_threshold: float
    top_channels: tuple[int, ...]
    predicted: torch.Tensor
    held_out: bool
    positives: float
    seconds: float

    def as_dict(self) -> dict:
        return {"name": self.name, "iou": self.iou, "iou_best_channel": self.iou_best_channel,
                "best_channel": self.best_channel, "top_channels": list(self.top_channels)}


def layer_activations(model: LensModel, x: torch.Tensor, layer: str | LayerInfo, *, size: int = DEFAULT_SIZE,
                      batch_size: int = 8, progress: Progress | None = None, channels_last: bool = False
                      ) -> torch.Tensor:
    """A layer's activations upsampled to ``size`` x ``size``.

    Args:
        x: float (N, 3, H, W) in [0, 1].
        channels_last: return (N, size, size, C), contiguous, instead: what the fit reads, filled chunk by chunk
            into one tensor (no second copy of all images' activations).

    Returns:
        float32 (N, C, size, size) (or (N, size, size, C)) on the model's device.
    """
    info = layer if isinstance(layer, LayerInfo) else find_layer(model, layer)
    device = model_device(model)
    out: torch.Tensor | None = None
    for i, chunk in enumerate(x.split(batch_size)):
        a = layer_outputs(model, chunk.float().to(device), [info])[info.name].float()
        a = F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False)
        if out is None:
            shape = (len(x), size, size, a.shape[1]) if channels_last else (len(x), a.shape[1], size, size)
            out = torch.empty(shape, device=device)
        out[i * batch_size:i * batch_size + len(chunk)] = a.permute(0, 2, 3, 1) if channels_last else a
        del a
        report(progress, (i + 1) * batch_size / len(x), f"activations of {info.name}")
    return out


def _srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> (..., 3) CIELab (D65)."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / torch.tensor([0.95047, 1.0, 1.08883])
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def colour_names(x: torch.Tensor, *, size: int = DEFAULT_SIZE) -> torch.Tensor:
    """Per-pixel colour term: the index (into ``COLOUR_TERMS``) of the nearest prototype in CIELab.

    Args:
        x: float (N, 3, H, W) in [0, 1].

    Returns:
        int64 (N, size, size).
    """
    small = F.interpolate(x.float(), size=(size, size), mode="area")
    lab = _srgb_to_lab(small.permute(0, 2, 3, 1).clamp(0, 1))
    protos = _srgb_to_lab(torch.tensor(list(COLOUR_TERMS.values()), dtype=torch.float32) / 255.0)
    return torch.cdist(lab.reshape(-1, 3), protos).argmin(1).reshape(small.shape[0], size, size)


def colour_concepts(x: torch.Tensor, *, size: int = DEFAULT_SIZE, min_fraction: float = 0.002
                   ) -> dict[str, torch.Tensor]:
    """Binary masks (N, size, size) for each colour term covering at least ``min_fraction`` of all pixels."""
    names = colour_names(x, size=size)
    masks = {name: names == i for i, name in enumerate(COLOUR_TERMS)}
    return {k: v for k, v in masks.items() if float(v.float().mean()) >= min_fraction}


def load_concept_masks(mask_folder: str | Path, image_paths: Sequence[str | Path], *, size: int = DEFAULT_SIZE
                       ) -> dict[str, torch.Tensor]:
    """Concept masks from a folder: ``MASKS/<concept>/<image stem>.<ext>`` (or masks directly in ``MASKS``, then
    the concept is named after the folder). A non-zero pixel marks the concept; an image with no mask file has
    none of that concept. Masks are resized to the image's model input grid with nearest sampling.

    Returns:
        concept name -> bool (N, size, size), N = len(image_paths).

    Raises:
        ImageError: no masks match the images, or a mask cannot be read.
    """
    root = Path(mask_folder)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir()) or [root]
    stems = [Path(p).stem for p in image_paths]
    concepts = {}
    for folder in folders:
        files = {p.stem: p for p in list_images(folder, recursive=False, within=root)}
        if not any(s in files for s in stems):
            continue
        masks = torch.zeros(len(stems), size, size, dtype=torch.bool)
        for i, stem in enumerate(stems):
            if stem in files:
                masks[i] = _read_mask(files[stem], size)
        concepts[folder.name] = masks
    if not concepts:
        raise ImageError(f"{root}: no mask file is named after an image (expected <concept>/<image stem>.png)")
    return concepts


def _read_mask(path: Path, size: int) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L").resize((size, size), Image.NEAREST)) > 0
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: cannot read mask ({e})") from e
    return torch.from_numpy(a)


def set_iou(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Σ|pred ∩ truth| / Σ|pred ∪ truth| over all images (0 when both are empty)."""
    union = int((pred | truth).sum())
    return int((pred & truth).sum()) / union if union else 0.0


def best_cuts(scores: torch.Tensor, truth: torch.Tensor, *, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """For every column of ``scores`` (P, C), the cut ``t`` maximising the IoU of ``scores > t`` with ``truth`` (P,).

    Exact: one sort per column (along contiguous rows: a sort along the strided first axis is several times
    slower), then the running IoU along the same rows. Returns (iou (C,), cut (C,)).
    """
    truth = truth.reshape(-1)
    p = len(truth)
    # k + |truth| for the k highest scores; float32 counts are exact below 2^24 positions
    k_pos = torch.arange(1, p + 1, dtype=torch.float32, device=scores.device) + truth.sum()
    ious, cuts = [], []
    for block in scores.split(chunk, dim=1):
        values, order = block.T.contiguous().sort(dim=1, descending=True)  # (c, P) rows
        tp = truth[order].cumsum(1, dtype=torch.float32)
        iou = tp.div_(torch.sub(k_pos, tp))
        iou[:, :-1].masked_fill_(values[:, :-1] == values[:, 1:], 0.0)  # only cut between distinct values
        best = iou.argmax(1)
        rows = torch.arange(block.shape[1], device=scores.device)
        nxt = values[rows, (best + 1).clamp(max=p - 1)]
        here = values[rows, best]
        ious.append(iou[rows, best])
        cuts.append(torch.where(best + 1 < p, (here + nxt) / 2, here - 1))
    return torch.cat(ious), torch.cat(cuts)


def _fit_logistic(a: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, iterations: int, lr: float,
                  betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> tuple[torch.Tensor, float]:
    """Weighted logistic regression ``mean(weight · BCE(a w + b, target))`` from zero by Adam, written out: the
    gradient in closed form, ``weight (σ(a w + b) - target) / P`` through ``aᵀ``, and torch.optim.Adam's update
    in one call of PyTorch's fused Adam kernel (what ``torch.optim.Adam(fused=True)`` runs), so each step costs
    two matrix-vector products and three (P,)-sized passes instead of autograd's graph and the optimiser's
    bookkeeping. With the fused update the fit costs about what its two products alone cost; the update written
    out as seven small operations costs noticeably more (figures: docs/performance.md).

    Args:
        a: float32 (P, C) contiguous; target, weight: float32 (P,).

    Returns:
        (w (C,), b).
    """
    p, c = a.shape
    theta = torch.zeros(c + 1, device=a.device)  # (w, b)
    w, b = theta[:c], theta[c:]
    avg, avg_sq = torch.zeros(c + 1, device=a.device), torch.zeros(c + 1, device=a.device)
    grad = torch.empty(c + 1, device=a.device)
    scale = weight / p
    offset = -(target * scale)
    step_t = torch.zeros((), device=a.device)
    fused = getattr(torch, "_fused_adam_", None)
    for step in range(1, iterations + 1):
        gz = torch.addcmul(offset, torch.addmv(b, a, w).sigmoid_(), scale)  # ∂loss/∂logits
        torch.mv(a.T, gz, out=grad[:c])
        torch.sum(gz, dim=0, keepdim=True, out=grad[c:])
        step_t += 1
        if fused is not None:
            try:
                fused([theta], [grad], [avg], [avg_sq], [], [step_t], lr=lr, beta1=betas[0], beta2=betas[1],
                      weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
                continue
            except (RuntimeError, NotImplementedError):  # a device without the fused kernel: written out below
                fused = None
        _adam_step(theta, grad, avg, avg_sq, step, lr, betas, eps)
    return w.clone(), float(b)


def _adam_step(theta: torch.Tensor, grad: torch.Tensor, avg: torch.Tensor, avg_sq: torch.Tensor, step: int,
               lr: float, betas: tuple[float, float], eps: float) -> None:
    """torch.optim.Adam's update, in place (same operations in the same order, the square root as 1 / rsqrt:
    torch.sqrt on the CPU waited for the thread pool on every call, which on a loaded machine cost more than
    the rest of the fit)."""
    avg.lerp_(grad, 1 - betas[0])
    avg_sq.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
    denom = avg_sq.rsqrt().reciprocal_().div_(math.sqrt(1 - betas[1] ** step)).add_(eps)
    theta.addcdiv_(avg, denom, value=-lr / (1 - betas[0] ** step))


def fit_concept(activations: torch.Tensor, masks: torch.Tensor, name: str = "concept", *, iterations: int = 300,
                learning_rate: float = 0.05, top: int = 5, max_pixels: int = 30_000, seed: int = 0) -> ConceptFit:
    """Learn one concept's channel weights and compare them with the best single channel.

    Args:
        activations: float (N, C, s, s) (any real values; standardised per channel here).
        masks: bool (N, s, s), the concept's pixels (on any device: the fit runs where ``activations`` are).
        max_pixels: at most this many training positions (sampled uniformly) are used to fit and to pick cuts.

    Returns:
        A :class:`ConceptFit` (its tensors on the CPU).
    """
    x = activations.float()
    a = torch.empty(x.shape[0], *x.shape[2:], x.shape[1], device=x.device)  # (N, s, s, C), channels contiguous
    a.copy_(x.permute(0, 2, 3, 1))
    mean, std = standardise_(a)
    return _fit(a, mean, std, masks, name, iterations=iterations, learning_rate=learning_rate, top=top,
                max_pixels=max_pixels, seed=seed)


def standardise_(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise channels-last activations ``a`` (N, s, s, C) per channel, in place; returns (mean, std) (C,)."""
    std, mean = torch.std_mean(a, dim=(0, 1, 2))
    std = std.clamp_min(1e-6)
    a.sub_(mean).div_(std)
    return mean, std


def _fit(a: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, masks: torch.Tensor, name: str, *,
         iterations: int, learning_rate: float, top: int, max_pixels: int, seed: int) -> ConceptFit:
    """:func:`fit_concept` on activations already standardised, channels last (N, s, s, C), read only: Net2Vec
    fits every concept on one such tensor rather than a copy per concept."""
    started = time.perf_counter()
    n, c = a.shape[0], a.shape[-1]
    if masks.shape != a.shape[:3]:
        raise ValueError(f"masks {tuple(masks.shape)} do not match activations {(n, c, *a.shape[1:3])}")
    device = a.device
    masks = masks.to(device)
    held_out = n >= 4
    train = torch.arange(n, device=device) % 2 == 0 if held_out else torch.ones(n, dtype=torch.bool, device=device)
    test = ~train if held_out else train
    # the training positions as rows of the flat (N·s·s, C) view: only the rows used are gathered (a copy of
    # every training image's activations would double the fit's memory)
    per_image = a.shape[1] * a.shape[2]
    rows = (torch.nonzero(train).reshape(-1, 1) * per_image
            + torch.arange(per_image, device=device)).reshape(-1)
    if len(rows) > max_pixels:  # a uniform sample of training positions keeps the fit fast on wide layers
        # drawn on the CPU (the same sample on every device), then moved
        keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_pixels].to(device)
        rows = rows[keep]
    a_tr, m_tr = a.reshape(-1, c)[rows], masks.reshape(-1)[rows]
    pos = float(m_tr.float().mean())

    # class balance as in Net2Vec: positives weighted by 1 - α, negatives by α, α = positive fraction
    alpha = min(max(pos, 1e-4), 1 - 1e-4)
    weight = torch.where(m_tr, 1 - alpha, alpha)
    w, b = _fit_logistic(a_tr.contiguous(), m_tr.float(), weight, iterations, learning_rate)
    # the class-balanced loss over-segments at logit 0, so the cut is moved to the best one on the training
    # images, exactly as each single channel's cut is chosen
    _, cut = best_cuts((a_tr @ w + b)[:, None], m_tr)
    b -= float(cut[0])
    predicted = (a @ w + b) > 0
    iou = set_iou(predicted[test], masks[test])

    channel_ious, channel_cuts = best_cuts(a_tr, m_tr)
    best = int(channel_ious.argmax())
    thr = float(channel_cuts[best])
    single = a[..., best][test] > thr
    order = torch.argsort(w, descending=True)[:top]
    w, predicted, order = _to_cpu(w, predicted, order)
    return ConceptFit(name, w, b, iou, set_iou(single, masks[test]), best, thr * float(std[best]) + float(mean[best]),
                      tuple(int(i) for i in order if w[i] > 0), predicted, held_out,
                      float(masks.float().mean()), time.perf_counter() - started)


def _to_cpu(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = []
    for t in tensors:
        out.append(t.cpu())  # the fit comes back to the CPU for display
    return tuple(out)


def net2vec(model: LensModel, x: torch.Tensor, layer: str | LayerInfo, concepts: Mapping[str, torch.Tensor], *,
            size: int = DEFAULT_SIZE, iterations: int = 300, progress: Progress | None = None
            ) -> tuple[ConceptFit, ...]:
    """Fit every concept at ``layer`` of ``model`` on images ``x`` (N, 3, H, W) in [0, 1].

    Args:
        concepts: name -> bool (N, size, size) masks (see :func:`colour_concepts`, :func:`load_concept_masks`).
    """
    if not concepts:
        raise ValueError("no concepts to fit")
    acts = layer_activations(model, x, layer, size=size, channels_last=True,
                             progress=lambda f, m: report(progress, 0.3 * f, m))
    mean, std = standardise_(acts)
    fits = []
    for i, (name, masks) in enumerate(concepts.items()):
        fits.append(_fit(acts, mean, std, masks, name, iterations=iterations, learning_rate=0.05, top=5,
                         max_pixels=30_000, seed=0))
        report(progress, 0.3 + 0.7 * (i + 1) / len(concepts), f"concept {name}")
    return tuple(fits)
