"""The attribution page under AppTest (embedded model, offline): methods, views, grid, no traceback."""
from __future__ import annotations

from core.model.predict import predict

PAGE = "pages/attribution.py"


def _open(app, **state):
    app.run()
    for key, value in state.items():
        app.session_state[key] = value
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    assert not app.main.get("image") and any("Press **Compute the map**" in c.value for c in app.caption)
    return _compute(app)


def _compute(app):
    """One rule for heavy work: nothing is computed until the button is pressed."""
    app.button(key="attr_run").click().run()
    assert not app.exception, app.exception
    return app


def _pictures(app) -> list[tuple[str, str]]:
    """(caption, media URL) of every image in the main area; the URL changes with the picture's bytes."""
    return [(c, u) for image in app.main.get("image") for c, u in zip(image.captions, image.value)]


def test_page_shows_a_map_views_and_downloads(app, embedded, cat_input):
    app = _open(app, attr_method="saliency")
    assert not app.error
    top = predict(embedded, cat_input.batch, k=1)[0][0]
    assert (top.label, top.index) == ("tiger cat", 282)
    assert f"Predicted: **tiger cat** (282), {top.prob:.1%}" in [c.value for c in app.caption]
    (image, _), (caption, url) = _pictures(app)
    assert image == "chelsea.jpg as the model sees it" and caption.startswith("Saliency for tiger cat (282), ")
    assert [b.proto.label for b in app.get("download_button")] == ["Download figure (PNG)",
                                                                   "Download raw map (.npy)"]
    assert "Colours: blue negative, white 0, red positive" in caption and "99.5th percentile" in caption
    assert app.query_params["method"] == "saliency" and app.query_params["run"] == "attr_run"
    [b for b in app.button if b.label == "Add to report"][0].click().run()
    items = app.session_state["lens_report_items"]
    assert len(items) == 1 and items[0].title == "Saliency for tiger cat (282)"
    assert "--method saliency --target 282" in items[0].command and items[0].settings["image"] == "chelsea.jpg"
    assert [b.label for b in app.button if b.label.startswith("Add to report")] == ["Add to report (added)"]
    seen = {url}
    for key, value in (("attr_view", "heat map"), ("attr_view", "masked image"), ("attr_sign", "absolute")):
        app.radio(key=key).set_value(value).run()
        assert not app.exception and not app.error
        (_, (caption, url)) = _pictures(app)
        assert caption.startswith("Saliency for tiger cat (282), ") and url not in seen, (key, value)
        seen.add(url)
    app.slider(key="attr_clip").set_value(95.0).run()
    assert not app.exception and not app.error
    assert _pictures(app)[1][1] not in seen  # clipping at the 95th percentile saturates more: another picture


def test_guided_rule_is_stated_and_smoothgrad_runs(app):
    app = _open(app, attr_method="guided-backprop", attr_smoothgrad_samples=3)
    assert any("rule applied" in i.value and "ReLU6" in i.value for i in app.info)
    app.selectbox(key="attr_method").set_value("smoothgrad").run()
    assert any("Settings changed: press **Compute the map**" in c.value for c in app.caption), [c.value for c in app.caption]
    _compute(app)
    assert not app.exception and not app.error
    assert any("3 samples" in i.value for i in app.info)


def test_choose_class_gradcam_and_grid(app, embedded):
    app = _open(app, attr_method="gradcam")
    app.radio(key="attr_target_mode").set_value("Choose a class").run()
    app.selectbox(key="attr_target").set_value(7).run()
    _compute(app)
    assert not app.exception and not app.error
    assert app.selectbox(key="attr_target").value == 7
    assert _pictures(app)[1][0].startswith(f"Grad-CAM for {embedded.label(7)} (7), ")
    assert any(i.value.startswith("Layer blocks.6 (320 channels") for i in app.info)  # Grad-CAM's default layer is stated
    app.multiselect(key="attr_grid_methods").set_value(["saliency", "gradcam"]).run()
    app.button(key="attr_grid_run").click().run()
    assert not app.exception and not app.error
    grid = [caption for caption, _ in _pictures(app)[2:]]
    assert len(grid) == 2 and grid[0].startswith("Saliency (") and grid[1].startswith("Grad-CAM (")


