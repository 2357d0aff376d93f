"""The Concepts page under AppTest (the offline default model, the embedded EfficientNet-Lite0, chelsea.jpg)."""
from __future__ import annotations

from tests.test_attack import one_thread  # noqa: F401  (autouse fixture: one intra-op thread for this module)


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
    assert [b.label for b in app.button].count("Add to report") == 1
    assert app.query_params["run"] == "cpt_run" and app.query_params["top"] == "2"
    assert "Is the ranking faithful? Deleting channels" in [s.value for s in app.subheader]
