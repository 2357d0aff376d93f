"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al., "LRP: an overview", 2019) for CNNs,
ConvNeXt included.

Implementation: relevance is carried by autograd. At every tensor ``t`` the relevance is ``R_t = t * c_t`` where
``c_t`` is the gradient of a *modified* graph. On a bias-free linear op that is exactly LRP-0, residual adds
split relevance in proportion to their inputs, and average pooling is linear. Rules change the graph with
forward hooks that keep every value and only change the gradient:

- Conv2d / Linear (not the first layer):
  ``epsilon``: gradient scaled by ``z / (z + eps * sign(z))`` with ``eps = epsilon * std(z)`` per image
  (LRP-epsilon with a scale-free stabiliser). ``zplus``: the gradient flows through the positive
  contributions ``(a w)+`` only, scaled by ``z / z+`` (LRP-z+; biases get no relevance). In ``zplus`` mode
  the classifier (a Linear on a flat vector) keeps the epsilon rule.
- Activations (GELU, SiLU, ReLU, ...): the gate ``f(x) / x`` is treated as a constant, so ``y = x * gate``
  passes relevance unchanged (the identity rule, as for the gates in Ali et al. 2022, "XAI for Transformers:
  better explanations through conservative propagation").
- LayerNorm: the standard deviation is treated as a constant (Ali et al. 2022): the norm becomes centring
  and scaling, a linear map; the shift ``beta`` absorbs its share like a bias.
- Sigmoid gates (squeeze-excite): constant, so the gated branch passes relevance and the gate gets none.
- BatchNorm: folded into the convolution before it (on a private copy of the network that shares every
  tensor the folding leaves alone) and removed; a BatchNorm with no convolution before it stays as a
  per-channel affine map.
- First layer (the pixels): ``zb`` (the box rule for inputs bounded by the pixel range [0, 1]), ``flat``
  (relevance spread evenly over the receptive field) or ``epsilon``.

Any other leaf module is refused (:class:`~core.cam.NotApplicable`). Relevance is conserved exactly by
``zplus``, ``zb``, ``flat`` and the gate / LayerNorm rules; biases, LayerNorm shifts and epsilon absorb some.
``relevance_sum`` against ``logit`` shows how much.
"""
from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..memo import PerModel
from ..progress import Progress, report
from .base import Attribution, NotApplicable
from .spec import MethodSpec, Option
from ..inputs import Target, resolve_target
from ..hooks import hooks_on, private_copy
from ..model.wrapper import LensModel


class LrpRule(str, enum.Enum):
    """The LRP rule for convolutions (and channel-wise Linear layers)."""

    EPSILON = "epsilon"
    ZPLUS = "zplus"




class FirstRule(str, enum.Enum):
    ZB = "zb"
    FLAT = "flat"
    EPSILON = "epsilon"


_ACTS = ("relu", "relu6", "gelu", "silu", "swish", "hardswish", "leakyrelu", "elu", "mish", "tanh", "quickgelu",
         "geluapprox", "gelutanh")
_GATES = ("sigmoid", "hardsigmoid", "hardsigmoidme", "gatesigmoid")
_PASS = (nn.Identity, nn.Dropout, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.BatchNorm2d)


@dataclass
class _Prepared:
    net: nn.Module
    first: nn.Conv2d
    kinds: dict[nn.Module, str]
    folded: int
    # z+'s |w| and -b per convolution or Linear layer, made on its first z+ pass and kept (the size of the
    # weights): taking |w| on every call would be a pass over all of them
    plus: dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)


_cache: "PerModel[_Prepared]" = PerModel()


def _kind(module: nn.Module) -> str | None:
    name = type(module).__name__.lower()
    if isinstance(module, nn.Conv2d):
        plain = type(module).forward is nn.Conv2d.forward or name == "conv2dsame"
        return "conv" if plain and module.padding_mode == "zeros" else None
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    if name in _GATES:
        return "gate"
    if type(module) is nn.ReLU:  # its gradient already is the identity rule's 1[x > 0]
        return "pass"
    if name in _ACTS:
        return "act"
    if isinstance(module, _PASS) or name in ("droppath", "identity"):
        return "pass"
    return None


def prepare(model: LensModel) -> _Prepared:
    """A private copy of ``model.net`` ready for LRP (BatchNorm folded, nothing in place); cached per model.

    The copy shares every parameter and buffer tensor with ``model.net`` except the folded convolutions' weights
    and biases (new tensors): it costs the folded layers' memory, not the whole net's, and nothing is ever
    written into the shared model's tensors.

    Raises:
        NotApplicable: a layer with no LRP rule here, or no convolution on the pixels.
    """
    # made under the memo's lock: one preparation per model even when two sessions ask at once
    return _cache.update(model, lambda known: known if known is not None else _prepare(model))


# the trace only needs the module graph: a small image (most CNNs downsample by 32) costs a fraction of a full
# forward; a net that refuses it is traced at its own input size
_TRACE_SIZE = 64


def _prepare(model: LensModel) -> _Prepared:
    shared = {id(t): t for t in itertools.chain(model.net.parameters(), model.net.buffers())}
    net = private_copy(model.net, model, memo=shared).eval()  # no other job's hook is copied; tensors shared
    for m in net.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    kinds = {}
    for name, m in net.named_modules():
        if next(m.children(), None) is not None and not isinstance(m, nn.BatchNorm2d):
            continue
        kind = _kind(m)
        if kind is None:
            raise NotApplicable(f"LRP has no rule for {type(m).__name__} ({name}) in {model.card.arch}")
        kinds[m] = kind
    c, h, w = model.card.input_size
    try:
        first, pairs = _trace(net, (1, c, min(h, _TRACE_SIZE), min(w, _TRACE_SIZE)), model.mean.device)
    except (RuntimeError, AssertionError, ValueError):  # too small for this net (a valid stem, a fixed-size layer)
        first, pairs = _trace(net, (1, c, h, w), model.mean.device)
    if not isinstance(first, nn.Conv2d):
        raise NotApplicable(f"LRP here needs a convolution on the pixels; {model.card.arch} starts otherwise")
    parents = _parents(net)
    for conv, bn in pairs:
        _fold(conv, bn)
        kinds.pop(bn, None)
        for parent, name in parents[id(bn)]:
            parent._modules[name] = _folded_norm(bn)
    return _Prepared(net, first, kinds, len(pairs))


def _trace(net: nn.Module, shape: tuple[int, ...], device: torch.device
           ) -> tuple[nn.Module | None, list[tuple[nn.Conv2d, nn.BatchNorm2d]]]:
    """One forward of a zero image of ``shape`` (1, C, H, W): the module that sees the pixels, and every
    BatchNorm that reads a convolution's output directly (each pair once). A net without BatchNorm is traced
    only up to the module that sees the pixels."""
    outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # the tensors are kept: no id is reused mid-trace
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    first: list[nn.Module] = []
    x = torch.zeros(shape, device=device)
    folds = any(isinstance(m, nn.BatchNorm2d) for m in net.modules())

    def seen(mod: nn.Module) -> None:
        first.append(mod)
        if not folds:
            raise _TraceDone  # nothing to fold: the rest of the forward would find nothing

    with hooks_on(net) as hooks, torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                def conv_out(mod, inp, out):
                    outputs[id(out)] = (mod, out)
                    if inp[0] is x and not first:
                        seen(mod)
                hooks.forward(m, conv_out)
            elif isinstance(m, nn.BatchNorm2d):
                def bn_in(mod, inp):
                    conv, out = outputs.get(id(inp[0]), (None, None))
                    if out is inp[0] and (conv, mod) not in pairs:
                        pairs.append((conv, mod))
                hooks.forward_pre(m, bn_in)
            elif isinstance(m, (nn.Linear, nn.LayerNorm)):
                hooks.forward_pre(m, lambda mod, inp: seen(mod) if inp[0] is x and not first else None)
        try:
            net(x)
        except _TraceDone:
            pass
    return (first[0] if first else None), pairs


class _TraceDone(Exception):
    """Raised by a trace hook once the trace has found all it needs."""


def _parents(net: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(module) -> every (parent, attribute name) that holds it."""
    out: dict[int, list[tuple[nn.Module, str]]] = {}
    for parent in net.modules():
        for name, child in parent._modules.items():
            if child is not None:
                out.setdefault(id(child), []).append((parent, name))
    return out


class _FoldedNorm(nn.Module):
    """What is left of a BatchNorm folded into the convolution before it: nothing, or for timm's norm-act its
    dropout and activation (the same module objects, so their LRP rules apply). The output is a new tensor, as
    the BatchNorm's was: the net's code may write into it in place (ResNet's ``out += shortcut``), which the
    convolution's LRP output (a view made by a custom autograd function) does not allow."""

    def __init__(self, drop: nn.Module | None = None, act: nn.Module | None = None):
        super().__init__()
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.drop(x)) if self.act is not None else x
        return y.clone() if y is x else y


