"""What every attribution method shares: the result type, target resolution, and input gradients.

One input space: RGB float (N, 3, H, W) in [0, 1]. A method reads ``x`` and never writes to it; gradients are
taken on a detached copy. The score differentiated is the target class logit (pre-softmax), as in the
Saliency, SmoothGrad, Integrated Gradients and Grad-CAM papers.
"""
from __future__ import annotations

import contextlib
import enum
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from ..inputs import check_input, resolve_target  # noqa: F401  (every method's input check and target resolver)
from ..memo import PerModel


class NotApplicable(ValueError):
    """The method does not apply to this model or layer; the message says why in one line."""


class Sign(str, enum.Enum):
    """Which part of a signed attribution to show."""

    POSITIVE = "positive"
    NEGATIVE = "negative"
    ABSOLUTE = "absolute"
    ALL = "all"


@dataclass(frozen=True)
class Attribution:
    """An attribution result.

    Attributes:
        map: float32 (N, H, W) aligned with the model input; signed unless ``signed`` is False. For per-channel
            methods it is the channel sum of ``raw``.
        raw: float32 (N, 3, H, W) per-channel attribution, or None (Grad-CAM, occlusion).
        method: the method name (CLI spelling).
        target: one class index per image.
        seconds: compute time (no model load).
        signed: whether negative values carry meaning.
        notes: one-line facts for the user (e.g. where the guided rule was applied).
        options: the options actually used, after defaults.
        metrics: per-image numbers by name, e.g. LRP's ``relevance_sum`` and ``logit``.
        grid: float32 (N, h, w), the map on the layer's own grid before upsampling (CAM), or None.
    """

    map: torch.Tensor
    raw: torch.Tensor | None
    method: str
    target: list[int]
    seconds: float
    signed: bool = True
    notes: tuple[str, ...] = ()
    options: Mapping[str, object] = field(default_factory=dict)
    metrics: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    grid: torch.Tensor | None = None

    def view(self, sign: Sign | str = Sign.ALL) -> torch.Tensor:
        """(N, H, W) map restricted to ``sign``; per-channel methods sum the chosen part over channels."""
        sign = Sign(sign)
        src = self.raw if self.raw is not None else self.map.unsqueeze(1)
        if sign is Sign.POSITIVE:
            part = src.clamp(min=0)
        elif sign is Sign.NEGATIVE:
            part = (-src).clamp(min=0)
        elif sign is Sign.ABSOLUTE:
            part = src.abs()
        else:
            part = src
        return part.sum(1)


def from_raw(raw: torch.Tensor, method: str, target: Sequence[int], started: float, *,
             notes: Sequence[str] = (), options: Mapping | None = None, signed: bool = True) -> Attribution:
    """An :class:`Attribution` from a per-channel (N, 3, H, W) result; ``started`` is a perf_counter value."""
    raw = raw.detach().float()
    return Attribution(map=raw.sum(1), raw=raw, method=method, target=[int(t) for t in target],
                       seconds=time.perf_counter() - started, signed=signed, notes=tuple(notes),
                       options=dict(options or {}))


def input_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                   forward_mode: contextlib.AbstractContextManager | None = None, scale: float = 1.0) -> torch.Tensor:
    """d logit[target] / d x for each image: float32 (N, 3, H, W). ``x`` is not modified.

    ``forward_mode``: a context the forward pass runs in (e.g. the guided rule's torch-function mode).
    ``scale``: the backward pass runs on ``scale`` × the logit and the gradient is divided back (a power of two, so
    exactly): fp16 autocast's small intermediate gradients would otherwise underflow to zero.
    """
    xin = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        with forward_mode if forward_mode is not None else contextlib.nullcontext():
            logits = model(xin)
        score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
        (grad,) = torch.autograd.grad(score * scale if scale != 1.0 else score, xin)
    grad = grad.float()
    return grad / scale if scale != 1.0 else grad


def batches(n: int, size: int, first: int | None = None) -> list[slice]:
    """Slices of ``range(n)`` of ``size`` each (the last may be shorter); with ``first`` (< ``size``), the first
    slice has only ``first``: a preview after a few passes instead of a full batch."""
    size = max(1, int(size))
    start = min(n, max(1, int(first))) if first is not None and first < size else 0
    head = [slice(0, start)] if start else []
    return head + [slice(i, min(n, i + size)) for i in range(start, n, size)]


PREVIEW_BATCH = 2  # passes before the first preview of a batched technique (a full batch of 8 takes seconds)


TRIAL_BATCHES = (4, 8, 16)  # the batches a technique tries on its own passes when no batch is given
_measured: "PerModel[dict[tuple, int]]" = PerModel()  # (shape, kind) -> batch, per model


def chosen_batch(model: nn.Module, shape: Sequence[int], kind: str = "forward") -> int | None:
    """The batch measured fastest per image for ``model`` at input ``shape`` (3, H, W) for passes of ``kind``
    (``forward``: no autograd; ``gradient``: forward + input-gradient backward); None before it was measured."""
    return (_measured.get(model) or {}).get((tuple(shape), kind))


class MeasuredBatches:
    """Chunk sizes for a run of many passes: ``fixed`` when given; else a first chunk of ``first`` (a preview; it
    also pays the one-off costs, so it is never timed), then one chunk at each of TRIAL_BATCHES in increasing
    order, timed per image on the run's own passes (nothing is computed twice), stopping at the first that is
    slower per image than the fastest so far (a larger batch is not tried once one was slower); then the fastest
    for the rest, remembered for this model, input size and ``kind`` (:func:`chosen_batch`). The best batch
    differs between CPUs and models, so it is measured rather than fixed.

    Use: ``size = sizes.next()`` before each chunk, ``sizes.timed(len(chunk), seconds)`` after it (seconds of the
    pass only, read after the result is on hand).
    """

    def __init__(self, model: nn.Module, shape: Sequence[int], kind: str, fixed: int | None, first: int) -> None:
        self.model, self.key, self.first = model, (tuple(shape), kind), max(1, int(first))
        self.best = int(fixed) if fixed else chosen_batch(model, shape, kind)
        self.per_image: dict[int, float] = {}
        self.chunks = 0

    @property
    def measuring(self) -> bool:
        """Chunks are still being timed (no batch chosen yet)."""
        return self.best is None

    def next(self) -> int:
        self.chunks += 1
        if self.chunks == 1:
            return min(self.first, self.best) if self.best else self.first
        if self.best:
            return self.best
        return TRIAL_BATCHES[len(self.per_image)]

    def timed(self, size: int, seconds: float) -> None:
        trial = TRIAL_BATCHES[len(self.per_image)] if not self.best else None
        if self.chunks < 2 or size != trial:  # the first chunk, a chosen batch, or a short last chunk
            return
        self.per_image[size] = seconds / size
        slower = len(self.per_image) > 1 and self.per_image[size] > min(self.per_image.values())
        if slower or len(self.per_image) == len(TRIAL_BATCHES):
            self.best = min(self.per_image, key=self.per_image.get)
            _measured.update(self.model, lambda known: {**(known or {}), self.key: self.best})
