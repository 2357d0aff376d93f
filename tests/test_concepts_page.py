"""The Concepts page under AppTest (the offline default model, the embedded EfficientNet-Lite0, chelsea.jpg)."""
from __future__ import annotations

from tests.test_attack import one_thread  # noqa: F401  (autouse fixture: one intra-op thread for this module)
from tests.conftest import sample_photos_only


def test_concepts_page_ranks_maps_and_links(app):
    app.session_state["cpt_top"] = 2
    app.run()
    app.switch_page("pages/concepts.py").run()
    assert not app.exception
    assert app.title[0].value == "Concepts"
    assert not app.main.get("image")  # nothing is computed before the button
    layer = next(s for s in app.selectbox if s.label == "Layer")
    assert layer.value == "blocks.6"
    next(b for b in app.button if b.label == "Explain with concepts").click().run()
    assert not app.exception and not app.error
    assert any("tiger cat" in m.value and "blocks.6" in m.value for m in app.markdown)
    assert len(app.get("vega_lite_chart")) == 1  # the ranked shares
    captions = [c for image in app.main.get("image") for c in image.captions]
    heat = [c for c in captions if c.startswith("channel ")]
    assert len(heat) == 2 and all("of the relevance. Colours:" in c for c in heat)
    # at the embedded model's last block the top channels look at the same places (correlation 0.93 here)
    assert any("nearly one map (mean correlation 0.9" in i.value and "`blocks.6`" in i.value for i in app.info)
    assert [b.label for b in app.button].count("Add to report") == 1
    assert app.query_params["run"] == "cpt_run" and app.query_params["top"] == "2"
    assert "Is the ranking faithful? Deleting channels" in [s.value for s in app.subheader]


def test_examples_are_relevance_ranked_with_activation_on_the_toggle(app, tmp_path, monkeypatch):
    """The strip under each map comes from the sample photos' index, built with relevance on the first visit (here
    three photos in a fresh cache), relevance-ranked; the toggle switches to activation and the link keeps it."""
    from core.index import open_index

    sample_photos_only(tmp_path, monkeypatch, ("brick.jpg", "chelsea.jpg", "coffee.jpg"))
    app.session_state["cpt_top"] = 2
    app.run()
    app.switch_page("pages/concepts.py").run()
    next(b for b in app.button if b.label == "Explain with concepts").click().run()
    assert not app.exception and not app.error
    toggle = app.radio(key="cpt_examples_by")
    assert toggle.value == "relevance" and list(toggle.options) == ["relevance", "activation"]
    captions = [c.value for c in app.caption]
    assert sum("relevance-ranked" in c for c in captions) == 2, captions  # one strip per mapped channel
    [directory] = (tmp_path / "cache" / "index").iterdir()  # the app's index of the sample photos
    index = open_index(directory)
    assert index.has_relevance and len(index) == 3
    strips = [image for image in app.main.get("image") if len(image.captions) == 3]  # the photos, with values
    assert len(strips) == 2
    layer = next(s for s in app.selectbox if s.label == "Layer").value
    shown = [[float(c) for c in image.captions] for image in strips]
    channels = [int(c.split(" ")[1].rstrip(":")) for image in app.main.get("image") for c in image.captions
                if c.startswith("channel ")]
    for values, channel in zip(shown, channels):
        assert values == [float(f"{p.value:.3g}") for p in index.top(layer, channel, 4, by="relevance")]
    toggle.set_value("activation").run()
    assert not app.exception and not app.error
    captions = [c.value for c in app.caption]
    assert sum("activation-ranked" in c for c in captions) == 2
    assert app.query_params["examples_by"] == "activation"
