"""One colour convention for every heat map: diverging centred at zero for signed maps, sequential otherwise."""
from __future__ import annotations

import numpy as np
import torch

from core.render import ColourMap, colorbar, colourise, display_map, heat_figure, with_colorbar


def test_signed_scale_is_symmetric_and_zero_is_white():
    m = np.array([[-4.0, 0.0], [1.0, 2.0]])
    values, scale = display_map(m, signed=True, clip_percentile=100, units="u")
    assert scale.cmap is ColourMap.DIVERGING and scale.lo == -scale.hi == -4.0
    assert values[0, 1] == 0.0 and values[0, 0] == -1.0 and values[1, 1] == 0.5
    assert tuple(colourise(values, scale.cmap)[0, 1]) == (247, 247, 247)
    assert "±4 u" in scale.describe() and "extreme value" in scale.describe()


def test_unsigned_scale_runs_from_the_minimum_and_names_the_percentile():
    m = np.linspace(1.0, 3.0, 201).reshape(1, -1)
    values, scale = display_map(m, signed=False, clip_percentile=50)
    assert scale.cmap is ColourMap.HEAT and scale.lo == 1.0 and abs(scale.hi - 2.0) < 1e-9
    assert values.min() == 0.0 and values.max() == 1.0  # the upper half saturates
    assert "50th percentile" in scale.describe()


def test_colorbar_has_the_high_colour_on_top_and_keeps_the_height():
    _, scale = display_map(np.array([[-1.0, 1.0]]), signed=True)
    bar = colorbar(scale, 120)
    assert bar.shape[0] == 120
    top, bottom = bar[8, 8].astype(int), bar[112, 8].astype(int)
    assert top[0] > top[2] + 50 and bottom[2] > bottom[0] + 50  # red at +, blue at -
    pic = np.zeros((100, 80, 3), np.uint8)
    out = with_colorbar(pic, scale)
    assert out.shape[0] == 100 and out.shape[1] > 80 and (out[:, :80] == 0).all()


def test_heat_figure_overlays_an_image_with_its_bar():
    fig, scale = heat_figure(torch.rand(7, 7), torch.rand(3, 64, 64), signed=False, units="activation")
    assert fig.shape[:2] == (64, 64 + 78) and fig.dtype == np.uint8 and scale.units == "activation"


def test_a_colour_bar_title_does_not_cover_the_top_value():
    """The title sits above the bar and its top value's label below it, with blank rows between (they used
    to overlap: the label of the highest count was unreadable under the title)."""
    _, scale = display_map(np.linspace(0, 15, 100).reshape(10, 10), signed=False)
    for height in (120, 268, 600):
        bar = colorbar(scale, height, title="images")
        dark = (bar[:, 20:] < 100).any(axis=(1, 2))  # the label column, where title and value label could meet
        rows = np.flatnonzero(dark[:40])
        gaps = np.flatnonzero(np.diff(rows) > 1)
        assert len(rows) and len(gaps) >= 1, f"title and top label run together at height {height}"
        strip = bar[:, 4:18].astype(int)
        coloured = (strip.max(axis=2) - strip.min(axis=2) > 60).any(axis=1)  # the ramp, not grey text
        assert np.flatnonzero(coloured)[0] > rows[gaps[0]], "the ramp starts under the title"
