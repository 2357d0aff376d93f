"""The report being assembled in this session: pages pin results with :func:`add_button`; pages/report.py
shows them and writes the HTML (``core.report``)."""
from __future__ import annotations

from typing import Callable

import streamlit as st

from core.report import ReportItem, attribution_item, predict_command

KEY = "lens_report_items"


def items() -> list[ReportItem]:
    return st.session_state.setdefault(KEY, [])


def add_button(make: Callable[[], ReportItem], key: str, *, label: str = "Add to report") -> None:
    """A button that pins the result ``make()`` builds (called only when pressed) to the session's report."""
    pinned = st.session_state.setdefault(KEY + "_keys", set())
    if key in pinned:
        st.button(f"{label} (added)", key=f"report_{key}", disabled=True, icon=":material/check:",
                  help="Open the Report page to download the report.")
        return
    if st.button(label, key=f"report_{key}", icon=":material/note_add:",
                 help="Pin this result, with its settings, to the report (Report page)."):
        items().append(make())
        pinned.add(key)
        st.toast(f"Added to the report ({len(items())} results).")
        st.rerun()


def image_arg(selection) -> str:
    """The image as a command names it: the sample photo's path from the repository root, or the upload's name
    (which the reader must supply)."""
    from core.images import SAMPLES

    path = SAMPLES / selection.name
    return str(path.relative_to(SAMPLES.parent.parent)) if path.exists() else selection.name


def path_arg(path: str) -> str:
    """A file or folder as a command names it: relative to the repository when inside it, else as given."""
    from core.report import repo_path

    return repo_path(str(path))


def attribution(selection, attr, *, title: str | None = None) -> ReportItem:
    """A report item for an attribution of the sidebar's image."""
    item = attribution_item(selection.model, selection.inp.tensor, attr, image_arg=image_arg(selection), title=title)
    return _with_context(item, selection)


def prediction(selection, top: list[dict]) -> ReportItem:
    """A report item for the top classes of the sidebar's image (``top``: dicts with index, label, prob)."""
    from core.render import image_uint8

    best = top[0]
    return item(selection, title=f"Prediction: {best['label']} ({best['index']}) at {best['prob']:.1%}",
                figure=image_uint8(selection.inp.tensor),
                caption=f"{selection.name} as the model sees it; the top {len(top)} classes are in the table.",
                settings={"top": len(top)},
                command=predict_command(image_arg(selection), selection.model.card, top=len(top)),
                figures={f"{c['label']} ({c['index']})": float(c["prob"]) for c in top})


def item(selection, *, image: bool = True, **fields) -> ReportItem:
    """A report item for any other result of the sidebar's image (``fields``: see ReportItem); ``image`` False
    for a result that does not depend on the image (feature visualisation, filters)."""
    return _with_context(ReportItem(**fields), selection, image=image)


def _with_context(item: ReportItem, selection, *, image: bool = True) -> ReportItem:
    from dataclasses import replace

    context = {"image": selection.name} if image else {}
    return replace(item, settings={**context, "model": selection.model.card.name, **item.settings})


def remove(index: int) -> None:
    del items()[index]
    st.session_state[KEY + "_keys"] = set()  # pins are re-offered; a duplicate pin is harmless


def clear() -> None:
    st.session_state[KEY] = []
    st.session_state[KEY + "_keys"] = set()
