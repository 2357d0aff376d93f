"""One rule for heavy work on every page: nothing is computed until its button is pressed.

A page names its settings as a hashable ``params`` tuple and calls :func:`button`; the result stays on screen
while the settings are unchanged (a view option never needs another press), and a changed setting says
"press the button" instead of silently recomputing. A link made after a run carries ``run=<key>`` and opens
with the result computed, so a shared link reproduces the view.
"""
from __future__ import annotations

from typing import Hashable

import streamlit as st


def _linked() -> list[str]:
    return [k for k in st.query_params.get("run", "").split(",") if k]


def button(label: str, params: Hashable, key: str, *, disabled: bool = False, help: str | None = None) -> bool:
    """Draw the page's run button; True when the result for ``params`` is to be shown (pressed for these
    settings now or earlier in the session, or opened from a link that had run it).

    The URL's ``run`` holds the keys of every result on screen, comma-separated (a page may have several).
    """
    done_key = f"{key}_params"
    first = f"{key}_seen" not in st.session_state  # a link's run= counts only when the session opens it
    st.session_state[f"{key}_seen"] = True
    linked = first and key in _linked()
    if st.button(label, type="primary", key=key, disabled=disabled, help=help) or (linked and not disabled):
        st.session_state[done_key] = params
    shown = st.session_state.get(done_key) == params and not disabled
    keys = _linked()
    wanted = sorted(set(keys) | {key}) if shown else [k for k in keys if k != key]
    if wanted != keys:
        if wanted:
            st.query_params["run"] = ",".join(wanted)
        else:
            del st.query_params["run"]
    if not shown:
        changed = done_key in st.session_state
        st.caption(f"{'Settings changed: press' if changed else 'Press'} **{label}** to compute.")
    return shown
