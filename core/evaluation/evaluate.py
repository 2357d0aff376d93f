"""All the evidence for one map: deletion/insertion, ROAD, the randomisation test and the pointing game."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ..attribution.base import NotApplicable, check_input, resolve_target
from ..model.device import model_device
from ..progress import Cancel, Progress, report
from .curves import BATCH_SIZE, STEPS, Curves, DeletionBaseline, curves
from .pointing import Pointing, pointing
from .randomisation import Randomisation, randomisation
from .road import Road, road

MAP_METHOD = "map"


class Metric(str, enum.Enum):
    DELETION = "deletion"
    INSERTION = "insertion"
    ROAD = "road"
    RANDOMISATION = "randomisation"
    POINTING = "pointing"


ALL_METRICS = tuple(Metric)
# share of the progress bar each metric takes (the randomisation test recomputes the map G times)
_WEIGHT = {"curves": 1.0, Metric.ROAD: 1.0, Metric.RANDOMISATION: 3.0, Metric.POINTING: 0.01}


@dataclass(frozen=True)
class Evaluation:
    """Faithfulness and sanity of one map of one image.

    Attributes:
        method: the attribution method (``"map"`` for a given map).
        target: the class explained and scored.
        map: float32 (H, W), the map evaluated (at the model input size).
        curves: deletion/insertion (None when neither was asked).
        road: ROAD (None when not asked).
        randomisation: the cascade (None when not asked or not applicable).
        pointing: pointing game and energy (None without a mask).
        skipped: metric -> one-line reason it was not computed.
        seconds: compute time of the whole evaluation (the map included).
    """

    method: str
    target: int
    map: torch.Tensor
    curves: Curves | None
    road: Road | None
    randomisation: Randomisation | None
    pointing: Pointing | None
    skipped: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def parse_metrics(text: str | Iterable[str]) -> tuple[Metric, ...]:
    """Metrics from "deletion,insertion,..." or names; raises ValueError naming an unknown one."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    out = []
    for n in names:
        try:
            out.append(Metric(n))
        except ValueError:
            raise ValueError(f"unknown metric {n!r}; choose from {', '.join(m.value for m in Metric)}") from None
    if not out:
        raise ValueError("no metric asked for")
    return tuple(dict.fromkeys(out))


def method_explainer(method: str, options: Mapping[str, object] | None = None
                     ) -> Callable[[nn.Module, torch.Tensor, int], torch.Tensor]:
    """``explain(model, x, target) -> (H, W)`` map of a registered attribution method with ``options``."""
    from ..attribution.registry import attribute

    opts = dict(options or {})

    def explain(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
        return attribute(model, x, int(target), method=method, **opts).map[0].float()

    return explain


def evaluate(model: nn.Module, x: torch.Tensor, target: int | None = None, *, method: str | None = None,
             values: torch.Tensor | np.ndarray | None = None, options: Mapping[str, object] | None = None,
             explain: Callable[[nn.Module, torch.Tensor, int], torch.Tensor] | None = None,
             metrics: Iterable[Metric | str] = ALL_METRICS, steps: int = STEPS,
             deletion_baseline: DeletionBaseline | str = DeletionBaseline.MEAN, mask: np.ndarray | None = None,
             batch_size: int = BATCH_SIZE, seed: int = 0, progress: Progress | None = None,
             cancel: Cancel | None = None) -> Evaluation:
    """Evaluate one map of one image.

    Give either ``method`` (a registered attribution method, with ``options``), ``explain`` (any function
    ``(model, x, target) -> (H, W)``, named by ``method``), or ``values`` (a fixed (H, W) map at the model input
    size: method ``"map"``; the randomisation test does not apply to it, since it cannot be recomputed).

    Args:
        x: the model input (3, H, W) or (1, 3, H, W), float in [0, 1].
        target: class index (default: the predicted class).
        metrics: which of :class:`Metric` to compute.
        steps: S of the deletion/insertion curves.
        deletion_baseline: mean (default), black or blur.
        mask: bool (H, W) object mask for the pointing game (skipped without one).
        batch_size: perturbed copies per forward pass.
        seed: seed of ROAD's noise and of the randomised weights.
        cancel: polled between batches; raises core.progress.Cancelled when it returns True.

    Raises:
        NotApplicable: the method does not apply to this model.
        ValueError: bad shapes, values or options.
    """
    start = time.perf_counter()
    x = check_input(x).to(model_device(model))  # the perturbed copies are made on the model's device
    if x.shape[0] != 1:
        raise ValueError("evaluate takes one image")
    t = int(resolve_target(model, x, target)[0])
    wanted = [Metric(m) for m in metrics]
    if values is None and explain is None:
        if method is None:
            raise ValueError("give a method, an explain function or a map")
        explain = method_explainer(method, options)
    name = method or MAP_METHOD
    if values is None:
        report(progress, 0.0, f"{name}: computing the map")
        amap = explain(model, x, t).detach().float()
    else:
        amap = torch.as_tensor(np.asarray(values, dtype=np.float32))
    if tuple(amap.shape) != tuple(x.shape[-2:]):
        raise ValueError(f"the map is {'x'.join(map(str, amap.shape))}, the model input is "
                         f"{x.shape[-2]}x{x.shape[-1]}: give an H x W map at the model input size")
    if not torch.isfinite(amap).all():
        raise ValueError("the map has NaN or infinite values")

    skipped: dict[str, str] = {}
    if Metric.RANDOMISATION in wanted and explain is None:
        skipped[Metric.RANDOMISATION.value] = "a given map cannot be recomputed on randomised models"
    if Metric.POINTING in wanted and mask is None:
        skipped[Metric.POINTING.value] = "no object mask (an alpha channel or a mask file)"
    want_curves = Metric.DELETION in wanted or Metric.INSERTION in wanted
    plan = (["curves"] if want_curves else []) + [m for m in (Metric.ROAD, Metric.RANDOMISATION, Metric.POINTING)
                                                     if m in wanted and m.value not in skipped]
    total = sum(_WEIGHT[p] for p in plan) or 1.0
    done = 0.0

    def sub(part):
        w = _WEIGHT[part]
        return lambda f, msg: report(progress, (done + f * w) / total, msg)

    c = r = rnd = pt = None
    for part in plan:
        if part == "curves":
            c = curves(model, x, amap, t, steps=steps, baseline=deletion_baseline, batch_size=batch_size,
                       deletion=Metric.DELETION in wanted, insertion=Metric.INSERTION in wanted,
                       progress=sub(part), cancel=cancel)
        elif part is Metric.ROAD:
            r = road(model, x, amap, t, seed=seed, batch_size=batch_size, progress=sub(part), cancel=cancel)
        elif part is Metric.RANDOMISATION:
            try:
                rnd = randomisation(model, x, t, explain, original=amap, seed=seed, progress=sub(part),
                                    cancel=cancel)
            except (NotApplicable, ValueError) as e:
                skipped[part.value] = str(e)
        else:
            pt = pointing(amap, mask)
        done += _WEIGHT[part]
    report(progress, 1.0, f"{name}: evaluated")
    return Evaluation(method=name, target=t, map=amap, curves=c, road=r, randomisation=rnd, pointing=pt,
                      skipped=skipped, seconds=time.perf_counter() - start)
