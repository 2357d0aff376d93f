"""Occlusion (Zeiler & Fergus 2014): slide a patch over the image and record how the target logit drops.

Same windows and averaging as Captum's ``Occlusion`` (a pixel's value is the mean logit drop over the
windows covering it; windows start at multiples of ``stride`` and the last one is cut at the border), but the
occluded images go through in batches with a progress report after each.
"""
from __future__ import annotations

import enum
import math
import threading
import time
import weakref
from typing import Callable, Sequence

import torch
from torch import nn

from .spec import MethodSpec, Option
from .base import Attribution, Progress, check_input, report, resolve_target
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


TRIAL_BATCHES = (4, 8, 16)
_chosen: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]]" = weakref.WeakKeyDictionary()
_chosen_lock = threading.Lock()


def chosen_batch(model: nn.Module, shape: Sequence[int]) -> int | None:
    """The batch occlusion measured fastest per image for ``model`` at input ``shape`` (3, H, W); None before."""
    with _chosen_lock:
        return _chosen.get(model, {}).get(tuple(shape))


class _Batches:
    """Chunk sizes for the occluded images: ``fixed`` when given; else a first chunk of ``first`` (the preview),
    then one chunk at each of TRIAL_BATCHES, timed per image (real work: nothing is computed twice), then the
    fastest for the rest, remembered for this model and input size (the best batch differs 2 x between CPUs and
    models: on a 2-core AMD EPYC 16 is 1.2-2 x slower per image than 4 or 8)."""

    def __init__(self, model: nn.Module, shape: Sequence[int], fixed: int | None, first: int) -> None:
        self.model, self.shape, self.first = model, tuple(shape), first
        self.best = int(fixed) if fixed else chosen_batch(model, shape)
        self.per_image: dict[int, float] = {}

    def next(self, chunk: int) -> int:
        if chunk == 0:
            return min(self.first, self.best) if self.best else self.first
        if self.best:
            return self.best
        return next(b for b in TRIAL_BATCHES if b not in self.per_image)

    def timed(self, size: int, seconds: float) -> None:
        if self.best or size not in TRIAL_BATCHES or size in self.per_image:
            return
        self.per_image[size] = seconds / size
        if len(self.per_image) == len(TRIAL_BATCHES):
            self.best = min(self.per_image, key=self.per_image.get)
            with _chosen_lock:
                _chosen.setdefault(self.model, {})[self.shape] = self.best


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
        batch_size: occluded images per forward pass; None measures it (TRIAL_BATCHES, on the run's own first
            chunks, then remembered per model and input size: :func:`chosen_batch`).
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
    sizes = _Batches(model, x.shape[1:], batch_size, first=4)
    total = n * len(boxes)
    out = torch.zeros(n, h, w, device=x.device)
    done = 0
    with torch.inference_mode():
        for i in range(n):
            xi, base = x[i:i + 1], _fill(x[i:i + 1], fill)
            ref = model(xi)[0, t[i]].float()
            acc, hits = torch.zeros(h, w, device=x.device), torch.zeros(h, w, device=x.device)
            start = k = 0
            while start < len(boxes):
                size = sizes.next(k)
                chunk = boxes[start:start + size]
                start, k = start + len(chunk), k + 1
                batch = xi.repeat(len(chunk), 1, 1, 1)
                for j, (r, c) in enumerate(chunk):
                    batch[j, :, r:r + window, c:c + window] = base[0, :, r:r + window, c:c + window]
                began = time.perf_counter()
                scores = model(batch)[:, t[i]].float()
                drops = ref - scores
                if len(chunk) == size and k > 1:  # a full chunk after the first (which also warms up)
                    float(scores[0])  # the pass has finished on any device before the clock is read
                    sizes.timed(size, time.perf_counter() - began)
                for j, (r, c) in enumerate(chunk):
                    acc[r:r + window, c:c + window] += drops[j]
                    hits[r:r + window, c:c + window] += 1
                done += len(chunk)
                report(progress, done / total, f"occlusion: {done}/{total} patches")
                if preview is not None:
                    current = out.clone()
                    current[i] = acc / hits.clamp(min=1)
                    preview(current[: i + 1], done / total)
            out[i] = acc / hits.clamp(min=1)
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
    ))
