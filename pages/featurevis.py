"""Feature visualisation: what a channel responds to (activation maximisation), neuron interaction, filters."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.features.featurevis_spec import FEATUREVIS, INTERACTION, Objective
from core.spec import canonical
from ui import cache, run, sidebar
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

tab_vis, tab_mix, tab_filters = st.tabs(["Activation maximisation", "Neuron interaction", "Filters"])

with tab_vis:
    values = fv.visualisation_form(model, info)
    if run.button("Visualise", (selection.model_key, canonical(values)), "fv_go"):
        result = fv.run(selection, FEATUREVIS, values)
        if result is not None:
            fv.show_images(result)
            fv.report_images(selection, values, result)
    if values["objective"] != Objective.LOGIT.value:
        fv.channel_on_image(selection, values["layer"], values["channel"])

with tab_mix:
    st.caption(f"Frames maximise (1 - t) * A + t * B for t from 0 to 1 (two channels of {info.name}); the middle "
               "frame excites both channels at once. Frames share part of their parameters so the pattern morphs "
               "smoothly.")
    mix = fv.interaction_form(model, info)
    if run.button("Interpolate", (selection.model_key, canonical(mix)), "mix_go"):
        if mix["a"] == mix["b"]:
            st.error("Choose two different channels.")
        else:
            result = fv.run(selection, INTERACTION, mix)
            if result is not None:
                fv.show_frames(result)
                fv.report_frames(selection, mix, result)

with tab_filters:
    views = cache.filter_views(model, selection.model_key)
    fv.first_layer(views["first"], selection)
    fv.depthwise_in_layer(selection, info.name, views["depthwise"])
    fv.weight_stats(views["stats"], selection)
