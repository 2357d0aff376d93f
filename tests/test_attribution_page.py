"""The attribution page under AppTest (embedded model, offline): methods, views, grid, no traceback."""
from __future__ import annotations

PAGE = "pages/attribution.py"


def _open(app, **state):
    app.run()
    for key, value in state.items():
        app.session_state[key] = value
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


def test_page_shows_a_map_views_and_downloads(app):
    app = _open(app, attr_method="saliency")
    assert not app.error
    assert any("Predicted: **tiger cat**" in c.value or "Predicted: **" in c.value for c in app.caption)
    assert len(app.get("download_button")) == 2
    for view in ("heat map", "masked image"):
        app.radio(key="attr_view").set_value(view).run()
        assert not app.exception
    app.radio(key="attr_sign").set_value("absolute").run()
    app.slider(key="attr_clip").set_value(95.0).run()
    assert not app.exception and not app.error


def test_guided_rule_is_stated_and_smoothgrad_runs(app):
    app = _open(app, attr_method="guided-backprop", attr_smoothgrad_samples=3)
    assert any("rule applied" in i.value and "ReLU6" in i.value for i in app.info)
    app.selectbox(key="attr_method").set_value("smoothgrad").run()
    assert not app.exception and not app.error
    assert any("3 samples" in i.value for i in app.info)


def test_choose_class_gradcam_and_grid(app):
    app = _open(app, attr_method="gradcam")
    app.radio(key="attr_target_mode").set_value("Choose a class").run()
    app.selectbox(key="attr_target").set_value(7).run()
    assert not app.exception and not app.error
    assert app.selectbox(key="attr_target").value == 7
    assert any(i.value.startswith("Layer blocks.6 (320 channels") for i in app.info)  # Grad-CAM's default layer is stated
    app.multiselect(key="attr_grid_methods").set_value(["saliency", "gradcam"]).run()
    app.toggle(key="attr_grid_go").set_value(True).run()
    assert not app.exception and not app.error
