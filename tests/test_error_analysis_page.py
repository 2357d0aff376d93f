"""AppTest of the Error analysis page: the demo model on the sample photos, a cell, a mistake explained."""
from __future__ import annotations


def _open(app):
    app.session_state["lens_model_choice"] = "embedded"
    app.run()
    app.switch_page("pages/error_analysis.py").run()
    assert not app.exception, app.exception
    return app


def test_page_opens_on_the_demo_and_without_folder_names_the_classes(app):
    at = _open(app)
    assert {m.label: m.value for m in at.metric}["Images"] == "70"  # the demo's results, no click
    at.radio(key="err_model").set_value("The sidebar's model").run()
    assert any("Name a labelled folder" in i.value for i in at.info)


def test_demo_evaluation_cell_and_explain(app):
    at = _open(app)
    assert at.radio(key="err_model").value == at.radio(key="err_model").options[0]  # the demo, by default
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
    assert [c.split(". Colours: ")[1].split(" ")[0] for c in captions
            if ". Colours: " in c and c.startswith(("Grad-CAM", "SmoothGrad"))] == [
        "dark", "dark", "blue", "blue", "blue", "blue"]
    # the contrastive concept ranking: the channels of the page's layer ranked by relevance of logit(P) - logit(T),
    # a bar chart of shares and each channel's conditional map on the image
    assert len([m for m in at.markdown if m.value.startswith("**Which concepts make it ")]) == 1
    verdict = next(m.value for m in at.markdown if "relevance at `blocks.6` totals" in m.value)
    assert " against " in verdict
    assert len(at.get("vega_lite_chart")) >= 2  # the matrix and the shares
    concept_maps = [c for c in captions if c.startswith("channel ") and "of the relevance. Colours: " in c]
    assert len(concept_maps) == 6  # the top 6
    [pin] = [b for b in at.button if b.key and b.key.startswith("report_err_why_concepts_")]
    pin.click().run()
    assert not at.exception, at.exception
    [item] = at.session_state["lens_report_items"]
    assert item.title.startswith("Why ") and "Concepts of blocks.6" in item.title and len(item.figures) == 6
    from core.cli import build_parser
    import shlex

    parser, _ = build_parser()
    args = parser.parse_args(shlex.split(item.command)[3:])
    p, t = (int(item.settings[role].rsplit("(", 1)[1].rstrip(")")) for role in ("predicted", "true"))
    assert (args.layer, int(args.target), int(args.contrast)) == ("blocks.6", p, t) and p != t
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


def test_add_to_report_pins_the_matrix_and_the_why_maps_with_their_commands(app, monkeypatch, tmp_path, capsys):
    """"Add to report" pins the confusion matrix (with the per-class table), both rows of the Why? panel and the
    separating channels; the
    Report page's HTML holds them with commands the CLI parses, and the Grad-CAM row's command, run, gives the
    page's maps."""
    import html
    import json
    import re
    import shlex

    import numpy as np

    import core.report
    from core.cli import build_parser, main
    from core.errors.explain import explain_mistake
    from core.images import load_image, preprocess
    from ui import cache

    at = _open(app)  # on the demo
    at.selectbox(key="err_true").set_value("animal").run()
    at.selectbox(key="err_pred").set_value("interior").run()
    pins = [b for b in at.button if b.key and b.key.startswith("report_err_matrix_")]
    assert len(pins) == 1
    pins[0].click().run()
    assert not at.exception, at.exception
    at.session_state["err_samples"] = 2
    [b for b in at.button if b.key and b.key.startswith("mistake_")][0].click().run()
    for prefix in ("report_err_why_gradcam_", "report_err_why_smoothgrad_"):
        [b for b in at.button if b.key and b.key.startswith(prefix)][0].click().run()
        assert not at.exception, at.exception
    at.button(key="err_sep_go").click().run()
    [b for b in at.button if b.key and b.key.startswith("report_err_sep_")][0].click().run()
    assert not at.exception, at.exception
    items = at.session_state["lens_report_items"]
    assert [i.title.split(" ")[0] for i in items] == ["Confusion", "Why", "Why", "Channels"]
    assert [r["channel"] for r in items[3].table] == [int(v) for v in at.dataframe[-1].value["channel"]]
    matrix = items[0]
    assert [r["class"] for r in matrix.table] == ["animal", "food", "interior", "object", "outdoor", "person"]
    assert matrix.figure.ndim == 3 and matrix.figure.dtype == np.uint8

    pages = []
    real = core.report.render_html
    monkeypatch.setattr(core.report, "render_html", lambda **kw: pages.append(real(**kw)) or pages[-1])
    at.switch_page("pages/report.py").run()
    assert not at.exception, at.exception
    page = pages[-1]
    commands = [html.unescape(c) for c in re.findall(r"<pre><code>(.*?)</code></pre>", page)]
    assert [c.split(" ")[3] for c in commands] == ["errors", "contrast", "contrast", "errors"]
    assert commands[0].startswith("python -m core errors assets/demo/coarse.csv --top 12 --model embedded "
                                  "--weights assets/demo/coarse-head.safetensors")
    assert "<th>precision</th><th>recall</th>" in page and "<td>animal</td><td>100.0%</td><td>50.0%</td>" in page
    assert "Why opencv_HappyFish.jpg? Grad-CAM: interior rather than animal" in page
    parser, _ = build_parser()
    parsed = [parser.parse_args(shlex.split(c)[3:]) for c in commands]
    assert parsed[0].folder == "assets/demo/coarse.csv" and parsed[0].top == 12
    grad = parsed[1]
    assert (grad.method, grad.predicted, grad.true, grad.layer) == ("gradcam", 2, 0, "blocks.6")
    assert parsed[2].method == "smoothgrad" and parsed[2].samples == 2 and parsed[2].precision == "fp32"
    assert (parsed[3].separate, parsed[3].layer, parsed[3].channels) == (["0", "2"], "blocks.6", 8)
    assert "Channels of blocks.6 that separate animal predicted interior" in page

    # the Grad-CAM row's command, run as printed, computes the page's maps
    code = main(shlex.split(commands[1])[3:] + ["--out-dir", str(tmp_path), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["map"] for r in payload["results"]] == ["predicted", "true", "contrast"]
    saved = np.load(tmp_path / (payload["image"].rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".npz"))
    model = cache.get_model(None, "assets/demo/coarse-head.safetensors")
    x = preprocess(load_image(payload["image"]), model.card.data_config).batch
    page_maps = explain_mistake(model, x, 2, 0, methods={"gradcam": {"layer": grad.layer}})
    for role in ("predicted", "true", "contrast"):
        expected = page_maps.maps[("gradcam", role)]
        # float32 sums in another order (other threads, another process state): ~1e-6 of the magnitude
        np.testing.assert_allclose(saved[role], expected, rtol=0, atol=1e-4 * max(1e-12, float(np.abs(expected).max())))
