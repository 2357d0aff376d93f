"""Small Streamlit pieces the pages share: a progress bar for core's ``progress(fraction, message)`` callback,
with a Stop button while the job computes (see ui/run.py)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import streamlit as st

from ui import run

LATEST = object()  # progress_bar's default ``forget``: the pressed settings of the run button it follows


@contextmanager
def progress_bar(text: str, *, labelled: bool = False,
                 forget: str | None | object = LATEST) -> Iterator[Callable[[float, str], None]]:
    """A progress bar showing ``text`` until core first reports; yields the callback and removes the bar on exit.

    The callback clamps the fraction to [0, 1] and shows core's message, after ``text: `` when ``labelled``.
    From the first report on (the job is queued or computing: a stored result never reports) a **Stop** button
    sits under the bar; pressing it stops the job and deletes session-state key ``forget``, what would start the
    job again on the rerun (default: the pressed settings of the run button this bar follows,
    :func:`ui.run.latest`; None when nothing restarts it, as after a plain ``st.button``). When the
    script is interrupted (Stop, a changed input, the session ending) the bar stays where it was until the
    rerun replaces it; a job that raises removes it.
    """
    slot = st.empty()
    with slot.container():
        bar = st.progress(0.0, text=text)
        stop_slot = st.empty()
    key = run.latest() if forget is LATEST else forget
    stop_drawn = False

    def report(fraction: float, message: str) -> None:
        nonlocal stop_drawn
        if not stop_drawn:
            stop_drawn = True
            stop_slot.button("Stop", key=run.stop_key(), on_click=run.stop, args=(key,),
                             icon=":material/stop_circle:", help="Stop this computation (nothing is kept)")
        # core's messages often name the method already ("SmoothGrad: image 2/4"): never say it twice
        said = labelled and not message.startswith(text)
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"{text}: {message}" if said else message)
    try:
        yield report
    except Exception:
        slot.empty()
        raise
    slot.empty()
