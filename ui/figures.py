"""Figures that read on their own: heat maps with colour bars, charts with axis titles, whole legends and
stable colours. Pages call these instead of ``st.image``/``st.line_chart`` for maps and curves."""
from __future__ import annotations

from typing import Mapping, Sequence

import altair as alt
import pandas as pd
import streamlit as st

from core.render import CLIP_PERCENTILE, heat_figure

# One colour per role, the same on every run and page (Streamlit's default palette is assigned by the order of
# the columns, so curves swapped colours when their names sorted differently).
PALETTE = ("#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#1098ad", "#c2255c", "#5c940d")


def heat(m, image=None, *, signed: bool, caption: str, units: str = "", clip_percentile: float = CLIP_PERCENTILE,
         alpha: float = 0.55, where=st):
    """Show a heat map (or its overlay on ``image``) with its colour bar; the caption ends with what the colours
    mean. Returns the shown picture (uint8) for downloads and the report."""
    picture, scale = heat_figure(m, image, signed=signed, clip_percentile=clip_percentile, units=units,
                                 alpha=alpha)
    return show(picture, scale, caption=caption, where=where)


def show(picture, scale, *, caption: str, where=st):
    """Show a figure made in core (uint8 with its colour bar) under ``caption`` + what the colours mean; returns
    ``(picture, scale)``."""
    where.image(picture, width="stretch", caption=f"{caption}. Colours: {scale.describe()}.")
    return picture, scale


def lines(frame: pd.DataFrame, *, x: str, y_title: str, colors: Mapping[str, str] | None = None,
          height: int = 260, y_domain: Sequence[float] | None = None, where=st) -> None:
    """Line chart of every column of ``frame`` but ``x`` against ``x``, with axis titles, the legend below the
    plot (never cut off) and one fixed colour per series name."""
    series = [c for c in frame.columns if c != x]
    long = frame.melt(id_vars=[x], value_vars=series, var_name="series", value_name="value").dropna()
    colors = dict(colors or {})
    rest = iter(c for c in PALETTE if c not in colors.values())
    domain = list(series)
    scale = alt.Scale(domain=domain, range=[colors.get(s) or next(rest) for s in domain])
    y = alt.Y("value:Q", title=y_title, scale=alt.Scale(domain=list(y_domain)) if y_domain else alt.Undefined)
    chart = alt.Chart(long).mark_line(point=len(frame) <= 30).encode(
        x=alt.X(f"{x}:Q", title=x), y=y,
        color=alt.Color("series:N", scale=scale, title=None,
                        legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=0)),
        tooltip=[x, "series", alt.Tooltip("value:Q", format=".4g")])
    where.altair_chart(chart.properties(height=height), width="stretch")


BAR_STEP = 28  # pixels of plot per bar


def bars(frame: pd.DataFrame, *, label: str, value: str, value_title: str, percent: bool = True,
         height: int | None = None, where=st) -> None:
    """Horizontal bars, largest first, with axis titles and the full label text; ``height``: of the plot, the
    axes added below it (default :data:`BAR_STEP` per bar)."""
    axis = alt.Axis(format="%") if percent else alt.Undefined
    chart = alt.Chart(frame).mark_bar(color=PALETTE[0]).encode(
        y=alt.Y(f"{label}:N", sort="-x", title=None, axis=alt.Axis(labelLimit=0)),
        x=alt.X(f"{value}:Q", title=value_title, axis=axis),
        tooltip=[label, alt.Tooltip(f"{value}:Q", format=".1%" if percent else ".4g")])
    # Streamlit's default autosize ("fit") counts the axes in the height: a chart of one or two bars had no room
    # left for them. Fitting the width only keeps the height the plot's.
    chart = chart.properties(height=height or BAR_STEP * len(frame),
                             autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))
    where.altair_chart(chart, width="stretch")
