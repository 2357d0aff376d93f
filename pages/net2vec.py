"""Net2Vec: concepts as learnt combinations of a layer's channels, against the best single channel."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.features.net2vec import ConceptSource
from core.features.net2vec_spec import NET2VEC
from core.images import SAMPLES, ImageError, list_images
from ui import cache, run, sidebar, uploads
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
    with c1:
        uploads.zip_uploader("Or upload a .zip of images", key="lens_n2v_upload", target="lens_n2v_folder",
                             help="They stay on this server only while you use them.")
        path = uploads.folder_box("Image folder", value=str(SAMPLES), key="lens_n2v_folder")
    source = c2.radio("Concepts", n2v.SOURCES, index=n2v.SOURCES.index(n2v.source_of(NET2VEC)),
                      key="lens_n2v_source",
                      help="mask folder layout: MASKS/<concept>/<image stem>.png, non-zero = concept")
    mask_path = None
    if source == n2v.MASKS:
        with c2:
            uploads.zip_uploader("Or upload a .zip of masks", key="lens_n2v_mask_upload", target="lens_n2v_masks",
                                 help="<concept>/<image stem>.png inside the zip, non-zero = concept.")
            mask_path = uploads.folder_box("Mask folder", key="lens_n2v_masks")
    if path is None:
        st.stop()
    folder = str(path)
    concepts = ConceptSource.COLORS.value if source != n2v.MASKS else str(mask_path or "")
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
                    raise ImageError(f"{st.session_state['lens_n2v_folder']}: no images")
                fits, used, errors = cache.technique(NET2VEC, model, selection.model_key, paths,
                                                     cache.images_key(paths), values, progress)
        except (ImageError, ValueError, KeyError) as e:
            message = uploads.redact(str(e), path, st.session_state["lens_n2v_folder"])
            if mask_path is not None:
                message = uploads.redact(message, mask_path, st.session_state["lens_n2v_masks"])
            st.error(message)
        else:
            for err in errors:
                st.warning(f"skipped: {uploads.redact(str(err), path, st.session_state['lens_n2v_folder'])}")
            held = "held-out images" if fits[0].held_out else "the training images (fewer than 4 images)"
            st.caption(f"{len(used)} images; IoUs measured on {held}.")
            n2v.table(fits, layer)
            fit = n2v.concept_picker(fits)
            n2v.weights_chart(fit)
            picture = n2v.predicted_masks(model, selection.model_key, fit, used)
            n2v.report_button(selection, folder, values, fits, fit, picture, used)