SECOND_VIT = {"lens2_on": True, "lens2_model_choice": "vit_tiny_patch16_224", "lens2_weights": "random"}
EMBEDDED_NAME = "EfficientNet-Lite0 (embedded, ImageNet)"
VIT_NAME = "vit_tiny_patch16_224 (random weights)"


def test_grid_of_two_models_with_a_refusal_cell(app):
    """The second model (a random ViT-Tiny next to the embedded CNN): one row per model headed by its prediction,
    the CNN's rollout cell says why it does not apply, the link and the report carry the second model."""
    import shlex

    from core.cli import build_parser

    app = _open(app, attr_method="saliency", **SECOND_VIT)
    assert app.toggle(key="lens2_on").value and not app.error
    assert any(c.value.startswith("Classes: each model explains its own top class") for c in app.caption)
    app.multiselect(key="attr_grid_methods").set_value(["saliency", "rollout"]).run()
    app.button(key="attr_grid_run").click().run()
    assert not app.exception and not app.error
    heads = [m.value for m in app.markdown if " predicts " in m.value]
    assert len(heads) == 2
    assert heads[0].startswith(f"**{EMBEDDED_NAME}** predicts tiger cat (282)") and "maps for **tiger cat** (282)" in heads[0]
    assert heads[1].startswith(f"**{VIT_NAME}** predicts ")
    grid = [caption for caption, _ in _pictures(app)[2:]]  # after the Map tab's input and map
    assert len(grid) == 3 and grid[0].startswith("Saliency (") and grid[1].startswith("Saliency (")
    assert grid[2].startswith("Attention rollout (")
    refusals = [i.value for i in app.info if "does not apply to" in i.value]
    assert len(refusals) == 1 and refusals[0].startswith("**Attention rollout** does not apply to")
    assert "no attention layers" in refusals[0]
    assert (app.query_params["compare"], app.query_params["model2"], app.query_params["weights2"]) == (
        "1", "vit_tiny_patch16_224", "random")
    [b for b in app.button if str(b.key).startswith("report_grid_")][0].click().run()
    assert not app.exception
    item = app.session_state["lens_report_items"][-1]
    assert item.title == f"Method grid: {EMBEDDED_NAME} and {VIT_NAME}"
    assert item.settings["second model"] == "vit_tiny_patch16_224" and len(item.notes) == 1
    assert item.notes[0].startswith(f"Attention rollout on {EMBEDDED_NAME}: ")
    assert item.figure.shape == (2 * (256 + 20) + 4, 2 * 256 + 4, 3)  # two rows (models) of two labelled tiles
    commands = item.command.splitlines()
    assert len(commands) == 2
    for line in commands:  # each runs as written: the second model, each model's own class (no --target)
        assert "--other-model vit_tiny_patch16_224 --other-weights random" in line and "--target" not in line
        args = build_parser()[0].parse_args(shlex.split(line)[3:])
        assert (args.command, args.model, args.other_model) == ("attribute", "embedded", "vit_tiny_patch16_224")


def test_a_link_opens_the_two_model_grid(app):
    for name, value in {"compare": "1", "model2": "vit_tiny_patch16_224", "weights2": "random",
                        "run": "attr_grid_run"}.items():
        app.query_params[name] = value
    app.run()
    app.session_state["attr_grid_methods"] = ["saliency"]
    app.switch_page(PAGE).run()
    assert not app.exception and not app.error
    assert app.toggle(key="lens2_on").value
    assert app.selectbox(key="lens2_model_choice").value == "vit_tiny_patch16_224"
    heads = [m.value for m in app.markdown if " predicts " in m.value]
    assert [h.split("**")[1] for h in heads] == [EMBEDDED_NAME, VIT_NAME]
