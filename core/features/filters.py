"""Filter views: the first layer's kernels as RGB tiles, depthwise kernels, per-layer weight statistics.

First-layer kernels act on the *normalised* image; dividing each colour plane by the normalisation std gives
the kernel in the RGB pixel space the user sees, which is what the tiles show. Each tile is scaled on its own
(grey = 0), so shapes are comparable but magnitudes are not (``norms`` gives them); a kernel under 1/1000
of the layer's largest weight (a dead filter) stays grey.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model.wrapper import LensModel


@dataclass(frozen=True)
class Kernels:
    """``tiles``: float32 (O, C, k, k) in [0, 1], 0.5 = zero weight (C = 3 for RGB, 1 for depthwise).
    ``weights``: the raw kernels (O, C, k, k). ``norms`` (O,): L2 norm of each kernel."""

    layer: str
    tiles: torch.Tensor
    weights: torch.Tensor
    norms: torch.Tensor
    stride: tuple[int, int]


@dataclass(frozen=True)
class WeightStats:
    name: str
    type: str
    shape: tuple[int, ...]
    params: int
    mean: float
    std: float
    abs_max: float
    near_zero: float      # fraction of weights with |w| < 1e-3 * abs_max
    dead: int             # output channels whose kernel norm is < 1e-6 of the largest


def first_conv(model: LensModel) -> tuple[str, nn.Conv2d]:
    """(name, module) of the first convolution on the 3 colour channels (ConvNeXt: the 4x4 patchify stem)."""
    for name, m in model.net.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            return name, m
    raise ValueError(f"{model.card.arch} has no convolution on the colour channels")


def _tiles(w: torch.Tensor) -> torch.Tensor:
    # per-kernel scale, floored at 1e-3 of the layer's largest weight: a dead kernel stays grey, not amplified noise
    peak = w.flatten(1).abs().amax(1)
    scale = peak.clamp(min=max(1e-12, 1e-3 * float(peak.max()))).view(-1, *([1] * (w.dim() - 1)))
    return (0.5 + 0.5 * w / scale).clamp(0, 1)


def _kernels(layer: str, w: torch.Tensor, stride) -> Kernels:
    w = w.cpu()  # the kernels come back to the CPU for display
    return Kernels(layer, _tiles(w), w, w.flatten(1).norm(dim=1), tuple(stride))


def first_layer_kernels(model: LensModel) -> Kernels:
    """The first layer's kernels in RGB pixel space, as tiles (O, 3, k, k) on the CPU."""
    name, conv = first_conv(model)
    return _kernels(name, conv.weight.detach().float() / model.std.view(1, 3, 1, 1), conv.stride)


def depthwise_layers(model: LensModel) -> list[str]:
    """Names of depthwise convolutions (ConvNeXt: every block's 7x7 ``conv_dw``)."""
    return [n for n, m in model.net.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels]


def depthwise_kernels(model: LensModel, layer: str) -> Kernels:
    """A depthwise convolution's kernels as greyscale tiles (C, 1, k, k) on the CPU."""
    conv = model.layer(layer)
    if layer not in depthwise_layers(model):
        raise ValueError(f"{layer} is not a depthwise convolution (try one of {depthwise_layers(model)[:3]})")
    return _kernels(layer, conv.weight.detach().float(), conv.stride)


def weight_stats(model: LensModel) -> tuple[WeightStats, ...]:
    """Statistics of every convolution, linear and norm layer's weight, in module order."""
    rows = []
    for name, m in model.net.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or not isinstance(
                m, (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
            continue
        w = w.detach().float()
        amax = float(w.abs().max()) if w.numel() else 0.0
        per_out = w.flatten(1).norm(dim=1) if w.dim() > 1 else w.abs()
        rows.append(WeightStats(
            name=name, type=type(m).__name__, shape=tuple(w.shape), params=sum(p.numel() for p in m.parameters(False)),
            mean=float(w.mean()), std=float(w.std(unbiased=False)), abs_max=amax,
            near_zero=float((w.abs() < 1e-3 * amax).float().mean()) if amax > 0 else 1.0,
            dead=int((per_out < 1e-6 * float(per_out.max())).sum()) if per_out.numel() and float(per_out.max()) > 0 else 0))
    return tuple(rows)


def mosaic(tiles: torch.Tensor, *, columns: int | None = None, zoom: int = 8, gap: int = 1) -> torch.Tensor:
    """Tiles (O, C, k, k) in [0, 1] laid out in a grid, each enlarged ``zoom`` times: float (3, H, W) in [0, 1],
    white gaps between tiles."""
    o, c, kh, kw = tiles.shape
    columns = columns or max(1, int(round(o ** 0.5)))
    rows = -(-o // columns)
    th, tw = kh * zoom, kw * zoom
    out = torch.ones(3, rows * (th + gap) + gap, columns * (tw + gap) + gap)
    big = tiles.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3).expand(o, 3, th, tw)
    for i in range(o):
        r, col = divmod(i, columns)
        out[:, gap + r * (th + gap): gap + r * (th + gap) + th, gap + col * (tw + gap): gap + col * (tw + gap) + tw] = big[i]
    return out
