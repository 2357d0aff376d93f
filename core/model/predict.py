"""Top-k predictions."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .loading import LensModel


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    prob: float

    def as_dict(self) -> dict:
        return {"index": self.index, "label": self.label, "prob": self.prob}


def probabilities(model: LensModel, x: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
    """Softmax probabilities.

    Args:
        x: float (N, 3, H, W) in [0, 1].
        batch_size: images per forward pass (None: :func:`core.batching.forward_batch`, or all of a small ``x``).

    Returns:
        float32 (N, num_classes), rows summing to 1.
    """
    from ..batching import forward_batch, known_forward_batch

    if batch_size is None:  # a few images (a page's one image) are not worth a measurement
        batch_size = known_forward_batch(model, x.shape[1:]) or (len(x) if len(x) <= 4 else
                                                                 forward_batch(model, x.shape[1:]))
    outs = []
    with torch.inference_mode():
        for chunk in x.split(max(1, batch_size)):
            outs.append(model(chunk).float().softmax(-1))
    return torch.cat(outs)


def top_classes(model: LensModel, probs: torch.Tensor, k: int = 5) -> list[list[ClassScore]]:
    """The ``k`` most probable classes of each row of ``probs`` (N, num_classes)."""
    k = max(1, min(k, probs.shape[-1]))
    values, indices = probs.topk(k, dim=-1)
    return [[ClassScore(int(i), model.label(int(i)), float(v)) for v, i in zip(vs, ids)]
            for vs, ids in zip(values, indices)]


def predict(model: LensModel, x: torch.Tensor, *, k: int = 5) -> list[list[ClassScore]]:
    """Top-``k`` classes for each image of ``x`` (N, 3, H, W) in [0, 1]; safe to call from many threads."""
    return top_classes(model, probabilities(model, x), k)
