"""Streamlit glue of the feature-visualisation page: the run with its progress bar and the result panels.

The page keeps its widgets; everything drawn from a result (image grids, captions, charts, the filter views) is
here so the page stays layout only.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.features import view
from core.features.featurevis import Objective, Settings, Visualisation
from core.render import heat_figure, image_uint8
from ui import cache
from ui.index_page import patch_tile
from ui.widgets import progress_bar

OBJECTIVE_LABELS = {"channel": "channel (mean)", "unit": "unit (centre)", "logit": "class logit"}


def run(selection, layer: str, channels: tuple[int, ...], objective: Objective,
        settings: Settings) -> Visualisation | None:
    """The cached optimisation behind a progress bar; a bad request is shown as an error and gives None."""
    try:
        with progress_bar("optimising...") as progress:
            return cache.feature_vis(selection.model, selection.model_key, layer, channels, objective.value,
                                     settings, progress=progress)
    except (KeyError, ValueError) as e:
        st.error(str(e).strip("'\""))
        return None


def layer_caption(info) -> str:
    """One line describing a layer: kind, channels, grid and receptive field."""
    return (f"{info.kind.value}, {info.channels} channels, grid {info.grid[0]}x{info.grid[1]}, "
            f"receptive field {info.receptive_field} px")


def history_chart(result: Visualisation) -> None:
    st.line_chart(pd.DataFrame({"objective (transformed images)": list(result.history)}), height=180)


def show_images(result: Visualisation) -> None:
    """The optimised images (up to 4 a row) with their objective, the summary line and the history."""
    cols = st.columns(min(4, len(result.images)) or 1)
    for i, img in enumerate(result.images):
        cols[i % len(cols)].image(image_uint8(img), width="stretch", caption=f"objective {result.values[i]:.3g}")
    st.markdown(f"Objective at the model's input size: **{result.values[0]:.4g}** (mid-grey image: "
                f"{result.baseline:.4g}). {len(result.history)} steps in {result.seconds:.1f} s.")
    history_chart(result)


def show_frames(result: Visualisation) -> None:
    """The interpolation frames in one row, each captioned with its weights and objective, then the history."""
    cols = st.columns(len(result.images))
    for col, img, (wa, wb), v in zip(cols, result.images, result.weights, result.values):
        col.image(image_uint8(img), width="stretch", caption=f"{wa:.2f} A + {wb:.2f} B: {v:.3g}")
    history_chart(result)


def channel_on_image(selection, layer: str, channel: int) -> None:
    """The channel's activation on the user's image, next to its top dataset patches."""
    st.subheader("This channel on your image")
    model, x = selection.model, selection.inp.tensor
    amap = cache.channel_map(model, selection.model_key, x, selection.image_key, layer, channel)
    left, right = st.columns(2)
    picture, scale = heat_figure(amap, x, signed=False, units="activation")
    left.image(picture, width="stretch",
               caption=f"activation of channel {channel} (mean {float(amap.mean()):.3g}, "
                       f"max {float(amap.max()):.3g}); {scale.describe()}")
    with right:
        dataset_patches(model, layer, channel)


def dataset_patches(model, layer: str, channel: int) -> None:
    """The channel's top dataset patches from the activation index of the sample photos, if one was built."""
    try:
        patches = cache.sample_patches(model, layer, channel, 8)
    except Exception as e:  # an optional panel: any index problem is a note, never a failure of this page
        st.caption(f"Dataset patches unavailable: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return
    if patches is None:
        st.info("No activation index for this model yet: build one on the dataset examples page to see "
                "the sample-photo patches that excite this channel.")
        return
    st.markdown("**Top dataset patches** (sample photos)")
    cols = st.columns(4)
    for i, (patch, crop) in enumerate(patches):
        cols[i % 4].image(patch_tile(crop, patch, 128), width="stretch")


def first_layer(first) -> None:
    """The first layer's RGB kernels, or a note when the model has no convolution on the colour channels."""
    if first is None:
        st.info("This model has no convolution on the colour channels.")
        return
    st.subheader(f"First layer: {first.layer} ({first.tiles.shape[0]} kernels, "
                 f"{first.tiles.shape[-1]}x{first.tiles.shape[-2]}, stride {first.stride[0]})")
    grid = view.kernel_grid(first)
    st.caption("Kernels in RGB pixel space (weights divided by the normalisation std), enlarged without "
               "smoothing; each tile is scaled on its own, grey = 0; under each: output channel and L2 norm.")
    st.image(grid.picture, width="content")


DEPTHWISE_SHOWN = 64


def depthwise(kernels) -> None:
    """A depthwise layer's kernels as labelled grey tiles (the largest ``DEPTHWISE_SHOWN`` by norm)."""
    grid = view.kernel_grid(kernels, limit=DEPTHWISE_SHOWN)
    shown = (f"all {grid.total}" if len(grid.channels) == grid.total else
             f"the {len(grid.channels)} largest by L2 norm of {grid.total} (python -m core filters --depthwise "
             f"{kernels.layer} --out-dir DIR writes all)")
    st.caption(f"{kernels.layer}: {shown} kernels {kernels.tiles.shape[-2]}x{kernels.tiles.shape[-1]}, enlarged "
               "without smoothing; grey = 0, white positive, black negative; under each: channel and L2 norm.")
    st.image(grid.picture, width="content")


def weight_stats(stats) -> None:
    """The per-layer weight statistics table."""
    st.subheader("Weight statistics")
    st.dataframe(pd.DataFrame(view.stats_rows(stats)), hide_index=True, width="stretch",
                 column_config={"near zero": st.column_config.NumberColumn(format="percent")})
