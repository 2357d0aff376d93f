"""What an opened activation index is (engine, size, build time, missing images): a few widgets for the
Dataset-examples page, from :func:`core.index.build.summarize`."""
from __future__ import annotations

import streamlit as st

from core.index import ActivationIndex, IndexSummary, check_model


def show(summary: IndexSummary, hosted: bool = False, shown=str) -> None:
    """One caption line, and a warning listing the indexed images that cannot be found. ``hosted``: the index's
    folder (the server's cache) is not named, and image folders are named by ``shown(path)``."""
    engine = (f"{summary.engine} engine, {summary.workers} worker{'s' if summary.workers != 1 else ''}"
              if summary.engine else "engine not recorded (built before it was)")
    took = f"built in {summary.build_seconds:.1f} s" if summary.build_seconds is not None else "build time not recorded"
    rate = f" ({summary.images_per_second:.1f} images/s last run)" if summary.images_per_second else ""
    where = "" if hosted else f" {summary.directory}"
    st.caption(f"Index{where}: {summary.images} images ({summary.skipped} unreadable skipped), "
               f"{engine}, {took}{rate}.")
    if summary.root != summary.recorded_root and not hosted:
        st.caption(f"Images looked up under {summary.root} (indexed under {summary.recorded_root}).")
    if summary.missing_count:
        more = f" and {summary.missing_count - len(summary.missing)} more" if summary.missing_count > len(summary.missing) else ""
        st.warning(f"{summary.missing_count} of {summary.images} indexed images are not found under "
                   f"{shown(summary.root)}: {', '.join(summary.missing)}{more}. Their patches cannot be shown; put the "
                   "images there (same relative paths) or rebuild.")


def model_mismatch(index: ActivationIndex, model) -> str | None:
    """Why the selected ``model`` cannot be used with ``index`` (None when it is the index's model)."""
    try:
        check_model(index, model)
    except ValueError as e:
        return f"{e}. Patches are shown; the heat map and reverse lookup need that model (pick it in the sidebar)."
    return None
