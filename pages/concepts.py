"""Concepts: which channels of a layer carried the class (concept relevance on LRP), and where each one looked."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.concepts.spec import CONCEPTS
from core.spec import canonical
from ui import cache, concepts_page, run, sidebar
from ui.options import technique_form
from ui.widgets import progress_bar

st.title("Concepts")
st.caption("The LRP explanation split at a layer into its channels (concept relevance propagation): each "
           "channel's share of the relevance, and its conditional heat map, the LRP map of that channel alone.")

selection = sidebar.current()
if selection is not None:
    model = selection.model
    layers = cache.layers(model, selection.model_key)
    context = {**cache.context(model), "channel_counts": {layer.name: layer.channels for layer in layers}}
    values = technique_form(CONCEPTS, context, layer_names=[layer.name for layer in layers])
    if not run.button("Explain with concepts", (selection.key, canonical(values)), "cpt_run"):
        st.stop()
    try:
        with progress_bar("Concept relevance", labelled=True) as progress:
            result = cache.technique(CONCEPTS, model, selection.model_key, selection.inp.tensor,
                                     selection.image_key, values, progress)
    except ValueError as e:
        st.error(f"Concepts not computed: {e}")
        st.stop()
    concepts_page.ranking(model, result)
    st.subheader("Where each channel looked")
    pictures = concepts_page.maps(model, selection, result)
    concepts_page.report_button(model, selection, values, result, pictures)
    concepts_page.deletion(model, selection, values)
