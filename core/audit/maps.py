"""One pooled attribution map per image: what the audit keeps of each map (see :mod:`core.audit.audit`).

Both engines run :func:`map_batches` (the Ray engine on each block of images), so the local and the Ray engine
give the same maps.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..attribution.registry import attribute
from ..errors.dataset import LabelledImage, decode_step, decoding_helper, read_pixels
from ..progress import Cancel, Cancelled, Progress, is_cancelled, report

GRID = 32
BATCH = 8


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


def map_batches(model, items: Sequence[LabelledImage], method: str, *, batch_size: int = BATCH,
                progress: Progress | None = None, cancel: Cancel | None = None
                ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, list[dict]]]:
    """Per batch of ``batch_size`` items: positions in ``items`` of the readable ones, their pooled maps
    (b, GRID, GRID) and predicted classes (b,), and the batch's read errors. The images are decoded
    ``DECODE_STEP`` at a time between the attribution passes, on two threads where allowed
    (:func:`core.errors.dataset.read_pixels`)."""
    step = decode_step(batch_size)
    with decoding_helper() as helper:
        for s in range(0, len(items), step):
            x, kept, errors = read_pixels(model, items, s, min(len(items), s + step), helper=helper)
            for b in range(s, min(len(items), s + step), batch_size):
                if is_cancelled(cancel):
                    raise Cancelled(f"stopped after {b} of {len(items)} images")
                rows = [j for j, i in enumerate(kept) if b <= i < b + batch_size]
                if rows:
                    maps, predicted = image_maps(model, x[rows[0]:rows[-1] + 1], [items[kept[j]].label for j in rows],
                                                 method)
                else:
                    maps, predicted = np.zeros((0, GRID, GRID), np.float32), np.zeros(0, int)
                done = min(len(items), b + batch_size)
                report(progress, done / max(1, len(items)), f"{method} maps of {done} of {len(items)} images")
                window = {it.name for it in items[b:b + batch_size]}
                yield [kept[j] for j in rows], maps, predicted, [e for e in errors if e["image"] in window]
