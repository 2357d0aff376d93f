"""Streamlit pieces of the Dataset-examples page (pages/activation_index.py): the build report, the layer and
channel pickers, the patch grid, the full-image view of one patch and the reverse-lookup rows.

Widget keys are the page's (``lens_idx_*``); core is reached through :mod:`ui.index_cache` only.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from core.images import ImageError
from core.index import ActivationIndex, IndexCorrupt, IndexStale
from core.index.spec import TOP, commands
from core.index.view import architecture_dot, group_choice, layer_group, opening_layer
from core.render import boxed, captioned_strip, heat_figure, labelled_tile, padded, tile_grid
from ui import index_cache, permalink, report
from ui.options import setting_widget
from ui.permalink import Param
from ui.widgets import progress_bar

COLS = 4  # patches per row
TILE = 192  # side of a patch tile in the grid (pixels; every tile the same size)


def patch_tile(crop, patch, side: int) -> np.ndarray:
    """One equal-size tile: the crop fitted to a ``side`` square, its rank and value (activation or relevance)
    written under it."""
    return labelled_tile(crop, side, f"#{patch.rank + 1}  {patch.by} {patch.value:.3g}")


MODES = ["Number", "Slider", "Most selective"]
PARAMS = [Param("open", "lens_idx_open"), Param("folder", "lens_idx_folder"), Param("layer", "lens_idx_layer"),
          Param("mode", "lens_idx_mode", options=MODES), Param("channel", "lens_idx_channel", int),
          Param("selective", "lens_idx_selective", int), Param("patch", "lens_idx_expanded", int)]


def bind() -> None:
    """Restore the page's settings from the link (index, layer, channel, the opened patch), then publish them.

    A linked layer also selects its part of the model (the pills), once; a layer or channel this index lacks
    is dropped or clamped where the pickers are drawn.
    """
    if "layer" in permalink.restore(PARAMS):
        st.session_state["lens_idx_linked_layer"] = st.session_state["lens_idx_layer"]
    expanded = st.session_state.get("lens_idx_expanded")
    permalink.publish(PARAMS[:-1], {"patch": None if expanded is None else str(expanded)})


def set_channel(channel: int) -> None:
    """Button callback: show ``channel`` in the channel picker (number mode) and close the full-image view."""
    st.session_state["lens_idx_mode"] = "Number"
    st.session_state["lens_idx_channel"] = channel
    st.session_state.pop("lens_idx_expanded", None)


def build(model, folder: str, directory: str, values: dict, shown: str | None = None) -> None:
    """Build or update the index at ``directory`` from ``folder`` with ``values`` (:data:`core.index.spec.BUILD`)
    with a progress bar; report the outcome (naming the folder ``shown``, when given, in messages)."""
    try:
        with progress_bar("Starting...") as progress:
            result = index_cache.build_activation_index(model, folder, directory, values, progress)
    except (ValueError, ImageError, IndexCorrupt, OSError) as e:
        message = str(e) if shown is None else str(e).replace(folder, shown).replace(directory, "the index")
        st.error(f"Index not built: {message}")
        return
    for note in result.notes:
        st.info(note)
    st.success(f"{len(result.index)} images indexed ({result.added} new, {result.images_per_second:.1f} images/s).")
    for s in result.skipped[:10]:
        st.warning(f"Skipped {s['error'] if shown is None else s['error'].replace(folder, shown)}")


def sample_index(model, model_key: str, folder: str, directory: str) -> str | None:
    """Wait for the index of the sample photos ``folder`` at ``directory``, built once in the background for every
    visitor (the first visit starts it), with its progress; its stamp (None when the build failed: an error says
    so)."""
    job = index_cache.sample_index(model, model_key, folder)
    if not job.done.is_set():
        bar = st.progress(0.0, text="Indexing the sample photos (once, for every visitor)...")
        while not job.done.wait(0.25):
            bar.progress(min(max(job.fraction, 0.0), 1.0), text=f"Indexing the sample photos: {job.message}")
        bar.empty()
    if job.error:
        index_cache.sample_index.clear()  # the next visit tries again
        st.error(f"The sample photos' index was not built: {job.error}")
        return None
    return index_cache.index_stamp(directory)


def open_index(directory: str, stamp: str | None) -> ActivationIndex | None:
    """The index at ``directory`` (None when there is none, or it is damaged: then an error says so)."""
    if stamp is None:
        return None
    try:
        return index_cache.open_activation_index(directory, stamp)
    except IndexCorrupt as e:
        st.error(f"The index is damaged and will be rebuilt when you press Build: {e}")
        return None


def layer_picker(index: ActivationIndex, catalogue) -> str:
    """Pills for the part of the model, its architecture diagram, and a select box for an indexed layer in it."""
    indexed = list(index.layers)
    groups = list(dict.fromkeys(layer_group(n) for n in indexed))
    start = layer_group(opening_layer(index.layers, index.input_size[0]))
    linked = st.session_state.pop("lens_idx_linked_layer", None)
    if linked in indexed:
        st.session_state["lens_idx_group"] = layer_group(linked)
    elif linked is not None:
        st.caption(f"The link's layer={linked} is not in this index; the default is used.")
    group = st.pills("Part of the model", groups, default=start, key="lens_idx_group") or start
    st.graphviz_chart(architecture_dot(catalogue, indexed, group), width="stretch")
    in_group = [n for n in indexed if layer_group(n) == group]
    if st.session_state.get("lens_idx_layer") not in in_group:
        st.session_state.pop("lens_idx_layer", None)
    return st.selectbox("Layer", in_group, index=in_group.index(group_choice(indexed, group)), key="lens_idx_layer")


def channel_picker(index: ActivationIndex, layer: str) -> int:
    """A channel of ``layer`` by number, slider or from the most selective ones; clamped to the layer's width."""
    channels = index.layer(layer).channels
    if int(st.session_state.get("lens_idx_channel", 0)) >= channels:  # a narrower layer, or a link's channel
        st.session_state["lens_idx_channel"] = channels - 1
    mode = st.radio("Channel", MODES, horizontal=True, key="lens_idx_mode")
    if mode == "Most selective":
        sel = index.selectivity(layer)
        if st.session_state.get("lens_idx_selective") not in index.most_selective(layer, 30):
            st.session_state.pop("lens_idx_selective", None)
        channel = st.selectbox("Most selective channels (top-1 image, in standard deviations above the channel's "
                               "mean over all images)", index.most_selective(layer, 30),
                               format_func=lambda c: f"{c}  ({sel[c]:.1f} sd)", key="lens_idx_selective")
    elif mode == "Slider":
        channel = st.slider("Channel number", 0, channels - 1, key="lens_idx_channel")
    else:
        channel = st.number_input("Channel number", 0, channels - 1, key="lens_idx_channel")
    return int(min(channel, channels - 1))


