"""The layer catalogue: every spatial layer of a model, with channels, grid, layout and receptive field.

Built from the architecture, not a table: one forward pass at the model's input size runs under a
``TorchFunctionMode`` that follows every tensor. Convolutions, pools and pads update the receptive-field
geometry (size, jump, start: Araujo et al., "Computing receptive fields of CNNs", Distill 2019); element-wise
ops and residual adds take the largest field among their inputs; ``permute`` tracks NCHW <-> NHWC (ConvNeXt
runs its block MLP channels-last). Forward hooks read off each module's output.

Vision transformers (:mod:`core.tokens`) add token layers: (N, L, C) sequences over the patch grid (``NLC``,
with the number of prefix tokens) and Swin's (N, H, W, C) grids; each token's field is its own patch.
"""
from __future__ import annotations

import contextlib
import enum
import re
import threading
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .hooks import hooks_on
from .memo import PerModel
from . import tokens as tok


class Layout(str, enum.Enum):
    NCHW = "NCHW"
    NHWC = "NHWC"
    NLC = "NLC"  # transformer tokens: ``prefix`` class/distillation tokens, then the patch grid row by row


class LayerKind(str, enum.Enum):
    STEM = "stem"
    DOWNSAMPLE = "downsample"
    STAGE = "stage"
    BLOCK = "block"
    ATTN = "attn"
    CONV = "conv"
    NORM = "norm"
    ACT = "act"
    MLP = "mlp"
    LINEAR = "linear"
    POOL = "pool"
    OTHER = "other"


@dataclass(frozen=True)
class Geometry:
    """Receptive field of one axis: unit ``i`` sees input pixels centred at ``start + i * jump``,
    ``size`` pixels wide (before clipping to the image)."""

    size: float
    jump: float
    start: float

    def span(self, i: int) -> tuple[float, float]:
        """Inclusive-exclusive pixel interval [lo, hi) of unit ``i`` (unclipped)."""
        centre = self.start + i * self.jump
        return centre - (self.size - 1) / 2, centre + (self.size - 1) / 2 + 1


