"""Small Streamlit pieces the pages share: a progress bar for core's ``progress(fraction, message)`` callback."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import streamlit as st


@contextmanager
def progress_bar(text: str, *, labelled: bool = False) -> Iterator[Callable[[float, str], None]]:
    """A progress bar showing ``text`` until core first reports; yields the callback and removes the bar on exit.

    The callback clamps the fraction to [0, 1] and shows core's message, after ``text: `` when ``labelled``.
    """
    bar = st.progress(0.0, text=text)

    def report(fraction: float, message: str) -> None:
        # core's messages often name the method already ("SmoothGrad: image 2/4"): never say it twice
        said = labelled and not message.startswith(text)
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"{text}: {message}" if said else message)
    try:
        yield report
    finally:
        bar.empty()
