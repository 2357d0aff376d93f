"""Feature visualisation: what a channel responds to (activation maximisation), neuron interaction, filters."""
from __future__ import annotations

import pandas as pd
import streamlit as st

import core.index as ai
from core.catalogue import default_layer
from core.features.featurevis import Objective, Settings
from core.features.filters import depthwise_kernels, mosaic
from core.render import Colormap, image_uint8, normalize_map, overlay
from ui import cache, sidebar

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


def _settings_form(prefix: str, batch_label: str, batch_default: int) -> Settings:
    c1, c2, c3, c4 = st.columns(4)
    steps = c1.slider("Steps", 8, 512, 128, step=8, key=f"{prefix}_steps",
                      help="Adam steps. About 128 gives a clear pattern; 256+ refines it.")
    sizes = sorted({64, 96, 128, 160, size_default})
    size = c2.selectbox("Size (pixels)", sizes, index=sizes.index(size_default), key=f"{prefix}_size",
                        help="The model's input size matches how the objective is measured; smaller is faster.")
    seed = c3.number_input("Seed", 0, 10_000, 0, key=f"{prefix}_seed")
    batch = c4.number_input(batch_label, 1 if batch_default == 1 else 2, 8, batch_default, key=f"{prefix}_batch")
    with st.expander("Advanced"):
        a1, a2, a3, a4 = st.columns(4)
        lr = a1.number_input("Learning rate", 0.001, 0.5, 0.05, format="%.3f", key=f"{prefix}_lr")
        diversity = a2.number_input("Diversity", 0.0, 100.0, 0.0, key=f"{prefix}_div",
                                    help="Penalise similar images in a batch (needs 2+ images).") if prefix == "fv" else 0.0
        rotate = a3.number_input("Rotation (deg)", 0.0, 45.0, 10.0, key=f"{prefix}_rot")
        fourier = a4.toggle("Fourier parameterisation", True, key=f"{prefix}_fourier",
                            help="Off: plain pixels, which tend to give high-frequency noise.")
    return Settings(steps=int(steps), size=int(size), seed=int(seed), batch=int(batch), lr=float(lr),
                    diversity=float(diversity), rotate=float(rotate), fourier=bool(fourier))


def _run(layer: str, channels: tuple[int, ...], objective: Objective, settings: Settings):
    bar = st.progress(0.0, text="optimising...")

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(1.0, fraction), text=message)
    try:
        result = cache.feature_vis(model, selection.model_key, layer, channels, objective.value, settings.key(),
                                   progress=progress)
    except (KeyError, ValueError) as e:
        bar.empty()
        st.error(str(e).strip("'\""))
        return None
    bar.empty()
    return result


def _dataset_patches(layer: str, channel: int) -> None:
    """The channel's top dataset patches from the activation index of the sample photos, if one was built."""
    try:
        directory = ai.default_directory(model)
        if not (directory / ai.MANIFEST).is_file():
            st.info("No activation index for this model yet: build one on the dataset examples page to see "
                    "the sample-photo patches that excite this channel.")
            return
        index = ai.open_index(directory)
        ai.check_model(index, model)
        patches = index.top(layer, channel, 8)
    except Exception as e:  # an optional panel: any index problem is a note, never a failure of this page
        st.caption(f"Dataset patches unavailable: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return
    st.markdown("**Top dataset patches** (sample photos)")
    cols = st.columns(4)
    for i, patch in enumerate(patches):
        cols[i % 4].image(index.crop(patch), width="stretch", caption=f"{patch.value:.3g}")


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
    settings = _settings_form("fv", "Images", 1)
    key = ("fv", selection.model_key, layer, int(channel), objective.value, settings.key())
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
        left.image(overlay(selection.inp.tensor, normalize_map(amap), cmap=Colormap.HEAT), width="stretch",
                   caption=f"activation of channel {int(channel)} (mean {float(amap.mean()):.3g}, "
                           f"max {float(amap.max()):.3g})")
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
    mix_settings = _settings_form("mix", "Frames", 5)
    mix_key = ("mix", selection.model_key, mix_layer, int(a), int(b), mix_settings.key())
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
        zoom = max(4, 48 // first.tiles.shape[-1])
        st.image(image_uint8(mosaic(first.tiles, zoom=zoom)), width="content")
    if views["depthwise"]:
        st.subheader("Depthwise kernels")
        dw = st.selectbox("Depthwise layer", views["depthwise"], key="filters_dw")
        kernels = depthwise_kernels(model, dw)
        st.caption(f"{kernels.tiles.shape[0]} kernels {kernels.tiles.shape[-2]}x{kernels.tiles.shape[-1]}; "
                   "grey = 0, white positive, black negative.")
        st.image(image_uint8(mosaic(kernels.tiles, zoom=6)), width="content")
    st.subheader("Weight statistics")
    stats = pd.DataFrame([{
        "layer": s.name, "type": s.type, "shape": "x".join(map(str, s.shape)), "params": s.params,
        "mean": s.mean, "std": s.std, "|w| max": s.abs_max, "near zero": s.near_zero, "dead outputs": s.dead,
    } for s in views["stats"]])
    st.dataframe(stats, hide_index=True, width="stretch",
                 column_config={"near zero": st.column_config.NumberColumn(format="percent")})
