"""The dataset audit's and fit-head's settings, declared once (page widgets, CLI flags, result key, report line)."""
from __future__ import annotations

import enum
from typing import Mapping

from ..spec import Setting, Technique


class AuditMethod(str, enum.Enum):
    GRADCAM = "gradcam"
    LRP = "lrp"
    SMOOTHGRAD = "smoothgrad"


CLUSTER_CHOICES = ("auto", "2", "3", "4", "5", "6", "7", "8")

AUDIT_SETTINGS = (
    Setting("method", AuditMethod, "attribution method of the per-image maps (its default settings), for the "
            "image's true class", label="Method", default=AuditMethod.GRADCAM, widget="radio"),
    Setting("clusters", str, "clusters per class: auto picks the number by the eigengap (at most 8)",
            label="Clusters per class", among=CLUSTER_CHOICES, default="auto"),
    Setting("classes", tuple, "classes to audit, by name or index (default: every class with images)",
            label="Classes", among=lambda c: tuple(c.get("folder_classes") or ()), default=None, metavar="C"),
    Setting("engine", str, "local: in this process; ray: model actors on a Ray cluster (pip install -r "
            "requirements-ray.txt), the same clusters", label="Engine",
            among=("local", "ray"), default="local", widget="none"),
)


def run_audit(model, folder, values: Mapping[str, object], *, progress=None, cancel=None, **engine_options):
    """:class:`core.audit.audit.Audit` of the labelled ``folder`` (a folder or CSV); ``engine_options``:
    ``workers`` and ``address`` of the Ray engine. Raises ImageError, EngineUnavailable."""
    from .audit import run_audit as audit

    clusters = values["clusters"]
    return audit(model, folder, method=str(values["method"]), classes=tuple(values.get("classes") or ()),
                 clusters=clusters if clusters == "auto" else int(clusters), engine=str(values["engine"]),
                 progress=progress, cancel=cancel, **engine_options)


AUDIT = Technique(
    "audit", "Dataset audit", "per class, spectral clusters of the attribution maps: which strategies the model "
    "uses, and whether one is a shortcut (a watermark, a border) rather than the object", AUDIT_SETTINGS,
    run_audit, subject="folder", command="audit", prefix="aud", page="audit", samples=8)

FIT_SETTINGS = (
    Setting("epochs", int, "passes over the features (mini-batches of 256)", label="Epochs", low=1, high=2000,
            default=100, widget="number"),
    Setting("seed", int, "seed of the head's initial weights and of the batch order", label="Seed", low=0,
            high=2**31 - 1, default=0, widget="number"),
)


def run_fit_head(model, folder, values: Mapping[str, object], *, out, progress=None, cancel=None):
    """:class:`core.errors.fit.FittedHead` written to ``out``. Raises ImageError."""
    from ..errors.fit import fit_head

    return fit_head(model, folder, out, epochs=int(values["epochs"]), seed=int(values["seed"]), progress=progress,
                    cancel=cancel)


FIT_HEAD = Technique(
    "fit_head", "A head for your labels", "a linear classifier on the embedded backbone's pooled features of a "
    "labelled set, saved with its class names (load it with --weights FILE)", FIT_SETTINGS, run_fit_head,
    subject="folder", command="fit-head", prefix="fit", page="audit")
