"""The dashboard runs under AppTest: home page, model switch, bad model names, no exceptions shown."""
from __future__ import annotations

import os
import re

from tests.conftest import ROOT


def test_home_shows_predictions_and_model_card(app, monkeypatch):
    monkeypatch.setenv("LENS_ADMIN", "1")
    app.run()
    assert not app.exception
    # the offline fallback is one line, with the reason on demand
    notice = [i.value for i in app.sidebar.info]
    assert notice == ["Showing EfficientNet-Lite0 (embedded, ImageNet): the default model could not be loaded."]
    assert any("cannot reach the Hugging Face hub" in c.value for c in app.sidebar.expander[0].caption)
    assert [s.value for s in app.subheader][:2] == ["Top-5 classes", "Model card"]
    top = app.table[0].value
    assert top.index[0].split(" (")[0] in {"tiger cat", "Egyptian cat", "tabby"}
    assert top["probability"].iloc[0].endswith("%")
    assert "embedded" in app.table[1].value.to_string()
    assert "memory" not in app.table[1].value["value"]  # the server's load is the operator's panel
    card = app.expander[1].table[0].value["value"]  # budget and current use
    assert card["memory"].endswith("MB budget (LENS_MEMORY_MB)") and "MB in use of a" in card["memory"]
    assert "running (at most" in card["jobs"] and "MB with gradients" in card["memory per image"]
    # the count is the process's (other tests' jobs in this process may have shed): its form, not its value
    assert re.search(r"MB of stored results dropped from memory to fit jobs \(\d+ times;", card["memory shed"])
    arenas = os.environ.get("MALLOC_ARENA_MAX")  # glibc's own, when the host sets it; else the app's cap
    assert card["malloc arenas"] == (f"{arenas} (MALLOC_ARENA_MAX from the environment)" if arenas
                                     else f"{os.environ.get('LENS_MALLOC_ARENAS', '2')} (LENS_MALLOC_ARENAS)")
    assert card["garbage collector"] == "not frozen (LENS_GC_FREEZE=0)"  # tests/conftest.py: this process's heap
    layers = app.expander[0].dataframe[0].value
    assert "blocks.6" in set(layers["layer"]) and len(layers) > 100


def test_home_hides_the_server_panel_from_visitors(app, monkeypatch):
    monkeypatch.delenv("LENS_ADMIN", raising=False)
    app.run()
    assert not app.exception
    assert not [e for e in app.expander if e.label.startswith("Server")]
    assert "malloc" not in repr(app.main) and "LENS_MEMORY_MB" not in repr(app.main)
    card = app.table[1].value["value"]
    assert {"model", "weights", "classes", "input size", "device"} <= set(card.index)


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


def test_refused_upload_keeps_the_previous_upload(app):
    """The browser empties the uploader as soon as another file is picked, even one it then refuses (too
    large): the user's last good upload stays, not the sample photo."""
    app.run()
    app.sidebar.radio(key="lens_image_source").set_value("Upload").run()
    coffee = (ROOT / "assets" / "samples" / "coffee.jpg").read_bytes()
    app.sidebar.file_uploader(key="lens_upload").set_value(("my coffee.jpg", coffee, "image/jpeg")).run()
    assert app.table[0].value.index[0] == "espresso (967)"
    app.sidebar.file_uploader(key="lens_upload").set_value(None).run()
    assert not app.exception
    assert any("Keeping your previous upload: my coffee.jpg" in c.value for c in app.sidebar.caption)
    assert app.table[0].value.index[0] == "espresso (967)"
    assert app.query_params.get("image") == "upload"
    assert any("cannot travel in a link" in c.value for c in app.sidebar.caption)


def test_a_link_opens_the_same_view(app):
    app.query_params["model"] = "embedded"
    app.query_params["sample"] = "coffee.jpg"
    app.run()
    assert not app.exception
    assert app.sidebar.selectbox(key="lens_model_choice").value == "embedded"
    assert app.table[0].value.index[0] == "espresso (967)"
    assert "embedded" in app.table[1].value.to_string()
    # the user's later choice wins over the link, and the address bar follows it
    app.sidebar.selectbox(key="lens_sample").set_value("chelsea.jpg").run()
    assert app.table[0].value.index[0] != "espresso (967)"
    assert app.query_params["sample"] == "chelsea.jpg" and app.query_params["model"] == "embedded"


def test_a_link_with_an_upload_or_unknown_values_says_so(app):
    app.query_params["image"] = "upload"
    app.query_params["sample"] = "no_such_photo.jpg"
    app.run()
    assert not app.exception
    assert any("made with an uploaded image" in i.value for i in app.sidebar.info)
    assert any("sample=no_such_photo.jpg is not available" in c.value for c in app.sidebar.caption)
    assert app.sidebar.selectbox(key="lens_sample").value == "chelsea.jpg"


def test_home_prediction_goes_to_the_report_and_the_report_page_lists_it(app):
    app.run()
    [pin] = [b for b in app.button if b.key and b.key.startswith("report_predict_")]
    pin.click().run()
    assert not app.exception
    [item] = app.session_state["lens_report_items"]
    top = app.table[0].value
    best = top.index[0]
    assert item.title == f"Prediction: {best} at {top['probability'].iloc[0]}"
    assert item.command == "python -m core predict assets/samples/chelsea.jpg --top 5 --model embedded"
    assert list(item.figures) == list(top.index) and item.settings["image"] == "chelsea.jpg"
    assert [b for b in app.button if b.key == pin.key][0].disabled  # pinned once
    app.switch_page("pages/report.py").run()
    assert not app.exception and any(m.value == f"**1. {item.title}**" for m in app.markdown)


def test_no_page_writes_through_magic():
    """.streamlit/config.toml turns Streamlit's magic off (it rewrote every script's syntax tree once per visit):
    no page may rely on a bare expression statement being drawn (the module docstring aside)."""
    import ast

    assert "magicEnabled = false" in (ROOT / ".streamlit" / "config.toml").read_text()
    found = []
    for path in [ROOT / "dashboard.py", *sorted((ROOT / "pages").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        doc = tree.body[0] if tree.body and ast.get_docstring(tree) is not None else None
        found += [f"{path.name}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Expr) and n is not doc
                  and not isinstance(n.value, (ast.Call, ast.Await, ast.Yield, ast.YieldFrom))]
    assert found == []
