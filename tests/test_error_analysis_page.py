"""AppTest of the Error analysis page: the demo model on the sample photos, a cell, a mistake explained."""
from __future__ import annotations


def _open(app):
    app.session_state["lens_model_choice"] = "embedded"
    app.run()
    app.switch_page("pages/error_analysis.py").run()
    assert not app.exception, app.exception
    return app


def test_page_without_folder_names_the_classes(app):
    at = _open(app)
    assert any("Name a labelled folder" in i.value for i in at.info)


def test_demo_evaluation_cell_and_explain(app):
    at = _open(app)
    at.radio(key="err_model").set_value(at.radio(key="err_model").options[1]).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "70"
    # the most confused cell is chosen first: a mistake, so true != predicted
    assert at.selectbox(key="err_true").value != at.selectbox(key="err_pred").value
    at.selectbox(key="err_true").set_value("animal").run()
    at.selectbox(key="err_pred").set_value("interior").run()
    assert any("images of animal predicted interior" in m.value for m in at.markdown)
    explain = [b for b in at.button if b.key and b.key.startswith("mistake_")]
    assert explain
    at.session_state["err_samples"] = 2  # keep SmoothGrad short
    explain[0].click().run()
    assert not at.exception, at.exception
    assert any(s.value.startswith("Why ") for s in at.subheader)
    assert any(c.value.startswith("Contrast = attribution of logit(predicted)") for c in at.caption)
    captions = [c for image in at.get("image") for c in image.captions]
    for title in ("Grad-CAM", "SmoothGrad"):
        assert sum(c.startswith(title) for c in captions) == 3, captions
    assert [s.key for s in at.selectbox if "layer" in s.label.lower()] == ["err_layer"]  # one layer picker
    # each map says what its colour bar means: Grad-CAM for a class unsigned, contrasts and SmoothGrad signed
    assert [c.split(". Colours: ")[1].split(" ")[0] for c in captions if ". Colours: " in c] == [
        "dark", "dark", "blue", "blue", "blue", "blue"]
    # from the cell to concepts: the separating channels of the chosen layer
    at.button(key="err_sep_go").click().run()
    assert not at.exception, at.exception
    assert any("Cohen's d" in c.value for c in at.caption)
    table = at.dataframe[-1].value
    assert list(table.columns[:3]) == ["channel", "Cohen's d", "AUC"] and len(table) == 8


def test_link_opens_the_cell(app):
    """A link with the page's settings (model source, cell, layer) reproduces the view; a class the folder does
    not have is ignored, not an error."""
    from ui import error_analysis as view

    app.query_params.update({"source": view.DEMO, "true": "animal", "pred": "interior"})
    at = _open(app)
    assert at.radio(key="err_model").value == view.DEMO
    assert (at.selectbox(key="err_true").value, at.selectbox(key="err_pred").value) == ("animal", "interior")
    assert any("images of animal predicted interior" in m.value for m in at.markdown)
    at.selectbox(key="err_true").set_value("interior").run()  # the address bar follows the user's change
    assert at.query_params["true"] == "interior" and at.query_params["source"] == view.DEMO
