"""Reading Net2Vec fits honestly: readable columns, and no "win" where both IoUs are near zero."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..render import Scale, labelled_tile, overlay, tile_grid, with_colorbar
from .net2vec import ConceptFit

# the colours of a predicted mask (bool): 0 outside, 1 inside the concept
MASK_SCALE = Scale(False, 0.0, 1.0, 100, "in concept")

# Below this set IoU a segmentation is no better than noise for a viewer: neither side "wins".
NEAR_ZERO_IOU = 0.05
# The learnt combination must beat the best single channel by at least this much IoU to be called better.
MARGIN = 0.01


def verdict(fit: ConceptFit) -> str:
    """"combination better", "single channel as good", or "weak: no unit segments it" (both IoUs near zero)."""
    if max(fit.iou, fit.iou_best_channel) < NEAR_ZERO_IOU:
        return "weak: nothing segments it"
    if fit.iou >= fit.iou_best_channel + MARGIN:
        return "combination better"
    if fit.iou_best_channel >= fit.iou + MARGIN:
        return "single channel better"
    return "about equal"


def concept_rows(fits: Sequence[ConceptFit]) -> list[dict]:
    """One row per concept with the column names a table shows."""
    return [{
        "concept": f.name,
        "IoU, learnt combination": f.iou,
        "IoU, best single channel": f.iou_best_channel,
        "best channel": f.best_channel,
        "share of concept pixels": f.positives,
        "verdict": verdict(f),
    } for f in fits]


def weak_concepts(fits: Sequence[ConceptFit]) -> list[str]:
    return [f.name for f in fits if max(f.iou, f.iou_best_channel) < NEAR_ZERO_IOU]


def masks_figure(images: Sequence, masks, names: Sequence[str], *, side: int = 160,
                 columns: int = 4) -> np.ndarray:
    """uint8: each predicted mask (bool (size, size)) over its image ((3, H, W) in [0, 1]) as an equal labelled
    tile (the file name under it), ``columns`` to a row, with the one colour bar of :data:`MASK_SCALE` (bright =
    predicted concept, dark = not) to the right."""
    tiles = [labelled_tile(overlay(image, mask.float(), alpha=0.5), side, name)
             for image, mask, name in zip(images, masks, names)]
    return with_colorbar(tile_grid(tiles, columns), MASK_SCALE)
