"""The one Gaussian blur (perturbation backgrounds, the integrated-gradients blur baseline)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float, *, border: str = "reflect", radius: int | None = None
                  ) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), truncated at 3 sigma; ``sigma`` in pixels (0 = identity).

    Args:
        x: float (N, C, H, W), any range (the blur is a convex combination: [0, 1] stays in [0, 1]).
        sigma: standard deviation in pixels.
        border: ``"reflect"`` (the kernel is cut to the image side) or ``"replicate"``.
        radius: the kernel has ``2 * radius + 1`` taps (default ceil(3 sigma)); RISE's insertion start uses 5
            (kernel 11) at sigma 5.
    """
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma))) if radius is None else max(1, int(radius))
    if border == "reflect":
        radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=border), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode=border), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
