"""Report: the results pinned with "Add to report", as one self-contained HTML file to hand on."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.report import render_html
from core.report.spec import TOP
from ui import cache, report, sidebar

st.title("Report")
selection = sidebar.current()
pinned = report.items()
if selection is not None:
    st.caption(f"One HTML file with every image inline: it opens offline and makes no request. It holds the model "
               f"card ({sidebar.model_name(selection.model)}), {selection.name} and its prediction, each pinned "
               "result with its settings, seed and timing, the versions of the app and its libraries, and the "
               "`python -m core` command that reproduces each result.")
    if not pinned:
        st.info("Nothing pinned yet: press **Add to report** under a result on any page.")
    else:
        top = cache.top_classes(selection.model, selection.model_key, selection.inp.tensor, selection.image_key, TOP)
        page = render_html(card=selection.model.card, image=selection.inp.tensor, image_name=selection.name,
                           prediction=top, items=pinned, notice=selection.model.card.notice)
        stem = selection.name.rsplit(".", 1)[0]
        st.download_button(f"Download the report ({len(pinned)} result{'' if len(pinned) == 1 else 's'}, HTML)", page.encode("utf-8"),
                           file_name=f"convnext-lens_{stem}.html", mime="text/html", type="primary",
                           key="report_download", icon=":material/download:")
        for i, item in enumerate(pinned):
            with st.container(border=True):
                left, right = st.columns([1, 2])
                if item.figure is not None:
                    left.image(item.figure, width="stretch")
                with right:
                    st.markdown(f"**{i + 1}. {item.title}**")
                    st.caption(item.caption)
                    if item.command:
                        st.code(item.command, language="bash", wrap_lines=True)
                    st.button("Remove", key=f"report_remove_{i}", on_click=report.remove, args=(i,))
        st.button("Remove all", key="report_clear", on_click=report.clear)
