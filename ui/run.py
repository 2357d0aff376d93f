"""One rule for heavy work on every page: nothing is computed until its button is pressed.

A page names its settings as a hashable ``params`` tuple and calls :func:`button`; the result stays on screen
while the settings are unchanged (a view option never needs another press), and a changed setting says
"press the button" instead of silently recomputing. A link made after a run carries ``run=<key>`` and opens
with the result computed, so a shared link reproduces the view.

While a job computes, its progress bar (ui/widgets.py) shows **Stop**: pressing it reruns the script, which
interrupts the job at its next progress call (at least every 0.25 s: ui/cache.py repeats the last report from
inside the job's passes; the scheduler records the job as cancelled), and :func:`stop` forgets
the pressed settings of the run button the job belongs to, so the rerun says "stopped" instead of starting the
job again.
"""
from __future__ import annotations

from typing import Hashable

import streamlit as st

STOPPED = "lens_stopped"        # the session-state key the last Stop cleared ("" when it cleared none)
_LATEST = "lens_run_latest"     # the last run button drawn in this script run that shows its result


def _linked() -> list[str]:
    return [k for k in st.query_params.get("run", "").split(",") if k]


def _drawn_this_run(key: str) -> bool | None:
    """Whether a widget with ``key`` was drawn in the current script run (None: Streamlit does not say)."""
    try:
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

        return key in get_script_run_ctx().shared.widget_user_keys_this_run
    except (ImportError, AttributeError):  # another Streamlit, or no script run
        return None


def button(label: str, params: Hashable, key: str, *, disabled: bool = False, help: str | None = None,
           opening: bool = False) -> bool:
    """Draw the page's run button; True when the result for ``params`` is to be shown (pressed for these
    settings now or earlier in the session, opened from a link that had run it, or, with ``opening``, the
    page's first view in the session: its default view, shown without a press).

    The URL's ``run`` holds the keys of every result on screen, comma-separated (a page may have several).
    """
    done_key = f"{key}_params"
    first = f"{key}_seen" not in st.session_state  # a link's run= counts only when the session opens it
    st.session_state[f"{key}_seen"] = True
    linked = first and (opening or key in _linked())
    if st.button(label, type="primary", key=key, disabled=disabled, help=help) or (linked and not disabled):
        st.session_state[done_key] = params
        if st.session_state.get(STOPPED) == done_key:
            del st.session_state[STOPPED]
    shown = st.session_state.get(done_key) == params and not disabled
    if shown:
        st.session_state[_LATEST] = key
    keys = _linked()
    wanted = sorted(set(keys) | {key}) if shown else [k for k in keys if k != key]
    if wanted != keys:
        if wanted:
            st.query_params["run"] = ",".join(wanted)
        else:
            del st.query_params["run"]
    if not shown:
        if st.session_state.get(STOPPED) == done_key:
            st.caption(f"Stopped. Press **{label}** to compute.")
        else:
            changed = done_key in st.session_state
            st.caption(f"{'Settings changed: press' if changed else 'Press'} **{label}** to compute.")
    return shown


def latest() -> str | None:
    """The session-state key holding the pressed settings of the last run button drawn in this script run that
    shows its result: what a progress bar drawn after it computes for (None when no run button came before it
    in this run)."""
    key = st.session_state.get(_LATEST)
    return f"{key}_params" if key is not None and _drawn_this_run(key) is not False else None


def stop(forget: str | None) -> None:
    """Stop's ``on_click`` (runs before the rerun the press causes): delete session-state key ``forget`` (the
    pressed settings that would start the job again on the rerun; see :func:`latest`), and say so."""
    if forget:
        st.session_state.pop(forget, None)
    st.session_state[STOPPED] = forget or ""
    st.toast("Stopped.", icon=":material/stop_circle:")


def stop_key() -> str:
    """A key for one more Stop button in this script run (a page may show several progress bars)."""
    n = 1
    while _drawn_this_run(f"lens_stop_{n}"):
        n += 1
    return f"lens_stop_{n}"
