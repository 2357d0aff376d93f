"""Settings forms of the pages: the widgets that ask for one computation and return its typed settings."""
from __future__ import annotations

import streamlit as st

from core.attack.attacks import PIXEL, AttackMethod, Norm
from core.features.featurevis import Settings
from core.model.loading import LensModel
from ui import cache, permalink
from ui.permalink import Param


def attack_settings(model: LensModel) -> cache.AttackSettings:
    """The adversarial page's settings (keys ``atk_*``): the attack to run, ε and step converted to [0, 1] pixels.

    Only the controls that apply are shown: the chosen norm's ε and step, and PGD's step, steps and random start
    only for PGD. Nothing runs until the page's button is pressed (ui.run).
    """
    permalink.bind([Param("method", "atk_method", options=[m.value for m in AttackMethod]),
                    Param("norm", "atk_norm", options=[n.value for n in Norm]),
                    Param("eps", "atk_eps", float), Param("eps_l2", "atk_eps_l2", float),
                    Param("step", "atk_step", float), Param("step_l2", "atk_step_l2", float),
                    Param("steps", "atk_steps", int), Param("random_start", "atk_random_start", bool),
                    Param("early_stop", "atk_early_stop", bool), Param("seed", "atk_seed", int)])
    c1, c2, c3 = st.columns(3)
    method = c1.radio("Method", [m.value for m in AttackMethod], index=1, horizontal=True, key="atk_method",
                      format_func=str.upper, help="FGSM: one step of size ε. PGD: projected steps of size 'step'.")
    norm = c1.radio("Norm", [n.value for n in Norm], horizontal=True, key="atk_norm",
                    format_func=lambda n: {"linf": "L∞", "l2": "L2"}[n])
    linf, pgd = norm == Norm.LINF.value, method == AttackMethod.PGD.value
    if linf:
        eps = c2.slider("ε (L∞, in 1/255)", 0.25, 32.0, 4.0, 0.25, key="atk_eps")
    else:
        eps = c2.slider("ε (L2, pixel units)", 0.05, 10.0, 0.5, 0.05, key="atk_eps_l2")
    step, steps, random_start = eps, 1, False
    if pgd:
        if linf:
            step = c3.slider("PGD step (L∞, in 1/255)", 0.25, 8.0, 1.0, 0.25, key="atk_step")
        else:
            step = c3.slider("PGD step (L2)", 0.01, 2.0, 0.125, 0.005, key="atk_step_l2")
        steps = c3.slider("PGD steps", 1, 100, 10, key="atk_steps")
    c4, c5 = st.columns([2, 1])
    labels = ["untargeted: any other class"] + [f"{i}: {model.label(i)}" for i in range(model.card.num_classes)]
    target = c4.selectbox("Goal", labels, key="atk_target",
                          help="Untargeted moves away from the current prediction; a class moves toward it.")
    if pgd:
        random_start = c5.checkbox("Random start", key="atk_random_start")
    early_stop = c5.checkbox("Stop once the goal is met", value=True, key="atk_early_stop")
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key="atk_seed") if random_start else 0
    unit = PIXEL if linf else 1.0
    return cache.AttackSettings(method, norm, eps * unit, step * unit, int(steps),
                                None if target == labels[0] else int(target.split(":", 1)[0]),
                                bool(random_start), bool(early_stop), int(seed))


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
