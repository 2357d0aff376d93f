"""Concept relevance (Achtibat et al., "From attribution maps to human-understandable explanations through
Concept Relevance Propagation", Nature Machine Intelligence 2023) on our LRP: the LRP explanation of one class
split at a layer into the contributions of its channels ("concepts"), each with its own conditional heat map.

Everything runs on LRP's prepared copy with LRP's rules (:func:`core.attribution.lrp_layers.layer_pass`): the forward
pass and the backward pass from the output down to the layer are done once; the conditional maps of several
channels are one batched backward from the layer (:func:`core.attribution.lrp_layers.from_layer`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from ..attribution.base import Attribution
from ..progress import Progress, report
from ..attribution.lrp import FirstRule, LrpRule
from ..attribution.lrp_layers import LayerPass, from_layer, layer_pass
from ..catalogue import LayerInfo, Layout, catalogue, default_layer, find_layer, to_nchw
from ..inputs import Target
from ..model.wrapper import LensModel

Channels = Sequence[Union[int, Sequence[int]]]
"""Channels to map: each item one channel or a set of channels (one map for the set)."""

MAP_BATCH = 8  # conditional maps per batched backward: bounds the memory of the backward below the layer


@dataclass(frozen=True)
class ChannelRelevance:
    """The relevance of every channel of a layer for one explained output.

    Attributes:
        layer: the catalogue layer.
        target: long (N,), the class explained; contrast: long (N,) or None (its logit is subtracted).
        score: float (N,), the explained output (``logit[target]`` or ``logit[target] - logit[contrast]``).
        relevance: float (N, C), R_c: LRP relevance at the layer summed over positions, signed.
        total: float (N,), the layer's total relevance (``relevance.sum(1)``).
        share: float (N, C), ``relevance / total`` (signed; sums to 1 per image; 0 when the total is 0).
        order: long (N, C), channels by relevance, descending.
        seconds: compute time.
    """

    layer: LayerInfo
    target: torch.Tensor
    contrast: torch.Tensor | None
    score: torch.Tensor
    relevance: torch.Tensor
    total: torch.Tensor
    share: torch.Tensor
    order: torch.Tensor
    seconds: float

    def top(self, k: int, index: int = 0) -> list[int]:
        """The ``k`` most relevant channels of image ``index`` (all when ``k`` exceeds the channel count)."""
        return [int(c) for c in self.order[index, :k]]


@dataclass(frozen=True)
class ConditionalMaps:
    """Conditional input heat maps: the LRP map with the relevance at the layer restricted to some channels.

    Attributes:
        channels: per image, per map, the channels kept (a tuple of one or more).
        maps: float32 (N, K, H, W), pixel relevance summed over colour; ``raw`` (N, K, 3, H, W).
        seconds: compute time of the backward passes from the layer.
    """

    channels: tuple[tuple[tuple[int, ...], ...], ...]
    maps: torch.Tensor
    raw: torch.Tensor
    seconds: float

    def similarity(self, index: int = 0) -> float | None:
        """Mean pairwise Pearson correlation of image ``index``'s maps, in [-1, 1]: near 1 when the channels differ
        in how much relevance they carry but not in where they look. None with fewer than two maps or a constant
        one."""
        flat = self.maps[index].flatten(1).double()
        if len(flat) < 2:
            return None
        centred = flat - flat.mean(1, keepdim=True)
        norms = centred.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            return None
        unit = centred / norms
        k = len(unit)
        return float(((unit @ unit.T).sum() - k) / (k * (k - 1)))

    def attribution(self, k: int, index: int = 0, target: int = 0) -> Attribution:
        """Map ``k`` of image ``index`` as an LRP :class:`~core.attribution.base.Attribution` (N = 1), for
        :mod:`core.attribution.view`."""
        return Attribution(map=self.maps[index, k][None], raw=self.raw[index, k][None], method="lrp",
                           target=[int(target)], seconds=self.seconds)


@dataclass(frozen=True)
class Concepts:
    """Channel relevances of a layer and the conditional maps of its top (or chosen) channels, from one pass."""

    relevance: ChannelRelevance
    maps: ConditionalMaps
    seconds: float


def resolve_layer(model: LensModel, layer: str | LayerInfo | None) -> LayerInfo:
    """The catalogue entry of ``layer`` (None: the default layer). Raises ValueError naming a few layers."""
    if isinstance(layer, LayerInfo):
        return layer
    if layer is None:
        return default_layer(model)
    try:
        return find_layer(model, layer)
    except KeyError as e:
        raise ValueError(str(e).strip("'\"")) from None


def _pass(model, x, target, contrast, layer, rule, first, epsilon) -> tuple[LayerInfo, LayerPass]:
    info = resolve_layer(model, layer)
    return info, layer_pass(model, x, target, layer=info.name, contrast=contrast, rule=rule, first=first,
                            epsilon=epsilon)


def _channel_relevance(info: LayerInfo, lp: LayerPass, started: float) -> ChannelRelevance:
    # summed in double: shares of near-cancelling sums. Token layers sum over every token, the class and
    # distillation tokens included (the masks of _maps keep a channel on every token), so the maps still add up
    # to the LRP map
    relevance = lp.relevance.double()
    rel = relevance.sum(1) if info.layout is Layout.NLC else to_nchw(relevance, info).sum((2, 3))
    total = rel.sum(1)
    share = torch.where(total[:, None] != 0, rel / total[:, None].where(total[:, None] != 0, 1.0),
                        torch.zeros_like(rel))
    order = rel.argsort(dim=1, descending=True, stable=True)
    return ChannelRelevance(info, lp.target.cpu(), None if lp.contrast is None else lp.contrast.cpu(),
                            lp.score.float().cpu(), rel.float().cpu(), total.float().cpu(), share.float().cpu(),
                            order.cpu(), time.perf_counter() - started)


def _sets(channels: Channels, count: int) -> tuple[tuple[int, ...], ...]:
    sets = []
    for item in channels:
        chosen = tuple(int(c) for c in (item if isinstance(item, (list, tuple, set, frozenset)) else (item,)))
        bad = [c for c in chosen if not 0 <= c < count]
        if bad or not chosen:
            raise ValueError(f"channel {bad[0] if bad else '(none)'} is not a channel of this layer "
                             f"(0 to {count - 1})")
        sets.append(chosen)
    return tuple(sets)


def _maps(info: LayerInfo, lp: LayerPass, per_image: Sequence[tuple[tuple[int, ...], ...]],
          progress: Progress | None) -> ConditionalMaps:
    """One map per channel set, per image; images may have different sets but the same number of them."""
    started = time.perf_counter()
    n, k = len(per_image), len(per_image[0]) if per_image else 0
    h, w = lp._a.shape[-2:]
    maps = torch.zeros(n, k, 3, h, w)
    for lo in range(0, k, MAP_BATCH):
        hi = min(k, lo + MAP_BATCH)
        mask = torch.zeros(hi - lo, n, info.channels, device=lp.carrier.device, dtype=lp.carrier.dtype)
        for i, sets in enumerate(per_image):
            for j, chosen in enumerate(sets[lo:hi]):
                mask[j, i, list(chosen)] = 1.0
        # onto the layer's own layout: channels last for tokens (N, L, C) and NHWC grids
        mask = {Layout.NLC: mask[:, :, None, :], Layout.NHWC: mask[:, :, None, None, :]}.get(
            info.layout, mask[:, :, :, None, None])
        maps[:, lo:hi] = from_layer(lp, mask).transpose(0, 1).cpu()
        report(progress, hi / max(k, 1), f"conditional maps: {hi} of {k}")
    return ConditionalMaps(tuple(tuple(s) for s in per_image), maps.sum(2), maps, time.perf_counter() - started)


def channel_relevance(model: LensModel, x: torch.Tensor, target: Target = None, *, layer: str | None = None,
                      contrast: Target = None, rule: LrpRule = LrpRule.ZPLUS, first: FirstRule = FirstRule.ZB,
                      epsilon: float = 0.25) -> ChannelRelevance:
    """The relevance of each channel of ``layer`` for ``target`` (the LRP pass down to the layer only).

    Args:
        x: float (N, 3, H, W) in [0, 1].
        target: the class explained (None: the top class). contrast: a class whose logit is subtracted.
        layer: a catalogue layer name (None: the default layer).
        rule, first, epsilon: LRP's (:func:`core.attribution.lrp.lrp`).

    Raises:
        ValueError: no such layer; NotApplicable: a layer type LRP has no rule for.
    """
    started = time.perf_counter()
    info, lp = _pass(model, x, target, contrast, layer, rule, first, epsilon)
    return _channel_relevance(info, lp, started)


def conditional_maps(model: LensModel, x: torch.Tensor, target: Target = None, *, channels: Channels,
                     layer: str | None = None, contrast: Target = None, rule: LrpRule = LrpRule.ZPLUS,
                     first: FirstRule = FirstRule.ZB, epsilon: float = 0.25,
                     progress: Progress | None = None) -> ConditionalMaps:
    """Conditional heat maps of ``channels`` (each a channel or a set of channels) of ``layer``, the same for
    every image, from one forward pass and batched backward passes from the layer.

    Raises:
        ValueError: no such layer or channel.
    """
    info, lp = _pass(model, x, target, contrast, layer, rule, first, epsilon)
    sets = _sets(channels, info.channels)
    return _maps(info, lp, [sets] * x.shape[0], progress)


def concepts(model: LensModel, x: torch.Tensor, target: Target = None, *, layer: str | None = None,
             contrast: Target = None, top: int = 6, channels: Channels | None = None,
             rule: LrpRule = LrpRule.ZPLUS, first: FirstRule = FirstRule.ZB, epsilon: float = 0.25,
             progress: Progress | None = None) -> Concepts:
    """Channel relevances of ``layer`` and the conditional maps of each image's ``top`` channels (or of
    ``channels`` when given), from one forward pass.

    Returns:
        :class:`Concepts`; ``maps.maps`` is (N, K, H, W) with K = ``min(top, C)`` or ``len(channels)``.

    Raises:
        ValueError: no such layer or channel, ``top`` below 1.
    """
    started = time.perf_counter()
    if channels is None and top < 1:
        raise ValueError("top must be at least 1")
    info, lp = _pass(model, x, target, contrast, layer, rule, first, epsilon)
    rel = _channel_relevance(info, lp, started)
    if channels is not None:
        per_image = [_sets(channels, info.channels)] * x.shape[0]
    else:
        per_image = [tuple((c,) for c in rel.top(top, i)) for i in range(x.shape[0])]
    maps = _maps(info, lp, per_image, progress)
    return Concepts(rel, maps, time.perf_counter() - started)


def spatial_layers(model: LensModel) -> list[str]:
    """Names of the catalogue's layers (every spatial layer), in forward order."""
    return [layer.name for layer in catalogue(model)]