def _folded_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """The module that replaces a folded BatchNorm (see :class:`_FoldedNorm`)."""
    children = dict(bn.named_children())
    if not children:
        return _FoldedNorm().eval()
    if type(bn).__name__ == "BatchNormAct2d" and set(children) == {"drop", "act"}:
        return _FoldedNorm(children["drop"], children["act"]).eval()
    # any other BatchNorm with submodules stays, as the identity map (new tensors: the shared ones are not
    # written)
    if bn.affine:
        bn.weight = nn.Parameter(torch.ones_like(bn.weight), requires_grad=False)
        bn.bias = nn.Parameter(torch.zeros_like(bn.bias), requires_grad=False)
    bn.running_mean = torch.zeros_like(bn.running_mean)
    bn.running_var = torch.full_like(bn.running_var, 1.0 - bn.eps)
    return bn


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv <- bn(conv), with new weight and bias tensors (the old ones are shared with the model)."""
    std = torch.sqrt(bn.running_var + bn.eps)
    scale = 1 / std if bn.weight is None else bn.weight / std
    shift = -bn.running_mean * scale if bn.bias is None else bn.bias - bn.running_mean * scale
    weight = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    conv.weight = nn.Parameter(weight, requires_grad=False)
    conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)


class _Route(torch.autograd.Function):
    """``value`` in the forward pass (no copy, no arithmetic); in the backward the incoming gradient times
    ``factor`` goes to ``carrier`` and none to ``value``. ``factor`` is computed lazily, in the backward only."""

    @staticmethod
    def forward(ctx, value, carrier, factor_fn, *saved):
        ctx.factor_fn = factor_fn
        ctx.save_for_backward(*saved)
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.factor_fn(grad, *ctx.saved_tensors), None, *([None] * len(ctx.saved_tensors))


def _keep_value(value: torch.Tensor, carrier: torch.Tensor, grad_fn, *saved: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass; in the backward ``grad_fn(grad, *saved)`` flows into ``carrier``.

    One custom autograd node and no extra forward arithmetic: the rule's factors are computed in the backward
    pass from ``saved``."""
    return _Route.apply(value, carrier, grad_fn, *saved)


