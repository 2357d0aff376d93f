"""Similarity overlays: click a point and see which positions, here and in another image, a layer finds alike."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.catalogue import default_layer
from core.images import ImageError, sample_images
from core.features.similarity import similarity_map
from core.warm import SIMILARITY_OTHER
from ui import cache, sidebar
from ui import similarity_page as sim

try:  # click-coordinates component (offline: its frontend ships in the wheel)
    from streamlit_image_coordinates import streamlit_image_coordinates
except ImportError:  # pragma: no cover - the sliders below still work
    streamlit_image_coordinates = None

st.title("Similarity overlays")
st.caption("Cosine similarity between the feature vector at the clicked point and every position of the same "
           "image and of a second image (Fong, Mordvintsev, Vedaldi & Olah).")

selection = sidebar.current()
if selection is not None:
    model, inp = selection.model, selection.inp
    names = [l.name for l in cache.layers(model, selection.model_key)]
    samples = sample_images()
    other_names = ["(none)"] + [p.name for p in samples]
    h, w = inp.tensor.shape[-2:]
    sim.bind(names, other_names, w, h)
    layer = st.selectbox("Layer", names, index=names.index(default_layer(model).name), key="lens_sim_layer")
    default_other = other_names.index(SIMILARITY_OTHER) if SIMILARITY_OTHER in other_names else 0
    other_name = st.selectbox("Second image", other_names, index=default_other, key="lens_sim_other")
    stretch = st.toggle("Stretch colours to each map's range", value=True, key="lens_sim_stretch",
                        help="deep layers are alike almost everywhere (cosines near 1): stretching shows the "
                             "differences; off shows the absolute scale, blue -1 to red +1")
    try:
        query = cache.similarity_features(model, selection.model_key, inp.tensor, selection.image_key, layer)
        other = None
        if other_name != "(none)":
            path = samples[other_names.index(other_name) - 1]
            other_inp = cache.model_input(model, selection.model_key, str(path))
            other = cache.similarity_features(model, selection.model_key, other_inp.tensor,
                                              cache.content_key(path.read_bytes()), layer)
    except (ImageError, ValueError, KeyError) as e:
        st.error(f"Could not compute the features: {e}")
    else:
        left, right = st.columns(2)
        sx, sy = st.columns(2)
        x = sx.slider("x (model-input pixels)", 0, w - 1, key="lens_sim_x")
        y = sy.slider("y (model-input pixels)", 0, h - 1, key="lens_sim_y")
        cell = query.cell_at(x, y)
        own = similarity_map(query, cell)
        with left:
            picture, scale = sim.picture(inp.tensor, own.map, stretch)
            picture = sim.mark(picture, *query.centre(*cell), w)
            click, bar = st.columns([5, 1])
            if streamlit_image_coordinates is not None:
                def moved(w=w, h=h):
                    # a callback runs before the sliders exist, so it may set their values
                    click = st.session_state.get("lens_sim_click")
                    if click:
                        st.session_state["lens_sim_x"] = int(min(w - 1, click["x"] * w / max(1, click["width"])))
                        st.session_state["lens_sim_y"] = int(min(h - 1, click["y"] * h / max(1, click["height"])))

                with click:
                    streamlit_image_coordinates(picture, key="lens_sim_click", width="stretch", on_click=moved)
                st.caption(f"Click a point (or use the sliders). Cell {cell} of {query.grid}.")
            else:
                click.image(picture, width="stretch", caption=f"cell {cell} of {query.grid}")
            sim.bar_beside(bar, scale, picture.shape[0])
        cross_view = None
        with right:
            if other is not None:
                cross = similarity_map(query, cell, other)
                cross_pic, cross_scale = sim.picture(other_inp.tensor, cross.map, stretch)
                cross_view = (cross_pic, cross_scale, cross)
                shown, bar = st.columns([5, 1])  # the same layout and bar as the clickable map's
                shown.image(cross_pic, width="stretch", caption=f"{other_name}: best match at cell {cross.max_cell} "
                                                                f"(cosine {float(cross.map.max()):.2f})")
                sim.bar_beside(bar, cross_scale, cross_pic.shape[0])
            else:
                st.info("Choose a second image to compare.")
        st.caption(sim.colours_caption(stretch))
        sim.report_button(selection, layer, x, y, cell, query.grid, picture, scale,
                          other_name if other is not None else None, cross_view, stretch,
                          query.seconds + (other.seconds if other is not None else 0.0))
