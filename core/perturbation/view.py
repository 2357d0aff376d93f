"""Reading perturbation masks honestly: which masks are weak, said in words a viewer can act on."""
from __future__ import annotations

from .masks import PerturbationResult, Variant

# A preserved image that keeps less than this share of the intact image's probability does not show a
# sufficient region; a deleted one that keeps more than this share did not remove the evidence.
WEAK_SHARE = 0.5


def weak_mask_notes(result: PerturbationResult, label: str, *, share: float = WEAK_SHARE) -> dict[int, str]:
    """Mask index -> one warning for every mask that does not do what its variant promises.

    Args:
        result: a :class:`~core.perturbation.masks.PerturbationResult`.
        label: the target class's name, for the message.
        share: the fraction of the intact probability that separates a working mask from a weak one.
    """
    base = float(result.base_score)
    notes = {}
    for i, area in enumerate(result.areas):
        score = float(result.scores[i])
        kept = score / base if base > 0 else 0.0
        shown = float(result.masks[i].mean())
        if result.variant is Variant.PRESERVE and kept < share:
            notes[i] = (f"Weak: keeping only this {shown:.0%} of the image leaves {label} at {score:.1%} "
                        f"(intact {base:.1%}, {kept:.0%} of it), so this region alone does not carry the "
                        "evidence. Try a larger area, more iterations, or the delete variant.")
        elif result.variant is Variant.DELETE and kept > share:
            notes[i] = (f"Weak: deleting this {shown:.0%} of the image still leaves {label} at {score:.1%} "
                        f"(intact {base:.1%}, {kept:.0%} of it): the evidence is not only here. Try a larger "
                        "area or more iterations.")
    return notes
