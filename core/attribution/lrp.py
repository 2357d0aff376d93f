"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al., "LRP: an overview", 2019) for CNNs,
ConvNeXt (V1 and V2) included, and for vision transformers (AttnLRP, Achtibat et al., ICML 2024; CP-LRP, Ali et al.,
ICML 2022).

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
- Global Response Normalisation (ConvNeXt V2), ``x + gamma * (x * N(x)) + beta``: the normaliser ``N(x)`` (each
  channel's spatial L2 norm over their mean) is treated as a constant, like LayerNorm's std: the layer becomes
  the per-channel scaling ``x * (1 + gamma N)``; ``beta`` is a bias.
- Sigmoid gates (squeeze-excite): constant, so the gated branch passes relevance and the gate gets none.
- BatchNorm: folded into the convolution before it (on a private copy of the network that shares every
  tensor the folding leaves alone, made by :mod:`.lrp_prepare`) and removed; a BatchNorm with no convolution
  before it stays as a per-channel affine map.
- First layer (the pixels; a transformer's patch embedding): ``zb`` (the box rule for inputs bounded by the pixel
  range [0, 1]), ``flat`` (relevance spread evenly over the receptive field) or ``epsilon``.

Vision transformers (``rule`` ``zplus`` or ``epsilon``: AttnLRP with that rule on the linear layers; ``cp``:
CP-LRP with the epsilon rule on them):

- Softmax: AttnLRP's rule ``R_in = x * (R_out - s * sum(R_out))`` (the softmax linearised at its input, the bias
  of that linearisation absorbed) is gradient x input through the softmax, so the softmax's own gradient is kept:
  timm's fused attention kernel runs unchanged (the probabilities are never materialised). The rule does not
  conserve: the absorbed bias takes the share of the relevance that the attention weights' variation does not
  explain (all of it for uniform attention).
