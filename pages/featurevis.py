"""Feature visualisation: what a channel responds to (activation maximisation), neuron interaction, filters."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.features.featurevis import Objective
from ui import cache, forms, run, sidebar
from ui import featurevis_page as fv

st.title("Feature visualisation")
st.caption("Images optimised to excite one channel, unit or class: Fourier-parameterised, colour-decorrelated, "
           "robust to jitter, scale and rotation. Random-init models give noise: use pretrained weights.")

selection = sidebar.current()
if selection is None:
    st.stop()
model = selection.model
layers = cache.layers(model, selection.model_key)
info = fv.layer_picker(model, layers)  # the page's one layer picker: every tab below uses it
size_default = model.card.input_size[1]

tab_vis, tab_mix, tab_filters = st.tabs(["Activation maximisation", "Neuron interaction", "Filters"])

with tab_vis:
    c1, c2 = st.columns(2)
    objective = Objective(c1.radio("Objective", [o.value for o in Objective], key="fv_objective",
                                   format_func=fv.OBJECTIVE_LABELS.get, horizontal=True))
    if objective is Objective.LOGIT:
        layer = ""
        channel = fv.index_input(c2, "Class", model.card.num_classes, "fv_class", 0)
        c2.caption(f"{model.label(channel)}; the class logit does not use the layer.")
    else:
        layer = info.name
        channel = fv.index_input(c2, f"Channel of {layer}", info.channels, "fv_channel", 0)
    settings = forms.featurevis_settings("fv", "Images", 1, size_default)
    if run.button("Visualise", (selection.model_key, layer, channel, objective.value, settings), "fv_go"):
        result = fv.run(selection, layer, (channel,), objective, settings)
        if result is not None:
            fv.show_images(result)
            fv.report_images(selection, layer, channel, objective, settings, result)
    if objective is not Objective.LOGIT:
        fv.channel_on_image(selection, layer, channel)

with tab_mix:
    st.caption(f"Frames maximise (1 - t) * A + t * B for t from 0 to 1 (two channels of {info.name}); the middle "
               "frame excites both channels at once. Frames share part of their parameters so the pattern morphs "
               "smoothly.")
    m1, m2 = st.columns(2)
    a = fv.index_input(m1, f"Channel A of {info.name}", info.channels, "mix_a", 0)
    b = fv.index_input(m2, f"Channel B of {info.name}", info.channels, "mix_b", min(1, info.channels - 1))
    mix_settings = forms.featurevis_settings("mix", "Frames", 5, size_default)
    if run.button("Interpolate", (selection.model_key, info.name, a, b, mix_settings), "mix_go"):
        if a == b:
            st.error("Choose two different channels.")
        else:
            result = fv.run(selection, info.name, (a, b), Objective.CHANNEL, mix_settings)
            if result is not None:
                fv.show_frames(result)
                fv.report_frames(selection, info.name, a, b, mix_settings, result)

with tab_filters:
    views = cache.filter_views(model, selection.model_key)
    fv.first_layer(views["first"], selection)
    fv.depthwise_in_layer(selection, info.name, views["depthwise"])
    fv.weight_stats(views["stats"], selection)
