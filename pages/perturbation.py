"""Perturbation masks: the smallest smooth region that keeps (or removes) the evidence for a class."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.perturbation.masks import EXTREMAL_ITERATIONS, MEANINGFUL_ITERATIONS, MaskMethod, Perturbation, Variant
from core.render import image_uint8, overlay
from ui import cache, sidebar
from ui.widgets import progress_bar

st.title("Perturbation masks")
st.caption("Meaningful perturbation (Fong & Vedaldi 2017) and extremal perturbation (Fong, Patrick & Vedaldi "
           "2019): which region of the image is sufficient (preserve) or necessary (delete) for the class.")

selection = sidebar.current()
if selection is not None:
    model, inp = selection.model, selection.inp
    top = cache.top_classes(model, selection.model_key, inp.tensor, selection.image_key, 5)
    c1, c2, c3 = st.columns(3)
    with c1:
        method = st.radio("Method", [m.value for m in Method], index=1, key="lens_pert_method", horizontal=True,
                          help="extremal: best mask of each fixed area; meaningful: smallest mask (L1 + TV)")
        options = [f"{c['label']} ({c['index']})" for c in top]
        choice = st.selectbox("Target class", options, key="lens_pert_target")
        target = top[options.index(choice)]["index"]
    with c2:
        default_variant = Variant.PRESERVE if method == MaskMethod.EXTREMAL.value else Variant.DELETE
        variant = st.radio("Variant", [v.value for v in Variant], index=list(Variant).index(default_variant),
                           key=f"lens_pert_variant_{method}", horizontal=True,
                           help="preserve: keep the mask sharp, perturb the rest; delete: perturb the mask")
        perturbation = st.radio("Perturbation", [p.value for p in Perturbation], key="lens_pert_kind",
                                horizontal=True, help="blur, or fade to the model's mean colour")
    with c3:
        if method == MaskMethod.EXTREMAL.value:
            areas = st.multiselect("Areas (fraction of the image)", [0.02, 0.05, 0.1, 0.2, 0.4, 0.6],
                                   default=[0.05, 0.1, 0.2], key="lens_pert_areas",
                                   help="all areas are optimised together in one batch")
        else:
            areas = [0.1]
        default_iters = EXTREMAL_ITERATIONS if method == MaskMethod.EXTREMAL.value else MEANINGFUL_ITERATIONS
        iterations = st.slider("Iterations", 20, 800, default_iters, step=20, key=f"lens_pert_iters_{method}",
                               help="TorchRay uses 800; see the loss curve below for convergence")
    run = st.button("Compute masks", type="primary", key="lens_pert_run", disabled=not areas)
    settings = cache.MaskSettings(target, method, tuple(sorted(areas)), variant, perturbation, iterations)
    params = (selection.key, settings)
    if run:
        st.session_state["lens_pert_params"] = params
    if st.session_state.get("lens_pert_params") != params:
        st.info("Choose the options and press **Compute masks** (any change to the page stops a running "
                "optimisation).")
    else:
        try:
            with progress_bar("starting") as progress:
                result = cache.perturbation_masks(model, selection.model_key, inp.tensor, selection.image_key,
                                                  settings, progress=progress)
        except (ValueError, RuntimeError) as e:
            st.error(f"Could not compute the masks: {e}")
        else:
            st.write(f"Target **{model.label(result.target)}**: probability {result.base_score:.1%} on the "
                     f"intact image; {result.iterations} steps.")
            for i, area in enumerate(result.areas):
                mask = result.masks[i]
                left, right = st.columns(2)
                shown = f"area {float(mask.mean()):.1%}" + (f" (asked {area:.0%})" if method == "extremal" else "")
                left.image(overlay(inp.tensor, mask, alpha=0.55), width="stretch", caption=f"mask, {shown}")
                right.image(image_uint8(result.perturbed[i]), width="stretch",
                            caption=f"{variant}d image: {model.label(result.target)} at {float(result.scores[i]):.1%}")
            if len(result.areas) > 1:
                st.subheader("Class score against area")
                st.line_chart(pd.DataFrame({"area": [float(m.mean()) for m in result.masks],
                                            "probability": result.scores.tolist()}), x="area", y="probability")
            st.subheader("Convergence")
            names = [f"area {a:.0%}" for a in result.areas] if method == "extremal" else ["mask"]
            st.caption("Objective per step (lower is better; the extremal area weight grows during the run).")
            st.line_chart(pd.DataFrame(result.loss.T.numpy(), columns=names))
            st.caption("Target probability during the run (jittered inputs).")
            st.line_chart(pd.DataFrame(result.score_curve.T.numpy(), columns=names))
