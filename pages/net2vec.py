"""Net2Vec: concepts as learnt combinations of a layer's channels, against the best single channel."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.features.net2vec import ConceptSource
from core.features.net2vec_spec import NET2VEC
from core.images import SAMPLES, ImageError, list_images
from ui import cache, run, sidebar
from ui import net2vec_page as n2v
from ui.options import technique_form
from ui.widgets import progress_bar

st.title("Net2Vec concepts")
st.caption("Fong & Vedaldi 2018: per concept, a weight vector over a layer's channels whose thresholded "
           "combination segments the concept, compared with the best single channel (set IoU on held-out images).")

selection = sidebar.current()
if selection is not None:
    model = selection.model
    names = [l.name for l in cache.layers(model, selection.model_key)]
    n2v.bind()
    c1, c2 = st.columns(2)
    folder = c1.text_input("Image folder", str(SAMPLES), key="lens_n2v_folder")
    source = c2.radio("Concepts", n2v.SOURCES, index=n2v.SOURCES.index(n2v.source_of(NET2VEC)),
                      key="lens_n2v_source",
                      help="mask folder layout: MASKS/<concept>/<image stem>.png, non-zero = concept")
    masks = c2.text_input("Mask folder", "", key="lens_n2v_masks", disabled=source != n2v.MASKS)
    concepts = ConceptSource.COLORS.value if source != n2v.MASKS else masks.strip()
    values = technique_form(NET2VEC, cache.context(model), columns=2, layer_names=names,
                            fixed={"concepts": concepts})
    layer = values["layer"]
    params = (selection.model_key, folder, *values.values())
    opening = folder == str(SAMPLES) and concepts == NET2VEC.setting("concepts").default  # the default fit
    if run.button("Learn concepts", params, "lens_n2v_run", opening=opening):
        try:
            with progress_bar("reading images", forget="lens_n2v_params") as progress:
                if not concepts:
                    raise ImageError("enter a mask folder")
                paths = tuple(str(p) for p in list_images(folder))
                if not paths:
                    raise ImageError(f"{folder}: no images")
                fits, used, errors = cache.technique(NET2VEC, model, selection.model_key, paths,
                                                     cache.images_key(paths), values, progress)
        except (ImageError, ValueError, KeyError) as e:
            st.error(str(e))
        else:
            for err in errors:
                st.warning(f"skipped: {err}")
            held = "held-out images" if fits[0].held_out else "the training images (fewer than 4 images)"
            st.caption(f"{len(used)} images; IoUs measured on {held}.")
            n2v.table(fits, layer)
            fit = n2v.concept_picker(fits)
            n2v.weights_chart(fit)
            picture = n2v.predicted_masks(model, selection.model_key, fit, used)
            n2v.report_button(selection, folder, values, fits, fit, picture, used)
