"""Pictures and tables of the filter views, shared by the feature-visualisation page and the CLI (NumPy only)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..render import image_uint8, labelled_tile, tile_grid
from .filters import Kernels, WeightStats

TILE = 72  # page tiles: a 3x3 kernel becomes 24-pixel blocks, a 7x7 one 10-pixel blocks


@dataclass(frozen=True)
class KernelGrid:
    """Kernels as equal, labelled tiles for the page.

    Attributes:
        picture: uint8 (H, W, 3): each kernel enlarged with nearest-neighbour to ``TILE`` pixels (grey = 0), its
            output channel and L2 norm written under it ("~0" under 1e-3: a dead kernel).
        channels: the output channels shown, in the order shown (largest norm first when ``limit`` cut them).
        total: how many kernels the layer has.
    """

    picture: np.ndarray
    channels: tuple[int, ...]
    total: int


def kernel_grid(kernels: Kernels, *, limit: int | None = None, columns: int = 8, side: int = TILE) -> KernelGrid:
    """The kernels of ``kernels`` as labelled tiles; with ``limit``, only the ``limit`` largest by L2 norm."""
    total = kernels.tiles.shape[0]
    norms = kernels.norms.float()
    order = list(range(total)) if limit is None or total <= limit else \
        [int(i) for i in norms.argsort(descending=True)[:limit]]
    tiles = []
    for i in order:
        tile = kernels.tiles[i]
        tile = tile.expand(3, *tile.shape[-2:]) if tile.shape[0] == 1 else tile
        norm = float(norms[i])
        tiles.append(labelled_tile(image_uint8(tile), side, f"#{i}  {norm:.2g}" if norm >= 1e-3 else f"#{i}  ~0",
                                   nearest=True))
    return KernelGrid(tile_grid(tiles, columns), tuple(order), total)


def stats_rows(stats: Sequence[WeightStats]) -> list[dict]:
    """One row per layer for the page's weight-statistics table (``near zero`` is a fraction in [0, 1])."""
    return [{"layer": s.name, "type": s.type, "shape": "x".join(map(str, s.shape)), "params": s.params,
             "mean": s.mean, "std": s.std, "|w| max": s.abs_max, "near zero": s.near_zero, "dead outputs": s.dead}
            for s in stats]
