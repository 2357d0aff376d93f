"""One pooled attribution map per image: what the audit keeps of each map (see :mod:`core.audit.audit`).

Both engines compute maps with :func:`image_maps`, so the local and the Ray engine give the same maps.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..attribution.registry import attribute

GRID = 32


def pool_map(maps: torch.Tensor, grid: int = GRID) -> np.ndarray:
    """(N, H, W) attribution maps → (N, grid, grid) float32 distributions (positive part, pooled, sum 1)."""
    pos = maps.detach().float().clamp(min=0).unsqueeze(1)
    pooled = F.adaptive_avg_pool2d(pos, grid).squeeze(1).numpy().astype(np.float64)
    total = pooled.sum(axis=(1, 2), keepdims=True)
    uniform = np.full_like(pooled, 1.0 / (grid * grid))
    return np.where(total > 0, pooled / np.where(total > 0, total, 1.0), uniform).astype(np.float32)


def image_maps(model, x: torch.Tensor, targets: Sequence[int], method: str) -> tuple[np.ndarray, np.ndarray]:
    """Pooled maps (N, GRID, GRID) of ``x`` (N, 3, H, W) in [0, 1] for ``targets``, and the predicted classes."""
    seen: list[torch.Tensor] = []
    # Grad-CAM's one forward is on the clean images: its logits give the predictions without a second pass
    hook = model.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()) if not seen else None) \
        if method == "gradcam" else None
    try:
        result = attribute(model, x, list(targets), method=method)
    finally:
        if hook is not None:
            hook.remove()
    if seen and seen[0].shape[0] == len(x):
        predicted = seen[0].argmax(1).cpu().numpy()
    else:
        with torch.inference_mode():
            predicted = model(x.to(next(model.parameters()).device)).argmax(1).cpu().numpy()
    return pool_map(result.map), predicted
