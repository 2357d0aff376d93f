"""Settings forms of the pages: the widgets that ask for one computation and return its typed settings."""
from __future__ import annotations

import streamlit as st

from core.attack.spec import ATTACK
from core.features.featurevis import Settings
from core.model.loading import LensModel
from core.spec import model_context
from ui import permalink
from ui.options import technique_form
from ui.permalink import Param


def attack_settings(model: LensModel) -> dict:
    """The adversarial page's settings (keys ``atk_*``), generated from :data:`core.attack.spec.ATTACK`: only the
    controls that apply are shown (the chosen norm's ε and step; PGD's step, steps and random start only for PGD).
    Nothing runs until the page's button is pressed (ui.run)."""
    return technique_form(ATTACK, model_context(model))


def featurevis_settings(prefix: str, batch_label: str, batch_default: int, size_default: int) -> Settings:
    """The optimisation settings of the feature-visualisation page (keys ``{prefix}_*``); ``prefix`` "fv" adds
    the diversity weight, which needs a batch."""
    permalink.bind([Param(f"{prefix}_steps", f"{prefix}_steps", int), Param(f"{prefix}_size", f"{prefix}_size", int),
                    Param(f"{prefix}_seed", f"{prefix}_seed", int), Param(f"{prefix}_batch", f"{prefix}_batch", int)])
    c1, c2, c3, c4 = st.columns(4)
    steps = c1.slider("Steps", 8, 512, 128, step=8, key=f"{prefix}_steps",
                      help="Adam steps. About 128 gives a clear pattern; 256+ refines it.")
    sizes = sorted({64, 96, 128, 160, size_default})
    size = c2.selectbox("Size (pixels)", sizes, index=sizes.index(size_default), key=f"{prefix}_size",
                        help="The model's input size matches how the objective is measured; smaller is faster.")
    seed = c3.number_input("Seed", 0, 10_000, 0, key=f"{prefix}_seed")
    batch = c4.number_input(batch_label, 1 if batch_default == 1 else 2, 8, batch_default, key=f"{prefix}_batch")
    with st.expander("Advanced"):
        a1, a2, a3, a4 = st.columns(4)
        lr = a1.number_input("Learning rate", 0.001, 0.5, 0.05, format="%.3f", key=f"{prefix}_lr")
        diversity = a2.number_input("Diversity", 0.0, 100.0, 0.0, key=f"{prefix}_div",
                                    help="Penalise similar images in a batch (needs 2+ images).") if prefix == "fv" else 0.0
        rotate = a3.number_input("Rotation (deg)", 0.0, 45.0, 10.0, key=f"{prefix}_rot")
        fourier = a4.toggle("Fourier parameterisation", True, key=f"{prefix}_fourier",
                            help="Off: plain pixels, which tend to give high-frequency noise.")
    return Settings(steps=int(steps), size=int(size), seed=int(seed), batch=int(batch), lr=float(lr),
                    diversity=float(diversity), rotate=float(rotate), fourier=bool(fourier))
