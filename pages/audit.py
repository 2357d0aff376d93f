"""Dataset audit: does the model cheat? Per class, clusters of the attribution maps (SpRAy).

Layout only: the pieces live in ``ui/audit_page``."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import dataroots
from core.audit.spec import AUDIT
from core.images import ImageError
from ui import audit_page as view
from ui import cache, permalink, sidebar, uploads
from ui.options import technique_form
from ui.permalink import Param
from ui.widgets import progress_bar

st.title("Dataset audit")
st.caption("Does the model cheat? For every image of a class, the map of the evidence for its true class; the maps "
           "are clustered per class, so a group of images the model recognises by something else (a watermark, a "
           "border, a background) stands out as its own cluster, ranked first by its outlier score.")

if st.session_state.pop("aud_goto", False):  # an image was opened (ui/audit_page.open_on_attribution)
    st.switch_page("pages/attribution.py")
selection = sidebar.current()
if selection is None:
    st.stop()

SOURCES = ["The sidebar's model", view.DEMO]
permalink.bind([Param("source", "aud_model", options=SOURCES)])
st.session_state.setdefault("aud_model", view.DEMO)  # the page opens on the demo
source = st.radio("Model", SOURCES, key="aud_model", horizontal=True,
                  help="The demo head was fitted (python -m core shortcut-demo) on two classes of the same sample "
                       "photos that differ only by a watermark on half of one class's images.")
model, model_key, default_folder = view.model_for(source, selection)
folder_key = f"aud_folder_{source == view.DEMO}"
permalink.bind([Param("folder", folder_key)])
if source == view.DEMO and dataroots.hosted():  # the server built this set from its sample photos: nothing to name
    path = Path(default_folder)
    typed = "the demo set"
    st.caption("The demo set: two classes of the sample photos, half of one class's images watermarked.")
else:
    path = uploads.labelled_set_box(key=folder_key, upload_key="aud_upload", value=default_folder,
                                    placeholder="root/<class>/<image> (names, WordNet ids or indices), a folder "
                                                "with labels.csv, or a CSV",
                                    help="Class folders match the model's class names.")
    typed = st.session_state[folder_key]
if path is None:
    if not typed.strip():
        st.info("Name a labelled folder (one sub-folder per class), or choose the demo. Your own labels? "
                "python -m core fit-head FOLDER --out head.safetensors fits a head to audit with.")
    st.stop()
folder = str(path)

context = {**cache.context(model), "folder_classes": view.folder_classes(folder)}
values = technique_form(AUDIT, context)
if not st.toggle("Run the audit", value=source == view.DEMO, key="aud_go",
                 help="One attribution map per image: a few seconds per ten images on a CPU."):
    st.stop()
try:
    with progress_bar("auditing") as report:
        audit = cache.technique(AUDIT, model, model_key, folder, (folder, cache.folder_stamp(folder)), values, report)
except (ImageError, ValueError) as e:
    st.error(uploads.redact(str(e), path, typed))
    st.stop()

if "aud_open_error" in st.session_state:
    st.error(st.session_state.pop("aud_open_error"))
if audit.errors:
    with st.expander(f"{len(audit.errors)} items skipped"):
        st.dataframe([{"item": e["image"], "reason": e["error"]} for e in audit.errors], hide_index=True)
view.add_to_report(audit, model, folder, values)
ranked = sorted(audit.classes, key=lambda c: -(c.clusters[0].outlier if c.clusters else 0))
for c in ranked:
    view.show_class(c, model, model_key, demo=source == view.DEMO)
