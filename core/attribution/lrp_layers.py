"""LRP relevance read at inner layers, with :func:`core.attribution.lrp.lrp`'s rules and prepared copy: one
layer with the graph below it kept for conditional maps (:func:`layer_pass`, :func:`from_layer`: concept
relevance), and several layers from one pass (:func:`relevance_at`: the activation index's relevance ranking).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..hooks import hooks_on
from ..inputs import Target, resolve_target
from ..model.wrapper import LensModel
from .lrp import FirstRule, LrpRule, _first_layer, _prepared, _rule_hooks


# ------------------------------------------------------------------------------------ relevance at a layer

@dataclass(frozen=True)
class LayerPass:
    """One LRP forward pass of the prepared copy, kept for backward passes from one layer (:func:`layer_pass`).

    The relevance at the layer is ``output * carrier`` (LRP carried by autograd: the module docstring).

    Attributes:
        layer: the layer's module name in ``model.net``.
        output: the layer's output, attached to the graph, in the layer's own layout (N, ...).
        carrier: float (same shape), the rules' gradient of ``score`` at ``output`` (detached).
        target: long (N,), the class explained; contrast: long (N,) or None, the class whose logit is subtracted.
        score: float (N,), the explained output: the target's logit, minus the contrast's when given.
        logits: float (N, classes), detached.
    """

    layer: str
    output: torch.Tensor
    carrier: torch.Tensor
    target: torch.Tensor
    contrast: torch.Tensor | None
    score: torch.Tensor
    logits: torch.Tensor
    rule: LrpRule
    first: FirstRule
    epsilon: float
    _first: nn.Conv2d
    _a: torch.Tensor
    _z: torch.Tensor
    _bounds: tuple[torch.Tensor, torch.Tensor]

    @property
    def relevance(self) -> torch.Tensor:
        """LRP relevance at the layer (detached, the output's shape and layout)."""
        return self.output.detach() * self.carrier


def layer_pass(model: LensModel, x: torch.Tensor, target: Target = None, *, layer: str, contrast: Target = None,
               rule: LrpRule = LrpRule.ZPLUS, first: FirstRule = FirstRule.ZB, epsilon: float = 0.25) -> LayerPass:
    """The LRP pass from the output down to ``layer`` (same rules and prepared copy as :func:`lrp`), with the
    graph below the layer kept for :func:`from_layer`.

    Args:
        x: float (N, 3, H, W) in [0, 1].
        target: the class explained (None: the top class). contrast: a class (or one per image) whose logit is
            subtracted: the relevance of ``logit[target] - logit[contrast]``.
        layer: a module name of ``model.net`` with a tensor output (its first call in the forward pass is used).

    Raises:
        NotApplicable: a layer type with no rule here. KeyError: no such module.
    """
    rule, first = LrpRule(rule), FirstRule(first)
    prep = _prepared(model, rule)
    module = dict(prep.net.named_modules()).get(layer) if layer else None
    if module is None:
        raise KeyError(f"no module {layer!r} in {model.card.arch}")
    xn = model.normalise(x.detach()).requires_grad_(True)
    seen: dict[str, torch.Tensor] = {}
    with hooks_on(prep.net) as hooks:
        _rule_hooks(hooks, prep, rule, epsilon, seen)

        def at_layer(_m, _inp, out):  # registered after the rule hooks: sees the output the rest of the net sees
            seen.setdefault("out", out[0] if isinstance(out, (tuple, list)) else out)
        hooks.forward(module, at_layer)
        logits = prep.net(xn)
    t = resolve_target(model, x, target, logits=logits.detach())
    score = logits.gather(1, t[:, None])[:, 0]
    c = None
    if contrast is not None:
        c = resolve_target(model, x, contrast, logits=logits.detach())
        score = score - logits.gather(1, c[:, None])[:, 0]
    (carrier,) = torch.autograd.grad(score.sum(), seen["out"], retain_graph=True)
    low = ((0 - model.mean) / model.std).to(xn)
    high = ((1 - model.mean) / model.std).to(xn)
    return LayerPass(layer, seen["out"], carrier.detach(), t, c, score.detach(), logits.detach(), rule, first,
                     float(epsilon), prep.first, seen["a"].detach(), seen["z"], (low, high))


def from_layer(lp: LayerPass, mask: torch.Tensor) -> torch.Tensor:
    """Pixel relevance of the relevance ``mask * lp.relevance`` at the layer: the rest of the LRP backward pass,
    for K masks in one batched backward.

    Args:
        mask: float (K, N, ...) with the layer output's shape after K (or broadcastable to it): K weightings of
            the layer's relevance (a 0/1 mask keeps some channels or positions).

    Returns:
        float32 (K, N, 3, H, W). Linear in ``mask``: the maps of masks that sum to one sum to :func:`lrp`'s.
    """
    out = lp.output
    grads = (lp.carrier * mask.to(lp.carrier)).expand(mask.shape[0], *out.shape).contiguous()
    k, n = grads.shape[:2]
    if out is lp._z:
        g = grads
    else:
        (g,) = torch.autograd.grad(out, lp._z, grads, retain_graph=True, is_grads_batched=True)
    rel = (lp._z.detach() * g).flatten(0, 1)
    a = lp._a.expand(k, *lp._a.shape).flatten(0, 1)
    raw = _first_layer(lp._first, a, rel, lp.first, lp.epsilon, *lp._bounds).detach().float()
    return raw.view(k, n, *raw.shape[1:])


# ------------------------------------------------------------------------------- relevance at several layers

@dataclass(frozen=True)
class LayersRelevance:
    """LRP relevance at several layers from one forward and one backward pass (:func:`relevance_at`).

    Attributes:
        outputs: layer name -> the layer's output (detached; its own layout, N first).
        relevance: layer name -> the LRP relevance at the layer (``output * carrier``; same shape and layout).
        target: long (N,), the class explained. logits: float (N, classes), detached.
    """

    outputs: dict[str, torch.Tensor]
    relevance: dict[str, torch.Tensor]
    target: torch.Tensor
    logits: torch.Tensor


def relevance_at(model: LensModel, x: torch.Tensor, target: Target = None, *, layers: Sequence[str],
                 rule: LrpRule = LrpRule.ZPLUS, epsilon: float = 0.25) -> LayersRelevance:
    """LRP relevance of ``target`` at each of ``layers``: the rules and prepared copy of :func:`lrp`, the values
    :func:`layer_pass` gives one layer at a time.

    One forward pass and one backward pass serve every layer. The graph starts at the first of the layers to run
    (its output becomes a leaf): the forward below it keeps nothing for autograd and runs no rule, and the backward
    stops there. The relevance at a layer depends only on the graph above it, so this changes no value.

    Args:
        x: float (N, 3, H, W) in [0, 1].
        target: the class explained (None: each image's top class).
        layers: module names of ``model.net`` with a tensor output (each one's first call is used).

    Raises:
        NotApplicable: a layer type with no rule here. KeyError: no such module. RuntimeError: a layer never ran.
    """
    rule = LrpRule(rule)
    prep = _prepared(model, rule)
    named = dict(prep.net.named_modules())
    by_module: dict[nn.Module, list[str]] = {}
    for name in dict.fromkeys(layers):
        module = named.get(name) if name else None
        if module is None:
            raise KeyError(f"no module {name!r} in {model.card.arch}")
        by_module.setdefault(module, []).append(name)
    outs: dict[str, torch.Tensor] = {}
    seen: dict[str, torch.Tensor] = {}
    with hooks_on(prep.net) as hooks, torch.enable_grad():
        _rule_hooks(hooks, prep, rule, epsilon, seen)
        for module, names in by_module.items():
            def at_layer(_m, _inp, out, names=names):  # after the rule hooks: the output the rest of the net sees
                if names[0] in outs:  # a module called twice: its first call counts
                    return None
                t = out[0] if isinstance(out, (tuple, list)) else out
                if t.requires_grad:
                    outs.update((n, t) for n in names)
                    return None
                # the first layer to run (or one on a branch that does not depend on it): the graph starts here
                leaf = t.detach().requires_grad_(True)
                outs.update((n, leaf) for n in names)
                new = leaf.clone()  # the net may write into its input in place; a leaf must not be
                return new if not isinstance(out, (tuple, list)) else type(out)((new, *out[1:]))
            hooks.forward(module, at_layer)
        logits = prep.net(model.normalise(x.detach()))
    missing = [n for n in layers if n not in outs]
    if missing:
        raise RuntimeError(f"layers never ran in the forward pass: {', '.join(missing)}")
    t = resolve_target(model, x, target, logits=logits.detach())
    tensors = list({id(v): v for v in outs.values()}.values())
    grads = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), tensors, allow_unused=True)
    carriers = {id(v): g if g is not None else torch.zeros_like(v) for v, g in zip(tensors, grads)}
    return LayersRelevance({n: v.detach() for n, v in outs.items()},
                           {n: v.detach() * carriers[id(v)] for n, v in outs.items()}, t, logits.detach())
