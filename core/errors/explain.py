"""Why a mistake: class maps side by side, the contrastive map, and the channels that separate a confusion cell.

Contrastive map ("why bathroom rather than bedroom"): the attribution of ``logit[predicted] - logit[true]``. On a
classifier whose last layer is linear (every timm CNN), that difference is itself the logit of a linear head
with rows ``W[k] - W[true]``, so :func:`contrast_model` builds a copy of the model (sharing every weight) with
that head and any registered attribution method explains the difference exactly: for methods linear in the
differentiated score (saliency, the pre-ReLU Grad-CAM, signed SmoothGrad with the same noise) the map equals
the predicted-class map minus the true-class map.

Separating channels: for a confusion cell (true t, predicted p) and a layer, each channel's spatial maximum per
image (the activation index's statistic) is compared between the cell's images and the images of t that the
model gets right. The statistic is the standardised difference of means (Cohen's d: difference of means over
the pooled standard deviation); the rank-based AUC (probability that a mistaken image has the larger value) is
reported next to it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..attribution.base import Attribution, NotApplicable
from ..attribution.registry import attribute
from ..catalogue import find_layer, layer_outputs
from ..images import load_image, preprocess
from ..model.device import model_device
from ..progress import Cancel, Progress, is_cancelled
from .evaluate import Evaluation



def _classifier(net: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(parent module, attribute name, linear layer) of ``net``'s final classifier."""
    head = net.get_classifier() if hasattr(net, "get_classifier") else None
    if not isinstance(head, nn.Linear):
        raise NotApplicable("the contrastive map needs a final linear classifier (timm's get_classifier()); "
                            f"this model's is {type(head).__name__}")
    for name, module in net.named_modules():
        if module is head:
            parent_name, _, attr = name.rpartition(".")
            return net.get_submodule(parent_name) if parent_name else net, attr, head
    raise NotApplicable("the classifier is not a submodule of the network")


def contrast_model(model, true: int):
    """A copy of ``model`` (shared weights, own hooks and lock) whose output ``k`` is ``logit[k] - logit[true]``."""
    twin = model.replica()
    parent, attr, head = _classifier(twin.net)
    diff = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None, device=head.weight.device,
                     dtype=head.weight.dtype)
    with torch.no_grad():
        diff.weight.copy_(head.weight - head.weight[true])
        if head.bias is not None:
            diff.bias.copy_(head.bias - head.bias[true])
    diff.requires_grad_(False)
    setattr(parent, attr, diff.eval())
    return twin


def contrastive(model, x: torch.Tensor, predicted: int, true: int, *, method: str = "gradcam",
                progress: Progress | None = None, **options) -> Attribution:
    """Attribution of ``logit[predicted] - logit[true]`` with any registered ``method``.

    Args:
        x: (1, 3, H, W) or (3, H, W) in [0, 1].
        predicted, true: class indices (they may be equal: the map is then zero).

    Raises:
        NotApplicable: the model's last layer is not linear, or the method does not apply.
    """
    return attribute(contrast_model(model, int(true)), x, int(predicted), method=method, progress=progress,
                     **options)


@dataclass(frozen=True)
class MistakeMaps:
    """Maps (H, W) of one image: ``maps[(method, "predicted"|"true"|"contrast")]`` float32, plus the results."""

    predicted: int
    true: int
    maps: dict
    results: dict
    seconds: float


def explain_mistake(model, x: torch.Tensor, predicted: int, true: int, *,
                    methods: dict[str, dict] | None = None, progress: Progress | None = None) -> MistakeMaps:
    """Each method (name -> options) for the predicted class, the true class, and predicted minus true.

    Default: Grad-CAM and SmoothGrad (16 samples, fp32, signed). The Grad-CAM contrast is always kept signed (no
    ReLU, whatever ``relu`` the class maps use): positive where the evidence is for the predicted class rather
    than the true one, negative the other way.
    """
    start = time.perf_counter()
    methods = methods if methods is not None else {"gradcam": {}, "smoothgrad": {"samples": 16, "precision": "fp32"}}
    maps, results = {}, {}
    steps = [(m, role) for m in methods for role in ("predicted", "true", "contrast")]
    for i, (method, role) in enumerate(steps):
        if progress:
            progress(i / len(steps), f"{method}: {role}")
        opts = methods[method]
        if role == "contrast":  # Grad-CAM's ReLU would hide "rather the true class": keep the sign
            r = contrastive(model, x, predicted, true, method=method,
                            **({**opts, "relu": False} if method == "gradcam" else opts))
        else:
            r = attribute(model, x, predicted if role == "predicted" else true, method=method, **opts)
        results[(method, role)] = r
        maps[(method, role)] = r.map[0].float().numpy()
    if progress:
        progress(1.0, "done")
    return MistakeMaps(int(predicted), int(true), maps, results, time.perf_counter() - start)


