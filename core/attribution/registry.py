"""Feature attribution: one entry point over every method, and the registry that names them.

``attribute(model, x, target, method=...)`` dispatches to the method's module. To add a method, add one
:class:`MethodSpec` to :data:`REGISTRY` (a name, the function, and a one-line description); the CLI and the
page list whatever the registry holds. Every function takes ``(model, x, target, *, options)`` with ``x``
RGB float (N, 3, H, W) in [0, 1] and returns an :class:`Attribution`.
"""
from __future__ import annotations

import enum
import inspect
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import nn

from ..model.device import model_device
from .base import Attribution, NotApplicable, Progress, Sign, check_input, report, resolve_target
from .cam import cam as _cam
from .lrp import FirstRule, Rule
from .lrp import lrp as _lrp
from .gradcam import gradcam, guided_gradcam
from .gradients import Baseline, input_x_gradient, integrated_gradients, saliency
from .guided import deconvolution, guided_backprop
from .occlusion import Fill, occlusion
from .smoothgrad import Base, Engine, NoiseType, Precision, native_bf16, smoothgrad


class Method(str, enum.Enum):
    SALIENCY = "saliency"
    INPUT_X_GRADIENT = "input-x-gradient"
    INTEGRATED_GRADIENTS = "integrated-gradients"
    SMOOTHGRAD = "smoothgrad"
    GUIDED_BACKPROP = "guided-backprop"
    DECONVOLUTION = "deconvolution"
    GRADCAM = "gradcam"
    GUIDED_GRADCAM = "guided-gradcam"
    OCCLUSION = "occlusion"
    CAM = "cam"
    LRP = "lrp"


def cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, progress: Progress | None = None) -> Attribution:
    """CAM (core.cam): exact on pool + linear heads, LayerNorm linearised at the image on ConvNeXt."""
    start = time.perf_counter()
    r = _cam(model, x, target)
    report(progress, 1.0, "CAM: done")
    return Attribution(map=r.map, raw=None, method="cam", target=list(r.target), seconds=time.perf_counter() - start,
                       notes=(r.note,), metrics={"logit": r.logit, "constant": r.constant})


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, rule: Rule | str = Rule.ZPLUS,
        first: FirstRule | str = FirstRule.ZB, epsilon: float = 0.25, progress: Progress | None = None) -> Attribution:
    """LRP (core.lrp) with the rule for convolutions, the first-layer rule and epsilon."""
    start = time.perf_counter()
    r = _lrp(model, x, target, rule=rule, first=first, epsilon=epsilon)
    report(progress, 1.0, "LRP: done")
    notes = (f"rules: {r.rule.value} (convolutions), {r.first.value} (pixels), epsilon for the classifier; "
             f"GELU/SiLU gates and LayerNorm std held constant; {r.bn_folded} BatchNorm folded",)
    return Attribution(map=r.map, raw=r.raw, method="lrp", target=list(r.target), seconds=time.perf_counter() - start,
                       notes=notes, options={"rule": r.rule.value, "first": r.first.value, "epsilon": r.epsilon},
                       metrics={"relevance_sum": r.relevance_sum, "logit": r.logit})


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: ``fn(model, x, target, *, progress, **options) -> Attribution``."""

    name: str
    fn: Callable[..., Attribution]
    title: str
    summary: str
    layer: bool = False          # takes a ``layer`` option (a catalogue name)

    def options(self) -> dict[str, object]:
        """The method's keyword options and their defaults."""
        sig = inspect.signature(self.fn)
        return {p.name: p.default for p in sig.parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.name not in ("progress", "preview")}


REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("saliency", saliency, "Saliency", "gradient of the class logit with respect to each pixel"),
    MethodSpec("input-x-gradient", input_x_gradient, "Input × gradient", "gradient times pixel value"),
    MethodSpec("integrated-gradients", integrated_gradients, "Integrated gradients",
               "gradients averaged along the path from a baseline image; sums to the logit change"),
    MethodSpec("smoothgrad", smoothgrad, "SmoothGrad", "a gradient method averaged over noisy copies"),
    MethodSpec("guided-backprop", guided_backprop, "Guided backprop",
               "only positive gradients pass each rectifier (ReLU, GELU, SiLU, ReLU6, ...)"),
    MethodSpec("deconvolution", deconvolution, "Deconvolution",
               "positive gradients pass every rectifier regardless of its input"),
    MethodSpec("gradcam", gradcam, "Grad-CAM", "class-weighted activations of one layer, upsampled", layer=True),
    MethodSpec("guided-gradcam", guided_gradcam, "Guided Grad-CAM", "guided backprop times Grad-CAM", layer=True),
    MethodSpec("occlusion", occlusion, "Occlusion", "score drop when a patch is hidden"),
    MethodSpec("cam", cam, "CAM", "class activation map of the last features (LayerNorm head linearised at the image)"),
    MethodSpec("lrp", lrp, "LRP", "layer-wise relevance propagation; relevance sums to the logit minus what biases absorb"),
)}


def method_names() -> list[str]:
    return list(REGISTRY)


def attribute(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None, *,
              method: Method | str, progress: Progress | None = None, **options) -> Attribution:
    """Attribution of ``method`` for ``target`` (default: the predicted class of each image).

    Args:
        x: RGB float (N, 3, H, W) or (3, H, W) in [0, 1]; not modified.
        method: a :class:`Method` or any registered name.
        progress: ``progress(fraction, message)`` during long work.
        options: the method's keyword options (see ``REGISTRY[name].options()``); unknown ones are refused.

    Raises:
        NotApplicable: the method does not apply to this model or layer (the message says why).
        ValueError: unknown method or option, bad shapes or values.
    """
    name = method.value if isinstance(method, enum.Enum) else str(method)
    spec = REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}")
    unknown = sorted(set(options) - set(spec.options()) - {"preview"})
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)} (it takes {', '.join(spec.options()) or 'none'})")
    x = check_input(x).to(model_device(model))  # every method works on the model's device
    t = resolve_target(model, x, target)
    result = spec.fn(model, x, t, progress=progress, **options)
    cpu = torch.device("cpu")  # results come back to the CPU for display
    result = replace(result, map=result.map.to(cpu), raw=None if result.raw is None else result.raw.to(cpu))
    return result if result.method == name else replace(result, method=name)


__all__ = ["Attribution", "Base", "Baseline", "Engine", "Fill", "Method", "MethodSpec", "NoiseType",
           "NotApplicable", "Precision", "REGISTRY", "Sign", "attribute", "method_names", "native_bf16",
           "smoothgrad"]
