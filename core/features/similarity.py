"""Interactive similarity overlays (Fong, Mordvintsev, Vedaldi & Olah): the cosine similarity between the feature
vector at one position of a layer and the vectors at every position of the same image, or of another image.

Features are computed once per image and layer (:func:`layer_features`, which the dashboard caches); each query
(:func:`similarity_map`) is then a single (C,) x (C, h*w) product.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..catalogue import LayerInfo, find_layer, layer_outputs
from ..inputs import check_input
from ..model.device import model_device
from ..model.wrapper import LensModel


@dataclass(frozen=True)
class LayerFeatures:
    """One image's features at one layer.

    Attributes:
        features: float32 (C, h, w) on the model's device, each position's vector scaled to unit length (zero
            vectors stay zero).
        input_size: (H, W) of the model input the features were computed from.
        seconds: compute time (the forward pass to the layer).
    """

    layer: LayerInfo
    features: torch.Tensor
    input_size: tuple[int, int]
    seconds: float

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.features.shape[1]), int(self.features.shape[2])

    def cell_at(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the unit whose receptive-field centre is nearest to the model-input point (x, y).

        Raises:
            ValueError: the point lies outside the model input.
        """
        h, w = self.input_size
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"point ({x:g}, {y:g}) is outside the {w}x{h} model input")
        rows, cols = self.grid
        return _nearest(self.layer.rf[0], y, rows), _nearest(self.layer.rf[1], x, cols)

    def centre(self, row: int, col: int) -> tuple[float, float]:
        """Model-input (x, y) of the receptive-field centre of unit (row, col)."""
        gy, gx = self.layer.rf
        return gx.start + col * gx.jump, gy.start + row * gy.jump


def _nearest(geo, v: float, n: int) -> int:
    return int(min(n - 1, max(0, round((v - geo.start) / geo.jump)))) if geo.jump > 0 else 0


@dataclass(frozen=True)
class SimilarityMap:
    """Cosine similarity of the query vector with every position.

    Attributes:
        map: float32 (h, w) in [-1, 1] on the CPU; exactly 1 at the query cell when computed on the query image.
        at_cell: (row, col) of the query in the query image.
        max_cell: (row, col) of the largest value of ``map``.
        seconds: compute time.
    """

    layer: str
    map: torch.Tensor
    at_cell: tuple[int, int]
    max_cell: tuple[int, int]
    seconds: float


def layer_features(model: LensModel, x: torch.Tensor, layer: str | LayerInfo) -> LayerFeatures:
    """Unit-normalised features of one image at ``layer``.

    Args:
        x: float (1, 3, H, W) or (3, H, W) in [0, 1].
        layer: a spatial layer name from :func:`core.catalogue.catalogue` (or its entry).
    """
    started = time.perf_counter()
    info = layer if isinstance(layer, LayerInfo) else find_layer(model, layer)
    batch = check_input(x, single=True).to(model_device(model))
    feats = layer_outputs(model, batch, [info])[info.name][0].float()
    norm = feats.norm(dim=0, keepdim=True)
    feats = torch.where(norm > 0, feats / norm.clamp_min(1e-12), torch.zeros_like(feats))
    return LayerFeatures(info, feats.contiguous(), (int(batch.shape[-2]), int(batch.shape[-1])),
                         time.perf_counter() - started)


def _to_cpu(sim: torch.Tensor) -> torch.Tensor:
    return sim.cpu()  # the map comes back to the CPU for display


def similarity_map(query: LayerFeatures, cell: tuple[int, int], other: LayerFeatures | None = None) -> SimilarityMap:
    """Cosine similarity between ``query``'s vector at ``cell`` and every position of ``other`` (default: the
    query image itself).

    Raises:
        ValueError: the cell is outside the grid, or ``other`` comes from a different layer.
    """
    started = time.perf_counter()
    row, col = cell
    rows, cols = query.grid
    if not (0 <= row < rows and 0 <= col < cols):
        raise ValueError(f"cell {cell} is outside the {rows}x{cols} grid of {query.layer.name}")
    target = other if other is not None else query
    if target.layer.name != query.layer.name:
        raise ValueError(f"features come from different layers ({query.layer.name}, {target.layer.name})")
    v = query.features[:, row, col]
    sim = torch.einsum("c,chw->hw", v, target.features).clamp(-1, 1)
    if other is None and float(v.norm()) > 0:
        sim[row, col] = 1.0  # exact by definition; the float dot product can land at 1 - 1e-7
    flat = int(sim.argmax())
    return SimilarityMap(query.layer.name, _to_cpu(sim), (row, col), divmod(flat, sim.shape[1]), time.perf_counter() - started)
