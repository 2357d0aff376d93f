"""Streamlit pieces of the Dataset-examples page (pages/activation_index.py): the build report, the layer and
channel pickers, the patch grid, the full-image view of one patch and the reverse-lookup rows.

Widget keys are the page's (``lens_idx_*``); core is reached through :mod:`ui.cache` only.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from core.images import ImageError
from core.index import ActivationIndex, IndexCorrupt, IndexStale
from core.index.view import architecture_dot, layer_group, opening_layer
from core.render import boxed, heat_figure, labelled_tile
from ui import cache
from ui.widgets import progress_bar

COLS = 4  # patches per row
TILE = 192  # side of a patch tile in the grid (pixels; every tile the same size)


def patch_tile(crop, patch, side: int) -> np.ndarray:
    """One equal-size tile: the crop fitted to a ``side`` square, its rank and activation written under it."""
    return labelled_tile(crop, side, f"#{patch.rank + 1}  activation {patch.value:.3g}")


def set_channel(channel: int) -> None:
    """Button callback: show ``channel`` in the channel picker (number mode) and close the full-image view."""
    st.session_state["lens_idx_mode"] = "Number"
    st.session_state["lens_idx_channel"] = channel
    st.session_state.pop("lens_idx_expanded", None)


def build(model, folder: str, directory: str, layers: list[str], top_k: int) -> None:
    """Build or update the index at ``directory`` from ``folder`` with a progress bar; report the outcome."""
    try:
        with progress_bar("Starting...") as progress:
            result = cache.build_activation_index(model, folder, directory, layers, top_k, progress)
    except (ValueError, ImageError, IndexCorrupt, OSError) as e:
        st.error(f"Index not built: {e}")
        return
    for note in result.notes:
        st.info(note)
    st.success(f"{len(result.index)} images indexed ({result.added} new, {result.images_per_second:.1f} images/s).")
    for s in result.skipped[:10]:
        st.warning(f"Skipped {s['error']}")


def open_index(directory: str, stamp: str | None) -> ActivationIndex | None:
    """The index at ``directory`` (None when there is none, or it is damaged: then an error says so)."""
    if stamp is None:
        return None
    try:
        return cache.open_activation_index(directory, stamp)
    except IndexCorrupt as e:
        st.error(f"The index is damaged and will be rebuilt when you press Build: {e}")
        return None


def layer_picker(index: ActivationIndex, catalogue) -> str:
    """Pills for the part of the model, its architecture diagram, and a select box for an indexed layer in it."""
    indexed = list(index.layers)
    groups = list(dict.fromkeys(layer_group(n) for n in indexed))
    start = layer_group(opening_layer(index.layers, index.input_size[0]))
    group = st.pills("Part of the model", groups, default=start, key="lens_idx_group") or start
    st.graphviz_chart(architecture_dot(catalogue, indexed, group), width="stretch")
    in_group = [n for n in indexed if layer_group(n) == group]
    return st.selectbox("Layer", in_group, index=len(in_group) - 1 if group in in_group else 0, key="lens_idx_layer")


def channel_picker(index: ActivationIndex, layer: str) -> int:
    """A channel of ``layer`` by number, slider or from the most selective ones; clamped to the layer's width."""
    channels = index.layer(layer).channels
    mode = st.radio("Channel", ["Number", "Slider", "Most selective"], horizontal=True, key="lens_idx_mode")
    if mode == "Most selective":
        sel = index.selectivity(layer)
        channel = st.selectbox("Most selective channels (top-1 image, in standard deviations above the channel's "
                               "mean over all images)", index.most_selective(layer, 30),
                               format_func=lambda c: f"{c}  ({sel[c]:.1f} sd)", key="lens_idx_selective")
    elif mode == "Slider":
        channel = st.slider("Channel number", 0, channels - 1, key="lens_idx_channel")
    else:
        channel = st.number_input("Channel number", 0, channels - 1, key="lens_idx_channel")
    return int(min(channel, channels - 1))


def patch_grid(directory: str, stamp: str, patches: list) -> None:
    """The patches ``COLS`` to a row, each with a "Full image" button; an unreadable image stops the grid."""
    try:
        for start in range(0, len(patches), COLS):
            for col, patch in zip(st.columns(COLS), patches[start:start + COLS]):
                with col:
                    crop = cache.patch_crop(directory, stamp, patch.image_id, patch.box)
                    st.image(patch_tile(crop, patch, TILE), width="stretch", caption=patch.image.name)
                    st.button("Full image", key=f"lens_idx_expand_{patch.rank}",
                              on_click=st.session_state.__setitem__, args=("lens_idx_expanded", patch.rank))
    except (IndexStale, ImageError) as e:
        st.error(f"{e}")


def expanded_patch(model, model_key: str, directory: str, stamp: str, patches: list, layer: str,
                   channel: int) -> None:
    """When a "Full image" button was pressed: the original image with the patch box, and the channel's heat map
    over the model input with the strongest unit's box."""
    expanded = st.session_state.get("lens_idx_expanded")
    if expanded is None or expanded >= len(patches):
        return
    patch = patches[expanded]
    st.subheader(f"#{patch.rank + 1}: {patch.image.name}")
    try:
        amap, x, original = cache.patch_context(model, model_key, directory, stamp, patch.image_id, layer, channel)
    except (IndexStale, ImageError) as e:
        st.error(str(e))
        return
    left, right = st.columns(2)
    left.image(boxed(original, patch.box, max(2, original.width // 150)), width="stretch",
               caption=f"original {original.width}x{original.height}, patch box {patch.box}")
    heat, scale = heat_figure(amap, x, signed=False, units="activation")
    right.image(boxed(heat, patch.input_box, 2), width="stretch",
                caption=f"channel {channel} over the model input; max {patch.value:.3g} at grid ({patch.y}, {patch.x}); "
                        f"{scale.describe()}")


def excited_rows(index: ActivationIndex, directory: str, stamp: str, layer: str, hits: list) -> None:
    """One row per excited channel: its value and z-score, a "Show" button, and its top ``COLS`` patches."""
    for hit in hits:
        cols = st.columns([1.2] + [1] * COLS)
        with cols[0]:
            st.markdown(f"**channel {hit.channel}**  \n{hit.value:.3g} ({hit.z:+.1f} sd) at ({hit.y}, {hit.x})")
            st.button("Show", key=f"lens_idx_show_{hit.channel}", on_click=set_channel, args=(hit.channel,))
        for col, patch in zip(cols[1:], index.top(layer, hit.channel, COLS)):
            try:
                col.image(patch_tile(cache.patch_crop(directory, stamp, patch.image_id, patch.box), patch, 128),
                          width="stretch")
            except (IndexStale, ImageError) as e:
                col.caption(str(e))
