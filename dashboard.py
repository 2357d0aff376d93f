"""ConvNeXt Lens: `streamlit run dashboard.py`.

The entry point and router: the shared sidebar (model and image) runs first, then the chosen page.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import sidebar

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="ConvNeXt Lens", page_icon=":material/center_focus_strong:", layout="wide")

# One line per page: (file in pages/, title, icon, one-line description shown on the home page).
PAGES = [
    ("pages/home.py", "Prediction", ":material/home:", "The model's top-5 classes and its model card."),
    ("pages/attribution.py", "Attribution", ":material/gradient:", "Which pixels made the model say this class: gradients, SmoothGrad, Grad-CAM, CAM, LRP, occlusion."),
    ("pages/attack.py", "Adversarial", ":material/bolt:", "How little it takes to change the model's mind (FGSM, PGD)."),
    ("pages/activation_index.py", "Dataset examples", ":material/grid_view:", "The image patches, from a whole folder, that excite a channel most."),
    ("pages/featurevis.py", "Feature visualisation", ":material/auto_awesome:", "What a channel responds to, neuron interaction, filters."),
    ("pages/perturbation.py", "Perturbation masks", ":material/blur_on:", "The smallest region that keeps or removes the evidence (meaningful and extremal perturbation)."),
    ("pages/similarity.py", "Similarity overlays", ":material/touch_app:", "Click a point: where this image and another look alike to a layer."),
    ("pages/error_analysis.py", "Error analysis", ":material/rule:", "Where the model is wrong on your labelled images, and why: confusion matrix, mistakes, contrastive maps."),
    ("pages/net2vec.py", "Net2Vec concepts", ":material/hub:", "Concepts as learnt combinations of channels, against the best single channel."),
]

pages = [st.Page(HERE / path, title=title, icon=icon, default=(i == 0)) for i, (path, title, icon, _) in enumerate(PAGES)]
st.session_state["lens_pages"] = [(page, blurb) for page, (*_, blurb) in zip(pages, PAGES)]
navigation = st.navigation(pages)
sidebar.render()
navigation.run()
