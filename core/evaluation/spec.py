"""The faithfulness metrics' settings, declared once (the curves under every map, Compare methods, ``python -m
core evaluate``, the result keys ``python -m core warm`` writes).

:data:`EVALUATION` scores one attribution map (its subject, :class:`MapSubject`, names the map's method, class
and options: the result key includes the map's key, :func:`map_key`). :data:`COMPARE` is the Compare methods
view: every chosen method with its default options, scored alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from ..spec import Setting, Technique
from .curves import STEPS as CURVE_STEPS
from .curves import DeletionBaseline
from .evaluate import Metric

CURVE_METRICS = (Metric.DELETION.value, Metric.INSERTION.value)  # the curves drawn under every attribution map
ALL = tuple(m.value for m in Metric)


def _methods(_context=None) -> tuple[str, ...]:
    from ..attribution.registry import REGISTRY

    return tuple(REGISTRY)


def _title(method: str) -> str:
    from ..attribution.registry import REGISTRY

    return REGISTRY[method].title if method in REGISTRY else method


METRICS = Setting("metrics", tuple, "what to score, comma-separated (pointing needs a mask, randomisation a method)",
                  label="Metrics", among=ALL, default=ALL, sep=",")

STEPS = Setting("steps", int, "deletion/insertion steps S: 2·S + 1 images go through the model per map (in batches); "
                "50 as RISE", label="Curve steps S", low=2, high=200, default=CURVE_STEPS, widget="number",
                url="curve_steps", strict=False)

@dataclass(frozen=True)
class MapSubject:
    """What an evaluation scores: the map ``values`` (H, W) of ``method`` with ``options`` for class ``target`` of
    one image ``x`` (3, H, W) in [0, 1], and the object ``mask`` (bool (H, W), or None) of the pointing game. The
    randomisation test recomputes the map with ``options``; Compare methods computes each map (``values`` None)."""

    x: object
    target: int
    method: str = ""
    options: Mapping[str, object] = field(default_factory=dict)
    values: object = None
    mask: object = None


def map_key(model_key: str, image_key: str, method: str, target: int, options: Mapping[str, object],
            mask_key: str = "none") -> tuple:
    """The subject key of an evaluation: the attribution map's result key (the Attribution page's, so the curves
    follow the map) and the object mask's key ("none": no mask)."""
    from ..keys import attribution_key

    return (*attribution_key(model_key, image_key, method, target, dict(options)), mask_key)


def curve_values(context: Mapping[str, object], **chosen) -> dict[str, object]:
    """The :data:`EVALUATION` values of the curves under a map (``chosen``: the steps, the metrics)."""
    return EVALUATION.defaults(context, **{"metrics": CURVE_METRICS, **chosen})


def run_evaluation(model, subject: MapSubject, values: Mapping[str, object], *, progress=None):
    """:class:`core.evaluation.Evaluation` of one map (see :class:`MapSubject`). Raises NotApplicable, ValueError."""
    from .evaluate import evaluate, method_explainer

    return evaluate(
        model, subject.x, int(subject.target), method=subject.method, values=subject.values,
        explain=method_explainer(subject.method, dict(subject.options)), metrics=tuple(values["metrics"]),
        steps=int(values["steps"]), deletion_baseline=values["deletion_baseline"], mask=subject.mask,
        seed=int(values["seed"]), progress=progress)


def run_compare(model, subject: MapSubject, values: Mapping[str, object], *, progress=None) -> dict:
    """Each of ``values['methods']`` (default options) evaluated on one image: method → Evaluation, or the
    one-line reason it was not."""
    from ..attribution.base import NotApplicable

    chosen, out = tuple(values["methods"]), {}
    for i, name in enumerate(chosen):
        def part(f, m, i=i):
            if progress is not None:
                progress((i + f) / len(chosen), m)
        one = EVALUATION.complete({"metrics": values["metrics"], "steps": values["steps"]}, {})
        try:
            out[name] = run_evaluation(model, MapSubject(subject.x, subject.target, name, mask=subject.mask), one,
                                       progress=part)
        except (NotApplicable, ValueError) as e:
            out[name] = str(e)
    return out


EVALUATION = Technique(
    "evaluation", "Faithfulness and sanity", "deletion/insertion curves, ROAD, the randomisation sanity check and "
    "the pointing game of one attribution map",
    (METRICS, STEPS,
     Setting("deletion_baseline", DeletionBaseline, "what deleted pixels become: the model's mean colour, black, or "
             "the blurred image", default=DeletionBaseline.MEAN),
     Setting("seed", int, "seed of ROAD's noise and the randomised weights", default=0, widget="number")),
    run_evaluation, command="evaluate", prefix="faith", page="attribution")

COMPARE = Technique(
    "compare_methods", "Compare methods", "every chosen attribution method on one image, scored alike",
    (Setting("methods", tuple, "attribution methods to evaluate, each with its default options",
             label="Methods to evaluate", among=_methods, default=_methods, format=_title, cli=False),
     replace(METRICS, help="what to score: the deletion/insertion curves, ROAD, the randomisation sanity check, "
             "the pointing game (it needs an object mask)", cli=False),
     replace(STEPS, key="cmp_steps", url="cmp_steps", cli=False)),
    run_compare, prefix="faith", page="attribution")
