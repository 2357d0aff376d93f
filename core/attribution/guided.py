"""Guided backpropagation and deconvolution that are correct on GELU/SiLU/ReLU6 networks, not only ReLU ones.

Captum (and pytorch-grad-cam) change the backward pass of ``nn.ReLU`` modules only. ConvNeXt uses GELU, so
there their "guided" maps silently equal the plain gradient. Here the rule is applied to every rectifying
activation the forward pass runs, whether it is a module (``nn.GELU``) or a functional call (``F.gelu``,
``x.relu_()``): a thread-local :class:`~torch.overrides.TorchFunctionMode` sees each call and wraps its
output. Nothing is attached to the model, so concurrent sessions on one shared model do not see each other.

For an activation ``y = f(x)`` with upstream gradient ``g`` (Springenberg et al. 2015, generalised):

* guided backprop: ``dx = f'(x) * max(g, 0)`` (for ReLU: ``1[x > 0] * 1[g > 0] * g``);
* deconvolution: ``dx = max(g, 0)``, the forward mask ignored (for ReLU: Zeiler & Fergus' rule).

Gates such as the sigmoid of squeeze-excitation blocks are not rectifiers and keep their plain gradient.
"""
from __future__ import annotations

import enum
import time
from collections import Counter
from typing import Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..progress import Progress, report
from .spec import MethodSpec
from .base import Attribution, NotApplicable, batches, check_input, from_raw, input_gradient, resolve_target

RECTIFIERS = {
    "relu": "ReLU", "relu_": "ReLU", "gelu": "GELU", "gelu_": "GELU", "silu": "SiLU", "silu_": "SiLU",
    "relu6": "ReLU6", "hardtanh": "ReLU6/Hardtanh", "hardtanh_": "ReLU6/Hardtanh", "hardswish": "Hardswish",
    "hardswish_": "Hardswish", "mish": "Mish", "mish_": "Mish", "elu": "ELU", "elu_": "ELU", "celu": "CELU",
    "celu_": "CELU", "selu": "SELU", "selu_": "SELU", "leaky_relu": "LeakyReLU", "leaky_relu_": "LeakyReLU",
    "softplus": "Softplus", "prelu": "PReLU", "rrelu": "RReLU", "rrelu_": "RReLU",
}
GATES = {"sigmoid": "sigmoid", "sigmoid_": "sigmoid", "hardsigmoid": "hard sigmoid", "tanh": "tanh",
         "tanh_": "tanh"}


class GuidedRule(str, enum.Enum):
    """Which backward rule replaces the rectifiers' own: guided backprop or deconvolution."""

    GUIDED = "guided-backprop"
    DECONVOLUTION = "deconvolution"


class _ClampGradOut(torch.autograd.Function):
    """Identity forward; backward passes max(g, 0) on to the activation's own backward (guided rule)."""

    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


class _WriteInto(torch.autograd.Function):
    """``x.copy_(w)`` in place, with the gradient going to ``w``: keeps an in-place call in place."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.mark_dirty(x)
        return x.copy_(w)

    @staticmethod
    def backward(ctx, g):
        return None, g


class _Deconv(torch.autograd.Function):
    """Forward gives the activation's value ``y``; backward sends max(g, 0) straight to its input."""

    @staticmethod
    def forward(ctx, x, y, inplace: bool):
        if inplace:
            ctx.mark_dirty(x)
            return x.copy_(y)
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0), None, None


class _RuleMode(TorchFunctionMode):
    """Applies ``rule`` to every rectifier call in this thread while active; counts what it saw."""

    def __init__(self, rule: GuidedRule) -> None:
        super().__init__()
        self.rule = rule
        self.seen: Counter[str] = Counter()
        self.gates: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        x = args[0] if args else None
        if name in GATES and isinstance(x, torch.Tensor) and x.requires_grad:
            self.gates[GATES[name]] += 1
        if name not in RECTIFIERS or not isinstance(x, torch.Tensor) or not x.requires_grad \
                or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        self.seen[RECTIFIERS[name]] += 1
        if self.rule is GuidedRule.GUIDED:
            # run on a tracked copy so an in-place call cannot invalidate what the activation saved
            probe = x.clone()
            out = func(probe, *args[1:], **kwargs)
            guided = _ClampGradOut.apply(out)
            return _WriteInto.apply(x, guided) if out is probe else guided
        probe = x.detach().clone()
        value = func(probe, *args[1:], **kwargs)
        return _Deconv.apply(x, value.detach(), value is probe)


