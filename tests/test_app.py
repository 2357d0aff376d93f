"""The dashboard runs under AppTest: home page, model switch, bad model names, no exceptions shown."""
from __future__ import annotations

from tests.conftest import ROOT


def test_home_shows_predictions_and_model_card(app):
    app.run()
    assert not app.exception
    assert any("cannot reach the Hugging Face hub" in i.value for i in app.info)  # the offline fallback is visible
    assert [s.value for s in app.subheader][:2] == ["Top-5 classes", "Model card"]
    top = app.table[0].value
    assert top.index[0].split(" (")[0] in {"tiger cat", "Egyptian cat", "tabby"}
    assert top["probability"].iloc[0].endswith("%")
    assert "embedded" in app.table[1].value.to_string()
    card = app.table[1].value["value"]  # budget and current use (issue 12)
    assert card["memory"].endswith("MB budget (LENS_MEMORY_MB)") and "MB in use of a" in card["memory"]
    assert "running (at most" in card["jobs"] and "MB with gradients" in card["memory per image"]
    layers = app.expander[0].dataframe[0].value
    assert "blocks.6" in set(layers["layer"]) and len(layers) > 100


def test_switching_sample_and_model(app):
    app.run()
    app.sidebar.selectbox(key="lens_sample").set_value("coffee.jpg").run()
    assert not app.exception
    assert app.table[0].value.index[0] == "espresso (967)"
    app.sidebar.selectbox(key="lens_model_choice").set_value("convnext_atto").run()
    tag = app.sidebar.selectbox(key="lens_tag_convnext_atto")
    assert tag.value == "convnext_atto.d2_in1k" and "convnext_atto.d2_in1k" in tag.options
    assert any("cannot reach the Hugging Face hub" in e.value for e in app.sidebar.error)  # offline: said, not hung
    app.sidebar.radio(key="lens_weights").set_value("random").run()
    assert not app.exception and not app.error
    assert "convnext_atto" in app.table[1].value.to_string()


def test_unavailable_model_is_a_message_not_a_traceback(app):
    app.run()
    app.sidebar.selectbox(key="lens_model_choice").set_value("Other timm model...").run()
    app.sidebar.text_input(key="lens_model_custom").set_value("no_such_net").run()
    app.sidebar.radio(key="lens_weights").set_value("random").run()
    assert not app.exception
    assert any("unknown model" in e.value for e in app.error)
    assert any("Keeping the previous model" in c.value for c in app.sidebar.caption)
    assert len(app.table) == 2  # the page still shows predictions from the previous model


def test_uploads_good_and_bad(app):
    app.run()
    app.sidebar.radio(key="lens_image_source").set_value("Upload").run()
    coffee = (ROOT / "assets" / "samples" / "coffee.jpg").read_bytes()
    app.sidebar.file_uploader(key="lens_upload").set_value(("my coffee.jpg", coffee, "image/jpeg")).run()
    assert not app.exception and app.table[0].value.index[0] == "espresso (967)"
    app.sidebar.file_uploader(key="lens_upload").set_value(("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
                                                             "image/png")).run()
    assert not app.exception
    assert any("broken.png: truncated or corrupt" in e.value for e in app.sidebar.error)
    assert any("Keeping the previous image: my coffee.jpg" in c.value for c in app.sidebar.caption)
    assert app.table[0].value.index[0] == "espresso (967)"  # nothing lost
