"""Error analysis's settings, declared once (the page's widgets, ``python -m core errors`` flags, result keys and
the report's commands).

Three computations on a labelled folder: the evaluation (:data:`ERRORS`: the confusion matrix, per-class table
and the most confident mistakes), the "Why?" maps of one image (:data:`MISTAKE_MAPS`: Grad-CAM and SmoothGrad for
the predicted class, the true class and their contrast) and the channels that separate a confusion cell
(:data:`SEPARATING`). The page's one layer picker serves the last two (:data:`LAYER`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..spec import Setting, Technique

PAGE_TOP = 12  # the Error analysis page lists this many most confident mistakes (and pins ``--top`` so)

TOP = Setting("top", int, "how many mistakes to list, most confident first", low=0, default=20)

LAYER = Setting("layer", str, "the layer where the separating channels are sought, and Grad-CAM's in the Why? "
                "panel (python -m core layers lists them)", label="Layer", layer=True)

SAMPLES = Setting("samples", int, "noisy copies per SmoothGrad map of the Why? panel", label="SmoothGrad samples",
                  low=2, high=64, default=16, widget="number", cli=False)

CHANNELS = Setting("channels", int, "how many channels --separate lists", label=lambda c: f"Channels of {c['layer']}",
                   low=1, high=32, default=8, widget="number", key="sep_n", strict=False)


def run_errors(model, folder, values: Mapping[str, object], *, progress=None):
    """:class:`core.errors.evaluate.Evaluation` of the labelled ``folder`` (a folder or CSV; predictions cached on
    disk); ``values['top']`` picks the listing, not the computation. Raises ImageError."""
    from .evaluate import evaluate

    return evaluate(model, folder, progress=progress)


@dataclass(frozen=True)
class Mistake:
    """The subject of :data:`MISTAKE_MAPS`: one image ``x`` (3, H, W) in [0, 1], the class it was predicted as
    and the class to contrast it with."""

    x: object
    predicted: int
    true: int


def mistake_methods(values: Mapping[str, object]) -> dict[str, dict]:
    """The attribution methods and options of the Why? panel: Grad-CAM at the layer, full-precision SmoothGrad."""
    return {"gradcam": {"layer": values["layer"]},
            "smoothgrad": {"samples": int(values["samples"]), "precision": "fp32"}}


def run_mistake_maps(model, subject: Mistake, values: Mapping[str, object], *, progress=None):
    """:class:`core.errors.explain.MistakeMaps` of one image: each method's map (H, W) for the predicted class,
    the true class and their contrast."""
    from .explain import explain_mistake

    return explain_mistake(model, subject.x.unsqueeze(0), subject.predicted, subject.true,
                           methods=mistake_methods(values), progress=progress)


@dataclass(frozen=True)
class Cell:
    """The subject of :data:`SEPARATING`: a folder's :class:`~core.errors.evaluate.Evaluation` and one confusion
    cell (class indices)."""

    evaluation: object
    true: int
    predicted: int


def run_separating(model, subject: Cell, values: Mapping[str, object], *, progress=None):
    """:class:`core.errors.explain.ChannelSeparation` of one confusion cell. Raises ValueError (too few images)."""
    from .explain import separating_channels

    return separating_channels(model, subject.evaluation, subject.true, subject.predicted, str(values["layer"]),
                               n=int(values["channels"]), progress=progress)


ERRORS = Technique(
    "errors", "Error analysis", "the confusion matrix, per-class precision and recall and the most confident mistakes "
    "of a labelled folder", (TOP,), run_errors, subject="folder", command="errors", prefix="err",
    page="error_analysis")

MISTAKE_MAPS = Technique(
    "mistake_maps", "Why this mistake?", "Grad-CAM and SmoothGrad for the predicted class, the true class and their "
    "contrast", (LAYER, SAMPLES), run_mistake_maps, prefix="err", page="error_analysis")

SEPARATING = Technique(
    "separating_channels", "Separating channels", "the channels of a layer that separate a confusion cell from the "
    "correctly classified images of its true class", (LAYER, CHANNELS), run_separating, subject="folder",
    command="errors", prefix="err", page="error_analysis")


def errors_command(folder: str, card, *, top: int = PAGE_TOP, separate: tuple[int, int] | None = None,
                   values: Mapping[str, object] | None = None) -> str:
    """``python -m core errors`` for the matrix, the per-class table and the ``top`` mistakes of a labelled folder;
    with ``separate`` (true, predicted class indices) also the channels of :data:`SEPARATING` ``values``."""
    extra = [] if separate is None else ["--separate", str(int(separate[0])), str(int(separate[1])),
                                         *SEPARATING.flags(dict(values or {}))]
    return ERRORS.command_line(folder, card, {"top": int(top)}, extra=extra)
