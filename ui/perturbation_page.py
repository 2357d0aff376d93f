"""The perturbation page's glue: the cached mask computation with a progress bar and a preview that refines in
place, and the sentence that says how the run ended."""
from __future__ import annotations

import streamlit as st

from core.perturbation.masks import PerturbationResult
from core.perturbation.spec import MASKS
from core.render import overlay
from ui import cache
from ui.widgets import progress_bar


def compute(selection, values: dict) -> PerturbationResult | None:
    """The masks for the sidebar's image with ``values`` (:data:`core.perturbation.spec.MASKS`'); the first time, a progress bar and the first mask drawn after the first
    step and redrawn every 10th (the scheduler runs the job on this session's thread, so it can draw)."""
    slot = st.empty()

    def preview(masks, fraction: float) -> None:
        slot.image(overlay(selection.inp.tensor, masks[0]), width=320,
                   caption=f"refining: the mask of area {values['areas'][0]:.0%} so far ({fraction:.0%} of the "
                           "steps at most)" if "areas" in values else
                           f"refining: the mask so far ({fraction:.0%} of the steps at most)")
    try:
        with progress_bar("starting") as progress:
            return cache.technique(MASKS, selection.model, selection.model_key, selection.inp.tensor,
                                   selection.image_key, values, progress, preview=preview)
    except (ValueError, RuntimeError) as e:
        st.error(f"Could not compute the masks: {e}")
        return None
    finally:
        slot.empty()


def steps_sentence(result: PerturbationResult) -> str:
    """How many steps ran and why the run ended."""
    if result.converged:
        return (f"stopped after {result.iterations} of at most {result.max_iterations} steps: the mask held still "
                "(converged).")
    if result.cancelled:
        return f"stopped after {result.iterations} steps (cancelled)."
    return f"{result.iterations} steps."
