"""The perturbation masks' settings, declared once (page widgets, CLI flags, result key, warm-up, report line).

The page starts where an interactive run pays off (three extremal areas in one batch, TorchRay's 800 steps at most
with the convergence stop); ``python -m core perturb`` keeps its one-shot defaults (one mask, each method's own
step count, no stop: :attr:`core.spec.Setting.cli_default`). The CLI's ``--area`` (one area, a fraction or a
percentage) is written by the command itself; the page's ``areas`` are a multiple choice.
"""
from __future__ import annotations

from typing import Mapping

from ..spec import Setting, Technique
from .convergence import CHECK_EVERY, SETTLE_STEPS
from .masks import (DEFAULT_AREA, EXTREMAL_ITERATIONS, MEANINGFUL_ITERATIONS, TORCHRAY_ITERATIONS, MaskMethod,
                    Perturbation, Variant)

PAGE_AREAS = (0.05, 0.1, 0.2)  # the page's default extremal areas (one batch)
AREA_CHOICES = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6)


def _extremal(v: Mapping[str, object]) -> bool:
    return v.get("method") == MaskMethod.EXTREMAL.value


_CLI_ITERATIONS = (f"{EXTREMAL_ITERATIONS}" if EXTREMAL_ITERATIONS == MEANINGFUL_ITERATIONS else
                   f"{EXTREMAL_ITERATIONS} extremal, {MEANINGFUL_ITERATIONS} meaningful")

SETTINGS = (
    Setting("method", MaskMethod, "extremal: the best mask of each fixed area; meaningful: the smallest region "
            "(L1 + TV)", label="Method", default=MaskMethod.EXTREMAL, widget="radio"),
    Setting("target", int, "class index, or an exact label (default: each image's top class)", label="Target class",
            target=True, default=lambda c: c.get("target"), cli_default=None),
    Setting("variant", Variant, "preserve: keep the mask sharp, perturb the rest; delete: perturb the mask "
            "(default preserve for extremal, delete for meaningful)", label="Variant",
            default=lambda v: Variant.PRESERVE if _extremal(v) else Variant.DELETE, cli_default=None,
            widget="radio", key="variant_{method}"),
    Setting("perturbation", Perturbation, "blur, or fade to the model's mean colour", label="Perturbation",
            default=Perturbation.BLUR, widget="radio", key="kind", url="fill"),
    Setting("areas", tuple, "mask areas (fractions of the image), all optimised together in one batch",
            label="Areas (fraction of the image)", among=AREA_CHOICES, default=PAGE_AREAS,
            cli_default=(DEFAULT_AREA,), visible=_extremal, cli=False),
    Setting("iterations", int, "optimisation steps, the most taken with the convergence stop (TorchRay uses "
            f"{TORCHRAY_ITERATIONS}; see the loss curve; the command's default: {_CLI_ITERATIONS})",
            label="Iterations (at most)", low=20,
            high=TORCHRAY_ITERATIONS, step=20,
            default=lambda v: TORCHRAY_ITERATIONS if _extremal(v) else MEANINGFUL_ITERATIONS, cli_default=None,
            key="iters_{method}", strict=False),
    Setting("converge", bool, f"stop once the mask holds still (checked every {CHECK_EVERY} steps from step "
            f"{SETTLE_STEPS}): the same path as the full run, ended early; the result says how many steps ran", label="Stop when converged",
            default=True, cli_default=False, key="converge_{method}"),
)


def run_masks(model, x, values: Mapping[str, object], *, progress=None, preview=None):
    """:class:`~core.perturbation.masks.PerturbationResult` of one image ``x`` (3, H, W) in [0, 1]; ``preview``
    as in :func:`core.perturbation.masks.perturbation_masks`. ``target``, ``variant`` or ``iterations`` None:
    the top class, the method's own default."""
    from . import masks

    variant = values.get("variant")
    return masks.perturbation_masks(
        model, x.unsqueeze(0), values.get("target"), method=MaskMethod(values["method"]),
        areas=tuple(values.get("areas") or (DEFAULT_AREA,)), variant=None if variant is None else Variant(variant),
        iterations=values.get("iterations"), perturbation=Perturbation(values["perturbation"]),
        converge=bool(values["converge"]), progress=progress, preview=preview)


MASKS = Technique(
    "perturbation", "Perturbation masks",
    "the smallest smooth region that keeps (or removes) the evidence for a class",
    SETTINGS, run_masks, command="perturb", prefix="lens_pert", page="perturbation", warm=True,
    samples=lambda v: len(v.get("areas") or (DEFAULT_AREA,)))