# ------------------------------------------------------------------------------------ separating channels

@dataclass(frozen=True)
class SeparatingChannel:
    channel: int
    effect: float            # Cohen's d: (mean mistaken - mean correct) / pooled std; > 0: stronger on mistakes
    auc: float               # P(mistaken value > correct value) + 0.5 P(tie)
    mean_mistaken: float
    mean_correct: float


@dataclass(frozen=True)
class ChannelSeparation:
    layer: str
    true: int
    predicted: int
    statistic: str
    channels: tuple[SeparatingChannel, ...]      # strongest |effect| first
    mistaken: tuple[str, ...]
    correct: tuple[str, ...]
    weak: str | None                             # why the result is only suggestive, when it is
    seconds: float


def channel_maxima(model, paths: Sequence, layer: str, *, batch_size: int = 16,
                   cancel: Cancel | None = None) -> np.ndarray:
    """Per image, per channel, the spatial maximum of ``layer``: float32 (N, C)."""
    info = find_layer(model, layer)
    out = []
    for b in range(0, len(paths), batch_size):
        if is_cancelled(cancel):
            raise InterruptedError("cancelled")
        x = torch.stack([preprocess(load_image(p), model.card.data_config).tensor for p in paths[b:b + batch_size]])
        act = layer_outputs(model, x.to(model_device(model)), [info])[info.name]
        out.append(act.flatten(2).amax(2).float().cpu().numpy())  # (N, C) for the statistics (numpy, host)
    return np.concatenate(out) if out else np.zeros((0, info.channels), np.float32)


def separation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Cohen's d, AUC) per column of ``a`` (n1, C) against ``b`` (n2, C); needs n1 + n2 >= 3."""
    n1, n2 = len(a), len(b)
    ma, mb = a.mean(0), b.mean(0)
    ss = ((a - ma) ** 2).sum(0) + ((b - mb) ** 2).sum(0)
    pooled = np.sqrt(ss / max(1, n1 + n2 - 2))
    scale = np.maximum(pooled, 1e-6 * (np.abs(ma) + np.abs(mb)) + 1e-12)
    d = (ma - mb) / scale
    wins = np.zeros(a.shape[1], np.float64)
    for row in a:  # one mistaken image at a time: memory (n2, C), not (n1, n2, C)
        wins += (row > b).sum(0) + 0.5 * (row == b).sum(0)
    auc = wins / (n1 * n2)
    return d.astype(np.float64), auc.astype(np.float64)


def separating_channels(model, evaluation: Evaluation, true: int, predicted: int, layer: str, *, n: int = 8,
                        progress: Progress | None = None,
                        cancel: Cancel | None = None) -> ChannelSeparation:
    """The ``n`` channels of ``layer`` whose spatial maximum best separates the cell (true, predicted) from the
    correctly classified images of ``true``.

    Raises:
        ValueError: the cell is on the diagonal, or there are too few images to compare (with the counts).
    """
    start = time.perf_counter()
    if true == predicted:
        raise ValueError("choose an off-diagonal cell: a mistake, true class ≠ predicted class")
    mistaken = evaluation.cell(true, predicted)
    correct = evaluation.cell(true, true)
    if not mistaken or not correct or len(mistaken) + len(correct) < 3:
        raise ValueError(f"needs mistakes and correct images of the true class, at least 3 in all: this cell has "
                         f"{len(mistaken)} mistaken and {len(correct)} correct")
    rows = mistaken + correct
    if progress:
        progress(0.0, f"activations of {len(rows)} images at {layer}")
    values = channel_maxima(model, [evaluation.paths[r] for r in rows], layer, cancel=cancel)
    d, auc = separation(values[:len(mistaken)], values[len(mistaken):])
    order = np.argsort(-np.abs(d), kind="stable")[:n]
    ma, mb = values[:len(mistaken)].mean(0), values[len(mistaken):].mean(0)
    channels = tuple(SeparatingChannel(int(c), float(d[c]), float(auc[c]), float(ma[c]), float(mb[c])) for c in order)
    weak = None
    if min(len(mistaken), len(correct)) < 5:
        weak = (f"only {len(mistaken)} mistaken and {len(correct)} correct images: with so few, a large effect can "
                f"arise by chance among {values.shape[1]} channels, so treat these channels as leads, not evidence")
    if progress:
        progress(1.0, "done")
    return ChannelSeparation(layer, int(true), int(predicted),
                             "Cohen's d of the per-image spatial maximum (difference of means over pooled std)",
                             channels, tuple(evaluation.images[r] for r in mistaken),
                             tuple(evaluation.images[r] for r in correct), weak, time.perf_counter() - start)
