"""Similarity overlays: click a point and see which positions, here and in another image, a layer finds alike."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.images import ImageError, sample_images
from core.features.similarity import similarity_map
from core.features.similarity_spec import NO_OTHER, OTHER, SIMILARITY, STRETCH, X, Y
from ui import cache, sidebar
from ui import similarity_page as sim
from ui.options import technique_form, widget

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
    h, w = inp.tensor.shape[-2:]
    view = {"others": tuple(p.name for p in samples), "width": w, "height": h}
    other_names = list(OTHER.options(view))
    sim.bind(view)
    values = technique_form(SIMILARITY, cache.context(model), columns=1, layer_names=names)
    layer = values["layer"]
    other_name = widget(OTHER, OTHER.start(view), view, "lens_sim_other")
    stretch = widget(STRETCH, STRETCH.start(view), view, "lens_sim_stretch")
    try:
        query = cache.technique(SIMILARITY, model, selection.model_key, inp.tensor, selection.image_key, values)
        other = None
        if other_name != NO_OTHER:
            path = samples[other_names.index(other_name) - 1]
            other_inp = cache.model_input(model, selection.model_key, str(path))
            other = cache.technique(SIMILARITY, model, selection.model_key, other_inp.tensor,
                                    cache.content_key(path.read_bytes()), values)
    except (ImageError, ValueError, KeyError) as e:
        st.error(f"Could not compute the features: {e}")
    else:
        left, right = st.columns(2)
        sx, sy = st.columns(2)
        with sx:
            x = widget(X, None, view, "lens_sim_x")  # the value bind() put in the session
        with sy:
            y = widget(Y, None, view, "lens_sim_y")
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
