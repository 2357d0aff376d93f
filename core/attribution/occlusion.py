"""Occlusion (Zeiler & Fergus 2014): slide a patch over the image and record how the target logit drops.

Same windows and averaging as Captum's ``Occlusion`` (a pixel's value is the mean logit drop over the
windows covering it; windows start at multiples of ``stride`` and the last one is cut at the border), but the
occluded images go through in batches with a progress report after each.
"""
from __future__ import annotations

import enum
import math
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import Progress, report
from .spec import MethodSpec, Option
from .base import Attribution, MeasuredBatches, check_input, resolve_target
from .gradients import make_baseline


class Fill(str, enum.Enum):
    BLACK = "black"
    GRAY = "gray"
    BLUR = "blur"
    MEAN = "mean"


def _fill(x: torch.Tensor, fill: Fill) -> torch.Tensor:
    if fill is Fill.BLACK:
        return torch.zeros_like(x)
    if fill is Fill.GRAY:
        return torch.full_like(x, 0.5)
    if fill is Fill.MEAN:
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()
    return make_baseline(x, "blur")


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: 0, stride, ... up to ceil((size - window) / stride) * stride."""
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


def _coarse_to_fine(rows: list[int], cols: list[int], every: int = 4) -> list[tuple[int, int]]:
    """All (row, col) window offsets: first those on every ``every``-th row and column (a coarse grid over the
    whole image), then the rest level by level; a fixed shuffle inside each level spreads any prefix."""
    shuffle = torch.randperm(len(rows) * len(cols), generator=torch.Generator().manual_seed(0)).tolist()
    keyed = [((max(i % every, j % every), shuffle[i * len(cols) + j]), (r, c))
             for i, r in enumerate(rows) for j, c in enumerate(cols)]
    return [box for _, box in sorted(keyed)]


def _spread(drops: torch.Tensor, seen: torch.Tensor, window: int, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """The map from the per-window drops on the (rows, cols) grid of window offsets: each pixel's mean over the
    windows that cover it and were ``seen`` (bool grid; 0 where none was); a window past the border is cut."""
    ones = torch.ones(1, 1, window, window, dtype=drops.dtype, device=drops.device)
    acc, hits = F.conv_transpose2d(torch.stack([drops * seen, seen.to(drops.dtype)]).unsqueeze(1), ones,
                                   stride=stride)[:, 0, :size[0], :size[1]]
    return acc / hits.clamp(min=1)


def occlusion(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
              window: int | None = None, stride: int | None = None, fill: Fill | str = Fill.BLACK,
              batch_size: int | None = None, progress: Progress | None = None,
              preview: Callable[[torch.Tensor, float], None] | None = None) -> Attribution:
    """Occlusion map.

    Args:
        x: (N, 3, H, W) in [0, 1].
        window: square patch side in pixels (default: an eighth of the shorter side, at least 4).
        stride: step in pixels (default: half the window); at most ``window``.
        fill: what the patch shows (black, gray, blur of the image, or the image's mean colour).
        batch_size: occluded images per forward pass; None measures it (:class:`~.base.MeasuredBatches`: on the
            run's own first chunks, then remembered per model and input size).
        preview: called after each batch with the map so far (N, H, W; 0 where no window has been yet) and the
            fraction done. Windows are visited in an interleaved order (every 4th row and column first), and the
            first batch is small, so the first preview comes early and already spans the image.

    Returns:
        map (N, H, W): mean drop of the target logit when a patch over the pixel is hidden (signed: negative
        where hiding the pixel raises the score); raw None.
    """
    started = time.perf_counter()
    x = check_input(x)
    t = resolve_target(model, x, target)
    fill = Fill(fill)
    n, _, h, w = x.shape
    window = int(window or max(4, min(h, w) // 8))
    stride = int(stride or max(1, window // 2))
    if not 1 <= window <= min(h, w):
        raise ValueError(f"window must be between 1 and {min(h, w)} pixels")
    if not 1 <= stride <= window:
        raise ValueError("stride must be between 1 and the window size")
    rows, cols = window_starts(h, window, stride), window_starts(w, window, stride)
    boxes = _coarse_to_fine(rows, cols)
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError("batch_size must be at least 1")
    sizes = MeasuredBatches(model, x.shape[1:], "forward", batch_size, first=4)
    total = n * len(boxes)
    out = torch.zeros(n, h, w, device=x.device)
    # each window as a row and column mask (the occluded batch is one torch.where) and as its place on the grid
    # of offsets (the map is one transposed convolution of the drops on that grid)
    starts = torch.tensor(boxes, device=x.device)
    pos_h, pos_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (pos_h >= starts[:, :1]) & (pos_h < starts[:, :1] + window)  # (windows, H)
    in_cols = (pos_w >= starts[:, 1:]) & (pos_w < starts[:, 1:] + window)  # (windows, W)
    cell = starts[:, 0] // stride * len(cols) + starts[:, 1] // stride
    done = 0
    with torch.inference_mode():
        buffer = torch.empty(0, *x.shape[1:], dtype=x.dtype, device=x.device)
        for i in range(n):
            xi, base = x[i:i + 1], _fill(x[i:i + 1], fill)
            ref = model(xi)[0, t[i]].float()
            drops = torch.zeros(len(rows) * len(cols), device=x.device)
            seen = torch.zeros(len(rows) * len(cols), dtype=torch.bool, device=x.device)
            start = 0
            while start < len(boxes):
                chunk = slice(start, min(len(boxes), start + sizes.next()))
                k, start = chunk.stop - chunk.start, chunk.stop
                if len(buffer) < k:
                    buffer = torch.empty(k, *x.shape[1:], dtype=x.dtype, device=x.device)
                hidden = (in_rows[chunk, :, None] & in_cols[chunk, None, :]).unsqueeze(1)  # (k, 1, H, W)
                batch = torch.where(hidden, base, xi, out=buffer[:k])
                began = time.perf_counter()
                scores = model(batch)[:, t[i]].float()
                if sizes.measuring:
                    float(scores[0])  # the pass has finished on any device before the clock is read
                    sizes.timed(k, time.perf_counter() - began)
                drops[cell[chunk]] = ref - scores
                seen[cell[chunk]] = True
                done += k
                report(progress, done / total, f"occlusion: {done}/{total} patches")
                if preview is not None:
                    current = out.clone()
                    current[i] = _spread(drops.view(len(rows), -1), seen.view(len(rows), -1), window, stride, (h, w))
                    preview(current[: i + 1], done / total)
            out[i] = _spread(drops.view(len(rows), -1), seen.view(len(rows), -1), window, stride, (h, w))
    return Attribution(map=out, raw=None, method="occlusion", target=t.tolist(),
                       seconds=time.perf_counter() - started, signed=True,
                       notes=(f"{len(boxes)} patches of {window}×{window} px, stride {stride}, {fill.value} fill; "
                              "value = drop of the target logit",),
                       options={"window": window, "stride": stride, "fill": fill.value})


OCCLUSION = MethodSpec(
    "occlusion", occlusion, "Occlusion", "score drop when a patch is hidden",
    options=(
        Option("window", int, "patch side in pixels (default 1/8 of the input)", label="Window (px)",
               low=4, high=lambda c: c["side"] // 2, default=lambda c: max(4, c["side"] // 8)),
        Option("stride", int, "step in pixels (default half the window)", label="Stride (px)",
               low=2, high=lambda c: c["window"], default=lambda c: max(2, c["window"] // 2)),
        Option("fill", Fill, "patch content"),
    ), measured_passes="forward")
