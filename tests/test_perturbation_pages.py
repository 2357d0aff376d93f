"""AppTest for the perturbation, similarity and Net2Vec pages."""
from __future__ import annotations

import re
import shutil

from core.catalogue import default_layer
from core.features.similarity import layer_features, similarity_map
from core.images import load_image, preprocess
from core.model.predict import predict
from core.perturbation.masks import MEANINGFUL_ITERATIONS


def _open(app, page):
    app.run()
    app.switch_page(page)
    app.run()
    assert not app.exception, app.exception
    return app


def _captions(app) -> list[str]:
    return [c for image in app.main.get("image") for c in image.captions]


def test_perturbation_page_computes_masks(app, embedded, cat_input, monkeypatch):
    import ui.perturbation_page as glue
    from core.render import image_uint8

    drawn = []  # the preview: the first mask over the image after the first step and every 10th
    monkeypatch.setattr(glue, "overlay", lambda image, mask: drawn.append(tuple(mask.shape)) or image_uint8(image))
    at = _open(app, "pages/perturbation.py")
    assert any("Press **Compute masks**" in c.value for c in at.caption)
    at.multiselect(key="lens_pert_areas").set_value([0.1, 0.2])
    at.slider(key="lens_pert_iters_extremal").set_value(20)
    at.button(key="lens_pert_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    top = predict(embedded, cat_input.batch, k=1)[0][0]
    assert f"Target **tiger cat**: probability {top.prob:.1%} on the intact image; 20 steps." in [
        m.value for m in at.markdown]
    captions = _captions(at)
    assert len(captions) == 4  # a mask and its preserved image per area
    assert re.match(r"mask, area \d+\.\d% \(asked 10%\), over chelsea.jpg\. Colours: dark ", captions[0])
    assert re.match(r"mask, area \d+\.\d% \(asked 20%\), over chelsea.jpg\. Colours: dark ", captions[2])
    assert all(re.fullmatch(r"preserved image: tiger cat at \d+\.\d% \(intact \d+\.\d%\)", c)
               for c in captions[1::2])
    # a mask whose preserved image keeps under half the intact probability is called weak next to it
    kept = [float(re.search(r"at (\d+\.\d)%", c).group(1)) for c in captions[1::2]]
    assert len([w for w in at.warning if w.value.startswith("Weak: keeping only")]) == sum(
        k < 0.5 * 100 * top.prob for k in kept)
    assert any("Convergence" in s.value for s in at.subheader)
    assert any("score against area" in s.value for s in at.subheader)
    assert [b.label for b in at.button].count("Add to report") == 2  # one per mask
    assert at.query_params["areas"] == ["0.1", "0.2"] and at.query_params["iterations"] == "20"
    assert drawn == [(224, 224)] * 3  # steps 1, 10 and 20
    assert at.checkbox(key="lens_pert_converge_extremal").value  # on by default: checks begin at step 100
    # a pinned mask's command is the CLI run of that one area with the page's values written out
    pin = [b for b in at.button if b.key and b.key.startswith("report_pert_")][0]
    pin.click().run()
    [item] = at.session_state["lens_report_items"]
    assert item.command == ("python -m core perturb assets/samples/chelsea.jpg --method extremal "
                            f"--target {top.index} --variant preserve --perturbation blur --iterations 20 "
                            "--converge --area 0.1 --model embedded")
    # meaningful perturbation: its own variant and step defaults, one mask, no areas
    at.radio(key="lens_pert_method").set_value("meaningful").run()
    assert at.radio(key="lens_pert_variant_meaningful").value == "delete"
    assert at.slider(key="lens_pert_iters_meaningful").value == MEANINGFUL_ITERATIONS and not at.multiselect


def test_perturbation_page_says_when_the_stop_ended_the_run(app, monkeypatch):
    from core.perturbation import masks

    monkeypatch.setattr(masks, "SETTLE_STEPS", 10)
    monkeypatch.setattr(masks, "STABLE_IOU", 0.0)  # any mask counts as still: the stop fires at its first chance
    at = _open(app, "pages/perturbation.py")
    at.checkbox(key="lens_pert_converge_extremal").check()
    at.multiselect(key="lens_pert_areas").set_value([0.1])
    at.slider(key="lens_pert_iters_extremal").set_value(100)
    at.button(key="lens_pert_run").click().run()
    assert not at.exception and not at.error
    # checks at steps 10, 20, 30, 40: the third stable comparison ends the run at step 40
    assert any(m.value.endswith("stopped after 40 of at most 100 steps: the mask held still (converged).")
               for m in at.markdown)
    at.checkbox(key="lens_pert_converge_extremal").uncheck()
    at.slider(key="lens_pert_iters_extremal").set_value(20)
    at.button(key="lens_pert_run").click().run()
    assert any(m.value.endswith("; 20 steps.") for m in at.markdown) and at.query_params["converge"] == "0"


def test_similarity_page_moves_the_point(app, embedded, cat_input, samples, monkeypatch):
    import ui.similarity_page as sim

    bars = []
    real = sim.colorbar
    monkeypatch.setattr(sim, "colorbar", lambda *a, **kw: bars.append(real(*a, **kw)) or bars[-1])
    at = _open(app, "pages/similarity.py")
    # both maps' colour bars: drawn by one function, the same pixel size, in the same [5, 1] column layout
    assert len(bars) == 2 and bars[0].shape == bars[1].shape == (cat_input.tensor.shape[-2], 78, 3)
    assert not at.error, [e.value for e in at.error]
    at.slider(key="lens_sim_x").set_value(30).run()
    assert not at.exception and not at.error
    # the page's cell and best match are core's for the default layer, the slider's point and coffee.jpg
    layer = default_layer(embedded).name
    query = layer_features(embedded, cat_input.tensor, layer)
    other = layer_features(embedded, preprocess(load_image(samples / "coffee.jpg"), embedded.card.data_config).tensor,
                           layer)
    h = cat_input.tensor.shape[-2]
    cell = query.cell_at(30, h // 2)
    assert f"Click a point (or use the sliders). Cell {cell} of {query.grid}." in [c.value for c in at.caption]
    cross = similarity_map(query, cell, other)
    # each picture's colour bar is its own (captionless) image beside it
    assert _captions(at) == ["", f"coffee.jpg: best match at cell {cross.max_cell} (cosine {float(cross.map.max()):.2f})",
                             ""]
    assert at.query_params["x"] == "30"
    at.selectbox(key="lens_sim_other").set_value("(none)").run()
    assert not at.exception and any("second image" in i.value for i in at.info)


def test_similarity_link_opens_the_view_and_adds_to_report(app, embedded, cat_input):
    layer = "blocks.4"
    app.query_params.update({"layer": layer, "other": "flower.jpg", "stretch": "0", "x": "40", "y": "9999"})
    at = _open(app, "pages/similarity.py")
    assert not at.error, [e.value for e in at.error]
    h, w = cat_input.tensor.shape[-2:]
    assert at.selectbox(key="lens_sim_layer").value == layer and at.selectbox(key="lens_sim_other").value == "flower.jpg"
    assert at.toggle(key="lens_sim_stretch").value is False
    assert (at.slider(key="lens_sim_x").value, at.slider(key="lens_sim_y").value) == (40, h - 1)  # clamped
    assert any(c.value.startswith("Blue = opposite direction, white = unrelated (0)") for c in at.caption)
    [pin] = [b for b in at.button if b.key and b.key.startswith("report_sim_")]
    pin.click().run()
    assert not at.exception
    [item] = at.session_state["lens_report_items"]
    assert item.title == f"Similarity at (40, {h - 1}) in {layer}"
    assert item.command == (f"python -m core similarity assets/samples/chelsea.jpg --layer {layer} "
                            f"--other assets/samples/flower.jpg --at 40,{h - 1} --model embedded")
    assert item.figure.shape[1] == 2 * (w + 78) and item.settings["second image"] == "flower.jpg"


def test_net2vec_page_learns_colour_concepts(app, tmp_path, samples):
    for name in ("chelsea.jpg", "coffee.jpg", "opencv_orange.jpg", "flower.jpg"):
        shutil.copy(samples / name, tmp_path / name)
    app.query_params["folder"] = str(tmp_path)  # not the sample photos: nothing is learnt before the press
    at = _open(app, "pages/net2vec.py")
    assert not at.dataframe
    at.select_slider(key="lens_n2v_size").set_value(14)
    at.button(key="lens_n2v_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) >= 1
    table = at.dataframe[0].value
    assert list(table.columns) == ["concept", "IoU, learnt combination", "IoU, best single channel", "best channel",
                                   "share of concept pixels", "verdict"]
    near_zero = table[table[["IoU, learnt combination", "IoU, best single channel"]].max(axis=1) < 0.05]
    assert (near_zero["verdict"] == "weak: nothing segments it").all()
    assert bool(len(near_zero)) == any(w.value.startswith("Weak: no combination") for w in at.warning)
    at.radio(key="lens_n2v_source").set_value("mask folder").run()
    at.text_input(key="lens_n2v_masks").set_value(str(tmp_path / "none"))
    at.button(key="lens_n2v_run").click().run()
    assert not at.exception and "not a folder" in " ".join(e.value for e in at.error)


def test_net2vec_link_opens_the_fit_with_masks_colour_bar_and_report(app, tmp_path, samples):
    for name in ("chelsea.jpg", "coffee.jpg", "opencv_orange.jpg", "flower.jpg"):
        shutil.copy(samples / name, tmp_path / name)
    app.query_params.update({"folder": str(tmp_path), "layer": "blocks.3", "size": "14", "concept": "no such",
                             "run": "lens_n2v_run"})
    at = _open(app, "pages/net2vec.py")
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="lens_n2v_layer").value == "blocks.3" and at.select_slider(key="lens_n2v_size").value == 14
    table = at.dataframe[0].value
    first = table["concept"].iloc[0]
    assert at.selectbox(key="lens_n2v_concept").value == first  # the unknown linked concept fell back
    [masks] = [c for c in _captions(at) if c.startswith("Where the learnt combination predicts")]
    assert masks.startswith(f"Where the learnt combination predicts {first} (bright = 1, inside") and "4 of 4" in masks
    [pin] = [b for b in at.button if b.key and b.key.startswith("report_n2v_")]
    pin.click().run()
    assert not at.exception
    [item] = at.session_state["lens_report_items"]
    assert item.title.startswith(f"Net2Vec: {first} in blocks.3 (")
    assert item.command == (f"python -m core net2vec {tmp_path} --layer blocks.3 --concepts colors --size 14 "
                            "--iterations 300 --model embedded")
    assert item.figures[f"{first}: IoU learnt"] == table["IoU, learnt combination"].iloc[0]
    # the picture: four equal 160-pixel tiles with their labels in one row, then the mask colour bar (a quarter
    # of the width)
    grid = 4 * 160 + 3 * 4
    assert item.figure.shape[:2] == (180, grid + grid // 4) and "image" not in item.settings


def test_net2vec_opens_on_its_default_fit(app, tmp_path, monkeypatch, samples):
    """A fresh instance: the page's first view over the sample photos learns the default fit without a press."""
    import core.features.net2vec as core_net2vec
    import core.images

    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    photos = tmp_path / "samples"
    photos.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "opencv_orange.jpg", "flower.jpg"):
        shutil.copy(samples / name, photos / name)
    monkeypatch.setattr(core.images, "SAMPLES", photos)
    net2vec = core_net2vec.net2vec
    monkeypatch.setattr(core_net2vec, "net2vec", lambda *a, **k: net2vec(*a, **{**k, "iterations": 10}))
    at = _open(app, "pages/net2vec.py")
    assert not at.error, [e.value for e in at.error]
    assert len(at.dataframe) == 1 and any(s.value == "Predicted masks" for s in at.subheader)
