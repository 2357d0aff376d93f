"""LRP's private copy of a network: each leaf module's kind (which rule applies), the layer on the pixels, and
BatchNorm folded into the convolution before it. :func:`prepare` makes it once per model; :mod:`.lrp` holds the
rules that run on it.

The copy shares every parameter and buffer tensor with the model except the folded convolutions' (new tensors),
and no module works in place.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from ..memo import PerModel
from .base import NotApplicable
from .lrp_transformer import TransformerParts, own_qkv_bias, transformer_parts
from ..hooks import hooks_on, private_copy
from ..model.wrapper import LensModel


_ACTS = ("relu", "relu6", "gelu", "silu", "swish", "hardswish", "leakyrelu", "elu", "mish", "tanh", "quickgelu",
         "geluapprox", "gelutanh")
_GATES = ("sigmoid", "hardsigmoid", "hardsigmoidme", "gatesigmoid")
_PASS = (nn.Identity, nn.Dropout, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.BatchNorm2d)
# linear maps with no bias (a layer scale, an average), or modules that only make a bias from parameters (rotary
# and relative position tables): relevance passes them unchanged or never reaches them
_PASS_NAMES = ("droppath", "identity", "layerscale", "layerscale2d", "fastadaptiveavgpool", "patchdropout",
               "rotaryembeddingcat", "rotaryembedding", "relativepositionbias")


@dataclass
class _Prepared:
    """A network ready for LRP.

    Attributes:
        net: the private copy (eval mode, BatchNorm folded).
        first: its convolution on the pixels.
        kinds: every leaf module of ``net`` -> "conv", "linear", "layernorm", "grn", "gate", "act" or "pass".
        folded: how many BatchNorm layers were folded.
        tokens: a vision transformer's attention projections and gated MLPs (:mod:`.lrp_transformer`), or
            None (a CNN).
    """

    net: nn.Module
    first: nn.Conv2d
    kinds: dict[nn.Module, str]
    folded: int
    tokens: TransformerParts | None = None
    # z+'s |w| and -b (signed inputs) or 2 w+ (non-negative inputs) per convolution or Linear layer
    # (lrp._plus_from), made on the first z+ pass that needs them and kept (the size of the weights): taking |w|
    # on every call would be a pass over all of them
    plus: dict[nn.Module, dict] = field(default_factory=dict)


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
    if name == "globalresponsenorm":
        return "grn"
    if name in _GATES:
        return "gate"
    if type(module) is nn.ReLU:  # its gradient already is the identity rule's 1[x > 0]
        return "pass"
    if name in _ACTS:
        return "act"
    if isinstance(module, _PASS) or name in _PASS_NAMES:
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
    tokens = transformer_parts(net, model.card.arch)
    if tokens is not None:
        own_qkv_bias(net)
    kinds = {}
    for name, m in net.named_modules():
        if next(m.children(), None) is not None and not isinstance(m, nn.BatchNorm2d):
            continue
        kind = _kind(m) or ("pass" if tokens is not None and m in tokens.softmaxes else None)
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
    return _Prepared(net, first, kinds, len(pairs), tokens)


def _trace(net: nn.Module, shape: tuple[int, ...], device: torch.device
           ) -> tuple[nn.Module | None, list[tuple[nn.Conv2d, nn.BatchNorm2d]]]:
    """One forward of a zero image of ``shape`` (1, C, H, W): the module that sees the pixels, and every
    BatchNorm that reads a convolution's output directly (each pair once). A net without BatchNorm is traced
    only up to the module that sees the pixels."""
    outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # the tensors are kept: no id is reused mid-trace
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    first: list[nn.Module] = []
    x = torch.zeros(shape, device=device, dtype=next(net.parameters(), torch.empty(0)).dtype)
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
