"""Streamlit glue of the Similarity page (pages/similarity.py): its link parameters, the pictures with their
colour bars, and "Add to report"."""
from __future__ import annotations

import numpy as np
import streamlit as st

from core.features.similarity_spec import NO_OTHER, OTHER, SIMILARITY, X, Y
from core.render import ColourMap, Scale, captioned_strip, colorbar, display_map, overlay, with_colorbar
from ui import permalink, report
from ui.permalink import Param


def bind(view: dict) -> None:
    """Restore the page's view settings (:data:`core.features.similarity_spec.VIEW`: second image, stretch,
    point) from the link, then publish them; the point starts at its declared default, and a linked point outside
    this image is clamped to it. ``view``: the sample photos' names (``others``), ``width`` and ``height``."""
    permalink.bind([Param("other", "lens_sim_other", options=list(OTHER.options(view))),
                    Param("stretch", "lens_sim_stretch", bool),
                    Param("x", "lens_sim_x", int), Param("y", "lens_sim_y", int)])
    for s, n in ((X, view["width"]), (Y, view["height"])):
        key = s.widget_key(SIMILARITY.prefix, {})
        st.session_state[key] = min(max(0, int(st.session_state.get(key, s.start(view)))), n - 1)


def picture(image, values, stretch: bool) -> tuple[np.ndarray, Scale]:
    """(uint8 (H, W, 3) overlay of a cosine map on ``image``, its Scale): stretched to the map's own range on the
    sequential map, or the absolute scale -1..1 on the diverging map centred at 0."""
    if stretch:
        shown, scale = display_map(values, signed=False, clip_percentile=100, units="cosine")
        return overlay(image, shown, cmap=ColourMap.HEAT, alpha=0.55), scale
    return overlay(image, values, cmap=ColourMap.DIVERGING, alpha=0.5), Scale(True, -1.0, 1.0, 100, "cosine")


def mark(picture: np.ndarray, cx: float, cy: float, w: int) -> np.ndarray:
    """``picture`` with a green square at (cx, cy): the query cell's receptive-field centre."""
    r = max(2, int(w / 112))
    picture[max(0, int(cy) - r):int(cy) + r + 1, max(0, int(cx) - r):int(cx) + r + 1] = (0, 255, 0)
    return picture


def bar_beside(where, scale: Scale, height: int) -> np.ndarray:
    """A picture's colour bar as its own image in the narrow column ``where`` beside it (inside the clickable
    picture it would shift the clicks); both maps of the page use it, so their bars have the same size and
    style. Returns the bar (uint8 (height, 78, 3))."""
    bar = colorbar(scale, height)
    where.image(bar, width="stretch")
    return bar


def colours_caption(stretch: bool) -> str:
    return (("Stretched: dark = least, bright = most similar in each map (ends at each map's extremes)" if stretch
             else "Blue = opposite direction, white = unrelated (0), red = same direction; ends at ±1")
            + "; the green dot marks the query cell's receptive-field centre.")


def report_button(selection, layer: str, x: int, y: int, cell, grid, own: np.ndarray, own_scale: Scale,
                  other_name: str | None, other: tuple[np.ndarray, Scale, object] | None, stretch: bool,
                  seconds: float) -> None:
    """"Add to report": the query picture (and the second image's), each with its colour bar, and the command."""
    from core.images import SAMPLES

    panels = [(with_colorbar(own, own_scale), f"{selection.name}: query cell {cell} of {grid}")]
    figures = {}
    if other is not None:
        pic, scale, cross = other
        panels.append((with_colorbar(pic, scale), f"{other_name}: best match {cross.max_cell}"))
        figures["best cosine in the second image"] = float(cross.map.max())
    other_arg = None if other is None else str((SAMPLES / other_name).relative_to(SAMPLES.parent.parent))
    report.add_button(lambda: report.item(
        selection, title=f"Similarity at ({x}, {y}) in {layer}", figure=captioned_strip(panels),
        caption=colours_caption(stretch),
        settings={"layer": layer, "point (model-input pixels)": f"{x}, {y}", "cell": str(cell),
                  "second image": other_name or NO_OTHER, "colours": "stretched" if stretch else "absolute -1..1"},
        command=SIMILARITY.command_line(report.image_arg(selection), selection.model.card, {"layer": layer}, extra=[
            *(["--other", other_arg] if other_arg else []), "--at", f"{int(x)},{int(y)}"]),
        seconds=seconds, figures=figures,
        notes=("The command saves the map over the second image when one is named, else over the image.",)),
        key=f"sim_{selection.key}_{layer}_{x}_{y}_{other_name}_{stretch}")
