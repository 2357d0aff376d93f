"""Pictures of an adversarial perturbation at its real range (NumPy only; shared by the page and the report)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..render import Scale, heat_figure, unit_uint8
from .attacks import PIXEL


@dataclass(frozen=True)
class PerturbationPicture:
    """δ shown two ways.

    Attributes:
        rgb: uint8 (H, W, 3): mid-grey + δ × ``amplification`` per channel (grey = unchanged pixel).
        amplification: the factor applied to δ in ``rgb`` (chosen so the largest |δ| reaches black or white).
        heat: uint8 (H, W + bar, 3): the channel mean of δ in 1/255 steps, diverging, with its colour bar.
        scale: the colour bar's :class:`~core.render.Scale` (ends at ± the largest |mean δ|, not ±ε).
        max_abs: the largest |δ| over pixels and channels, in [0, 1] pixel units.
    """

    rgb: np.ndarray
    amplification: float
    heat: np.ndarray
    scale: Scale
    max_abs: float

    def caption(self) -> str:
        return (f"perturbation δ amplified ×{self.amplification:.0f} around mid-grey (grey = unchanged; largest "
                f"change {self.max_abs / PIXEL:.2f}/255 per channel)")


def perturbation_picture(delta) -> PerturbationPicture:
    """Both pictures of ``delta`` (3, H, W), the adversarial minus the clean image in [0, 1] pixel units."""
    d = np.asarray(delta, dtype=np.float64)
    max_abs = float(np.abs(d).max()) if d.size else 0.0
    amplification = 0.5 / max_abs if max_abs > 0 else 1.0
    rgb = unit_uint8(np.clip(0.5 + d.transpose(1, 2, 0) * amplification, 0, 1))
    heat, scale = heat_figure(d.mean(0) / PIXEL, signed=True, clip_percentile=100, units="/255")
    return PerturbationPicture(rgb, amplification, heat, scale, max_abs)
