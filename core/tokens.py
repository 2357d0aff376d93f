"""Token layers of vision transformers (ViT, DeiT, EVA-02, BEiT, Swin) as maps over the patch grid.

A ViT-family block works on a token sequence (N, L, C): ``prefix`` class/distillation/register tokens, then one
token per patch in row-major order over the patch grid (h, w). Swin keeps its tokens as an (N, H, W, C) grid
(NHWC) but flattens them to (N, H*W, C) around the MLP. :func:`to_nchw` is the one conversion every technique uses
to see any of these as an (N, C, h, w) map; :func:`split_tokens` also hands back the prefix tokens, kept apart.

The receptive field a catalogue entry gives a token is its own patch (the anchor: what the activation index crops
and what a similarity click points at). Through attention every token of a block can read the whole image, so the
field in the sense of "pixels that can change the value" is the input; see docs/transformers.md.

Attention probabilities are read on a private copy of the model whose attention modules take the explicit path
(``fused_attn = False``: softmax, then ``attn_drop``): :func:`explicit_attention`. The shared model keeps timm's
fused kernel for every other caller; the copy shares every weight tensor, so it costs the module objects only.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .memo import PerModel


def is_token_model(net: nn.Module) -> bool:
    """Whether ``net`` embeds patches as tokens (timm's ViT family and Swin: a ``patch_embed`` module)."""
    return isinstance(getattr(net, "patch_embed", None), nn.Module)


def prefix_count(net: nn.Module) -> int:
    """Class, distillation and register tokens before the patch tokens (0 for Swin)."""
    return int(getattr(net, "num_prefix_tokens", 0) or 0)


def pools_class_token(net: nn.Module) -> bool:
    """The head reads the class (and distillation) token only, not an average over patch tokens."""
    return getattr(net, "global_pool", None) == "token" and prefix_count(net) > 0


def match_grid(length: int, grids: Sequence[tuple[int, int]], prefix: int) -> tuple[tuple[int, int], int] | None:
    """((h, w), prefix tokens) of a sequence of ``length`` tokens over one of ``grids`` (latest first tried), with
    either no prefix token or the model's ``prefix``; None when it is no token map."""
    for grid in reversed(list(grids)):
        for p in dict.fromkeys((prefix, 0)):
            if length - p == grid[0] * grid[1]:
                return grid, p
    return None


def grid_of(tokens: int, grid: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) of ``tokens`` patch tokens: ``grid`` when it fits, else the square (another input size)."""
    if tokens == grid[0] * grid[1]:
        return grid
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{tokens} patch tokens do not make the {grid[0]}x{grid[1]} grid or a square one")
    return side, side


def split_tokens(t: torch.Tensor, grid: tuple[int, int], prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An (N, L, C) token sequence as (maps (N, C, h, w) over the patch grid, prefix tokens (N, prefix, C))."""
    n, length, c = t.shape
    h, w = grid_of(length - prefix, grid)
    return t[:, prefix:].transpose(1, 2).reshape(n, c, h, w), t[:, :prefix]


def fit_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, 3, H, W) resized (bilinear, differentiable) to the model's input size when the model embeds
    patches at a fixed size (timm's ``strict_img_size``, e.g. a ViT's position embeddings); else ``x`` itself."""
    embed = getattr(model.net, "patch_embed", None)
    size = tuple(model.card.input_size[1:])
    if not getattr(embed, "strict_img_size", False) or tuple(x.shape[-2:]) == size:
        return x
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


def attention_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """timm's attention modules of ``net`` in forward order: those with a ``fused_attn`` switch whose explicit
    path sends the softmax probabilities through an ``attn_drop`` dropout (where our hook reads them)."""
    return [(name, m) for name, m in net.named_modules()
            if hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Dropout)]


_explicit: PerModel = PerModel()


def explicit_attention(model: nn.Module) -> nn.Module:
    """A private copy of ``model`` (a :class:`~core.model.LensModel`) whose attention runs the explicit path,
    made once per model. It shares every parameter and buffer with ``model``; ``model`` itself is never changed,
    so other callers (threads, sessions) keep the fused kernel."""
    def make() -> nn.Module:
        twin = model.replica()
        for _name, m in attention_modules(twin.net):
            m.fused_attn = False
        return twin
    return _explicit.get_or_make(model, make)
