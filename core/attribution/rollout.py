"""Attention rollout (Abnar & Zuidema, ACL 2020) and gradient-weighted rollout (Chefer et al., 2021).

Both follow how attention mixes tokens from the input up to the tokens the head reads:

- ``rollout``: each layer's head-averaged attention ``A`` with the residual added, ``0.5 A + 0.5 I``, multiplied
  through the layers. It never looks at the class: the same map for every target (class-agnostic).
- ``grad-rollout``: each layer's attention weighted by the gradient of the target logit,
  ``Ā = mean_heads((∇A ⊙ A)⁺)``, accumulated as ``R ← R + Ā R`` from ``R = I`` (Chefer, Gur & Wolf; the
  gradient-times-attention rule of their ICCV 2021 paper, which needs no LRP relevances; their CVPR 2021 method
  weights the attention by its LRP relevance instead). Class-specific.

Only the rows the head reads are needed, so the product is taken from the output side as a vector times each
layer's matrix: the class token's row (class and distillation rows averaged for DeiT-distilled), or the mean over
the patch tokens for an average-pooling head (EVA-02, BEiT, Swin). Swin's shifted-window attention is applied
window by window on the block's own grid, and patch merging shares a merged token's value among the 2×2 tokens
it came from, so the map ends on the first stage's grid.

Attention probabilities are read by scoped hooks on each attention module's ``attn_drop`` (where timm's explicit
path sends the softmax output) on :func:`core.tokens.explicit_attention`'s private copy: the shared model keeps
its fused kernel.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import Progress, report
from .base import Attribution, NotApplicable, batches, check_input, resolve_target
from .spec import MethodSpec
from ..hooks import hooks_on
from ..tokens import attention_modules, explicit_attention, grid_of, is_token_model, pools_class_token, prefix_count


@dataclass
class Step:
    """One attention layer as a forward pass met it.

    Attributes:
        probs: attention probabilities, (N, heads, L, L) or for windows (N * windows, heads, A, A), in [0, 1].
        grad: d logit[target] / d probs (same shape), or None.
        grid: (h, w) of the tokens the layer attends over (the block's grid for Swin).
        prefix: tokens before the patch tokens.
        window: (wh, ww) for window attention, else None. shift: its cyclic shift.
    """

    probs: torch.Tensor
    grad: torch.Tensor | None
    grid: tuple[int, int]
    prefix: int
    window: tuple[int, int] | None = None
    shift: tuple[int, int] = (0, 0)


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def check_applies(model: nn.Module, method: str) -> list[tuple[str, nn.Module]]:
    """The attention modules ``method`` reads; NotApplicable when the model has none (a CNN)."""
    net = model.net
    mods = attention_modules(net)
    if not is_token_model(net) or not mods:
        raise NotApplicable(f"{method} reads self-attention between patch tokens; {model.card.arch} has no "
                            "attention layers (a CNN): use Grad-CAM or a gradient method")
    return mods


def attention_steps(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *,
                    method: str = "rollout") -> list[Step]:
    """The attention probabilities of every layer for ``x`` (N, 3, H, W) in [0, 1], in forward order, with
    their gradients for ``target`` (N,) when given."""
    check_applies(model, method)
    twin = explicit_attention(model)
    mods = attention_modules(twin.net)
    prefix = prefix_count(twin.net)
    patch_grid = tuple(getattr(twin.net.patch_embed, "grid_size", (0, 0)))
    probs: list[torch.Tensor] = []
    grids: dict[int, tuple[int, int]] = {}
    with hooks_on(twin) as hooks:
        for i, (name, attn) in enumerate(mods):
            hooks.forward(attn.attn_drop, lambda _m, _i, out: probs.append(out))
            block = twin.net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
            if block is not None and hasattr(block, "window_size"):
                def grid_of_block(_m, inputs, i=i):
                    grids[i] = tuple(inputs[0].shape[1:3])  # Swin blocks take (N, H, W, C)
                hooks.forward_pre(block, grid_of_block)
        if target is None:
            with torch.inference_mode():
                twin(x)
            grads: Sequence[torch.Tensor | None] = [None] * len(probs)
        else:
            xin = x.detach().clone().requires_grad_(True)  # the attention must be part of a graph
            with torch.enable_grad():
                logits = twin(xin)
                score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
                grads = torch.autograd.grad(score, probs, allow_unused=True)
    if len(probs) != len(mods):
        raise NotApplicable(f"{method}: {len(probs)} of {len(mods)} attention layers gave their probabilities")
    steps = []
    for i, ((name, attn), p, g) in enumerate(zip(mods, probs, grads)):
        p = p.detach().float()
        g = None if target is None else (torch.zeros_like(p) if g is None else g.detach().float())
        if i in grids:
            block = twin.net.get_submodule(name.rsplit(".", 1)[0])
            steps.append(Step(p, g, grids[i], 0, _pair(block.window_size), _pair(block.shift_size)))
        else:
            steps.append(Step(p, g, grid_of(p.shape[-1] - prefix, patch_grid), prefix))
    return steps


def window_index(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """(windows, wh * ww) token indices (row-major over ``grid``) of each window position, as Swin partitions its
    cyclically shifted, padded grid; -1 for padding."""
    (h, w), (wh, ww) = grid, window
    idx = torch.arange(h * w).view(1, 1, h, w)
    if any(shift):
        idx = torch.roll(idx, shifts=(-shift[0], -shift[1]), dims=(2, 3))
    idx = F.pad(idx, (0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh), value=-1)[0, 0]
    hp, wp = idx.shape
    return idx.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)


def _times(v: torch.Tensor, mix: torch.Tensor, step: Step) -> torch.Tensor:
    """``v`` (N, L) times the layer's token-mixing matrix ``mix`` ((N, L, L), or (N, windows, A, A))."""
    if step.window is None:
        return torch.einsum("nl,nlm->nm", v, mix)
    win = window_index(step.grid, step.window, step.shift).to(v.device)
    valid = win >= 0
    n, length = v.shape
    vw = v[:, win.clamp(min=0)] * valid                              # (N, windows, A)
    out_w = torch.einsum("nwa,nwab->nwb", vw, mix.view(n, win.shape[0], *mix.shape[-2:]))
    out = v.new_zeros(n, length + 1)                                # the last slot takes the padding
    out.index_add_(1, torch.where(valid, win, length).flatten(), out_w.flatten(1))
    return out[:, :length]


def _unmerge(v: torch.Tensor, coarse: tuple[int, int], fine: tuple[int, int]) -> torch.Tensor:
    """Shares each merged token's value equally among the tokens of ``fine`` it was made from (2×2 patches)."""
    rows, cols = torch.meshgrid(torch.arange(fine[0]), torch.arange(fine[1]), indexing="ij")
    parent = ((rows * coarse[0]) // fine[0] * coarse[1] + (cols * coarse[1]) // fine[1]).flatten().to(v.device)
    counts = torch.bincount(parent, minlength=coarse[0] * coarse[1]).to(v.dtype)
    return v[:, parent] / counts[parent]


def _readout(net: nn.Module, step: Step, n: int, device) -> torch.Tensor:
    """(N, L): the weights the head puts on the last layer's tokens."""
    length = step.prefix + step.grid[0] * step.grid[1]
    v = torch.zeros(n, length, device=device)
    if pools_class_token(net):
        rows = [0, 1] if getattr(net, "head_dist", None) is not None and step.prefix > 1 else [0]
        v[:, rows] = 1.0 / len(rows)
    else:
        v[:, step.prefix:] = 1.0 / (length - step.prefix)
    return v


def roll_back(net: nn.Module, steps: Sequence[Step], *, gradient: bool) -> torch.Tensor:
    """The readout rows rolled back to the first layer's patch tokens: (N, h, w) ≥ 0."""
    last = steps[-1]
    n = last.probs.shape[0] // (1 if last.window is None else window_index(last.grid, last.window, last.shift).shape[0])
    v = _readout(net, last, n, last.probs.device)
    grid = last.grid
    for step in reversed(steps):
        if step.grid != grid:
            v, grid = _unmerge(v, grid, step.grid), step.grid
        if gradient:
            v = v + _times(v, (step.grad * step.probs).clamp(min=0).mean(1), step)
        else:
            v = 0.5 * v + 0.5 * _times(v, step.probs.mean(1), step)
    first = steps[0]
    return v[:, first.prefix:].reshape(n, *first.grid)


def _rollout(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None, method: str, batch_size: int,
             progress: Progress | None) -> tuple[torch.Tensor, torch.Tensor]:
    grids = []
    parts = batches(x.shape[0], batch_size)
    for k, part in enumerate(parts):
        steps = attention_steps(model, x[part], None if target is None else target[part], method=method)
        grids.append(roll_back(model.net, steps, gradient=target is not None))
        report(progress, (k + 1) / len(parts), method)
    grid = torch.cat(grids)
    full = F.interpolate(grid[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return full, grid


def _attribution(model: nn.Module, x: torch.Tensor, target, method: str, batch_size: int,
                 progress: Progress | None, note: str) -> Attribution:
    started = time.perf_counter()
    x = check_input(x)
    check_applies(model, method)
    t = resolve_target(model, x, target)
    full, grid = _rollout(model, x, t if method == "grad-rollout" else None, method, batch_size, progress)
    return Attribution(map=full, raw=None, grid=grid, method=method, target=t.tolist(),
                       seconds=time.perf_counter() - started, signed=False, notes=(note,))


def rollout(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
            batch_size: int = 8, progress: Progress | None = None) -> Attribution:
    """Attention rollout. x: (N, 3, H, W) in [0, 1]. Returns map (N, H, W) ≥ 0 (each image's patch weights sum
    to at most 1), grid (N, h, w) on the patch grid; the same for every target.

    Raises:
        NotApplicable: the model has no self-attention (a CNN).
    """
    return _attribution(model, x, target, "rollout", batch_size, progress,
                        "class-agnostic: attention alone, the same map for every class")


def grad_rollout(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
                 batch_size: int = 8, progress: Progress | None = None) -> Attribution:
    """Gradient-weighted attention rollout for ``target``. x: (N, 3, H, W) in [0, 1]. Returns map (N, H, W) ≥ 0
    (unscaled) and grid (N, h, w) on the patch grid.

    Raises:
        NotApplicable: the model has no self-attention (a CNN).
    """
    return _attribution(model, x, target, "grad-rollout", batch_size, progress,
                        "attention weighted by the gradient of the class logit, positive part, rolled out")


ROLLOUT = MethodSpec("rollout", rollout, "Attention rollout",
                     "how attention mixes the patches into the tokens the head reads (transformers)",
                     caveat="Class-agnostic: the same map whatever class is asked for.")
GRAD_ROLLOUT = MethodSpec("grad-rollout", grad_rollout, "Gradient-weighted rollout (Chefer)",
                          "attention weighted by the class gradient, rolled out through the layers (transformers)",
                          caveat="Chefer et al.'s gradient × attention rule; their CVPR 2021 method uses LRP "
                                 "relevances of the attention instead of the attention itself.")
