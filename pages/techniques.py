"""Techniques: every registered technique's settings (defaults, ranges, flags), and a runner for those without a
page of their own: widgets generated from the settings, the result's rows, "Add to report" and the command."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.images import SAMPLES, list_images
from core.spec import canonical
from core.techniques import TECHNIQUES
from ui import cache, report, run, sidebar
from ui.options import settings_table, technique_form
from ui.widgets import progress_bar

st.title("Techniques")
st.caption("Each technique declares its settings once: the widgets, the command-line flags, the stored result's "
           "key and the report's command line all come from that declaration.")

with st.expander("Every technique's settings"):
    st.dataframe(settings_table(TECHNIQUES.values()), hide_index=True)
selection = sidebar.current()
specs = {t.name: t for t in TECHNIQUES.values() if not t.page}
if selection is None or not specs:
    st.stop()
st.subheader("Techniques without a page of their own")
model = selection.model
name = st.selectbox("Technique", list(specs), format_func=lambda n: specs[n].title, key="tech_name")
spec = specs[name]
st.caption(spec.summary)
top = cache.top_classes(model, selection.model_key, selection.inp.tensor, selection.image_key, 1)
values = technique_form(spec, cache.context(model, target=top[0]["index"]))
if spec.subject == "image":
    subject, subject_key, arg = selection.inp.tensor, selection.image_key, report.image_arg(selection)
elif spec.subject == "folder":
    paths = tuple(str(p) for p in list_images(SAMPLES))
    subject, subject_key, arg = list(paths), paths, report.path_arg(str(SAMPLES))
else:
    subject, subject_key, arg = None, None, None
if run.button("Run", (selection.key, name, canonical(values)), "tech_run"):
    try:
        with progress_bar(spec.title, labelled=True) as progress:
            result = cache.technique(spec, model, selection.model_key, subject, subject_key, values, progress)
    except ValueError as e:
        st.error(f"{spec.title} did not run: {e}")
        st.stop()
    rows = dict(spec.describe(result)) if spec.describe is not None else {}
    if rows:
        st.table({"": list(rows), "value": [str(v) for v in rows.values()]})
    command = spec.command_line(arg, model.card, values) if spec.command else ""
    if command:
        st.code(command, language="bash")
    report.add_button(lambda: report.item(
        selection, image=spec.subject == "image", title=spec.title, figure=None, caption=spec.summary,
        settings=dict(values), command=command,
        figures={k: float(v) for k, v in rows.items() if isinstance(v, (int, float))}),
        key=f"tech_{selection.key}_{name}_{canonical(values)}")