@dataclass(frozen=True)
class LayerInfo:
    name: str                 # dotted module name in ``model.net``
    type: str                 # module class name
    kind: LayerKind
    channels: int
    grid: tuple[int, int]     # (h, w) of the output at the model's input size
    layout: Layout
    reduction: int            # input size / grid size
    rf: tuple[Geometry, Geometry]  # (rows, cols)
    feature: bool             # listed in timm's feature_info
    depth: int                # number of dots in the name
    prefix: int = 0           # NLC only: tokens before the patch tokens (class, distillation, registers)

    @property
    def receptive_field(self) -> int:
        return int(max(self.rf[0].size, self.rf[1].size))

    def box(self, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in model-input pixels of unit (row, col), clipped to the input."""
        t, b = self.rf[0].span(row)
        l, r = self.rf[1].span(col)
        return (max(0, int(round(l))), max(0, int(round(t))), min(width, int(round(r))), min(height, int(round(b))))


_IDENTITY = (nn.Identity, nn.Dropout, nn.Dropout2d)
_NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)
_GLOBAL = object()


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


class _Tracer(TorchFunctionMode):
    """Follows geometry (per axis) and layout for every tensor produced during one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.geo: dict[int, tuple[tuple[Geometry, Geometry], Layout]] = {}
        self.keep: list[torch.Tensor] = []  # keeps ids unique while tracing

    def set(self, t: torch.Tensor, geo, layout: Layout) -> None:
        self.geo[id(t)] = (geo, layout)
        self.keep.append(t)

    def get(self, t):
        return self.geo.get(id(t)) if isinstance(t, torch.Tensor) else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        tensors += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
        known = [g for g in (self.get(t) for t in tensors) if g is not None]
        if not known or not isinstance(out, torch.Tensor):
            return out
        # a map scaled by a global statistic (squeeze-excitation, ConvNeXt V2's GRN) stays a map
        spatial = [g for g in known if g[0] is not _GLOBAL] or known
        geo, layout = max(spatial, key=lambda g: g[0][0].size if g[0] is not _GLOBAL else float("inf"))
        name = getattr(func, "__name__", "")
        if geo is not _GLOBAL:
            if name in ("conv2d", "max_pool2d", "avg_pool2d", "max_pool2d_with_indices"):
                geo = self._window(func, name, args, kwargs, geo)
            elif name == "pad" and len(args) > 1:
                pad = args[1]
                if len(pad) >= 4:  # (left, right, top, bottom)
                    geo = (Geometry(geo[0].size, geo[0].jump, geo[0].start - pad[2] * geo[0].jump),
                           Geometry(geo[1].size, geo[1].jump, geo[1].start - pad[0] * geo[1].jump))
            elif name.startswith("adaptive_") or name in ("mean", "amax", "sum", "flatten"):
                if out.dim() < 4 or out.shape[-1] == 1 or out.shape[-2] == 1:
                    geo = _GLOBAL
        if name == "permute":
            dims = tuple(args[1:]) if len(args) > 2 else tuple(args[1]) if len(args) > 1 else tuple(kwargs.get("dims", ()))
            if dims == (0, 2, 3, 1):
                layout = Layout.NHWC
            elif dims == (0, 3, 1, 2):
                layout = Layout.NCHW
        self.set(out, geo, layout)
        return out

    @staticmethod
    def _window(func, name, args, kwargs, geo):
        if name == "conv2d":
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            k = tuple(weight.shape[-2:])
            stride = _pair(args[3] if len(args) > 3 else kwargs.get("stride", 1))
            padding = args[4] if len(args) > 4 else kwargs.get("padding", 0)
            dilation = _pair(args[5] if len(args) > 5 else kwargs.get("dilation", 1))
        else:
            k = _pair(args[1] if len(args) > 1 else kwargs["kernel_size"])
            s = args[2] if len(args) > 2 else kwargs.get("stride")
            stride = _pair(s) if s not in (None, [], ()) else k
            padding = args[3] if len(args) > 3 else kwargs.get("padding", 0)
            # avg_pool2d has no dilation: its 5th argument is ceil_mode (False would read as dilation 0)
            dilation = (_pair(args[4] if len(args) > 4 else kwargs.get("dilation", 1))
                        if name.startswith("max_pool") else (1, 1))
        if isinstance(padding, str):
            padding = tuple(((kk - 1) * d) // 2 if padding == "same" else 0 for kk, d in zip(k, dilation))
        padding = _pair(padding)
        new = []
        for axis in range(2):
            g = geo[axis]
            k_eff = dilation[axis] * (k[axis] - 1) + 1
            new.append(Geometry(g.size + (k_eff - 1) * g.jump, g.jump * stride[axis],
                                g.start + ((k_eff - 1) / 2 - padding[axis]) * g.jump))
        return tuple(new)


def _kind(name: str, module: nn.Module) -> LayerKind:
    last = name.rsplit(".", 1)[-1]
    if name in ("stem", "conv_stem", "conv1", "bn1", "patch_embed") or name.startswith("stem."):
        return LayerKind.STEM
    if last == "downsample" or ".downsample." in name + ".":
        return LayerKind.DOWNSAMPLE
    if re.fullmatch(r"(stages|layers)\.\d+|layer\d+", name) or (
            re.fullmatch(r"blocks\.\d+", name) and isinstance(module, nn.Sequential)):
        return LayerKind.STAGE
    if re.fullmatch(r"((stages|layers)\.\d+\.blocks|blocks\.\d+|layer\d+)\.\d+|blocks\.\d+", name):
        return LayerKind.BLOCK
    cls = type(module).__name__.lower()
    if "attention" in cls or last == "attn":
        return LayerKind.ATTN
    if isinstance(module, nn.Conv2d) or "conv" in cls and "mlp" not in cls:
        return LayerKind.CONV
    if isinstance(module, _NORMS) or "norm" in cls:
        return LayerKind.NORM
    if "mlp" in cls:
        return LayerKind.MLP
    if isinstance(module, nn.Linear):
        return LayerKind.LINEAR
    if "pool" in cls:
        return LayerKind.POOL
    if isinstance(module, (nn.GELU, nn.ReLU, nn.SiLU, nn.ReLU6, nn.Hardswish, nn.Sigmoid)) or "act" in last:
        return LayerKind.ACT
    return LayerKind.OTHER


_cache: "PerModel[tuple[LayerInfo, ...]]" = PerModel()  # at the card's input size


def catalogue(model: nn.Module, input_size: Sequence[int] | None = None) -> tuple[LayerInfo, ...]:
    """All layers of ``model.net`` with a spatial (4-D) output, in forward order.

    Args:
        model: a :class:`core.model.LensModel` (or any module with ``.net``).
        input_size: (C, H, W); defaults to the model card's input size.
    """
    if input_size is None and model in _cache:
        return _cache.get(model)
    net = model.net
    c, h, w = input_size or model.card.input_size
    feature_names = set()
    info = getattr(net, "feature_info", None)
    if info is not None:
        try:
            feature_names = set(info.module_name()) if hasattr(info, "module_name") else {f["module"] for f in info}
        except Exception:
            feature_names = set()

    records: list[tuple[str, nn.Module, torch.Tensor, tuple, Layout, int]] = []  # geo: the grid for NLC
    tracer = _Tracer()
    tokens = tok.is_token_model(net)
    grids = [tuple(net.patch_embed.grid_size)] if tokens and hasattr(net.patch_embed, "grid_size") else []
    from .model.device import model_device  # the probe runs where the model lives

    x = torch.zeros(1, c, h, w, device=model_device(net))
    geo0 = (Geometry(1.0, 1.0, 0.0), Geometry(1.0, 1.0, 0.0))
    # Swin's window attention runs on (windows, tokens, C): no map of the image
    windowed = tuple(n + "." for n, m in net.named_modules() if "windowattention" in type(m).__name__.lower())
    with hooks_on(model) as hooks, torch.no_grad():
        for name, module in net.named_modules():
            if not name or isinstance(module, _IDENTITY) or type(module).__name__ in ("DropPath", "Identity"):
                continue
            if windowed and (name + ".").startswith(windowed):
                continue

            def record(mod, _inp, out, name=name):
                t = out[0] if isinstance(out, (tuple, list)) else out
                if not isinstance(t, torch.Tensor) or t.shape[:1] != (1,):
                    return
                g = tracer.get(t)
                if t.dim() == 4 and g is not None and g[0] is not _GLOBAL:
                    records.append((name, mod, t, g[0], g[1], 0))
                    if tokens:
                        grids.append(tuple(t.shape[1:3] if g[1] is Layout.NHWC else t.shape[2:]))
                elif tokens and t.dim() == 3:
                    match = tok.match_grid(t.shape[1], grids, tok.prefix_count(net))
                    if match is not None:
                        records.append((name, mod, t, match[0], Layout.NLC, match[1]))
            hooks.forward(module, record)
        with tracer:
            tracer.set(x, geo0, Layout.NCHW)
            net(x)

    layers = []
    seen = set()
    for name, module, t, geo, layout, prefix in records:
        if name in seen:
            continue
        seen.add(name)
        if layout is Layout.NLC:  # ``geo`` holds the patch grid the tokens were matched to
            channels, grid = t.shape[2], geo
        elif layout is Layout.NHWC:
            channels, grid = t.shape[3], (t.shape[1], t.shape[2])
        else:
            channels, grid = t.shape[1], (t.shape[2], t.shape[3])
        if tokens:  # a token's anchor field is its own patch (attention reaches the whole image)
            geo = tuple(Geometry(float(s / g), float(s / g), (s / g - 1) / 2) for s, g in zip((h, w), grid))
        layers.append(LayerInfo(
            name=name, type=type(module).__name__, kind=_kind(name, module), channels=int(channels),
            grid=(int(grid[0]), int(grid[1])), layout=layout, reduction=max(1, round(h / max(1, grid[0]))),
            rf=geo, feature=name in feature_names, depth=name.count("."), prefix=int(prefix)))
    result = tuple(layers)
    if input_size is None:
        _cache.set(model, result)
    return result


def find_layer(model: nn.Module, name: str) -> LayerInfo:
    """The catalogue entry called ``name``; KeyError lists a few valid names."""
    layers = catalogue(model)
    for layer in layers:
        if layer.name == name:
            return layer
    hint = ", ".join(l.name for l in layers if l.feature or l.kind in (LayerKind.STAGE,))[:200]
    raise KeyError(f"no spatial layer {name!r} in {model.card.arch} (e.g. {hint})")


def default_layer(model: nn.Module) -> LayerInfo:
    """The last feature layer (ConvNeXt: ``stages.3``): the usual Grad-CAM layer.

    A ViT whose head reads the class token only gets the next-to-last block: the last block's patch tokens never
    reach the logit, so their gradient is zero."""
    layers = catalogue(model)
    features = [l for l in layers if l.feature] or list(layers)
    if len(features) > 1 and features[-1].layout is Layout.NLC and tok.pools_class_token(model.net):
        return features[-2]
    return features[-1]


def to_nchw(t: torch.Tensor, layer: LayerInfo) -> torch.Tensor:
    """A layer's output in (N, C, h, w), whatever its layout (NLC: the patch tokens over the grid, prefix
    tokens dropped; :func:`core.tokens.split_tokens` keeps them)."""
    if layer.layout is Layout.NLC:
        return tok.split_tokens(t, layer.grid, layer.prefix)[0]
    return t.permute(0, 3, 1, 2) if layer.layout is Layout.NHWC else t


def layer_outputs(model, x: torch.Tensor, layers: Sequence[LayerInfo], *, grad: bool = False,
                  prefix: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for ``x`` (N, 3, H, W) in [0, 1], each as (N, C, h, w) whatever the layer's layout.

    Token layers give their patch tokens as the map; with a ``prefix`` dict, their prefix tokens (N, P, C) are
    stored there by layer name (class and distillation tokens have no place on the grid).

    The forward pass stops once every asked-for layer has fired (the head is never run). Without ``grad`` it
    runs under ``inference_mode``; with it, gradients flow to ``x`` when ``x`` requires them. Hooks go through
    :func:`core.hooks.hooks_on`; only this thread's pass is read and stopped (a plain forward from another
    thread, e.g. a prediction, runs through).
    """
    class _Done(Exception):
        pass

    outs: dict[str, torch.Tensor] = {}
    by_module = {}
    for layer in layers:
        by_module.setdefault(model.layer(layer.name), []).append(layer)
    owner = threading.get_ident()
    with hooks_on(model) as hooks, (contextlib.nullcontext() if grad else torch.inference_mode()):
        for module, infos in by_module.items():
            def keep(_m, _inp, output, infos=infos):
                if threading.get_ident() != owner:
                    return
                t = output[0] if isinstance(output, (tuple, list)) else output
                for info in infos:
                    outs.setdefault(info.name, to_nchw(t, info))
                    if prefix is not None and info.layout is Layout.NLC:
                        prefix.setdefault(info.name, t[:, :info.prefix])
                if len(outs) == len(layers):
                    raise _Done
            hooks.forward(module, keep)
        try:
            model(x)
        except _Done:
            pass
    missing = [l.name for l in layers if l.name not in outs]
    if missing:
        raise RuntimeError(f"layers never ran in the forward pass: {', '.join(missing)}")
    return outs


def layer_output(model, x: torch.Tensor, layer: LayerInfo, *, grad: bool = False) -> torch.Tensor:
    """The output (N, C, h, w) of one layer: :func:`layer_outputs` for a single layer."""
    return layer_outputs(model, x, [layer], grad=grad)[layer.name]
