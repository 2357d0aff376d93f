"""The CAM and LRP page under AppTest: embedded model (CAM exact), ConvNeXt (CAM linearised), LRP figures."""
from __future__ import annotations


def test_cam_then_lrp_on_the_embedded_model(app):
    app.run()
    app.switch_page("pages/cam_lrp.py").run()
    assert not app.exception and not app.error
    assert any(s.value.startswith("Exact") for s in app.success)
    assert any("= mean of the map" in m.value for m in app.markdown)
    app.radio(key="cl_method").set_value("lrp").run()
    assert not app.exception and not app.error
    assert any("Relevance sum" in m.value and "BatchNorm layers folded" in m.value for m in app.markdown)
    app.selectbox(key="cl_rule").set_value("epsilon").run()
    app.selectbox(key="cl_first").set_value("flat").run()
    assert not app.exception and not app.error


def test_cam_says_it_linearises_convnext(app):
    app.run()
    app.sidebar.selectbox(key="lens_model_choice").set_value("convnext_atto").run()
    app.sidebar.radio(key="lens_weights").set_value("random").run()
    app.switch_page("pages/cam_lrp.py").run()
    assert not app.exception and not app.error
    assert any("linearised" in i.value.lower() and "LayerNorm" in i.value for i in app.info)
