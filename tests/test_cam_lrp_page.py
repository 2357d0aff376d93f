"""CAM and LRP on the attribution page under AppTest: exact CAM on the embedded model, linearised on ConvNeXt,
LRP's relevance sum against the logit."""
from __future__ import annotations

from tests.conftest import ROOT

PAGE = str(ROOT / "pages" / "attribution.py")


def test_cam_then_lrp_on_the_embedded_model(app):
    app.run()
    app.switch_page(PAGE).run()
    app.selectbox(key="attr_method").set_value("cam").run()
    app.button(key="attr_run").click().run()  # nothing is computed before the button
    assert not app.exception and not app.error
    assert any(i.value.startswith("Exact") for i in app.info)
    assert any("= mean of the map + constant" in m.value for m in app.markdown)
    app.selectbox(key="attr_method").set_value("lrp").run()
    app.button(key="attr_run").click().run()
    assert not app.exception and not app.error
    assert any("Relevance sum" in m.value and "conserved" in m.value for m in app.markdown)
    app.selectbox(key="attr_lrp_rule").set_value("epsilon").run()
    app.selectbox(key="attr_lrp_first").set_value("flat").run()
    app.button(key="attr_run").click().run()
    assert not app.exception and not app.error


def test_cam_says_it_linearises_convnext(app):
    app.run()
    app.sidebar.selectbox(key="lens_model_choice").set_value("convnext_atto").run()
    app.sidebar.radio(key="lens_weights").set_value("random").run()
    app.switch_page(PAGE).run()
    app.selectbox(key="attr_method").set_value("cam").run()
    app.button(key="attr_run").click().run()  # nothing is computed before the button
    assert not app.exception and not app.error
    assert any("linearised" in i.value.lower() and "LayerNorm" in i.value for i in app.info)


def test_lrp_cp_is_refused_on_a_cnn_and_runs_on_a_vit(app):
    """The rule widget (generated from the LRP spec) offers cp; on the embedded CNN the page says why it does not
    apply, on a ViT it runs CP-LRP and shows the relevance sum against the logit."""
    app.run()
    app.switch_page(PAGE).run()
    app.selectbox(key="attr_method").set_value("lrp").run()
    assert "cp" in app.selectbox(key="attr_lrp_rule").options
    app.selectbox(key="attr_lrp_rule").set_value("cp").run()
    app.button(key="attr_run").click().run()
    assert not app.exception
    assert any("does not apply" in e.value and "no attention" in e.value for e in app.error)
    app.sidebar.selectbox(key="lens_model_choice").set_value("vit_tiny_patch16_224").run()
    app.sidebar.radio(key="lens_weights").set_value("random").run()
    app.switch_page(PAGE).run()
    app.selectbox(key="attr_method").set_value("lrp").run()
    app.selectbox(key="attr_lrp_rule").set_value("cp").run()
    app.button(key="attr_run").click().run()
    assert not app.exception and not app.error
    assert any("Relevance sum" in m.value for m in app.markdown)
