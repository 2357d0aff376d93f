"""Feature visualisation: what a channel responds to (activation maximisation), neuron interaction, filters."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.catalogue import default_layer
from core.features.featurevis import Objective
from ui import cache, forms, sidebar
from ui import featurevis_page as fv

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

tab_vis, tab_mix, tab_filters = st.tabs(["Activation maximisation", "Neuron interaction", "Filters"])

with tab_vis:
    c1, c2, c3 = st.columns([3, 2, 2])
    objective = Objective(c2.radio("Objective", [o.value for o in Objective], key="fv_objective",
                                   format_func=fv.OBJECTIVE_LABELS.get))
    if objective is Objective.LOGIT:
        layer = ""
        c1.caption("The class logit does not use a layer.")
        channel = c3.number_input("Class", 0, model.card.num_classes - 1, 0, key="fv_class")
        c3.caption(model.label(int(channel)))
    else:
        layer = c1.selectbox("Layer", names, index=names.index(default_layer(model).name), key="fv_layer")
        info = by_name[layer]
        channel = c3.number_input(f"Channel (0-{info.channels - 1})", 0, info.channels - 1, 0, key="fv_channel")
        c1.caption(fv.layer_caption(info))
    settings = forms.featurevis_settings("fv", "Images", 1, size_default)
    key = ("fv", selection.model_key, layer, int(channel), objective.value, settings)
    if st.button("Visualise", type="primary", key="fv_go") or st.session_state.get("fv_last") == key:
        result = fv.run(selection, layer, (int(channel),), objective, settings)
        if result is not None:
            st.session_state["fv_last"] = key
            fv.show_images(result)
    if objective is not Objective.LOGIT:
        fv.channel_on_image(selection, layer, int(channel))

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
            result = fv.run(selection, mix_layer, (int(a), int(b)), Objective.CHANNEL, mix_settings)
            if result is not None:
                st.session_state["mix_last"] = mix_key
                fv.show_frames(result)

with tab_filters:
    views = cache.filter_views(model, selection.model_key)
    fv.first_layer(views["first"])
    if views["depthwise"]:
        st.subheader("Depthwise kernels")
        dw = st.selectbox("Depthwise layer", views["depthwise"], key="filters_dw")
        fv.depthwise(cache.depthwise_kernels(model, selection.model_key, dw))
    fv.weight_stats(views["stats"])
