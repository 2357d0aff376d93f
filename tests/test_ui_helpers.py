"""ui.run (one rule for heavy work) and ui.permalink (settings in the URL) on a minimal script; the error-analysis
channel tiles and the attribution preview's colour bar on fakes of ui.cache."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _script():
    import streamlit as st

    from ui import permalink, run
    from ui.permalink import Param

    permalink.bind([Param("n", "n", int), Param("mode", "mode", options=["a", "b"]),
                    Param("on", "on", bool), Param("pick", "pick", list, options=["x", "y", "z"])])
    n = st.number_input("n", 1, 10, 2, key="n")
    mode = st.radio("mode", ["a", "b"], key="mode")
    st.checkbox("on", key="on")
    st.multiselect("pick", ["x", "y", "z"], key="pick")
    st.session_state.setdefault("runs", 0)
    if run.button("Compute", (n, mode), key="go"):
        st.session_state["runs"] += 1
        st.markdown(f"result {n}{mode}")


def test_nothing_runs_until_pressed_and_a_change_asks_again():
    at = AppTest.from_function(_script).run()
    assert not at.markdown and any("Press **Compute**" in c.value for c in at.caption)
    at.button(key="go").click().run()
    assert [m.value for m in at.markdown] == ["result 2a"] and at.query_params["run"] == "go"
    at.checkbox(key="on").check().run()  # a setting outside params keeps the result
    assert [m.value for m in at.markdown] == ["result 2a"]
    at.number_input(key="n").set_value(3).run()
    assert not at.markdown and any("Settings changed" in c.value for c in at.caption)
    assert "run" not in at.query_params and at.query_params["n"] == "3"


def test_a_link_restores_typed_settings_and_runs():
    at = AppTest.from_function(_script)
    at.query_params.update({"n": "7", "mode": "b", "on": "1", "pick": ["z", "x"], "run": "go"})
    at.run()
    assert not at.exception
    assert at.number_input(key="n").value == 7 and at.radio(key="mode").value == "b"
    assert at.checkbox(key="on").value is True and at.multiselect(key="pick").value == ["z", "x"]
    assert [m.value for m in at.markdown] == ["result 7b"]
    at.number_input(key="n").set_value(5).run()  # the user's change wins over the link
    assert at.number_input(key="n").value == 5 and at.query_params["n"] == "5"


def test_a_bad_link_value_is_ignored_with_a_caption():
    at = AppTest.from_function(_script)
    at.query_params.update({"n": "many", "mode": "c"})
    at.run()
    assert not at.exception
    assert at.number_input(key="n").value == 2 and at.radio(key="mode").value == "a"
    captions = " ".join(c.value for c in at.caption)
    assert "n=many is not available" in captions and "mode=c is not available" in captions


# ------------------------------------------------- pieces that reuse tested drawing code: their own small tests

def _fake_index(monkeypatch):
    """ui.cache's activation-index calls replaced by an index of two channels whose crops differ in size."""
    from pathlib import Path
    from types import SimpleNamespace

    from PIL import Image

    import ui.error_analysis as view

    patches = [SimpleNamespace(rank=r, value=10.0 - r, image_id=r, box=(0, 0, 8, 8), image=Path(f"img{r}.jpg"),
                               by="activation")
               for r in range(6)]
    index = SimpleNamespace(layers=["blocks.5"], top=lambda layer, channel, k, by="activation": patches[:k])
    fake = SimpleNamespace(index_directory=lambda model, root: "idx", index_stamp=lambda d: "stamp",
                           open_activation_index=lambda d, s: index,
                           patch_crop=lambda d, s, image_id, box: Image.new("RGB", (20 + 30 * image_id, 40), "red"))
    monkeypatch.setattr(view, "index_cache", fake)
    tiles = []
    real = view.patch_tile
    monkeypatch.setattr(view, "patch_tile", lambda *a: tiles.append(real(*a)) or tiles[-1])
    return tiles


def _channel_examples_script():
    from pathlib import Path
    from types import SimpleNamespace

    from ui import error_analysis as view

    ev = SimpleNamespace(image_folder=Path("photos"))
    model = SimpleNamespace(card=SimpleNamespace(fingerprint="sha256:x"))
    sep = SimpleNamespace(channels=[SimpleNamespace(channel=5, effect=1.2), SimpleNamespace(channel=9, effect=-0.8)])
    view.channel_examples(ev, model, "blocks.5", sep)


