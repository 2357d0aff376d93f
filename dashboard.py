"""ConvNeXt Lens: `streamlit run dashboard.py`.

The entry point and router: the shared sidebar (model and image) runs first, then the chosen page.

The navigation is declared before anything heavy is imported: Streamlit starts in its old "pages directory"
mode because ``pages/`` exists, and in that mode the first paint lists raw file names until ``st.navigation``
runs. Importing PyTorch and timm takes seconds on a cold start, so it happens after the real navigation and
under a loading notice.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

try:  # leave the pages-directory mode for every later session too (the first run is already on its way)
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False
except ImportError:  # pragma: no cover - a Streamlit without that mode
    pass

HERE = Path(__file__).resolve().parent
# The tab icon is served by the app itself: a ":material/...:" page_icon makes the browser fetch an SVG from
# fonts.gstatic.com on every visit (a request to a third party, and a failure offline).
st.set_page_config(page_title="ConvNeXt Lens", page_icon=str(HERE / "assets" / "icon.png"), layout="wide")
# A progress bar's width change is a CSS transition, repainted at the browser's frame rate after every report;
# turning it off saves a large share of the CPU a waiting tab's browser spends (figures: docs/performance.md).
# Every tab waiting on a shared server pays it on its viewer's machine, and a machine that runs browsers beside
# the server (bench/load.py) pays it in CPU taken from the jobs.
st.html("<style>[data-testid='stProgress'] * { transition: none !important; }</style>")

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
    ("pages/audit.py", "Dataset audit", ":material/policy:", "Does the model cheat? Per class, clusters of the evidence maps: a watermark or border cluster stands out."),
    ("pages/concepts.py", "Concepts", ":material/category:", "Which channels of a layer carried the class, and where each looked (concept relevance on LRP)."),
    ("pages/net2vec.py", "Net2Vec concepts", ":material/hub:", "Concepts as learnt combinations of channels, against the best single channel."),
    ("pages/techniques.py", "Techniques", ":material/extension:", "Every technique's settings, defaults and command line; a runner for techniques without a page."),
    ("pages/report.py", "Report", ":material/description:", "The results you pinned, as one HTML file to hand on (opens offline)."),
]
PAGES = [p for p in PAGES if (HERE / p[0]).exists()]

pages = [st.Page(HERE / path, title=title, icon=icon, default=(i == 0)) for i, (path, title, icon, _) in enumerate(PAGES)]
st.session_state["lens_pages"] = [(page, blurb) for page, (*_, blurb) in zip(pages, PAGES)]
navigation = st.navigation(pages, expanded=True)  # every page listed, none behind "View more"

loading = st.empty()
if "lens_started" not in st.session_state:
    loading.info("Starting ConvNeXt Lens: loading PyTorch and the model (10-20 s on a fresh server)...",
                 icon=":material/hourglass_top:")
from ui import cache, media, sidebar, uploads  # noqa: E402  (heavy: PyTorch, timm)

media.keep_served_pictures()  # one visitor's run must not delete the pictures another's page shows
uploads.visit()
sidebar.render()
if "lens_last_model" in st.session_state:  # a model is loaded: the long-lived start-up objects are all there
    cache.process_tuning()  # once per process: malloc arenas capped, then the heap frozen
loading.empty()
st.session_state["lens_started"] = True
navigation.run()
