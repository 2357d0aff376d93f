"""Pictures, numbers and sentences of an attack result, shared by the page and the CLI (NumPy/PIL only).

Every function looks at image 0 of a batched :class:`AttackResult` (the page attacks one image at a time).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..render import (CLIP_PERCENTILE, ColourMap, Scale, colourise, heat_figure, image_uint8, npz_bytes, overlay,
                      unit_uint8, with_colorbar)
from .attacks import PIXEL, AttackResult, Norm
from .search import MinEpsResult

Label = Callable[[int], str]


@dataclass(frozen=True)
class Message:
    """One sentence for the user and how loud to say it: ``level`` is "info", "success", "warning" or "caption"."""

    level: str
    text: str


def eps_text(value: float, norm: Norm | str) -> str:
    """A budget in the units the user set it in: "4.00/255" for L∞ (value in [0, 1] pixels), "0.500" for L2."""
    return f"{value / PIXEL:.2f}/255" if Norm(norm) is Norm.LINF else f"{value:.3f}"


@dataclass(frozen=True)
class PerturbationPicture:
    """δ shown two ways.

    Attributes:
        rgb: uint8 (H, W, 3): mid-grey + δ × ``amplification`` per channel (grey = unchanged pixel).
        amplification: the factor applied to δ in ``rgb`` (chosen so the largest |δ| reaches black or white).
        heat: uint8 (H, W + bar, 3): the channel mean of δ in 1/255 steps, diverging, with its colour bar.
        scale: the colour bar's :class:`~core.render.Scale` (ends at ± the largest |mean δ|, not ±ε).
        max_abs: the largest |δ| over pixels and channels, in [0, 1] pixel units.
    """

    rgb: np.ndarray
    amplification: float
    heat: np.ndarray
    scale: Scale
    max_abs: float

    def caption(self) -> str:
        return (f"perturbation δ amplified ×{self.amplification:.0f} around mid-grey (grey = unchanged; largest "
                f"change {self.max_abs / PIXEL:.2f}/255 per channel)")


def perturbation_picture(delta) -> PerturbationPicture:
    """Both pictures of ``delta`` (3, H, W), the adversarial minus the clean image in [0, 1] pixel units."""
    d = np.asarray(delta, dtype=np.float64)
    max_abs = float(np.abs(d).max()) if d.size else 0.0
    amplification = 0.5 / max_abs if max_abs > 0 else 1.0
    rgb = unit_uint8(np.clip(0.5 + d.transpose(1, 2, 0) * amplification, 0, 1))
    heat, scale = heat_figure(d.mean(0) / PIXEL, signed=True, clip_percentile=100, units="/255")
    return PerturbationPicture(rgb, amplification, heat, scale, max_abs)


def steps_text(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def pictures(result: AttackResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (H, W, 3) clean image, adversarial image and the perturbation at its real range (amplified around
    mid-grey: :func:`perturbation_picture`)."""
    return (image_uint8(result.clean[0]), image_uint8(result.adversarial[0]),
            perturbation_picture(result.perturbation[0].numpy()).rgb)


def npz(result: AttackResult) -> bytes:
    """``.npz`` bytes: clean, adversarial and perturbation, float32 (3, H, W) in [0, 1] (δ in [−ε, ε])."""
    return npz_bytes(clean=result.clean[0], adversarial=result.adversarial[0], perturbation=result.perturbation[0])


