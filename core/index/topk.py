"""Streaming top-k: per channel of one layer, the ``k`` images with the highest spatial maximum (and its
position), plus running sums of the per-image maxima for the channel statistics."""
from __future__ import annotations

import math

import numpy as np
import torch

from . import store


def channel_maxima(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel spatial maximum of ``t`` (N, C, h, w): values (N, C) and flat positions ``y * w + x``
    (N, C) of the first maximum. NaN counts as -inf."""
    flat = torch.nan_to_num(t.flatten(2).float(), nan=-math.inf)
    pos = flat.argmax(dim=2)
    return flat.gather(2, pos.unsqueeze(2)).squeeze(2), pos


def batch_partial(values: torch.Tensor, pos: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """One batch's contribution to a layer's top-k: what a worker sends instead of activation maps.

    Args:
        values, pos: (N, C) per-image channel maxima and their flat positions (:func:`channel_maxima`).
        k: images kept per channel.

    Returns:
        ``values`` (C, k') float32, ``images`` (C, k') int64 batch-local image numbers, ``pos`` (C, k') int64,
        with k' = min(k, N), best first (ties keep the earlier image); ``sum``, ``sumsq`` (C,) float64 of the
        finite maxima.
    """
    v = values.T.float()
    order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :min(k, v.shape[1])]
    finite = torch.where(torch.isfinite(values), values, torch.zeros_like(values)).double()
    return {"values": v.gather(1, order).numpy(), "images": order.numpy(), "pos": pos.T.gather(1, order).numpy(),
            "sum": finite.sum(0).numpy(), "sumsq": (finite * finite).sum(0).numpy()}


class TopK:
    """Top-k images per channel of one layer, plus running statistics of the per-image maxima."""

    def __init__(self, channels: int, k: int, arrays: dict | None = None):
        self.k = k
        if arrays is None:
            self.values = torch.full((channels, k), -math.inf)
            self.images = torch.full((channels, k), -1, dtype=torch.int64)
            self.pos = torch.zeros((channels, k), dtype=torch.int64)
            self.sum = torch.zeros(channels, dtype=torch.float64)
            self.sumsq = torch.zeros(channels, dtype=torch.float64)
        else:
            self.values, self.images, self.pos, self.sum, self.sumsq = (
                torch.from_numpy(np.array(arrays[n])) for n in store.ARRAYS)

    def merge(self, part: dict, base_id: int = 0) -> None:
        """Fold in a :func:`batch_partial` whose images (numbered from 0) get ids ``base_id + i``, all larger
        than any id seen so far (ties keep the earlier image)."""
        values, images, pos = (torch.as_tensor(part[n]) for n in ("values", "images", "pos"))
        v = torch.cat([self.values, values.float()], dim=1)
        order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :self.k]
        self.values = v.gather(1, order)
        self.images = torch.cat([self.images, images.long() + base_id], dim=1).gather(1, order)
        self.pos = torch.cat([self.pos, pos.long()], dim=1).gather(1, order)
        self.sum += torch.as_tensor(part["sum"], dtype=torch.float64)
        self.sumsq += torch.as_tensor(part["sumsq"], dtype=torch.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"values": self.values.numpy().astype(np.float32), "images": self.images.numpy().astype(np.int64),
                "pos": self.pos.numpy().astype(np.int64), "sum": self.sum.numpy(), "sumsq": self.sumsq.numpy()}
