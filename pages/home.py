"""Home: the image, the model's top-5 classes, the model card, and the way to each technique."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import pandas as pd
import streamlit as st

from core import dataroots
from ui import cache, figures, report, sidebar

selection = sidebar.current()
st.title("ConvNeXt Lens")
if selection is None:
    st.caption("What a ConvNeXt (or any timm CNN) sees, and why it decides.")
else:
    model, inp = selection.model, selection.inp
    st.caption(f"What {sidebar.model_name(model)} sees in {selection.name}, and why it decides.")
    left, right = st.columns([1, 1])
    with left:
        st.image(inp.tensor.permute(1, 2, 0).numpy(), width="stretch",
                 caption=f"{selection.name} as the model sees it ({inp.tensor.shape[2]}x{inp.tensor.shape[1]})")
    with right:
        st.subheader("Top-5 classes")
        top = cache.top_classes(model, selection.model_key, inp.tensor, selection.image_key, 5)
        frame = pd.DataFrame({"class": [f"{c['label']} ({c['index']})" for c in top],
                              "probability": [c["prob"] for c in top]})
        figures.bars(frame, label="class", value="probability", value_title=f"probability ({model.card.arch})")
        st.table(frame.assign(probability=frame["probability"].map("{:.1%}".format)).set_index("class"))
        report.add_button(lambda: report.prediction(selection, top), key=f"predict_{selection.key}")

    st.subheader("Model card")
    card = model.card
    rows = {
        "model": card.name, "architecture": card.arch,
        "weights": f"{card.weights.value} ({card.weights_detail})",
        "parameters": f"{card.num_params / 1e6:.1f} M", "classes": str(card.num_classes),
        "input size": "x".join(str(s) for s in card.input_size), "device": card.device, "preprocessing": card.preprocessing,
        "fingerprint": card.fingerprint[:23],
    }
    st.table(pd.DataFrame({"": list(rows), "value": list(rows.values())}).set_index(""))

    with st.expander("Layer catalogue: every spatial layer, with the names the techniques take"):
        layers = cache.layers(model, selection.model_key)
        st.dataframe(pd.DataFrame([{
            "layer": l.name, "kind": l.kind.value, "type": l.type, "channels": l.channels,
            "grid": f"{l.grid[0]}x{l.grid[1]}", "layout": l.layout.value, "stride": l.reduction,
            "receptive field": l.receptive_field, "feature stage": l.feature} for l in layers]),
            hide_index=True, width="stretch")

    if dataroots.admin():  # the server's plumbing is for whoever runs it, not for every visitor
        with st.expander("Server: memory, jobs, heap (LENS_ADMIN)"):
            load = cache.server_load(model)
            st.table(pd.DataFrame({"": list(load), "value": list(load.values())}).set_index(""))

others = st.session_state.get("lens_pages", [])[1:]
if others:
    st.subheader("Techniques")
    for page, blurb in others:
        st.page_link(page, label=f"{page.title}: {blurb}", icon=page.icon)