def verdict(result: AttackResult, label: Label) -> list[Message]:
    """What happened, in the page's words: the outcome and, on success, whether 8-bit rounding undoes it."""
    source, new = int(result.source[0]), int(result.adv_index[0])
    clean_p, adv_p = result.clean_probs[0], result.adv_probs[0]
    eps = eps_text(float(result.eps[0]), result.norm)
    sizes = (f"‖δ‖∞ = {float(result.linf[0]) / PIXEL:.2f}/255, ‖δ‖₂ = {float(result.l2[0]):.3f}, "
             f"{steps_text(int(result.steps_taken[0]))}")
    if result.targeted and int(result.target[0]) == int(result.clean_index[0]):
        return [Message("info", f"The model already says {label(source)}: a targeted attack toward it has nothing "
                                "to do. Pick another goal class.")]
    if not bool(result.success[0]):
        goal = f"reach {label(int(result.target[0]))}" if result.targeted else "change the prediction"
        return [Message("warning", f"The attack failed: within ε = {eps} and {steps_text(result.steps)} it did not {goal}. "
                                   f"The model still says {label(new)} at {float(adv_p[new]):.1%} ({sizes}). "
                                   "Try a larger ε, more steps, or 'Find the smallest ε'.")]
    said = Message("success", f"The model changed its mind: {label(source)} {float(clean_p[source]):.1%} → "
                              f"{label(new)} {float(adv_p[new]):.1%} with ε = {eps} ({sizes}).")
    new8 = int(result.adv8_probs[0].argmax())
    said8 = f"{label(new8)} {float(result.adv8_probs[0, new8]):.1%}"
    if bool(result.success_8bit[0]):
        return [said, Message("caption", f"Rounded to 8 bits per channel, as the PNG below stores it, it still "
                                         f"works: {said8}.")]
    return [said, Message("warning", f"Rounded to 8 bits per channel, as the PNG below stores it, the attack is "
                                     f"undone: the model says {said8}. The .npz keeps the exact values; a slightly "
                                     "larger ε survives rounding.")]


def min_eps_message(found: MinEpsResult, label: Label) -> Message:
    """The outcome of a smallest-ε search in the page's words."""
    norm, attacks = found.result.norm, int(found.attacks[0])
    if bool(found.found[0]):
        r = found.result
        return Message("success", f"Smallest ε found: **{eps_text(float(found.eps[0]), norm)}** reaches the goal "
                                  f"({label(int(r.adv_index[0]))} at {float(r.adv_probs[0].max()):.1%}); "
                                  f"{eps_text(float(found.below[0]), norm)} does not. {attacks} attacks.")
    return Message("warning", f"No ε up to {eps_text(float(found.below[0]), norm)} reaches the goal ({attacks} "
                              "attacks). Try more PGD steps or a larger step.")


def confidence(result: AttackResult, label: Label) -> dict[str, np.ndarray]:
    """Per step: P(source class) and P(goal), keyed by their legend (NaN after an early stop)."""
    traj = result.trajectory
    goal = f"P({label(int(result.target[0]))})" if result.targeted else "P(most probable other class)"
    return {f"P({label(int(result.source[0]))})": traj.source_prob[0].numpy(), goal: traj.goal_prob[0].numpy()}


@dataclass(frozen=True)
class Evidence:
    """SmoothGrad before and after an attack, each picture with its colour bar.

    Attributes:
        before, after: uint8 (H, W + bar, 3): |SmoothGrad| over the clean / adversarial image, sequential map,
            both on ``scale`` so they compare.
        difference: uint8 (H, W + bar, 3): |after| − |before| on the diverging map centred at 0 (red: more
            evidence after the attack), ends at ± ``scale.hi``.
        scale: the shared :class:`~core.render.Scale` of the two overlays (0 to the 99.5th percentile of both
            magnitudes).
    """

    before: np.ndarray
    after: np.ndarray
    difference: np.ndarray
    scale: Scale


def evidence_pictures(clean, adversarial, before: np.ndarray, after: np.ndarray) -> Evidence:
    """SmoothGrad |map| over the clean and the adversarial image (``clean``/``adversarial`` (3, H, W) in [0, 1],
    maps (H, W)) on ONE scale, the 99.5th percentile of both magnitudes, so they compare; and the difference
    |after| − |before| on the diverging map. Every picture carries its colour bar."""
    hi = max(float(np.percentile(np.abs(np.stack([before, after])), CLIP_PERCENTILE)), 1e-12)
    scale = Scale(False, 0.0, hi, CLIP_PERCENTILE, "|SmoothGrad|")
    diff = colourise(np.clip((np.abs(after) - np.abs(before)) / hi, -1, 1), ColourMap.DIVERGING)
    return Evidence(with_colorbar(overlay(clean, np.clip(np.abs(before) / hi, 0, 1)), scale),
                    with_colorbar(overlay(adversarial, np.clip(np.abs(after) / hi, 0, 1)), scale),
                    with_colorbar(diff, Scale(True, -hi, hi, CLIP_PERCENTILE, "|SmoothGrad|")), scale)
