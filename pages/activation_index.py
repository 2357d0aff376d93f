"""Dataset examples: the image patches, from a whole folder, that excite one channel most (and the reverse)."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.index import IndexCorrupt, IndexStale, default_layers
from core.images import SAMPLES, ImageError
from core.index.view import architecture_dot, layer_group, opening_layer
from core.render import boxed, padded
from ui import cache, index_info, sidebar
from ui.widgets import progress_bar

st.title("Dataset examples")
st.caption("Which image patches, out of a whole folder, make a channel fire most: the top-k images per channel "
           "by the channel's spatial maximum, cropped to the receptive field of the strongest unit.")
COLS = 4


def _set_channel(channel: int) -> None:
    st.session_state["lens_idx_mode"] = "Number"
    st.session_state["lens_idx_channel"] = channel
    st.session_state.pop("lens_idx_expanded", None)


selection = sidebar.current()
if selection is None:
    st.stop()
model = selection.model
catalogue = cache.layers(model, selection.model_key)
names = [l.name for l in catalogue]

# ------------------------------------------------------------------------------------------- the index
with st.expander("Index: folder, layers, build", expanded=False):
    opened = st.text_input("Open an index directory (optional)", key="lens_idx_open",
                           help="Any index built with python -m core index build (local or Ray engine, e.g. on a "
                                "cluster). Its images are looked up under the folder it recorded, else the same "
                                "folder relative to the index directory.").strip()
    folder = st.text_input("Image folder (searched recursively)", value=str(SAMPLES), key="lens_idx_folder",
                           help="Any folder, e.g. an ImageNet validation set. Big folders are faster from the "
                                "command line: python -m core index build FOLDER")
    defaults = [n for n in default_layers(model) if n in names]
    chosen_layers = st.multiselect("Layers", names, default=defaults, key="lens_idx_layers",
                                   help="Default: the output of every stage. Block internals (e.g. "
                                        "stages.2.blocks.5.mlp.fc1) may be added; changing the list rebuilds.")
    top_k = st.number_input("Images kept per channel (top-k)", 1, 256, 16, key="lens_idx_k")
    build = st.button("Build or update the index", type="primary", key="lens_idx_build",
                      disabled=not chosen_layers or bool(opened))  # never rebuild an opened index here

directory = opened or cache.index_directory(model, folder)
if build:
    try:
        with progress_bar("Starting...") as progress:
            result = cache.build_activation_index(model, folder, directory, chosen_layers, int(top_k), progress)
    except (ValueError, ImageError, IndexCorrupt, OSError) as e:
        st.error(f"Index not built: {e}")
    else:
        for note in result.notes:
            st.info(note)
        st.success(f"{len(result.index)} images indexed ({result.added} new, "
                   f"{result.images_per_second:.1f} images/s).")
        for s in result.skipped[:10]:
            st.warning(f"Skipped {s['error']}")

stamp = cache.index_stamp(directory)
index = None
if stamp is not None:
    try:
        index = cache.open_activation_index(directory, stamp)
    except IndexCorrupt as e:
        st.error(f"The index is damaged and will be rebuilt when you press Build: {e}")
if index is None:
    st.info(f"No index at {opened}." if opened else f"No index yet for this model over {folder}. Open 'Index' "
            "above and press Build (the 70 sample photos take a few seconds to a minute).")
    st.stop()
index_info.show(cache.activation_index_summary(directory, stamp))
mismatch = index_info.model_mismatch(index, model)
if mismatch:
    st.warning(mismatch)

st.caption(f"{len(index)} images from {index.root}, {len(index.layers)} layers, top-{index.top_k} per channel; "
           f"model {index.spec['model']}.")

# ---------------------------------------------------------------------------------------- layer, channel
indexed = list(index.layers)
groups = list(dict.fromkeys(layer_group(n) for n in indexed))
start = layer_group(opening_layer(index.layers, index.input_size[0]))
group = st.pills("Part of the model", groups, default=start, key="lens_idx_group") or start
st.graphviz_chart(architecture_dot(catalogue, indexed, group), width="stretch")
in_group = [n for n in indexed if layer_group(n) == group]
layer = st.selectbox("Layer", in_group, index=len(in_group) - 1 if group in in_group else 0, key="lens_idx_layer")
info = index.layer(layer)

mode = st.radio("Channel", ["Number", "Slider", "Most selective"], horizontal=True, key="lens_idx_mode")
if mode == "Most selective":
    sel = index.selectivity(layer)
    top_sel = index.most_selective(layer, 30)
    channel = st.selectbox("Most selective channels (top-1 image, in standard deviations above the channel's "
                           "mean over all images)", top_sel, format_func=lambda c: f"{c}  ({sel[c]:.1f} sd)",
                           key="lens_idx_selective")
elif mode == "Slider":
    channel = st.slider("Channel number", 0, info.channels - 1, key="lens_idx_channel")
else:
    channel = st.number_input("Channel number", 0, info.channels - 1, key="lens_idx_channel")
channel = int(min(channel, info.channels - 1))

# ------------------------------------------------------------------------------------------- patch grid
st.subheader(f"{layer}, channel {channel}: top {index.top_k} images")
st.caption(f"Receptive field {info.receptive_field} px at the model input ({info.grid[0]}x{info.grid[1]} grid, "
           f"{info.layout.value}); each crop is that field around the strongest unit, in original pixels.")
patches = index.top(layer, channel)
try:
    for start in range(0, len(patches), COLS):
        for col, patch in zip(st.columns(COLS), patches[start:start + COLS]):
            with col:
                crop = cache.patch_crop(directory, stamp, patch.image_id, patch.box)
                st.image(padded(crop, 160),
                         caption=f"#{patch.rank + 1}  {patch.value:.3g}  {patch.image.name}")
                st.button("Full image", key=f"lens_idx_expand_{patch.rank}",
                          on_click=st.session_state.__setitem__, args=("lens_idx_expanded", patch.rank))
except (IndexStale, ImageError) as e:
    st.error(f"{e}")

expanded = st.session_state.get("lens_idx_expanded")
if expanded is not None and expanded < len(patches) and not mismatch:
    patch = patches[expanded]
    st.subheader(f"#{patch.rank + 1}: {patch.image.name}")
    try:
        heat, original = cache.patch_context(model, selection.model_key, directory, stamp, patch.image_id, layer,
                                             channel)
    except (IndexStale, ImageError) as e:
        st.error(str(e))
    else:
        left, right = st.columns(2)
        left.image(boxed(original, patch.box, max(2, original.width // 150)), width="stretch",
                   caption=f"original {original.width}x{original.height}, patch box {patch.box}")
        right.image(boxed(heat, patch.input_box, 2), width="stretch",
                    caption=f"channel {channel} over the model input; max {patch.value:.3g} at grid "
                            f"({patch.y}, {patch.x})")

# ---------------------------------------------------------------------------------------- reverse lookup
if mismatch:
    st.stop()
st.subheader(f"What {selection.name} excites in {layer}")
st.caption("Channels ranked by how far the image's maximum stands above the channel's mean over the indexed "
           "images (in standard deviations), each with its top indexed patches.")
try:
    hits = cache.channels_excited(model, selection.model_key, selection.inp.tensor, selection.image_key, directory,
                                  stamp, layer, 6)
except ValueError as e:  # an index of another model (cannot happen through this page's directory key)
    st.error(str(e))
    hits = []
for hit in hits:
    cols = st.columns([1.2] + [1] * COLS)
    with cols[0]:
        st.markdown(f"**channel {hit.channel}**  \n{hit.value:.3g} ({hit.z:+.1f} sd) at ({hit.y}, {hit.x})")
        st.button("Show", key=f"lens_idx_show_{hit.channel}", on_click=_set_channel, args=(hit.channel,))
    for col, patch in zip(cols[1:], index.top(layer, hit.channel, COLS)):
        try:
            col.image(padded(cache.patch_crop(directory, stamp, patch.image_id, patch.box), 96),
                      caption=f"{patch.value:.3g}")
        except (IndexStale, ImageError) as e:
            col.caption(str(e))
