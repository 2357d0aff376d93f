"""The feature visualisation page under AppTest (embedded model, small settings)."""
from __future__ import annotations


def _open(app):
    app.run()
    app.switch_page("pages/featurevis.py").run()
    assert not app.exception
    return app


def test_page_visualises_a_channel_and_shows_filters(app):
    app = _open(app)
    assert app.title[0].value == "Feature visualisation"
    app.selectbox(key="fv_layer").set_value("blocks.2").run()
    app.slider(key="fv_steps").set_value(8).run()
    app.selectbox(key="fv_size").set_value(64).run()
    app.button(key="fv_go").click().run()
    assert not app.exception and not app.error
    assert any("Objective at the model's input size" in m.value for m in app.markdown)
    assert any("This channel on your image" == s.value for s in app.subheader)
    # the filters tab: patchify/3x3 stem tiles and the statistics table
    assert any(s.value.startswith("First layer: conv_stem") for s in app.subheader)
    stats = app.dataframe[-1].value
    assert "conv_stem" in set(stats["layer"]) and (stats["params"] > 0).all()


def test_page_reports_bad_requests_as_messages(app):
    app = _open(app)
    app.slider(key="mix_steps").set_value(8).run()
    app.selectbox(key="mix_size").set_value(64).run()
    app.number_input(key="mix_batch").set_value(2).run()
    app.button(key="mix_go").click().run()  # channels 0 and 1 by default: runs
    assert not app.exception
    app.number_input(key="mix_b").set_value(0).run()
    app.button(key="mix_go").click().run()
    assert not app.exception
    assert any("two different channels" in e.value for e in app.error)