def test_error_analysis_channel_tiles_are_equal_labelled_squares(monkeypatch):
    tiles = _fake_index(monkeypatch)
    at = AppTest.from_function(_channel_examples_script).run()
    assert not at.exception, at.exception
    assert [m.value for m in at.markdown] == ["**Channel 5** (d = +1.20): its dataset examples",
                                             "**Channel 9** (d = -0.80): its dataset examples"]
    assert [c for image in at.get("image") for c in image.captions] == [f"img{r}.jpg" for r in range(6)] * 2
    # crops from 20x40 to 170x40 pixels: every tile the same 128-pixel square over a 20-pixel label band
    assert len(tiles) == 12 and {t.shape for t in tiles} == {(148, 128, 3)}
    band = tiles[0][128:]
    assert (band < 100).any() and (band == 255).mean() > 0.5  # dark label text on white


def _preview_script():
    from types import SimpleNamespace

    import streamlit as st
    import torch

    from ui import attribution

    class Slot:  # records what the preview draws (the real slot is emptied when the computation ends)
        def image(self, picture, **kw):
            st.session_state["shown"] = (picture, kw["caption"])

        def empty(self):
            pass

    sel = SimpleNamespace(model=None, model_key="m", inp=SimpleNamespace(tensor=torch.full((3, 96, 128), 0.5)),
                          image_key="i")
    attribution.compute(sel, "smoothgrad", 3, {}, preview_slot=Slot())


def test_attribution_preview_has_its_colour_bar_and_says_what_the_colours_mean(monkeypatch):
    import numpy as np
    import torch

    import ui.attribution

    values = torch.linspace(-2.0, 1.0, 96 * 128).reshape(1, 96, 128)

    def fake(model, key, x, image_key, method, target, opts, *, progress, preview):
        preview(values, 0.5)
        return "done"

    monkeypatch.setattr(ui.attribution.cache, "attribution", fake)
    at = AppTest.from_function(_preview_script).run()
    assert not at.exception, at.exception
    picture, caption = at.session_state["shown"]
    assert picture.shape == (96, 128 + 78, 3)  # the overlay and a 78-pixel colour bar beside it
    hi = float(np.percentile(np.abs(values.numpy()), 99.5))  # signed map: ends at ± the 99.5th percentile of |v|
    assert caption.startswith(f"refining: 50%; blue negative, white 0, red positive; the ends are ±{hi:.3g}")
    # the bar's top is the diverging map's red end, its bottom the blue end
    bar = picture[:, 128 + 4 + 7]
    assert bar[8, 0] > bar[8, 2] and bar[-8, 2] > bar[-8, 0]


def test_a_measured_integrated_gradients_batch_is_budgeted_at_its_largest_trial(monkeypatch):
    """IG measures its batch at run time (up to the largest trial): the scheduler's memory estimate counts that
    many passes, and a job given fewer gets a fixed batch that fits; occlusion's forward passes count as one."""
    import torch

    from core.attribution.base import TRIAL_BATCHES
    from ui import cache

    seen = {}

    def fake_long(key, progress, model, compute, *, samples=1, preview=None):
        seen["samples"] = samples
        return compute(None, 3)  # the scheduler lets only 3 passes run at once

    monkeypatch.setattr(cache, "_long", fake_long)
    monkeypatch.setattr(cache, "attribute", lambda model, x, target, **kw: kw.get("batch_size"))
    x = torch.zeros(3, 8, 8)
    assert cache.attribution(None, "m", x, "i", "integrated-gradients", 0, {}) == 3
    assert seen["samples"] == TRIAL_BATCHES[-1]
    assert cache.attribution(None, "m", x, "i", "occlusion", 0, {}) is None and seen["samples"] == 1


def _bars_script():
    import pandas as pd

    from ui import figures

    for n in (1, 2, 6):
        figures.bars(pd.DataFrame({"name": [f"c{i}" for i in range(n)], "share": [0.5 / (i + 1) for i in range(n)]}),
                     label="name", value="share", value_title="share")


def test_bar_charts_leave_room_for_every_bar():
    """Streamlit fits a chart's whole height, axes included, to the chart's height unless the chart says how it
    sizes: a chart of one bar was drawn with a plot 0 pixels tall. The height is the plot's, at least 20 pixels a
    bar, and the axes come on top of it (the browser walk measures the drawn bars)."""
    import json

    at = AppTest.from_function(_bars_script).run()
    assert not at.exception, at.exception
    specs = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    assert len(specs) == 3
    for n, spec in zip((1, 2, 6), specs):
        assert spec["autosize"]["type"] == "fit-x", spec["autosize"]  # the width fitted, the height kept
        assert spec["height"] >= 20 * n, spec["height"]
