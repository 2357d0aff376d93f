"""AppTest for the perturbation, similarity and Net2Vec pages."""
from __future__ import annotations

import shutil


def _open(app, page):
    app.run()
    app.switch_page(page)
    app.run()
    assert not app.exception, app.exception
    return app


def test_perturbation_page_computes_masks(app):
    at = _open(app, "pages/perturbation.py")
    assert any("Compute masks" in i.value for i in at.info)
    at.multiselect(key="lens_pert_areas").set_value([0.1, 0.2])
    at.slider(key="lens_pert_iters_extremal").set_value(20)
    at.button(key="lens_pert_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("imgs")) >= 4 or len(at.get("image")) >= 4
    assert any("Convergence" in s.value for s in at.subheader)
    assert any("score against area" in s.value for s in at.subheader)
    assert [b.label for b in at.button].count("Add to report") == 2  # one per mask
    assert at.query_params["areas"] == ["0.1", "0.2"] and at.query_params["iterations"] == "20"


def test_similarity_page_moves_the_point(app):
    at = _open(app, "pages/similarity.py")
    assert not at.error, [e.value for e in at.error]
    at.slider(key="lens_sim_x").set_value(30).run()
    assert not at.exception and not at.error
    captions = " ".join(c.value for c in at.caption)
    assert "cell" in captions or any("best match" in str(getattr(i, "caption", "")) for i in at.get("imgs"))
    at.selectbox(key="lens_sim_other").set_value("(none)").run()
    assert not at.exception and any("second image" in i.value for i in at.info)


def test_net2vec_page_learns_colour_concepts(app, tmp_path, samples):
    for name in ("chelsea.jpg", "coffee.jpg", "opencv_orange.jpg", "flower.jpg"):
        shutil.copy(samples / name, tmp_path / name)
    at = _open(app, "pages/net2vec.py")
    at.text_input(key="lens_n2v_folder").set_value(str(tmp_path))
    at.select_slider(key="lens_n2v_size").set_value(14)
    at.button(key="lens_n2v_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) >= 1
    at.radio(key="lens_n2v_source").set_value("mask folder").run()
    at.text_input(key="lens_n2v_masks").set_value(str(tmp_path / "none"))
    at.button(key="lens_n2v_run").click().run()
    assert not at.exception and "not a folder" in " ".join(e.value for e in at.error)
