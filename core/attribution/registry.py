"""The registry of attribution methods and the one entry point over them.

``attribute(model, x, target, method=...)`` dispatches to the method named. Each method module declares its
:class:`~core.attribution.spec.MethodSpec` next to its function; :data:`REGISTRY` lists them in display order.
To add a method: write one module with the function and its spec, and add the spec to :data:`REGISTRY` (or call
:func:`register` from outside the package). The command line and the attribution page list whatever the
registry holds, with flags and widgets generated from the spec's options.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from ..memo import add_to
from ..model.device import model_device
from ..progress import Progress
from .base import Attribution, NotApplicable, Sign, check_input, resolve_target
from .cam import CAM
from .gradcam import GRADCAM, GUIDED_GRADCAM
from .gradients import INPUT_X_GRADIENT, INTEGRATED_GRADIENTS, SALIENCY, Baseline
from .guided import DECONVOLUTION, GUIDED_BACKPROP
from .lrp import LRP
from .occlusion import OCCLUSION, Fill
from .rollout import GRAD_ROLLOUT, ROLLOUT
from .smoothgrad import SMOOTHGRAD, Base, Engine, NoiseType, Precision, native_bf16
from .spec import MethodSpec, Option

REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in (
    SALIENCY, INPUT_X_GRADIENT, INTEGRATED_GRADIENTS, SMOOTHGRAD, GUIDED_BACKPROP, DECONVOLUTION, GRADCAM,
    GUIDED_GRADCAM, OCCLUSION, CAM, LRP, ROLLOUT, GRAD_ROLLOUT,
)}


def register(spec: MethodSpec, *, replace_existing: bool = False) -> MethodSpec:
    """Add ``spec`` to :data:`REGISTRY` (a plug-in method); the CLI and the page pick it up on their next build.

    Raises:
        ValueError: the name is taken (unless ``replace_existing``).
    """
    return add_to(REGISTRY, spec.name, spec, "an attribution method", replace_existing=replace_existing)


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def attribute(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None, *,
              method: str, progress: Progress | None = None, **options) -> Attribution:
    """Attribution of ``method`` for ``target`` (default: the predicted class of each image).

    Args:
        x: RGB float (N, 3, H, W) or (3, H, W) in [0, 1]; not modified.
        method: a registered name (``REGISTRY``).
        progress: ``progress(fraction, message)`` during long work.
        options: the method's keyword options (``REGISTRY[name].keywords()``); unknown ones are refused.

    Raises:
        NotApplicable: the method does not apply to this model or layer (the message says why).
        ValueError: unknown method or option, bad shapes or values.
    """
    name = str(getattr(method, "value", method))
    spec = REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}")
    keywords = spec.keywords()
    unknown = sorted(set(options) - set(keywords) - ({"preview"} if spec.preview else set()))
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)} (it takes {', '.join(keywords) or 'none'})")
    x = check_input(x).to(model_device(model))  # every method works on the model's device
    t = resolve_target(model, x, target)
    result = spec.fn(model, x, t, progress=progress, **options)
    cpu = torch.device("cpu")  # results come back to the CPU for display
    result = replace(result, map=result.map.to(cpu), raw=None if result.raw is None else result.raw.to(cpu),
                     grid=None if result.grid is None else result.grid.to(cpu))
    cpu = torch.device("cpu")  # results come back to the CPU for display
    result = replace(result, map=result.map.to(cpu), raw=None if result.raw is None else result.raw.to(cpu))
    return result if result.method == name else replace(result, method=name)


__all__ = ["Attribution", "Base", "Baseline", "Engine", "Fill", "MethodSpec", "NoiseType", "NotApplicable",
           "Option", "Precision", "REGISTRY", "Sign", "attribute", "native_bf16", "register", "unregister"]
