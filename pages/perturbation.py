"""Perturbation masks: the smallest smooth region that keeps (or removes) the evidence for a class."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import pandas as pd
import streamlit as st

from core.perturbation.masks import MEANINGFUL_ITERATIONS, TORCHRAY_ITERATIONS, MaskMethod, Perturbation, Variant
from core.render import image_uint8
from core.perturbation.view import weak_mask_notes
from core.report import perturb_command
from core.warm import PAGE_AREAS
from ui import cache, figures, permalink, report, run, sidebar
from ui.perturbation_page import compute, steps_sentence
from ui.permalink import Param

st.title("Perturbation masks")
st.caption("Meaningful perturbation (Fong & Vedaldi 2017) and extremal perturbation (Fong, Patrick & Vedaldi "
           "2019): which region of the image is sufficient (preserve) or necessary (delete) for the class.")

selection = sidebar.current()
if selection is not None:
    model, inp = selection.model, selection.inp
    top = cache.top_classes(model, selection.model_key, inp.tensor, selection.image_key, 5)
    permalink.bind([Param("method", "lens_pert_method", options=[m.value for m in MaskMethod])])
    method = st.session_state.get("lens_pert_method", MaskMethod.EXTREMAL.value)
    permalink.bind([Param("variant", f"lens_pert_variant_{method}", options=[v.value for v in Variant]),
                    Param("fill", "lens_pert_kind", options=[p.value for p in Perturbation]),
                    Param("areas", "lens_pert_areas", list, options=[0.02, 0.05, 0.1, 0.2, 0.4, 0.6]),
                    Param("iterations", f"lens_pert_iters_{method}", int),
                    Param("converge", f"lens_pert_converge_{method}", bool)])
    c1, c2, c3 = st.columns(3)
    with c1:
        method = st.radio("Method", [m.value for m in MaskMethod], index=1, key="lens_pert_method", horizontal=True,
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
                                   default=list(PAGE_AREAS), key="lens_pert_areas",
                                   help="all areas are optimised together in one batch")
        else:
            areas = [0.1]
        default_iters = TORCHRAY_ITERATIONS if method == MaskMethod.EXTREMAL.value else MEANINGFUL_ITERATIONS
        iterations = st.slider("Iterations (at most)", 20, 800, default_iters, step=20,
                               key=f"lens_pert_iters_{method}", help="TorchRay uses 800; see the loss curve below")
        converge = st.checkbox("Stop when converged", True, key=f"lens_pert_converge_{method}",
                               help="stop once the mask holds still (checked every 10 steps from step 100): the "
                                    "same path as the full run, ended early (on the sample photos, IoU with the "
                                    "800-step mask: extremal ≥ 0.9 in 130-200 steps, meaningful 0.93-0.96 in "
                                    "160-220 steps)")
    settings = cache.MaskSettings(target, method, tuple(sorted(areas)), variant, perturbation, iterations, converge)
    params = (selection.key, settings)
    if run.button("Compute masks", params, "lens_pert_run", disabled=not areas,
                  help="Any change to the page stops a running optimisation."):
        result = compute(selection, settings)
        if result is not None:
            st.write(f"Target **{model.label(result.target)}**: probability {result.base_score:.1%} on the "
                     f"intact image; {steps_sentence(result)}")
            label = model.label(result.target)
            weak = weak_mask_notes(result, label)
            for i, area in enumerate(result.areas):
                mask = result.masks[i]
                left, right = st.columns(2)
                shown = f"area {float(mask.mean()):.1%}" + (f" (asked {area:.0%})" if method == "extremal" else "")
                picture, _ = figures.heat(mask, inp.tensor, signed=False, clip_percentile=100, units="mask",
                                          caption=f"mask, {shown}, over {selection.name}", where=left)
                right.image(image_uint8(result.perturbed[i]), width="stretch",
                            caption=f"{variant}d image: {label} at {float(result.scores[i]):.1%} "
                                    f"(intact {result.base_score:.1%})")
                if i in weak:
                    st.warning(weak[i])
                report.add_button(lambda i=i, picture=picture, shown=shown: report.item(
                    selection, title=f"{method} perturbation ({variant}) for {label}, {shown}", figure=picture,
                    caption=f"Mask over the model input (1 = the {variant}d region).",
                    settings={"method": method, "variant": variant, "perturbation": perturbation,
                              "area": float(result.areas[i]), "iterations": result.iterations,
                              "stop when converged": converge, "target": result.target},
                    command=perturb_command(report.image_arg(selection), model.card, method=method,
                                            area=float(result.areas[i]) if method == "extremal" else None,
                                            variant=variant, perturbation=perturbation,
                                            iterations=result.max_iterations, target=result.target,
                                            converge=converge),
                    figures={"probability kept": float(result.scores[i]), "intact probability": result.base_score},
                    notes=(weak[i],) if i in weak else ()),
                    key=f"pert_{hash((params, i))}")
            if len(result.areas) > 1:
                st.subheader("Class score against area")
                figures.lines(pd.DataFrame({"area": [float(m.mean()) for m in result.masks],
                                            "target probability": result.scores.tolist()}), x="area",
                              y_title="probability")
            st.subheader("Convergence")
            names = [f"area {a:.0%}" for a in result.areas] if method == "extremal" else ["mask"]
            st.caption("Objective per step (lower is better; the extremal area weight grows during the run).")
            figures.lines(pd.DataFrame(result.loss.T.numpy(), columns=names).rename_axis("step").reset_index(),
                          x="step", y_title="objective")
            st.caption("Target probability during the run (jittered inputs).")
            figures.lines(pd.DataFrame(result.score_curve.T.numpy(), columns=names).rename_axis("step").reset_index(),
                          x="step", y_title="target probability")
