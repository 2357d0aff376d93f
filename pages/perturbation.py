"""Perturbation masks: the smallest smooth region that keeps (or removes) the evidence for a class."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import pandas as pd
import streamlit as st

from core.perturbation.spec import MASKS
from core.render import image_uint8
from core.perturbation.view import weak_mask_notes
from core.spec import canonical
from ui import cache, figures, report, run, sidebar
from ui.options import technique_form
from ui.perturbation_page import compute, steps_sentence

st.title("Perturbation masks")
st.caption("Meaningful perturbation (Fong & Vedaldi 2017) and extremal perturbation (Fong, Patrick & Vedaldi "
           "2019): which region of the image is sufficient (preserve) or necessary (delete) for the class.")

selection = sidebar.current()
if selection is not None:
    model, inp = selection.model, selection.inp
    top = cache.top_classes(model, selection.model_key, inp.tensor, selection.image_key, 5)
    # the target is a page-level choice among the image's top classes (the first: the class warm prepares)
    options = [f"{c['label']} ({c['index']})" for c in top]
    choice = st.selectbox(MASKS.setting("target").title, options, key="lens_pert_target")
    values = technique_form(MASKS, cache.context(model), fixed={"target": top[options.index(choice)]["index"]})
    if "areas" in values:
        values["areas"] = tuple(sorted(values["areas"]))
    method, variant, perturbation, converge = (values[k] for k in ("method", "variant", "perturbation", "converge"))
    params = (selection.key, canonical(values))
    if run.button("Compute masks", params, "lens_pert_run", disabled=not values.get("areas", True),
                  help="Any change to the page stops a running optimisation."):
        result = compute(selection, values)
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
                    command=MASKS.command_line(report.image_arg(selection), model.card, values, extra=[
                        "--area", f"{float(result.areas[i]):g}"] if "areas" in values else []),
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
