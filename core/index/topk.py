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

    def update(self, values: torch.Tensor, pos: torch.Tensor, image_ids: torch.Tensor) -> None:
        """values, pos (N, C); image_ids (N,) all larger than any id seen so far (ties keep the earlier image)."""
        c, n = self.values.shape[0], values.shape[0]
        v = torch.cat([self.values, values.T], dim=1)
        order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :self.k]
        self.values = v.gather(1, order)
        self.images = torch.cat([self.images, image_ids.view(1, n).expand(c, n)], dim=1).gather(1, order)
        self.pos = torch.cat([self.pos, pos.T], dim=1).gather(1, order)
        finite = torch.where(torch.isfinite(values), values, torch.zeros_like(values)).double()
        self.sum += finite.sum(0)
        self.sumsq += (finite * finite).sum(0)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"values": self.values.numpy().astype(np.float32), "images": self.images.numpy().astype(np.int64),
                "pos": self.pos.numpy().astype(np.int64), "sum": self.sum.numpy(), "sumsq": self.sumsq.numpy()}
