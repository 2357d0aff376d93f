"""The report's settings, declared once: ``python -m core report``'s flags and the prediction table that both the
command and the Report page put at the top of a report."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..spec import Setting, Technique

TOP = 5  # classes in a report's prediction table


def _methods(_context=None) -> tuple[str, ...]:
    from ..attribution.registry import REGISTRY

    return tuple(REGISTRY)


@dataclass(frozen=True)
class ReportImage:
    """The subject of :data:`REPORT`: one image as the command names it (``path``) and its model input ``inp``
    (:class:`core.images.ModelInput`: ``tensor`` (3, H, W) in [0, 1])."""

    path: str
    inp: object


def run_report(model, subject: ReportImage, values: Mapping[str, object], *, progress=None) -> dict:
    """The prediction (top :data:`TOP` classes, dicts with index, label, prob), one
    :class:`~core.report.ReportItem` per method that applies (``items``), its timing (``results``) and one line
    per method that does not (``errors``)."""
    from ..attribution.base import NotApplicable
    from ..attribution.registry import REGISTRY, attribute
    from ..model.predict import predict
    from . import attribution_item

    inp = subject.inp
    top = [c.as_dict() for c in predict(model, inp.batch, k=TOP)[0]]
    target = top[0]["index"] if values.get("target") is None else int(values["target"])
    items, results, errors = [], [], []
    for i, method in enumerate(dict.fromkeys(values["methods"])):
        if progress is not None:
            progress(i / len(values["methods"]), method)
        try:
            attr = attribute(model, inp.batch, target, method=method)
        except (NotApplicable, ValueError) as e:
            errors.append({"method": method, "error": f"{method}: {e}"})
            continue
        items.append(attribution_item(model, inp.tensor, attr, image_arg=subject.path,
                                      title=f"{REGISTRY[method].title} for {model.label(target)} ({target})"))
        results.append({"method": method, "seconds": round(float(attr.seconds), 4)})
    return {"prediction": top, "items": items, "results": results, "errors": errors}


REPORT = Technique(
    "report", "Report", "a self-contained HTML report (opens offline) of one image: prediction and attribution maps",
    (Setting("methods", tuple, "attribution methods, each with its default options", among=_methods, metavar="M",
             required=True),
     Setting("target", int, "class index or exact label (default: the predicted class)", target=True,
             optional="the predicted class")),
    run_report, command="report", page="report")
