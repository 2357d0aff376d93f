"""Feature visualisation: what a channel responds to (activation maximisation), neuron interaction, filters."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import pandas as pd
import streamlit as st

from core.catalogue import default_layer
from core.features import view
from core.features.featurevis import Objective, Settings
from core.render import heat_figure, image_uint8
from ui import cache, forms, sidebar
from ui.widgets import progress_bar

st.title("Feature visualisation")
st.caption("Images optimised to excite one channel, unit or class: Fourier-parameterised, colour-decorrelated, "
           "robust to jitter, scale and rotation. Random-init models give noise: use pretrained weights.")

selection = sidebar.current()
if selection is None:
    st.stop()
model = selection.model
layers = cache.layers(model, selection.model_key)
names = [l.name for l in layers]
by_name = {l.name: l for l in layers}
size_default = model.card.input_size[1]


def _run(layer: str, channels: tuple[int, ...], objective: Objective, settings: Settings):
    try:
        with progress_bar("optimising...") as progress:
            return cache.feature_vis(model, selection.model_key, layer, channels, objective.value, settings,
                                     progress=progress)
    except (KeyError, ValueError) as e:
        st.error(str(e).strip("'\""))
        return None


def _dataset_patches(layer: str, channel: int) -> None:
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
        cols[i % 4].image(crop, width="stretch", caption=f"{patch.value:.3g}")


def _history_chart(result) -> None:
    st.line_chart(pd.DataFrame({"objective (transformed images)": list(result.history)}), height=180)


tab_vis, tab_mix, tab_filters = st.tabs(["Activation maximisation", "Neuron interaction", "Filters"])

with tab_vis:
    c1, c2, c3 = st.columns([3, 2, 2])
    objective = Objective(c2.radio("Objective", [o.value for o in Objective], key="fv_objective",
                                   format_func={"channel": "channel (mean)", "unit": "unit (centre)",
                                                "logit": "class logit"}.get))
    if objective is Objective.LOGIT:
        layer = ""
        c1.caption("The class logit does not use a layer.")
        channel = c3.number_input("Class", 0, model.card.num_classes - 1, 0, key="fv_class")
        c3.caption(model.label(int(channel)))
    else:
        layer = c1.selectbox("Layer", names, index=names.index(default_layer(model).name), key="fv_layer")
        info = by_name[layer]
        channel = c3.number_input(f"Channel (0-{info.channels - 1})", 0, info.channels - 1, 0, key="fv_channel")
        c1.caption(f"{info.kind.value}, {info.channels} channels, grid {info.grid[0]}x{info.grid[1]}, "
                   f"receptive field {info.receptive_field} px")
    settings = forms.featurevis_settings("fv", "Images", 1, size_default)
    key = ("fv", selection.model_key, layer, int(channel), objective.value, settings)
    if st.button("Visualise", type="primary", key="fv_go") or st.session_state.get("fv_last") == key:
        result = _run(layer, (int(channel),), objective, settings)
        if result is not None:
            st.session_state["fv_last"] = key
            cols = st.columns(min(4, len(result.images)) or 1)
            for i, img in enumerate(result.images):
                cols[i % len(cols)].image(image_uint8(img), width="stretch",
                                          caption=f"objective {result.values[i]:.3g}")
            st.markdown(f"Objective at the model's input size: **{result.values[0]:.4g}** (mid-grey image: "
                        f"{result.baseline:.4g}). {len(result.history)} steps in {result.seconds:.1f} s.")
            _history_chart(result)
    if objective is not Objective.LOGIT:
        st.subheader("This channel on your image")
        amap = cache.channel_map(model, selection.model_key, selection.inp.tensor, selection.image_key, layer,
                                 int(channel))
        left, right = st.columns(2)
        picture, scale = heat_figure(amap, selection.inp.tensor, signed=False, units="activation")
        left.image(picture, width="stretch",
                   caption=f"activation of channel {int(channel)} (mean {float(amap.mean()):.3g}, "
                           f"max {float(amap.max()):.3g}); {scale.describe()}")
        with right:
            _dataset_patches(layer, int(channel))

with tab_mix:
    st.caption("Frames maximise (1 - t) * A + t * B for t from 0 to 1; the middle frame excites both channels "
               "at once. Frames share part of their parameters so the pattern morphs smoothly.")
    m1, m2, m3 = st.columns(3)
    mix_layer = m1.selectbox("Layer", names, index=names.index(default_layer(model).name), key="mix_layer")
    n = by_name[mix_layer].channels
    a = m2.number_input(f"Channel A (0-{n - 1})", 0, n - 1, 0, key="mix_a")
    b = m3.number_input(f"Channel B (0-{n - 1})", 0, n - 1, min(1, n - 1), key="mix_b")
    mix_settings = forms.featurevis_settings("mix", "Frames", 5, size_default)
    mix_key = ("mix", selection.model_key, mix_layer, int(a), int(b), mix_settings)
    if st.button("Interpolate", type="primary", key="mix_go") or st.session_state.get("mix_last") == mix_key:
        if int(a) == int(b):
            st.error("Choose two different channels.")
        else:
            result = _run(mix_layer, (int(a), int(b)), Objective.CHANNEL, mix_settings)
            if result is not None:
                st.session_state["mix_last"] = mix_key
                cols = st.columns(len(result.images))
                for col, img, (wa, wb), v in zip(cols, result.images, result.weights, result.values):
                    col.image(image_uint8(img), width="stretch", caption=f"{wa:.2f} A + {wb:.2f} B: {v:.3g}")
                _history_chart(result)

with tab_filters:
    views = cache.filter_views(model, selection.model_key)
    first = views["first"]
    if first is None:
        st.info("This model has no convolution on the colour channels.")
    else:
        st.subheader(f"First layer: {first.layer} ({first.tiles.shape[0]} kernels, "
                     f"{first.tiles.shape[-1]}x{first.tiles.shape[-2]}, stride {first.stride[0]})")
        st.caption("Kernels in RGB pixel space (weights divided by the normalisation std); each tile is scaled "
                   "on its own, grey = 0.")
        st.image(view.first_layer_picture(first), width="content")
    if views["depthwise"]:
        st.subheader("Depthwise kernels")
        dw = st.selectbox("Depthwise layer", views["depthwise"], key="filters_dw")
        kernels = cache.depthwise_kernels(model, selection.model_key, dw)
        st.caption(f"{kernels.tiles.shape[0]} kernels {kernels.tiles.shape[-2]}x{kernels.tiles.shape[-1]}; "
                   "grey = 0, white positive, black negative.")
        st.image(view.depthwise_picture(kernels), width="content")
    st.subheader("Weight statistics")
    st.dataframe(pd.DataFrame(view.stats_rows(views["stats"])), hide_index=True, width="stretch",
                 column_config={"near zero": st.column_config.NumberColumn(format="percent")})
