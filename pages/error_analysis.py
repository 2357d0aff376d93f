"""Error analysis: where the model is wrong on a labelled folder, and why, on one screen.

Layout only: the pieces (matrix, galleries, the "Why?" panel, the channels' examples) live in ``ui/error_analysis``."""
from __future__ import annotations

import streamlit as st

from core.errors.spec import ERRORS, PAGE_TOP, SEPARATING, Cell
from core.images import ImageError
from ui import cache, permalink, sidebar, uploads
from ui import error_analysis as view
from ui.options import setting_widget
from ui.permalink import Param
from ui.widgets import progress_bar

st.title("Error analysis")
st.caption("Your labelled images: the confusion matrix, per-class precision and recall, the most confident "
           "mistakes, and for any image why: the evidence for the predicted class, for the true class, and for one "
           "rather than the other.")

selection = sidebar.current()
if selection is None:
    st.stop()

SOURCES = [view.DEMO, "The sidebar's model"]  # the demo first: the page opens on its results
permalink.bind([Param("source", "err_model", options=SOURCES)])  # the page's settings travel in its link
source = st.radio("Model", SOURCES, key="err_model", horizontal=True,
                  help="The demo is a linear head trained in seconds on half the sample photos in six coarse classes "
                       "(python -m core demo-head); the other half it never saw.")
model, model_key, default_folder = view.model_for(source, selection)
folder_key = f"err_folder_{source == view.DEMO}"
permalink.bind([Param("folder", folder_key)])
path = uploads.labelled_set_box(key=folder_key, upload_key="err_upload", value=default_folder,
                                placeholder="root/<class>/<image> (names or indices), a folder with labels.csv, or a "
                                            "CSV of file,label")
if path is None:
    if not st.session_state.get(folder_key, "").strip():
        st.info(view.classes_hint(model))
    st.stop()
folder = str(path)

context = cache.context(model)
values = ERRORS.defaults(context, top=PAGE_TOP)
try:
    with progress_bar("predicting") as report:
        ev = cache.technique(ERRORS, model, model_key, folder, (folder, cache.folder_stamp(folder)), values, report)
except ImageError as e:
    st.error(uploads.redact(str(e), path, st.session_state[folder_key]))
    st.stop()

names = list(ev.class_names)
layers = view.feature_layers(model, model_key)  # the page's one layer picker: Grad-CAM and separating channels
permalink.bind([Param("true", "err_true", options=names), Param("pred", "err_pred", options=names)])
view.summary(ev)

# ------------------------------------------------------------------------------- confusion matrix and cell
st.subheader("Confusion matrix")
left, right = st.columns([3, 2])
with left:
    event = st.altair_chart(view.confusion_chart(ev), on_select="rerun", key="err_chart", width="stretch")
    view.follow_click(event, names)
with right:
    view.per_class(ev, model, folder)

view.default_cell(ev)
t_col, p_col, l_col = st.columns(3)
true_name = t_col.selectbox("True class", names, key="err_true", help="Or click a cell of the matrix.")
pred_name = p_col.selectbox("Predicted class", names, key="err_pred")
layer = setting_widget(SEPARATING, "layer", context, where=l_col, layer_names=layers)
true_idx, pred_idx = ev.classes[names.index(true_name)], ev.classes[names.index(pred_name)]

rows = ev.cell(true_idx, pred_idx)
st.markdown(view.cell_title(len(rows), true_name, pred_name))
if rows:
    view.gallery(ev, model, folder, rows[:24], "cell")
    if len(rows) > 24:
        st.caption(f"showing the 24 most confident of {len(rows)}")

st.subheader("Most confident mistakes")
mistakes = ev.mistakes(values["top"])
if mistakes:
    view.gallery(ev, model, folder, [m.row for m in mistakes], "mistake")
else:
    st.success("No mistakes on this folder.")

# ------------------------------------------------------------------------------------------- explain one
view.explain_panel(ev, model, model_key, folder, layer, context)

# ------------------------------------------------------------------------------- from the cell to concepts
st.subheader("From this confusion cell to the model's concepts")
if true_name == pred_name:
    st.info("Choose an off-diagonal cell (a mistake) to compare it with the correctly classified images of its true class.")
    st.stop()
n = setting_widget(SEPARATING, "channels", context, chosen={"layer": layer})
if not st.button("Find the channels that separate these mistakes", key="err_sep_go") and \
        st.session_state.get("err_sep_for") != (true_idx, pred_idx, layer, n):
    st.stop()
st.session_state["err_sep_for"] = (true_idx, pred_idx, layer, n)
try:
    sep = cache.technique(SEPARATING, model, model_key, Cell(ev, true_idx, pred_idx),
                          (folder, cache.folder_stamp(folder), true_idx, pred_idx),
                          SEPARATING.complete({"layer": layer, "channels": n}, context))
except ValueError as e:
    st.warning(str(e))
    st.stop()
view.separating_table(sep, true_name, pred_name, model, folder)
view.channel_examples(ev, model, layer, sep)