def _stable(z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0)


def _rel_eps(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    std = z.detach().flatten(1).std(dim=1, unbiased=False) if z.shape[1:].numel() > 1 else z.detach().abs().flatten(1)[:, 0]
    return (epsilon * std + 1e-12).view(-1, *([1] * (z.dim() - 1)))


def _apply(module: nn.Module, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:
    """The layer's linear map with another weight and bias (default none; no hooks run)."""
    if isinstance(module, nn.Linear):
        return F.linear(a, weight, bias)
    if type(module).__name__ == "Conv2dSame":
        from timm.layers import conv2d_same
        return conv2d_same(a, weight, bias, module.stride, module.padding, module.dilation, module.groups)
    return module._conv_forward(a, weight, bias)


def _plus_from(module: nn.Module, a: torch.Tensor, out: torch.Tensor,
               plus: dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
    """Twice the positive contributions ``(a w)+`` per output (no bias), from the layer's own output:
    ``2 (a+ w+ + a- w-) = a w + |a| |w|``, so one extra
    product instead of two (and one extra backward instead of two). The factor 2 cancels in the z+ rule
    (gradient of ``2 zp`` times ``out / (2 zp)``), so it is not divided out. ``plus`` keeps each layer's ``|w|``
    and ``-b`` (two threads may both make one: the same values)."""
    kept = plus.get(module)
    if kept is None:
        kept = plus[module] = (module.weight.abs(), -module.bias if module.bias is not None else None)
    return _apply(module, a.abs(), *kept) + out


def _gate_grad(grad, a, out):
    # the gate f(a) / a held constant; 0 where a == 0 (f(0) = 0 for every activation with a gate rule: 0 / 0)
    return torch.div(out, a).nan_to_num_(0.0, 0.0, 0.0).mul_(grad)


def _eps_grad(epsilon: float):
    def fn(grad, out):
        # z / (z + eps sign z), with sign(+-0) = +-1 as in _stable; three passes over the tensor
        eps = _rel_eps(out, epsilon)
        return torch.copysign(eps.expand_as(out), out).add_(out).reciprocal_().mul_(out).mul_(grad)
    return fn


def _zplus_grad(grad, out, zp2):
    return torch.div(out, zp2.clamp(min=2e-9)).mul_(grad)  # zp2 = 2 z+ >= 0 by construction


def _layernorm_grad(dims: tuple[int, ...], eps: float, shape):
    def fn(grad, a, *weight):
        # y = (a - mean(a)) / sigma * w + b with sigma constant: the transpose of centring and scaling
        g = grad * weight[0].view(shape) if weight else grad
        # the variance in two passes (centre, then mean square): torch.var's reduction over a short channel axis
        # is several times slower on CPU, its rounding alike
        c = a - a.mean(dim=dims, keepdim=True)
        rstd = c.mul_(c).mean(dim=dims, keepdim=True).add_(eps).rsqrt_()
        return (g - g.mean(dim=dims, keepdim=True)).mul_(rstd)
    return fn


def _rule_hook(kind: str, rule: LrpRule, epsilon: float,
               plus: dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]]):
    def hook(module, inp, out):
        a = inp[0]
        if kind == "act":
            return _keep_value(out, a, _gate_grad, a.detach(), out.detach())
        if kind == "gate":
            return out.detach()
        if kind == "layernorm":
            dims = (1,) if type(module).__name__ == "LayerNorm2d" else tuple(range(-len(module.normalized_shape), 0))
            shape = (-1, 1, 1) if dims == (1,) else module.weight.shape if module.weight is not None else None
            weight = (module.weight.detach(),) if module.weight is not None else ()
            return _keep_value(out, a, _layernorm_grad(dims, module.eps, shape), a.detach(), *weight)
        # conv / linear
        if rule is LrpRule.ZPLUS and (kind == "conv" or a.dim() > 2):
            zp2 = _plus_from(module, a, out, plus)
            return _keep_value(out, zp2, _zplus_grad, out.detach(), zp2.detach())
        # epsilon: the gradient into the layer's own output is scaled by z / (z + eps sign z)
        return _keep_value(out, out, _eps_grad(epsilon), out.detach())
    return hook


def _first_layer(conv: nn.Conv2d, a: torch.Tensor, rel: torch.Tensor, first: FirstRule, epsilon: float,
                 low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Relevance on the first layer's input (N, 3, H, W) from relevance ``rel`` on its output."""
    w = conv.weight
    with torch.enable_grad():
        if first is FirstRule.FLAT:
            ones = torch.ones_like(a, requires_grad=True)
            z = _apply(conv, ones, torch.ones_like(w))
            (g,) = torch.autograd.grad(z, ones, rel / z.clamp(min=1e-12))
            return g
        x = a.detach().requires_grad_(True)
        if first is FirstRule.EPSILON:
            z = _apply(conv, x, w) + (conv.bias.view(-1, 1, 1) if conv.bias is not None else 0)
            (g,) = torch.autograd.grad(z, x, rel / _stable(z, _rel_eps(z, epsilon)))
            return x * g
        lo = low.expand_as(x).clone().requires_grad_(True)
        hi = high.expand_as(x).clone().requires_grad_(True)
        z = _apply(conv, x, w) - _apply(conv, lo, w.clamp(min=0)) - _apply(conv, hi, w.clamp(max=0))
        gx, gl, gh = torch.autograd.grad(z, (x, lo, hi), rel / _stable(z, torch.full_like(z, 1e-9)))
        return x * gx + lo * gl + hi * gh


def lrp(model: LensModel, x: torch.Tensor, target: Target = None, *, rule: LrpRule = LrpRule.ZPLUS,
        first: FirstRule = FirstRule.ZB, epsilon: float = 0.25, progress: Progress | None = None) -> Attribution:
    """LRP relevance of each pixel for the ``target`` logit (None: the top class).

    Args:
        x: float (N, 3, H, W) in [0, 1] (not modified).
        rule: rule for convolutions (and channel-wise Linear layers): ``epsilon`` or ``zplus``.
        first: rule for the layer on the pixels.
        epsilon: stabiliser as a fraction of each layer's output standard deviation (0.25 damps noise;
            1e-9 is LRP-0, which equals gradient x input on ReLU networks).

    Returns:
        ``map`` float32 (N, H, W), pixel relevance summed over colour channels (signed, logit units); ``raw``
        (N, 3, H, W); ``metrics``: ``relevance_sum`` (N,), ``raw.sum()`` per image, and ``logit`` (N,), the
        model's logit for ``target``: equal under full conservation.

    Raises:
        NotApplicable: a layer type with no rule here.
    """
    started = time.perf_counter()
    rule, first = LrpRule(rule), FirstRule(first)
    prep = prepare(model)
    xn = model.normalise(x.detach()).requires_grad_(True)
    seen: dict[str, torch.Tensor] = {}
    # the rule hooks fire only in this call's passes (core.hooks), so concurrent LRP calls share prep.net
    with hooks_on(prep.net) as hooks:
        for m, kind in prep.kinds.items():
            if m is prep.first:
                def keep(_m, inp, out):
                    seen["a"], seen["z"] = inp[0], out
                hooks.forward(m, keep)
            elif kind != "pass":
                hooks.forward(m, _rule_hook(kind, rule, epsilon, prep.plus))
        logits = prep.net(xn)
        t = resolve_target(model, x, target, logits=logits.detach())
        chosen = logits.gather(1, t[:, None])[:, 0]
        (c,) = torch.autograd.grad(chosen.sum(), seen["z"])
    rel = (seen["z"] * c).detach()
    low = ((0 - model.mean) / model.std).to(xn)
    high = ((1 - model.mean) / model.std).to(xn)
    raw = _first_layer(prep.first, seen["a"].detach(), rel, first, epsilon, low, high).detach().float()
    report(progress, 1.0, "LRP: done")
    notes = (f"rules: {rule.value} (convolutions), {first.value} (pixels), epsilon for the classifier; "
             f"GELU/SiLU gates and LayerNorm std held constant; {prep.folded} BatchNorm folded",)
    return Attribution(map=raw.sum(1), raw=raw, method="lrp", target=[int(v) for v in t],
                       seconds=time.perf_counter() - started, notes=notes,
                       options={"rule": rule.value, "first": first.value, "epsilon": float(epsilon)},
                       metrics={"relevance_sum": tuple(float(v) for v in raw.flatten(1).sum(1)),
                                "logit": tuple(float(v) for v in chosen.detach())})


LRP = MethodSpec(
    "lrp", lrp, "LRP", "layer-wise relevance propagation; relevance sums to the logit minus what biases absorb",
    options=(
        Option("rule", LrpRule, "rule for convolutions: zplus keeps positive evidence only (clean maps); epsilon "
               "damps noise", label="Rule (convolutions)"),
        Option("first", FirstRule, "rule for the layer on the pixels: zb is the box rule for pixels in [0, 1]; "
               "flat spreads evenly", label="First layer (pixels)", flag="--first-rule"),
        Option("epsilon", float, "stabiliser as a fraction of each layer's output std",
               label="Epsilon (x layer std)", low=0.0, high=5.0, step=0.05, number_input=True),
    ))