def ranking_picker(index: ActivationIndex) -> str:
    """"activation", or the ranking chosen on :data:`core.index.spec.TOP`'s toggle when the index keeps the
    relevance ranking too."""
    if not index.has_relevance:
        return "activation"
    return setting_widget(TOP, "by", {})


def _by(by: str) -> dict:
    """The ranking as the query's value: written out only for relevance (activation is the command's default and
    the only ranking of an index built without relevance)."""
    return {"by": by} if by == "relevance" else {}


def patch_grid(directory: str, stamp: str, patches: list) -> None:
    """The patches ``COLS`` to a row, each with a "Full image" button; an unreadable image stops the grid."""
    try:
        for start in range(0, len(patches), COLS):
            for col, patch in zip(st.columns(COLS), patches[start:start + COLS]):
                with col:
                    crop = index_cache.patch_crop(directory, stamp, patch.image_id, patch.box)
                    st.image(patch_tile(crop, patch, TILE), width="stretch", caption=patch.image.name)
                    st.button("Full image", key=f"lens_idx_expand_{patch.rank}",
                              on_click=st.session_state.__setitem__, args=("lens_idx_expanded", patch.rank))
    except (IndexStale, ImageError) as e:
        st.error(f"{e}")


def expanded_patch(selection, directory: str, stamp: str, patches: list, layer: str, channel: int) -> None:
    """When a "Full image" button was pressed: the original image with the patch box, and the channel's heat map
    over the model input with the strongest unit's box."""
    expanded = st.session_state.get("lens_idx_expanded")
    if expanded is None or not 0 <= expanded < len(patches):
        return
    model, patch = selection.model, patches[expanded]
    st.subheader(f"#{patch.rank + 1}: {patch.image.name}")
    try:
        amap, x, original = index_cache.patch_context(selection.model, selection.model_key, directory, stamp,
                                                patch.image_id, layer, channel)
    except (IndexStale, ImageError) as e:
        st.error(str(e))
        return
    left, right = st.columns(2)
    left.image(boxed(original, patch.box, max(2, original.width // 150)), width="stretch",
               caption=f"original {original.width}x{original.height}, patch box {patch.box}")
    heat, scale = heat_figure(amap, x, signed=False, units="activation")
    heat = np.asarray(boxed(heat, patch.input_box, 2))
    peak = (f"max {patch.value:.3g} at grid ({patch.y}, {patch.x})" if patch.by == "activation" else
            f"relevance {patch.value:.3g}, highest at grid ({patch.y}, {patch.x})")
    caption = f"channel {channel} over the model input; {peak}; {scale.describe()}"
    right.image(heat, width="stretch", caption=caption)
    shown = np.asarray(padded(boxed(original, patch.box, max(2, original.width // 150)), heat.shape[0]))
    report.add_button(lambda: report.item(
        selection, image=False, title=f"{patch.image.name}: #{patch.rank + 1} for {layer} channel {channel}",
        figure=captioned_strip([(shown, f"{patch.image.name}, patch box"), (heat, f"channel {channel}")]),
        caption=f"Left: the original image with the patch box {patch.box}. Right: {caption}.",
        settings={"index": report.path_arg(directory), "layer": layer, "channel": channel,
                  "rank": patch.rank + 1, "image file": str(patch.image)},
        command=commands(model.card, report.path_arg(directory), {"layer": layer, "channel": channel,
                                                                  "k": patch.rank + 1, **_by(patch.by)}),
        figures={patch.by: patch.value},
        notes=("The command lists the patches (and with --out-dir writes their crops); the heat map over the "
               "model input is drawn on the dashboard only.",)),
        key=f"idxfull_{directory}_{layer}_{channel}_{patch.rank}")


def excited_rows(index: ActivationIndex, directory: str, stamp: str, layer: str, hits: list) -> None:
    """One row per excited channel: its value and z-score, a "Show" button, and its top ``COLS`` patches."""
    for hit in hits:
        cols = st.columns([1.2] + [1] * COLS)
        with cols[0]:
            st.markdown(f"**channel {hit.channel}**  \n{hit.value:.3g} ({hit.z:+.1f} sd) at ({hit.y}, {hit.x})")
            st.button("Show", key=f"lens_idx_show_{hit.channel}", on_click=set_channel, args=(hit.channel,))
        for col, patch in zip(cols[1:], index.top(layer, hit.channel, COLS)):
            try:
                col.image(patch_tile(index_cache.patch_crop(directory, stamp, patch.image_id, patch.box), patch, 128),
                          width="stretch")
            except (IndexStale, ImageError) as e:
                col.caption(str(e))


def excited_report(selection, index: ActivationIndex, directory: str, stamp: str, layer: str, hits: list) -> None:
    """"Add to report" for the reverse lookup: one row of labelled tiles per excited channel, their z-scores."""
    if not hits:
        return

    def make():
        tiles = []
        for hit in hits:
            for patch in index.top(layer, hit.channel, COLS):
                crop = index_cache.patch_crop(directory, stamp, patch.image_id, patch.box)
                tiles.append(labelled_tile(crop, 128, f"ch {hit.channel} #{patch.rank + 1} {patch.value:.3g}"))
            if tiles and len(tiles) % COLS:  # each channel starts a row
                tiles += [np.full_like(tiles[-1], 255)] * (COLS - len(tiles) % COLS)
        return report.item(
            selection, title=f"What {selection.name} excites in {layer}", figure=tile_grid(tiles, COLS),
            caption="One row per channel, ranked by how far the image's maximum stands above the channel's mean over "
                    "the indexed images; each row: that channel's top indexed patches with their activation.",
            settings={"index": report.path_arg(directory), "layer": layer, "channels": len(hits)},
            figures={f"channel {h.channel}: {h.value:.3g} at ({h.y}, {h.x}), sd above mean": h.z for h in hits},
            notes=("The reverse lookup is drawn on the dashboard only; python -m core index top lists a channel's "
                   "patches.",))

    try:
        report.add_button(make, key=f"idxrev_{selection.key}_{directory}_{stamp}_{layer}")
    except (IndexStale, ImageError) as e:
        st.error(str(e))


def grid_report(selection, directory: str, stamp: str, index: ActivationIndex, layer: str, channel: int,
                patches: list, folder: str | None) -> None:
    """"Add to report" for the patch grid: the labelled tiles, the index and the commands that build and query
    it (``folder`` None for an index opened by path: then only the query)."""
    by = patches[0].by if patches else "activation"

    def make():
        tiles = [patch_tile(index_cache.patch_crop(directory, stamp, p.image_id, p.box), p, 160) for p in patches]
        summary = index_cache.activation_index_summary(directory, stamp)
        return report.item(
            selection, image=False, title=f"Dataset examples: {layer} channel {channel}",
            figure=tile_grid(tiles, COLS),
            caption=f"The top {len(patches)} of {len(index)} indexed images for channel {channel} of {layer}: each "
                    + ("crop is the receptive field around the strongest unit, with its rank and activation (the "
                       "channel's maximum over the image)." if by == "activation" else
                       "crop is the receptive field around the unit where the channel's relevance is highest, with "
                       "its rank and relevance (the channel's LRP relevance for the image's predicted class, summed "
                       "over the image)."),
            settings={"index": report.path_arg(directory), "images indexed": len(index), "layer": layer,
                      "channel": channel, "top-k": index.top_k, "indexed model": index.spec["model"]},
            command=commands(selection.model.card, report.path_arg(directory),
                             {"layer": layer, "channel": channel, "k": len(patches), **_by(by)},
                             folder=None if folder is None else report.path_arg(folder),
                             build={"layers": tuple(index.layers), "top_k": index.top_k,
                                    "relevance": index.has_relevance}),
            seconds=float(summary.build_seconds or 0.0),
            figures={f"#{p.rank + 1} {p.by}": p.value for p in patches[:COLS]})

    try:
        report.add_button(make, key=f"idxgrid_{directory}_{stamp}_{layer}_{channel}")
    except (IndexStale, ImageError) as e:
        st.error(str(e))