- ``Q K^T`` and ``A V``: the uniform rule, half of a product's relevance to each factor. Gradient x input gives
  each factor of a bilinear product the whole relevance, so the gradient into each is halved: 1/2 at V, 1/4 at
  Q and K (half of the attention weights' half). The factors are applied channel-wise to the gradient at the Q, K,
  V projections' outputs, which is the same: everything between (head reshape, rotary embedding, QK-norm under its
  rule, the attention's backward) is linear in the incoming gradient.
- CP-LRP: the attention weights held constant: no gradient into Q and K, V takes the whole relevance (exactly
  conservative).
- Gated MLP (EVA-02's SwiGLU, ``act(g) * x``): AttnLRP: the uniform rule on the product and the identity rule on
  the SiLU; CP-LRP: the gate held constant, all relevance to ``x``.
- Layer scale is linear; position embeddings, class and distillation tokens and relative position biases (BEiT,
  Swin, with Swin's shift mask) are biases: they absorb their share. A DeiT's two heads are averaged as timm's
  eval does, each head under the classifier's epsilon rule.

Any other leaf module is refused (:class:`~.base.NotApplicable`), and so is a transformer family whose blocks were
not checked (:mod:`.lrp_transformer`). Relevance is conserved exactly by ``zplus``, ``zb``, ``flat``, the gate /
LayerNorm / GRN rules and CP-LRP's attention; biases, LayerNorm shifts, epsilon and AttnLRP's softmax absorb some.
``relevance_sum`` against ``logit`` shows how much.
"""
from __future__ import annotations

import enum
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import Progress, report
from .base import Attribution, NotApplicable
from .lrp_prepare import prepare
from .spec import MethodSpec, Option
from ..inputs import Target, resolve_target
from ..hooks import hooks_on
from ..model.wrapper import LensModel


class LrpRule(str, enum.Enum):
    """The LRP rule for convolutions and channel-wise Linear layers; on a vision transformer ``zplus`` and
    ``epsilon`` run AttnLRP with that rule on the linear layers, ``cp`` runs CP-LRP (attention weights constant,
    epsilon on the linear layers; transformers only)."""

    EPSILON = "epsilon"
    ZPLUS = "zplus"
    CP = "cp"


class FirstRule(str, enum.Enum):
    """The LRP rule for the layer on the pixels."""

    ZB = "zb"
    FLAT = "flat"
    EPSILON = "epsilon"


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


ROUNDING = 2.0 ** -13  # a z+ below this share of |a| |w| is float32 rounding of cancelling terms (_plus_from)


def _plus_from(module: nn.Module, a: torch.Tensor, out: torch.Tensor, plus: dict[nn.Module, dict]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Twice the positive contributions ``(a w)+`` per output (no bias), attached to ``a``'s graph, and the
    denominator of the z+ rule's factor (detached; inf where the output has no positive contribution).

    On a signed input ``2 (a+ w+ + a- w-) = a w + |a| |w|``, from the layer's own output: one extra product
    instead of two (and one extra backward instead of two). The two terms cancel wherever the contributions are
    negative, so a ``2 z+`` below ``ROUNDING`` of ``|a| |w|`` is float32 rounding, not evidence: dividing by it
    would multiply a unit's relevance by up to 1e9 into that rounding. Such an output counts as having no positive
    contribution, as in exact arithmetic. On a non-negative input (after a ReLU) ``2 z+`` is ``a (2 w+)``: one
    product each way and no cancellation. The factor 2 cancels in the z+ rule (gradient of ``2 zp`` times
    ``out / (2 zp)``), so it is not divided out. ``plus`` keeps each layer's ``|w|`` and ``-b``, or ``2 w+``, as
    its inputs need them (two threads may both make one: the same values)."""
    kept = plus.setdefault(module, {})

    def weights(name: str, make):
        value = kept.get(name)
        if value is None:
            value = kept[name] = make(module.weight.detach(), module.bias)
        return value

    if not a.detach().lt(0).any():
        zp2 = _apply(module, a, weights("2w+", lambda w, b: w.clamp(min=0).mul_(2)))
        floor = 0.0
    else:
        bias = module.bias
        # |a| |w| - b: the output's bias is no contribution
        shifted = _apply(module, a.abs(), weights("|w|", lambda w, b: w.abs()),
                         None if bias is None else weights("-b", lambda w, b: -b.detach()))
        zp2 = shifted + out
        floor = shifted.detach()  # autograd keeps no output of these ops: their storage is free to reuse
        if bias is not None:
            floor.add_(bias.detach() if isinstance(module, nn.Linear) else bias.detach().view(-1, 1, 1))
        floor = floor.mul_(ROUNDING)
    d = zp2.detach()
    return zp2, d.masked_fill(d <= floor, torch.inf)


def _times(factor: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``factor * grad``, in place into ``factor`` except in a batched backward (:func:`from_layer`), where one
    factor serves a whole batch of gradients."""
    try:
        return factor.mul_(grad)
    except RuntimeError:  # vmap refuses it before writing; the grad does not show it is batched
        return factor * grad


def _gate_grad(grad, a, out):
    # the gate f(a) / a held constant; 0 where a == 0 (f(0) = 0 for every activation with a gate rule: 0 / 0)
    return _times(torch.div(out, a).nan_to_num_(0.0, 0.0, 0.0), grad)


def _eps_grad(epsilon: float):
    def fn(grad, out):
        # z / (z + eps sign z), with sign(+-0) = +-1 as in _stable; three passes over the tensor
        eps = _rel_eps(out, epsilon)
        return _times(torch.copysign(eps.expand_as(out), out).add_(out).reciprocal_().mul_(out), grad)
    return fn


def _zplus_grad(grad, out, denominator):
    return _times(torch.div(out, denominator), grad)  # 0 where there is no positive contribution


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


def _grn_grad(module: nn.Module):
    def fn(grad, a):
        # y = x (1 + gamma N(x)) + beta with N held constant: the per-channel scaling's transpose
        g = a.norm(p=2, dim=module.spatial_dim, keepdim=True)
        n = g.div_(g.mean(dim=module.channel_dim, keepdim=True).add_(module.eps))
        return grad * n.mul_(module.weight.detach().view(module.wb_shape)).add_(1.0)
    return fn


def _scale_grad(factor):
    def fn(grad):
        return grad * factor
    return fn


def _rule_hooks(hooks, prep, rule: LrpRule, epsilon: float, seen: dict) -> None:
    """The rule hook on every ruled layer of ``prep.net``, and a transformer's attention and GLU rules; the first
    layer's input and output go to ``seen`` (``a``, ``z``) for the rule on the pixels."""
    linear = LrpRule.EPSILON if rule is LrpRule.CP else rule
    for m, kind in prep.kinds.items():
        if m is prep.first:
            def keep(_m, inp, out):
                seen["a"], seen["z"] = inp[0], out
            hooks.forward(m, keep)
        elif kind != "pass":
            hooks.forward(m, _rule_hook(kind, linear, epsilon, prep.plus))
    if prep.tokens is not None:  # registered after the rule hooks: they see the ruled outputs
        _attention_hooks(hooks, prep.tokens, cp=rule is LrpRule.CP)


_SPLIT = {"q": 0.25, "k": 0.25, "v": 0.5}  # AttnLRP's uniform rule on Q K^T and A V, as gradient factors
_CONSTANT = {"q": 0.0, "k": 0.0, "v": 1.0}  # CP-LRP: the attention weights constant


def _attention_hooks(hooks, parts, *, cp: bool) -> None:
    """The attention rules at the Q, K, V projections and the GLU rules (module docstring)."""
    share = _CONSTANT if cp else _SPLIT
    for proj, part in parts.projections:
        if part == "qkv":
            third = proj.out_features // 3
            factor = torch.tensor([share[p] for p in "qkv"], device=proj.weight.device,
                                  dtype=proj.weight.dtype).repeat_interleave(third)
        else:
            factor = share[part]
        hooks.forward(proj, lambda _m, _i, out, factor=factor: _keep_value(out, out, _scale_grad(factor)))
    for glu in parts.glus:
        if cp:
            hooks.forward(glu.act, lambda _m, _i, out: out.detach())
        else:
            hooks.forward(glu.drop1, lambda _m, _i, out: _keep_value(out, out, _scale_grad(0.5)))


def _rule_hook(kind: str, rule: LrpRule, epsilon: float,
               plus: dict[nn.Module, dict]):
    def hook(module, inp, out):
        a = inp[0]
        if not a.requires_grad:  # below where a backward starts (relevance_at): no gradient comes here
            return None
        if kind == "act":
            return _keep_value(out, a, _gate_grad, a.detach(), out.detach())
        if kind == "gate":
            return out.detach()
        if kind == "grn":
            return _keep_value(out, a, _grn_grad(module), a.detach())
        if kind == "layernorm":
            dims = (1,) if type(module).__name__ == "LayerNorm2d" else tuple(range(-len(module.normalized_shape), 0))
            shape = (-1, 1, 1) if dims == (1,) else module.weight.shape if module.weight is not None else None
            weight = (module.weight.detach(),) if module.weight is not None else ()
            return _keep_value(out, a, _layernorm_grad(dims, module.eps, shape), a.detach(), *weight)
        # conv / linear
        if rule is LrpRule.ZPLUS and (kind == "conv" or a.dim() > 2):
            zp2, denominator = _plus_from(module, a, out, plus)
            return _keep_value(out, zp2, _zplus_grad, out.detach(), denominator)
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
        rule: rule for convolutions and channel-wise Linear layers: ``epsilon`` or ``zplus``; on a vision
            transformer these run AttnLRP, and ``cp`` runs CP-LRP (module docstring).
        first: rule for the layer on the pixels (a transformer's patch embedding).
        epsilon: stabiliser as a fraction of each layer's output standard deviation (0.25 damps noise;
            1e-9 is LRP-0, which equals gradient x input on ReLU networks).

    Returns:
        ``map`` float32 (N, H, W), pixel relevance summed over colour channels (signed, logit units); ``raw``
        (N, 3, H, W); ``metrics``: ``relevance_sum`` (N,), ``raw.sum()`` per image, and ``logit`` (N,), the
        model's logit for ``target``: equal under full conservation.

    Raises:
        NotApplicable: a layer type with no rule here; ``cp`` on a model without attention.
    """
    started = time.perf_counter()
    rule, first = LrpRule(rule), FirstRule(first)
    prep = _prepared(model, rule)
    xn = model.normalise(x.detach()).requires_grad_(True)
    seen: dict[str, torch.Tensor] = {}
    # the rule hooks fire only in this call's passes (core.hooks), so concurrent LRP calls share prep.net
    with hooks_on(prep.net) as hooks:
        _rule_hooks(hooks, prep, rule, epsilon, seen)
        logits = prep.net(xn)
        t = resolve_target(model, x, target, logits=logits.detach())
        chosen = logits.gather(1, t[:, None])[:, 0]
        (c,) = torch.autograd.grad(chosen.sum(), seen["z"])
    rel = (seen["z"] * c).detach()
    low = ((0 - model.mean) / model.std).to(xn)
    high = ((1 - model.mean) / model.std).to(xn)
    raw = _first_layer(prep.first, seen["a"].detach(), rel, first, epsilon, low, high).detach().float()
    report(progress, 1.0, "LRP: done")
    notes = (_rules_note(prep, rule, first),)
    return Attribution(map=raw.sum(1), raw=raw, method="lrp", target=[int(v) for v in t],
                       seconds=time.perf_counter() - started, notes=notes,
                       options={"rule": rule.value, "first": first.value, "epsilon": float(epsilon)},
                       metrics={"relevance_sum": tuple(float(v) for v in raw.flatten(1).sum(1)),
                                "logit": tuple(float(v) for v in chosen.detach())})


def _prepared(model: LensModel, rule: LrpRule):
    prep = prepare(model)
    if rule is LrpRule.CP and prep.tokens is None:
        raise NotApplicable(f"the cp rule (CP-LRP) holds attention weights constant; {model.card.arch} has no "
                            "attention: use zplus or epsilon")
    return prep


def _rules_note(prep, rule: LrpRule, first: FirstRule) -> str:
    grn = " and GRN normalisers" if "grn" in prep.kinds.values() else ""
    if prep.tokens is None:
        return (f"rules: {rule.value} (convolutions), {first.value} (pixels), epsilon for the classifier; "
                f"GELU/SiLU gates, LayerNorm std{grn} held constant; {prep.folded} BatchNorm folded")
    glu = ", GLU product" if prep.tokens.glus else ""
    if rule is LrpRule.CP:
        attention = f"CP-LRP: attention weights{' and GLU gates' if glu else ''} held constant"
    else:
        attention = f"AttnLRP: softmax by gradient x input, uniform rule on Q K^T and A V{glu}"
    linear = LrpRule.EPSILON if rule is LrpRule.CP else rule
    return (f"{prep.tokens.family}, {attention}; {linear.value} (linear layers), {first.value} (patch embedding), "
            "epsilon for the classifier; GELU/SiLU gates and LayerNorm std held constant")


LRP = MethodSpec(
    "lrp", lrp, "LRP", "layer-wise relevance propagation; relevance sums to the logit minus what biases absorb",
    options=(
        Option("rule", LrpRule, "rule for convolutions and linear layers: zplus keeps positive evidence only "
               "(clean maps); epsilon damps noise. On a vision transformer both run AttnLRP (attention through its "
               "softmax rule); cp runs CP-LRP (attention weights held constant, epsilon on linear layers; "
               "transformers only)", label="Rule"),
        Option("first", FirstRule, "rule for the layer on the pixels: zb is the box rule for pixels in [0, 1]; "
               "flat spreads evenly", label="First layer (pixels)", flag="--first-rule"),
        Option("epsilon", float, "stabiliser as a fraction of each layer's output std",
               label="Epsilon (x layer std)", low=0.0, high=5.0, step=0.05, number_input=True),
    ))