def gradient_with_rule(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                       rule: GuidedRule, *, scale: float = 1.0) -> tuple[torch.Tensor, _RuleMode]:
    """d logit[target] / d x (N, 3, H, W) with ``rule`` applied at every rectifier; also returns the rule mode,
    whose counts say where the rule was applied (see :func:`rule_notes`). ``scale``: see :func:`input_gradient`."""
    mode = _RuleMode(rule)
    return input_gradient(model, x, target, forward_mode=mode, scale=scale), mode


def rule_notes(mode: _RuleMode, rule: GuidedRule) -> list[str]:
    """Human-readable facts about where ``rule`` was applied (one forward pass)."""
    where = ", ".join(f"{n} {name}" for name, n in mode.seen.most_common())
    notes = [f"{rule.value} rule applied at {sum(mode.seen.values())} activations per pass ({where}), "
             "modules and functional calls alike"]
    if mode.gates:
        gates = ", ".join(f"{n} {name}" for name, n in mode.gates.most_common())
        notes.append(f"gates left with their plain gradient: {gates}")
    return notes


def rule_gradient(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
                  rule: GuidedRule | str = GuidedRule.GUIDED, batch_size: int = 8, progress: Progress | None = None
                  ) -> tuple[torch.Tensor, list[str]]:
    """Modified-backward gradient (N, 3, H, W) and notes. Raises :class:`NotApplicable` without rectifiers."""
    rule = GuidedRule(rule)
    x = check_input(x)
    t = resolve_target(model, x, target)
    parts, mode = [], None
    for i, sl in enumerate(chunks := batches(x.shape[0], batch_size)):
        grad, mode = gradient_with_rule(model, x[sl], t[sl], rule)
        parts.append(grad)
        report(progress, (i + 1) / len(chunks), f"{rule.value}: image batch {i + 1}/{len(chunks)}")
    if not mode.seen:
        raise NotApplicable(f"{rule.value} does not apply to {_arch(model)}: it has no rectifying activation "
                            "(ReLU, GELU, SiLU, ...), so the map would equal the plain gradient")
    return torch.cat(parts), rule_notes(mode, rule)


def _rule_attribution(rule: GuidedRule, model, x, target, batch_size, progress) -> Attribution:
    started = time.perf_counter()
    t = resolve_target(model, check_input(x), target)
    raw, notes = rule_gradient(model, x, t, rule=rule, batch_size=batch_size, progress=progress)
    return from_raw(raw, rule.value, t.tolist(), started, notes=notes)


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
                    batch_size: int = 8, progress: Progress | None = None) -> Attribution:
    """Guided backpropagation (signed, per channel). x: (N, 3, H, W) in [0, 1]."""
    return _rule_attribution(GuidedRule.GUIDED, model, x, target, batch_size, progress)


def deconvolution(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
                  batch_size: int = 8, progress: Progress | None = None) -> Attribution:
    """Deconvolution (Zeiler & Fergus rule at every rectifier; signed, per channel)."""
    return _rule_attribution(GuidedRule.DECONVOLUTION, model, x, target, batch_size, progress)


def _arch(model: nn.Module) -> str:
    return getattr(getattr(model, "card", None), "arch", type(model).__name__)


__all__ = ["GuidedRule", "guided_backprop", "deconvolution", "rule_gradient", "gradient_with_rule", "input_gradient"]


RULE_CAVEAT = ("Captum and pytorch-grad-cam change only nn.ReLU, so on GELU networks such as ConvNeXt their guided "
               "maps equal the plain gradient; here the rule reaches every rectifier.")
GUIDED_BACKPROP = MethodSpec("guided-backprop", guided_backprop, "Guided backprop",
                             "only positive gradients pass each rectifier (ReLU, GELU, SiLU, ReLU6, ...)",
                             caveat=RULE_CAVEAT)
DECONVOLUTION = MethodSpec("deconvolution", deconvolution, "Deconvolution",
                           "positive gradients pass every rectifier regardless of its input", caveat=RULE_CAVEAT)
