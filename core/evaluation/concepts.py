"""Faithfulness of a concept ranking: deleting a layer's most relevant channels (their activations set to zero in
the forward pass) should lower the target logit more than deleting as many random channels, or the channels that
fire most."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch

from ..catalogue import layer_output
from ..concepts.relevance import channel_relevance, resolve_layer
from ..hooks import hooks_on
from ..inputs import Target, resolve_target


@dataclass(frozen=True)
class DeletionCurves:
    """Target logit drop after deleting k channels of a layer, by three orders.

    Attributes:
        layer: the layer's name. ks: the k values (K,). target: long (N,). logit: float (N,), before deletion.
        relevance, activation, random: float (N, K), ``logit - logit after deleting k channels`` when the
            channels are the top k by relevance, the top k by activation (spatial mean), or k random ones (mean
            over ``draws`` draws).
    """

    layer: str
    ks: tuple[int, ...]
    target: torch.Tensor
    logit: torch.Tensor
    relevance: torch.Tensor
    activation: torch.Tensor
    random: torch.Tensor
    draws: int
    seconds: float


def _logits_without(model, x: torch.Tensor, info, masks: torch.Tensor, batch: int) -> torch.Tensor:
    """Logits (M, classes) of image ``x`` (1, 3, H, W) with the layer's output times each mask (M, C)."""
    module = model.layer(info.name)
    out = []
    for lo in range(0, masks.shape[0], batch):
        chunk = masks[lo:lo + batch].to(x)
        shape = (chunk.shape[0], 1, 1, chunk.shape[1]) if info.layout.value == "NHWC" else (*chunk.shape, 1, 1)

        def zero(_m, _inp, output, m=chunk.view(shape)):
            return output * m
        with hooks_on(model) as hooks, torch.no_grad():
            hooks.forward(module, zero)
            out.append(model(x.expand(chunk.shape[0], *x.shape[1:])))
    return torch.cat(out)


def channel_deletion(model, x: torch.Tensor, target: Target = None, *, layer: str | None = None,
                     ks: Sequence[int] = tuple(range(1, 21)), draws: int = 20, seed: int = 0,
                     batch: int = 16) -> DeletionCurves:
    """Deletion curves of ``layer``'s channels for each image of ``x`` (N, 3, H, W) in [0, 1].

    Args:
        target: the class whose logit is watched (None: the prediction).
        ks: numbers of channels deleted (each at most the channel count).
        draws: random sets per k (their drops are averaged); seed: their generator's seed.
        batch: masked forward passes per batch.
    """
    started = time.perf_counter()
    info = resolve_layer(model, layer)
    ks = tuple(int(k) for k in ks if 1 <= int(k) <= info.channels)
    with torch.no_grad():
        logits = model(x)
    t = resolve_target(model, x, target, logits=logits)
    rel = channel_relevance(model, x, t, layer=info.name)
    acts = layer_output(model, x, info)  # (N, C, h, w) whatever the layout
    act_order = acts.mean((2, 3)).argsort(dim=1, descending=True)
    gen = torch.Generator().manual_seed(seed)
    n, c = x.shape[0], info.channels
    curves = {name: torch.zeros(n, len(ks)) for name in ("relevance", "activation", "random")}
    for i in range(n):
        masks = []
        for order in (rel.order[i], act_order[i].cpu()):
            for k in ks:
                m = torch.ones(c)
                m[order[:k]] = 0
                masks.append(m)
        for k in ks:
            for _ in range(draws):
                m = torch.ones(c)
                m[torch.randperm(c, generator=gen)[:k]] = 0
                masks.append(m)
        after = _logits_without(model, x[i:i + 1], info, torch.stack(masks), batch)[:, t[i]].cpu()
        drop = float(logits[i, t[i]]) - after
        curves["relevance"][i] = drop[:len(ks)]
        curves["activation"][i] = drop[len(ks):2 * len(ks)]
        curves["random"][i] = drop[2 * len(ks):].view(len(ks), draws).mean(1)
    return DeletionCurves(info.name, ks, t.cpu(), logits.gather(1, t[:, None])[:, 0].cpu(), curves["relevance"],
                          curves["activation"], curves["random"], draws, time.perf_counter() - started)
