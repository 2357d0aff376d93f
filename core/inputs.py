"""The one input check and the one target resolver every technique goes through.

One input space: RGB float (N, 3, H, W) in [0, 1]. Targets are class indices, one per image.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .model.wrapper import net_num_classes

Target = int | Sequence[int] | torch.Tensor | None


def check_input(x: torch.Tensor, *, pixels_for: str | None = None, single: bool = False) -> torch.Tensor:
    """Validate an RGB batch (N, 3, H, W) (a (3, H, W) image is batched); returns it detached as float32.

    Args:
        x: the images.
        pixels_for: when given (e.g. ``"attacks"``), values outside [0, 1] are refused with a message naming it.
        single: require exactly one image (N = 1).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected an RGB batch (N, 3, H, W), got a {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an RGB batch (N, 3, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError("expected a float tensor in [0, 1]")
    if pixels_for and x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(f"{pixels_for} work on pixels in [0, 1]; this input is outside that range")
    if single and x.shape[0] != 1:
        raise ValueError(f"expected one RGB image (1, 3, H, W), got a batch of {x.shape[0]}")
    return x.detach().float()


def class_indices(value: int | Sequence[int] | torch.Tensor, n: int, num_classes: int | None, *,
                  name: str = "target") -> torch.Tensor:
    """Long (n,) class indices from one class (used for every image) or one per image.

    Raises:
        ValueError: the count is neither 1 nor ``n``, or a class is outside 0..num_classes-1 (one line naming
            ``name``).
    """
    t = torch.as_tensor(value, dtype=torch.long).flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{t.numel()} {name}s for {n} images: give one class or one per image")
    if num_classes is not None:
        bad = [int(v) for v in t if not 0 <= int(v) < num_classes]
        if bad:
            raise ValueError(f"{name} {bad[0]} out of range: the model has {num_classes} classes "
                             f"(0..{num_classes - 1})")
    return t.clone()


def num_classes_of(model: nn.Module) -> int:
    """The model's class count: from its card, else as for a bare net (``num_classes`` or one forward pass)."""
    card = getattr(model, "card", None)
    return int(card.num_classes) if card is not None else net_num_classes(model)


def resolve_target(model: nn.Module, x: torch.Tensor, target: Target, *,
                   logits: torch.Tensor | None = None) -> torch.Tensor:
    """Long (N,) class indices: the top class where ``target`` is None, else ``target`` per image.

    Args:
        model: the classifier; consulted only when ``logits`` is None.
        x: the images (N, 3, H, W).
        target: None, one class, or one per image.
        logits: (N, classes) already computed for ``x``; saves the forward pass.
    """
    n = x.shape[0]
    if target is None:
        if logits is None:
            with torch.no_grad():  # not inference_mode: the indices are used later in graphs that autograd saves
                logits = model(x)
        return logits.argmax(-1).long()
    classes = logits.shape[-1] if logits is not None else getattr(getattr(model, "card", None), "num_classes", None)
    return class_indices(target, n, classes).to(x.device)  # on the images' device, as argmax is
