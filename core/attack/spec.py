"""The adversarial attack's settings, declared once (page widgets, CLI flags, result key, warm-up, report line).

Values are in the units the page and the CLI show: an L∞ budget and step in 1/255, an L2 budget in [0, 1]-pixel
units. :func:`attack_settings` turns them into the function's keywords in [0, 1] pixel units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..spec import Setting, Technique
from .attacks import (DEFAULT_EPS_255, DEFAULT_L2_EPS, DEFAULT_L2_STEP, DEFAULT_STEP_255, DEFAULT_STEPS, PIXEL,
                      AttackMethod, Norm)


def _linf(v) -> bool:
    return v.get("norm") == Norm.LINF.value


def _l2(v) -> bool:
    return v.get("norm") == Norm.L2.value


def _pgd(v) -> bool:
    return v.get("method") == AttackMethod.PGD.value


SETTINGS = (
    Setting("method", AttackMethod, "fgsm: one step of size eps; pgd: --steps projected steps of size --step",
            label="Method", default=AttackMethod.PGD, widget="radio", format=str.upper),
    Setting("norm", Norm, "budget norm", label="Norm", default=Norm.LINF, widget="radio",
            format=lambda n: {"linf": "L∞", "l2": "L2"}[n]),
    Setting("eps", float, "budget in 1/255 units", label="ε (L∞, in 1/255)", low=0.25, high=32.0, step=0.25,
            default=DEFAULT_EPS_255, visible=_linf, strict=False),
    Setting("eps_l2", float, "budget in [0,1]-pixel L2 units", label="ε (L2, pixel units)", low=0.05, high=10.0,
            step=0.05, default=DEFAULT_L2_EPS, flag="--eps", visible=_l2, strict=False),
    Setting("step", float, "PGD step in 1/255", label="PGD step (L∞, in 1/255)", low=0.25, high=8.0, step=0.25,
            default=DEFAULT_STEP_255, visible=lambda v: _pgd(v) and _linf(v), strict=False),
    Setting("step_l2", float, "PGD step in [0,1]-pixel L2 units", label="PGD step (L2)", low=0.01, high=2.0,
            step=0.005, default=DEFAULT_L2_STEP, flag="--step", visible=lambda v: _pgd(v) and _l2(v), strict=False),
    Setting("steps", int, "PGD steps", label="PGD steps", low=1, high=100, default=DEFAULT_STEPS, visible=_pgd,
            strict=False),
    Setting("target", int, "targeted attack toward this class (index, or an exact label); default untargeted",
            label="Goal", target=True, optional="untargeted: any other class"),
    Setting("random_start", bool, "start from a random point of the eps-ball", label="Random start",
            default=False, visible=_pgd),
    Setting("early_stop", bool, "run every step even once the goal is met", label="Stop once the goal is met",
            default=True, flag="--no-early-stop"),
    Setting("seed", int, "seed of the random start", label="Seed", low=0, high=2**31 - 1, default=0,
            widget="number", visible=lambda v: bool(v.get("random_start"))),
)


@dataclass(frozen=True)
class AttackSettings:
    """One attack in the function's units: ε and step in [0, 1] pixels; ``target`` None is untargeted."""

    method: str
    norm: str
    eps: float
    step: float
    steps: int
    target: int | None
    random_start: bool
    early_stop: bool
    seed: int

    @property
    def keywords(self) -> dict:
        """The keywords of :func:`core.attack.attacks.attack` (and of ``minimal_eps`` less ``early_stop``)."""
        return dict(method=self.method, norm=self.norm, eps=self.eps, step=self.step, steps=self.steps,
                    random_start=self.random_start, early_stop=self.early_stop, seed=self.seed)


def attack_settings(values: Mapping[str, object]) -> AttackSettings:
    """The :class:`AttackSettings` of a set of :data:`ATTACK` values (FGSM: one step of size ε)."""
    linf, pgd = values["norm"] == Norm.LINF.value, values["method"] == AttackMethod.PGD.value
    eps = float(values["eps"]) * PIXEL if linf else float(values["eps_l2"])
    step = (float(values["step"]) * PIXEL if linf else float(values["step_l2"])) if pgd else eps
    target = values.get("target")
    return AttackSettings(str(values["method"]), str(values["norm"]), eps, step,
                          int(values["steps"]) if pgd else 1, None if target is None else int(target),
                          bool(values.get("random_start", False)), bool(values["early_stop"]),
                          int(values.get("seed", 0)))


def run_attack(model, x, values: Mapping[str, object], *, progress=None):
    """:class:`~core.attack.attacks.AttackResult` of one image ``x`` (3, H, W) in [0, 1]."""
    from .attacks import attack

    s = attack_settings(values)
    return attack(model, x.unsqueeze(0), s.target, progress=progress, **s.keywords)


def run_minimal_eps(model, x, values: Mapping[str, object], *, progress=None):
    """:class:`~core.attack.search.MinEpsResult` of one image, searching upward from the values' ε."""
    from .search import minimal_eps

    s = attack_settings(values)
    keywords = s.keywords
    keywords.pop("early_stop")
    return minimal_eps(model, x.unsqueeze(0), s.target, progress=progress, **keywords)


ATTACK = Technique(
    "attack", "Adversarial perturbation",
    "FGSM and PGD in pixel space: how little it takes to change the model's mind.",
    SETTINGS, run_attack, command="attack", prefix="atk", page="attack", warm=True)

MIN_EPS = Technique(
    "min_eps", "Smallest flipping ε", "the smallest budget that reaches the goal, by bisection",
    SETTINGS, run_minimal_eps, command="attack", prefix="atk", page="attack")


EVIDENCE_BATCH = 8  # SmoothGrad's noisy copies per pass for the evidence maps (its default batch)


def run_evidence(model, subject, values: Mapping[str, object], *, progress=None, batch: int | None = None) -> dict:
    """SmoothGrad maps (H, W) of the clean and adversarial images for each class.

    Args:
        subject: (clean (3, H, W), adversarial (3, H, W), classes) with images in [0, 1].
        batch: noisy copies per pass (default 8, the declared samples; fewer when memory is short: the same maps).

    Returns:
        ``{(class, "clean"|"adversarial"): float32 array}``.
    """
    import torch

    from ..attribution.smoothgrad import smoothgrad

    clean, adv, classes = subject
    x = torch.stack([clean, adv] * len(classes))
    targets = [c for c in classes for _ in (0, 1)]
    maps = smoothgrad(model, x, targets, samples=int(values["samples"]), noise=float(values["noise"]),
                      batch_size=batch or EVIDENCE_BATCH, progress=progress).map
    return {(c, kind): maps[2 * i + j].float().numpy()
            for i, c in enumerate(classes) for j, kind in enumerate(("clean", "adversarial"))}


EVIDENCE = Technique(
    "attack_evidence", "SmoothGrad before and after an attack",
    "SmoothGrad of the clean and adversarial images, for the clean and the new class",
    (Setting("samples", int, "noisy copies per map; four maps are computed (two images, two classes)",
             label="SmoothGrad samples", low=4, high=50, default=16, cli=False),
     Setting("noise", float, "noise level, a fraction of the pixel range",
             label="SmoothGrad noise σ (fraction of the pixel range)", low=0.0, high=0.5, step=0.01, default=0.15,
             cli=False)),
    run_evidence, prefix="atk_sg", page="attack", samples=EVIDENCE_BATCH)
