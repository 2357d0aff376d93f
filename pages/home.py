"""Home: the image, the model's top-5 classes, the model card, and the way to each technique."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import cache, sidebar

st.title("ConvNeXt Lens")
st.caption("What a ConvNeXt (or any timm CNN) sees, and why it decides.")

selection = sidebar.current()
if selection is not None:
    model, inp = selection.model, selection.inp
    left, right = st.columns([1, 1])
    with left:
        st.image(inp.tensor.permute(1, 2, 0).numpy(), caption=f"{selection.name} as the model sees it "
                 f"({inp.tensor.shape[2]}x{inp.tensor.shape[1]})", width="stretch")
    with right:
        st.subheader("Top-5 classes")
        top = cache.top_classes(model, selection.model_key, inp.tensor, selection.image_key, 5)
        frame = pd.DataFrame({"class": [f"{c['label']} ({c['index']})" for c in top],
                              "probability": [c["prob"] for c in top]})
        st.bar_chart(frame, x="class", y="probability", horizontal=True, sort="-probability")
        st.dataframe(frame.style.format({"probability": "{:.1%}"}), hide_index=True, width="stretch")

    st.subheader("Model card")
    card = model.card
    rows = {
        "model": card.name, "architecture": card.arch,
        "weights": f"{card.weights.value} ({card.weights_detail})",
        "parameters": f"{card.num_params / 1e6:.1f} M", "classes": str(card.num_classes),
        "input size": "x".join(str(s) for s in card.input_size), "preprocessing": card.preprocessing,
        "fingerprint": card.fingerprint[:23],
    }
    st.table(pd.DataFrame({"": list(rows), "value": list(rows.values())}).set_index(""))

pages = st.session_state.get("lens_pages", [])[1:]
if pages:
    st.subheader("Techniques")
    for path, title, icon, blurb in pages:
        st.page_link(path, label=f"{title}: {blurb}", icon=icon)
