"""Grad-CAM (Selvaraju et al. 2017) at any spatial layer of the catalogue, and guided Grad-CAM.

The layer's output ``A`` (C, h, w) — channels-last ConvNeXt block internals are turned to NCHW first — is
weighted per channel by the spatial mean of d logit / dA; the ReLU of the weighted sum is upsampled
bilinearly to the input. The output is captured through :func:`core.hooks.capture`, so the hook is removed
even when the work raises, and it fires only in this call's own passes.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import Progress, report
from .spec import MethodSpec, Option
from .base import Attribution, NotApplicable, check_input, resolve_target
from ..catalogue import LayerInfo, default_layer, find_layer, to_nchw
from .guided import RULE_CAVEAT, GuidedRule, rule_gradient
from ..hooks import capture


def resolve_layer(model: nn.Module, layer: str | None) -> LayerInfo:
    """The catalogue entry for ``layer`` (default: the last feature stage); refuses 1×1 grids."""
    try:
        info = default_layer(model) if layer in (None, "") else find_layer(model, layer)
    except KeyError as e:
        raise NotApplicable(str(e).strip("'\"")) from None
    except IndexError:
        raise NotApplicable(f"{model.card.arch} has no spatial layer, so Grad-CAM does not apply") from None
    if layer in (None, "") and not info.feature:
        raise NotApplicable(f"{model.card.arch} has no spatial feature stage; Grad-CAM needs a "
                            "spatial or token layer: name one with --layer (python -m core layers)")
    if info.grid[0] * info.grid[1] < 2:
        raise NotApplicable(f"layer {info.name} has a 1×1 grid, so Grad-CAM there would be a constant map")
    return info


def cam_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, info: LayerInfo, *,
             relu: bool = True) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) at the input resolution, not normalised (≥ 0 when ``relu``)."""
    xin = x.detach().clone()
    with capture(model, {info.name: model.layer(info.name)}, detach=False) as acts, torch.enable_grad():
        xin.requires_grad_(True)  # the layer output must be part of a graph even though weights are frozen
        logits = model(xin)
        act = acts.get(info.name)
        if act is None:
            raise NotApplicable(f"layer {info.name} did not run in the forward pass")
        score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
        (grad,) = torch.autograd.grad(score, act)
    a, g = to_nchw(act.detach(), info).float(), to_nchw(grad, info).float()
    cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True)
    if relu:
        cam = cam.clamp(min=0)
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def gradcam(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
            layer: str | None = None, relu: bool = True, batch_size: int = 8,
            progress: Progress | None = None) -> Attribution:
    """Grad-CAM. x: (N, 3, H, W) in [0, 1]. Returns map (N, H, W) ≥ 0 (unscaled), raw None."""
    started = time.perf_counter()
    x = check_input(x)
    t = resolve_target(model, x, target)
    info = resolve_layer(model, layer)
    parts = []
    for i in range(0, x.shape[0], batch_size):
        parts.append(cam_maps(model, x[i:i + batch_size], t[i:i + batch_size], info, relu=relu))
        report(progress, min(1.0, (i + batch_size) / x.shape[0]), "Grad-CAM")
    return Attribution(map=torch.cat(parts), raw=None, method="gradcam", target=t.tolist(),
                       seconds=time.perf_counter() - started, signed=not relu,
                       notes=(f"layer {info.name} ({info.channels} channels, {info.grid[0]}×{info.grid[1]} grid, "
                              f"{info.layout.value}), upsampled bilinearly",),
                       options={"layer": info.name, "relu": relu})


def guided_gradcam(model: nn.Module, x: torch.Tensor, target: Sequence[int] | torch.Tensor | None = None, *,
                   layer: str | None = None, batch_size: int = 8, progress: Progress | None = None) -> Attribution:
    """Guided Grad-CAM: guided backprop (GELU-correct) times the Grad-CAM map scaled to [0, 1] per image."""
    started = time.perf_counter()
    x = check_input(x)
    t = resolve_target(model, x, target)
    info = resolve_layer(model, layer)
    cam = cam_maps(model, x, t, info)
    cam = cam / cam.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)
    report(progress, 0.3, "Grad-CAM done; guided backprop")
    guided, notes = rule_gradient(model, x, t, rule=GuidedRule.GUIDED, batch_size=batch_size,
                                  progress=lambda f, m: report(progress, 0.3 + 0.7 * f, m))
    raw = guided * cam.unsqueeze(1)
    return Attribution(map=raw.sum(1), raw=raw, method="guided-gradcam", target=t.tolist(),
                       seconds=time.perf_counter() - started, signed=True,
                       notes=(f"Grad-CAM layer {info.name}", *notes), options={"layer": info.name})


LAYER = Option("layer", str, "catalogue layer name (default: the last feature stage)", layer=True)
GRADCAM = MethodSpec("gradcam", gradcam, "Grad-CAM", "class-weighted activations of one layer, upsampled",
                     options=(LAYER,))
GUIDED_GRADCAM = MethodSpec("guided-gradcam", guided_gradcam, "Guided Grad-CAM", "guided backprop times Grad-CAM",
                            options=(LAYER,), caveat=RULE_CAVEAT)
