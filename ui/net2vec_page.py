"""Streamlit glue of the Net2Vec page (pages/net2vec.py): link parameters, the result panels and "Add to report"."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.features.net2vec_view import MASK_SCALE, NEAR_ZERO_IOU, concept_rows, masks_figure, verdict, weak_concepts
from core.features.net2vec import ConceptSource
from ui import cache, permalink, report
from ui.permalink import Param

MASKS = "mask folder"
SOURCES = ["colour terms (from pixels)", MASKS]
SHOWN = 8  # predicted masks shown


def source_of(spec) -> str:
    """The concept-source choice of the declared default ``concepts`` (colour terms, or a mask folder)."""
    return SOURCES[0] if spec.setting("concepts").default == ConceptSource.COLORS.value else MASKS


def bind() -> None:
    """Restore the page's own settings from the link, then publish them (the declared settings' widgets bind
    theirs; a concept the fit lacks is dropped later)."""
    permalink.bind([Param("folder", "lens_n2v_folder"), Param("source", "lens_n2v_source", options=SOURCES),
                    Param("masks", "lens_n2v_masks"), Param("concept", "lens_n2v_concept")])


def table(fits, layer: str) -> None:
    """The concept table, and a warning naming the concepts nothing segments."""
    st.dataframe(pd.DataFrame(concept_rows(fits)), hide_index=True, width="stretch", column_config={
        "share of concept pixels": st.column_config.NumberColumn(format="percent"),
        "IoU, learnt combination": st.column_config.NumberColumn(format="%.3f"),
        "IoU, best single channel": st.column_config.NumberColumn(format="%.3f")})
    weak = weak_concepts(fits)
    if weak:
        st.warning(f"Weak: no combination or channel of {layer} segments {', '.join(weak)} (IoU below "
                   f"{NEAR_ZERO_IOU:g}), so those rows say nothing about the layer. Try another layer, more "
                   "images, or concepts that cover more of the images.")


def concept_picker(fits):
    """The concept to look at (a linked name the fit does not have falls back to the first)."""
    names = [f.name for f in fits]
    if st.session_state.get("lens_n2v_concept") not in names:
        st.session_state.pop("lens_n2v_concept", None)
    pick = st.selectbox("Concept", names, key="lens_n2v_concept")
    return fits[names.index(pick)]


def weights_chart(fit) -> None:
    order = fit.weights.abs().argsort(descending=True)[:20]
    st.subheader(f"{fit.name}: the 20 largest weights (standardised channels)")
    st.bar_chart(pd.DataFrame({"channel": [str(int(i)) for i in order], "weight": fit.weights[order].tolist()}),
                 x="channel", y="weight", sort="-weight", x_label="channel", y_label="weight")


def predicted_masks(model, model_key: str, fit, used: tuple[str, ...]):
    """The first ``SHOWN`` predicted masks over their images, one colour bar; returns the picture."""
    st.subheader("Predicted masks")
    images = [cache.model_input(model, model_key, p).tensor for p in used[:SHOWN]]
    picture = masks_figure(images, fit.predicted[:SHOWN], [Path(p).name for p in used[:SHOWN]])
    st.image(picture, width="stretch", caption=mask_caption(fit, len(images), len(used)))
    return picture


def mask_caption(fit, shown: int, total: int) -> str:
    return (f"Where the learnt combination predicts {fit.name} (bright = {MASK_SCALE.hi:g}, inside the thresholded "
            f"mask; dark = {MASK_SCALE.lo:g}, outside) on {shown} of {total} images.")


def report_button(selection, folder: str, values: dict, fits, fit, picture, used: tuple[str, ...]) -> None:
    """"Add to report": the chosen concept's masks, the whole table's IoUs, settings (``values``: the declared
    :data:`core.features.net2vec_spec.NET2VEC` settings) and the net2vec command."""
    from core.features.net2vec_spec import NET2VEC

    layer = values["layer"]
    figures = {}
    for f in fits:
        figures[f"{f.name}: IoU learnt"] = f.iou
        figures[f"{f.name}: IoU best channel ({f.best_channel})"] = f.iou_best_channel
    report.add_button(lambda: report.item(
        selection, image=False, title=f"Net2Vec: {fit.name} in {layer} ({verdict(fit)})", figure=picture,
        caption=mask_caption(fit, min(SHOWN, len(used)), len(used)),
        settings={"folder": folder, "images": len(used), "layer": layer, "concepts": values["concepts"],
                  "analysis grid": values["size"], "iterations": values["iterations"],
                  "IoUs measured on": "held-out images" if fit.held_out else "the training images"},
        command=NET2VEC.command_line(report.path_arg(folder), selection.model.card, values),
        seconds=float(sum(f.seconds for f in fits)), figures=figures,
        notes=tuple(f"Weak: nothing in {layer} segments {name}." for name in weak_concepts(fits))),
        key=f"n2v_{selection.model_key}_{folder}_{layer}_{values['concepts']}_{values['size']}_{fit.name}")
