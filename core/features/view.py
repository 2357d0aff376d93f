"""Pictures and tables of the filter views, shared by the feature-visualisation page and the CLI (NumPy only)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..render import image_uint8
from .filters import Kernels, WeightStats, mosaic

DEPTHWISE_ZOOM = 6  # a 7x7 ConvNeXt kernel becomes 42 pixels


def first_layer_zoom(kernels: Kernels) -> int:
    """Enlargement that makes each first-layer tile about 48 pixels wide (at least 4x)."""
    return max(4, 48 // kernels.tiles.shape[-1])


def first_layer_picture(kernels: Kernels) -> np.ndarray:
    """uint8 (H, W, 3): the first layer's RGB kernels tiled, grey = 0, each tile scaled on its own."""
    return image_uint8(mosaic(kernels.tiles, zoom=first_layer_zoom(kernels)))


def depthwise_picture(kernels: Kernels) -> np.ndarray:
    """uint8 (H, W, 3): a depthwise layer's kernels tiled in grey (white positive, black negative)."""
    return image_uint8(mosaic(kernels.tiles, zoom=DEPTHWISE_ZOOM))


def stats_rows(stats: Sequence[WeightStats]) -> list[dict]:
    """One row per layer for the page's weight-statistics table (``near zero`` is a fraction in [0, 1])."""
    return [{"layer": s.name, "type": s.type, "shape": "x".join(map(str, s.shape)), "params": s.params,
             "mean": s.mean, "std": s.std, "|w| max": s.abs_max, "near zero": s.near_zero, "dead outputs": s.dead}
            for s in stats]
