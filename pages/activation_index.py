"""Dataset examples: the image patches, from a whole folder, that excite one channel most (and the reverse)."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core import dataroots
from core.images import SAMPLES
from core.index.spec import BUILD, build_context
from ui import cache, index_cache, index_info, index_page, sidebar, uploads
from ui.options import technique_form

st.title("Dataset examples")
st.caption("Which image patches, out of a whole folder, make a channel fire most: the top-k images per channel "
           "by the channel's spatial maximum, cropped to the receptive field of the strongest unit.")

selection = sidebar.current()
if selection is None:
    st.stop()
model = selection.model
catalogue = cache.layers(model, selection.model_key)
index_page.bind()
names = [l.name for l in catalogue]

# ------------------------------------------------------------------------------------------- the index
hosted = dataroots.hosted()
with st.expander("Index: folder, layers, build", expanded=False):
    opened = "" if hosted else st.text_input(  # hosted, an index is built over a data folder or an upload only
        "Open an index directory (optional)", key="lens_idx_open",
        help="Any index built with python -m core index build (local or Ray engine, e.g. on a cluster). Its images "
             "are looked up under the folder it recorded, else the same folder relative to the index directory.").strip()
    uploads.zip_uploader("Or upload a .zip of images", key="lens_idx_upload", target="lens_idx_folder",
                         help="Images in any folders inside the zip; the index is built over them. They stay on "
                              "this server only while you use them.")
    path = uploads.folder_box("Image folder (searched recursively)", value=str(SAMPLES), key="lens_idx_folder",
                              help=None if hosted else "Any folder, e.g. an ImageNet validation set. Big folders "
                                   "are faster from the command line: python -m core index build FOLDER")
    folder = "" if path is None else str(path)
    values = technique_form(BUILD, build_context(model), columns=1, layer_names=names)  # layers, top-k
    build = st.button("Build or update the index", type="primary", key="lens_idx_build",
                      disabled=not values["layers"] or bool(opened) or not folder)  # never rebuild an opened index
if not opened and not folder:
    st.stop()
shown = dataroots.shown(folder, uploads.existing_area()) if hosted else folder

directory = opened or index_cache.index_directory(model, folder)
if build:
    index_page.build(model, folder, directory, values, shown if hosted else None)

stamp = index_cache.index_stamp(directory)
if stamp is None and not opened and folder == str(SAMPLES):  # the demo opens full: built once, in the background
    stamp = index_page.sample_index(model, selection.model_key, folder, directory)
index = index_page.open_index(directory, stamp)
if index is None:
    st.info(f"No index at {opened}." if opened else f"No index yet for this model over {shown}. Open 'Index' "
            "above and press Build (the 70 sample photos take a few seconds to a minute).")
    st.stop()
index_info.show(index_cache.activation_index_summary(directory, stamp), hosted,
                lambda p: dataroots.shown(p, uploads.existing_area()))
mismatch = index_info.model_mismatch(index, model)
if mismatch:
    st.warning(mismatch)

root = dataroots.shown(index.root, uploads.existing_area()) if hosted else index.root
st.caption(f"{len(index)} images from {root}, {len(index.layers)} layers, top-{index.top_k} per channel; "
           f"model {index.spec['model']}.")

# ---------------------------------------------------------------------------------------- layer, channel
layer = index_page.layer_picker(index, catalogue)
info = index.layer(layer)
channel = index_page.channel_picker(index, layer)

# ------------------------------------------------------------------------------------------- patch grid
by = index_page.ranking_picker(index)  # activation, or relevance when the index keeps it
st.subheader(f"{layer}, channel {channel}: top {index.top_k} images" + (f" by {by}" if index.has_relevance else ""))
st.caption(f"Receptive field {info.receptive_field} px at the model input ({info.grid[0]}x{info.grid[1]} grid, "
           f"{info.layout.value}); each crop is that field around the " +
           ("strongest unit" if by == "activation" else "unit where the channel's relevance for the image's "
            "predicted class is highest") + ", in original pixels.")
patches = index.top(layer, channel, by=by)
index_page.patch_grid(directory, stamp, patches)
index_page.grid_report(selection, directory, stamp, index, layer, channel, patches, None if opened else folder)
if not mismatch:
    index_page.expanded_patch(selection, directory, stamp, patches, layer, channel)

# ---------------------------------------------------------------------------------------- reverse lookup
if mismatch:
    st.stop()
st.subheader(f"What {selection.name} excites in {layer}")
st.caption("Channels ranked by how far the image's maximum stands above the channel's mean over the indexed "
           "images (in standard deviations), each with its top indexed patches.")
try:
    hits = index_cache.channels_excited(model, selection.model_key, selection.inp.tensor, selection.image_key, directory,
                                  stamp, layer)
except ValueError as e:  # an index of another model (cannot happen through this page's directory key)
    st.error(str(e))
    hits = []
index_page.excited_rows(index, directory, stamp, layer, hits)
index_page.excited_report(selection, index, directory, stamp, layer, hits)
