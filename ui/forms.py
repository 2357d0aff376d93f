"""Settings forms of the pages: the widgets that ask for one computation and return its typed settings."""
from __future__ import annotations

from core.attack.spec import ATTACK
from core.model.loading import LensModel
from core.spec import Technique, model_context
from ui.options import technique_form


def attack_settings(model: LensModel) -> dict:
    """The adversarial page's settings (keys ``atk_*``), generated from :data:`core.attack.spec.ATTACK`: only the
    controls that apply are shown (the chosen norm's ε and step; PGD's step, steps and random start only for PGD).
    Nothing runs until the page's button is pressed (ui.run)."""
    return technique_form(ATTACK, model_context(model))


def featurevis_settings(spec: Technique, context: dict, fixed: dict) -> dict:
    """The optimisation settings of the feature-visualisation page's forms, generated from ``spec``
    (:data:`core.features.featurevis_spec.FEATUREVIS`, keys ``fv_*``, or ``INTERACTION``, keys ``mix_*``): steps,
    size, seed and the number of images in a row, the rest in the "Advanced" expander; ``fixed``: what the page
    asks for itself (layer, objective, channels). Returns every value."""
    return technique_form(spec, context, columns=4, fixed=fixed)
