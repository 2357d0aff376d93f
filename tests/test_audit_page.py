"""AppTest of the Dataset audit page: the shipped watermark demo found, flagged in words, pinned to the report."""
from __future__ import annotations


def _open(app, **state):
    app.session_state["lens_model_choice"] = "embedded"
    for k, v in state.items():
        app.session_state[k] = v
    app.run()
    app.switch_page("pages/audit.py").run()
    assert not app.exception, app.exception
    return app


def test_demo_finds_the_watermark_and_adds_to_the_report(app):
    at = _open(app, aud_classes=["stamped"])
    assert [s.value for s in at.subheader] == ["stamped: 20 images, 2 clusters"]
    (warning,) = at.warning
    assert warning.value.startswith("10 of 20 images of stamped: the evidence sits in the lower-left corner")
    captions = [c for image in at.get("image") for c in image.captions]
    assert sum(c.startswith("Cluster ") for c in captions) == 2
    assert any("outlier score" in m.value for m in at.markdown)
    at.button(key=next(b.key for b in at.button if b.key and b.key.startswith("report_audit_"))).click().run()
    assert not at.exception, at.exception
    (item,) = at.session_state["lens_report_items"]
    assert item.command.startswith("python -m core audit ") and "--classes stamped" in item.command
    assert "shortcut-head.safetensors" in item.command and item.notes and "lower-left" in item.notes[0]


def test_link_carries_the_settings_and_an_empty_folder_asks_for_one(app):
    app.query_params.update({"source": "The sidebar's model", "clusters": "3"})
    at = _open(app)
    assert at.radio(key="aud_model").value == "The sidebar's model"
    assert any("Name a labelled folder" in i.value for i in at.info)
    at.text_input(key="aud_folder_False").set_value("assets/samples").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="aud_clusters").value == "3"
    assert not at.toggle(key="aud_go").value  # the sidebar's model waits for the toggle


def test_an_image_of_a_cluster_opens_on_the_attribution_page(app, tmp_path):
    import shutil
    from pathlib import Path

    samples = Path(__file__).resolve().parent.parent / "assets" / "samples"
    (tmp_path / "tabby").mkdir()
    shutil.copy(samples / "chelsea.jpg", tmp_path / "tabby" / "chelsea.jpg")
    shutil.copy(samples / "coffee.jpg", tmp_path / "tabby" / "coffee.jpg")
    app.query_params.update({"source": "The sidebar's model", "folder": str(tmp_path)})
    at = _open(app, aud_go=True)
    assert [s.value for s in at.subheader] == ["tabby: 2 images, 1 cluster"]
    at.selectbox(key="aud_pick_281_0").set_value("tabby/coffee.jpg").run()
    at.button(key="aud_open_281_0").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Attribution"
    assert at.session_state["lens_last_upload"][1] == "coffee.jpg"


def test_a_demo_image_opens_on_the_attribution_page_with_the_demo_head(app):
    from ui.sidebar import DEMO_HEAD_LABEL

    at = _open(app, aud_classes=["stamped"])
    pick = next(s for s in at.selectbox if s.key and s.key.startswith("aud_pick_"))  # the first cluster's picker
    name = pick.options[-1]
    # picked and pressed in one rerun, as a quick hand does before the page redraws: the picked image opens, not
    # the one the button was drawn with
    pick.set_value(name)
    at.button(key=pick.key.replace("aud_pick_", "aud_open_")).click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Attribution"
    assert at.session_state["lens_last_upload"][1] == name.split("/")[-1]
    # the model the audit explained, not the ImageNet one: its prediction is one of the head's two classes
    assert at.sidebar.selectbox(key="lens_model_choice").value == DEMO_HEAD_LABEL
    assert at.query_params["model"] == DEMO_HEAD_LABEL
    (predicted,) = [c.value for c in at.caption if c.value.startswith("Predicted: ")]
    assert predicted.startswith(("Predicted: **plain** (0)", "Predicted: **stamped** (1)")), predicted
