"""Net2Vec: concepts as learnt combinations of a layer's channels, against the best single channel."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import pandas as pd
import streamlit as st

from core.catalogue import default_layer
from core.images import SAMPLES, ImageError, list_images
from core.features.net2vec import ConceptSource, DEFAULT_SIZE
from core.render import overlay
from core.features.net2vec_view import NEAR_ZERO_IOU, concept_rows, weak_concepts
from ui import cache, sidebar
from ui.widgets import progress_bar

st.title("Net2Vec concepts")
st.caption("Fong & Vedaldi 2018: per concept, a weight vector over a layer's channels whose thresholded "
           "combination segments the concept, compared with the best single channel (set IoU on held-out images).")

selection = sidebar.current()
if selection is not None:
    model = selection.model
    names = [l.name for l in cache.layers(model, selection.model_key)]
    c1, c2 = st.columns(2)
    folder = c1.text_input("Image folder", str(SAMPLES), key="lens_n2v_folder")
    layer = c1.selectbox("Layer", names, index=names.index(default_layer(model).name), key="lens_n2v_layer")
    source = c2.radio("Concepts", ["colour terms (from pixels)", "mask folder"], key="lens_n2v_source",
                      help="mask folder layout: MASKS/<concept>/<image stem>.png, non-zero = concept")
    masks = c2.text_input("Mask folder", "", key="lens_n2v_masks", disabled=source != "mask folder")
    size = c2.select_slider("Analysis grid", [14, 28, 56], value=DEFAULT_SIZE, key="lens_n2v_size")
    concepts = ConceptSource.COLORS.value if source != "mask folder" else masks.strip()
    params = (selection.model_key, folder, layer, concepts, size)
    if st.button("Learn concepts", type="primary", key="lens_n2v_run"):
        st.session_state["lens_n2v_params"] = params
    if st.session_state.get("lens_n2v_params") != params:
        st.info("Choose a folder, a layer and the concepts, then press **Learn concepts**.")
    else:
        try:
            with progress_bar("reading images", forget="lens_n2v_params") as progress:
                if not concepts:
                    raise ImageError("enter a mask folder")
                paths = tuple(str(p) for p in list_images(folder))
                if not paths:
                    raise ImageError(f"{folder}: no images")
                fits, used, errors = cache.net2vec_fits(model, selection.model_key, paths,
                                                        cache.Net2VecSettings(layer, concepts, size, 300), progress)
        except (ImageError, ValueError, KeyError) as e:
            st.error(str(e))
        else:
            for err in errors:
                st.warning(f"skipped: {err}")
            held = "held-out images" if fits[0].held_out else "the training images (fewer than 4 images)"
            st.caption(f"{len(used)} images; IoUs measured on {held}.")
            st.dataframe(pd.DataFrame(concept_rows(fits)), hide_index=True, width="stretch", column_config={
                "share of concept pixels": st.column_config.NumberColumn(format="percent"),
                "IoU, learnt combination": st.column_config.NumberColumn(format="%.3f"),
                "IoU, best single channel": st.column_config.NumberColumn(format="%.3f")})
            weak = weak_concepts(fits)
            if weak:
                st.warning(f"Weak: no combination or channel of {layer} segments {', '.join(weak)} (IoU below "
                           f"{NEAR_ZERO_IOU:g}), so those rows say nothing about the layer. Try another layer, more "
                           "images, or concepts that cover more of the images.")
            pick = st.selectbox("Concept", [f.name for f in fits], key="lens_n2v_concept")
            fit = fits[[f.name for f in fits].index(pick)]
            order = fit.weights.abs().argsort(descending=True)[:20]
            st.subheader(f"{pick}: the 20 largest weights (standardised channels)")
            st.bar_chart(pd.DataFrame({"channel": [str(int(i)) for i in order],
                                       "weight": fit.weights[order].tolist()}), x="channel", y="weight",
                         sort="-weight")
            st.subheader("Predicted masks")
            cols = st.columns(4)
            for i, path in enumerate(used[:8]):
                tensor = cache.model_input(model, selection.model_key, path).tensor
                cols[i % 4].image(overlay(tensor, fit.predicted[i].float(), alpha=0.5), width="stretch",
                                  caption=path.rsplit("/", 1)[-1])
