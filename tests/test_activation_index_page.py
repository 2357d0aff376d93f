"""AppTest for the Dataset examples page: build an index from the page, browse patches, reverse lookup."""
from __future__ import annotations

import os
import shutil

import pytest
import core.index.build as core_index
from core.files import cache_path
from tests.conftest import sample_photos_only

PAGE = "pages/activation_index.py"


@pytest.fixture
def index_app(app, tmp_path, monkeypatch, samples):
    """The dashboard (conftest's ``app``) on this page, with the index cache, two sample photos (indexed on the
    first view) and a small folder in tmp."""
    import core.images

    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    photos = tmp_path / "samples"
    photos.mkdir()
    for name in ("chelsea.jpg", "brick.jpg"):
        shutil.copy(samples / name, photos / name)
    monkeypatch.setattr(core.images, "SAMPLES", photos)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "brick.jpg", "opencv_baboon.jpg", "opencv_orange.jpg", "astronaut.png"):
        if (samples / name).exists():
            shutil.copy(samples / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    app.run()
    app.switch_page(PAGE)
    app.run()
    return app, folder


def _texts(at) -> str:
    return " ".join(e.value for kind in ("info", "success", "warning", "error") for e in getattr(at, kind))


def test_page_builds_browses_and_survives_damage(index_app):
    at, folder = index_app
    assert not at.exception
    assert "No index yet" not in _texts(at) and any("channel 0: top" in s.value for s in at.subheader)
    at.text_input(key="lens_idx_folder").set_value(str(folder / "missing")).run()
    at.button(key="lens_idx_build").click().run()
    assert not at.exception and "not a folder" in _texts(at)
    at.text_input(key="lens_idx_folder").set_value(str(folder)).run()
    at.button(key="lens_idx_build").click().run()
    assert not at.exception, at.exception
    assert "4 images indexed" in _texts(at) and "broken.jpg" in _texts(at)
    assert len(at.get("image")) >= 4 and any("channel" in s.value for s in at.subheader)
    at.button(key="lens_idx_expand_0").click().run()
    assert not at.exception and any(s.value.startswith("#1") for s in at.subheader)
    at.radio(key="lens_idx_mode").set_value("Most selective").run()
    assert not at.exception
    show = [b for b in at.button if b.key and b.key.startswith("lens_idx_show_")]
    assert show, "reverse lookup lists channels"
    show[0].click().run()
    assert not at.exception and at.radio(key="lens_idx_mode").value == "Number"
    # damage the data file: the page says so (no traceback) and a rebuild fixes it
    directory = cache_path("index")  # LENS_CACHE_DIR/index: the fixture set it to a tmp folder
    manifest = max(directory.rglob("manifest.json"), key=lambda p: p.stat().st_mtime_ns)  # the folder's (last built)
    data = next(manifest.parent.glob("topk-*.npz"))
    data.write_bytes(data.read_bytes()[:50])
    os.utime(manifest)  # a new stamp, as a rewrite would give
    at.run()
    assert not at.exception and "damaged" in _texts(at)
    at.button(key="lens_idx_build").click().run()
    assert not at.exception and "rebuilding" in _texts(at)


def test_page_opens_an_index_directory_by_path_and_lists_missing_images(index_app, tmp_path):
    at, folder = index_app
    from core.model.loading import load_model

    built = core_index.build_index(load_model("embedded"), folder, tmp_path / "cluster-index", top_k=2,
                                   workers=1)
    (folder / "brick.jpg").unlink()
    at.text_input(key="lens_idx_open").set_value(str(tmp_path / "cluster-index")).run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert f"{len(built.index)} images (1 unreadable skipped), local engine" in captions and "built in" in captions
    assert "1 of 4 indexed images are not found" in _texts(at) and "brick.jpg" in _texts(at)
    assert at.button(key="lens_idx_build").disabled  # an opened index is never rebuilt from the page
    at.text_input(key="lens_idx_open").set_value(str(tmp_path / "nothing")).run()
    assert not at.exception and f"No index at {tmp_path / 'nothing'}" in _texts(at)
    from tests.conftest import make_tiny

    core_index.build_index(make_tiny("resnet18", num_classes=10), folder, tmp_path / "other", top_k=2, workers=1)
    at.text_input(key="lens_idx_open").set_value(str(tmp_path / "other")).run()
    assert not at.exception and "not this model" in _texts(at) and at.button(key="lens_idx_build").disabled


def test_a_link_opens_layer_channel_and_patch_and_results_go_to_the_report(app, tmp_path, monkeypatch, samples):
    from core.index.build import build_index, default_directory
    from core.model.loading import load_model

    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "brick.jpg", "opencv_orange.jpg"):
        shutil.copy(samples / name, folder / name)
    model = load_model("embedded")
    directory = default_directory(model, folder)
    built = build_index(model, folder, directory, top_k=3, workers=1)
    layer = list(built.index.layers)[0]
    app.query_params.update({"folder": str(folder), "layer": layer, "channel": "5", "patch": "1"})
    app.run()
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    assert app.selectbox(key="lens_idx_layer").value == layer and app.number_input(key="lens_idx_channel").value == 5
    assert any(s.value == f"{layer}, channel 5: top 3 images" for s in app.subheader)
    [full] = [s.value for s in app.subheader if s.value.startswith("#2: ")]
    # the heat context has its colour bar's meaning in its caption; the grid tiles are equal and labelled
    heat = [c for image in app.main.get("image") for c in image.captions if c.startswith("channel 5 over")]
    assert len(heat) == 1 and "; dark " in heat[0] and "activation" in heat[0]
    assert app.query_params["patch"] == "1" and app.query_params["channel"] == "5"
    app.button(key=f"report_idxgrid_{directory}_{core_index_stamp(directory)}_{layer}_5").click().run()
    [pin] = [b for b in app.button if b.key and b.key.startswith("report_idxfull_")]
    pin.click().run()
    assert not app.exception
    grid, one = app.session_state["lens_report_items"]
    assert grid.title == f"Dataset examples: {layer} channel 5" and grid.settings["top-k"] == 3
    build, top = grid.command.split(" && ")
    assert build.startswith(f"python -m core index build {folder} --layers ")
    assert f" --top-k 3 --out {directory} --model embedded" in build
    assert top == f"python -m core index top {directory} --layer {layer} --channel 5 --k 3"
    assert grid.figure.shape == (180, 3 * 160 + 2 * 4, 3)  # three equal labelled tiles in a row
    assert one.title == full[len("#2: "):] + f": #2 for {layer} channel 5"
    assert one.command == f"python -m core index top {directory} --layer {layer} --channel 5 --k 2"
    [reverse] = [b for b in app.button if b.key and b.key.startswith("report_idxrev_")]
    reverse.click().run()
    rev = app.session_state["lens_report_items"][2]
    assert rev.title == f"What chelsea.jpg excites in {layer}" and rev.settings["image"] == "chelsea.jpg"
    assert rev.figure.shape[1] == 4 * 128 + 3 * 4 and len(rev.figures) == rev.settings["channels"] >= 1
    # showing another channel closes the full image, and the link drops it
    next(b for b in app.button if b.key and b.key.startswith("lens_idx_show_")).click().run()
    assert not app.exception and "patch" not in app.query_params


def core_index_stamp(directory) -> str:
    from ui import index_cache

    return index_cache.index_stamp(str(directory))


def test_a_fresh_instance_opens_on_the_sample_photos_index(app, tmp_path, monkeypatch):
    """No index and an empty cache: the page's first view builds the sample photos' index in the background
    (progress while it runs) and shows its patches, never the empty "press Build" state."""
    sample_photos_only(tmp_path, monkeypatch, ("chelsea.jpg", "brick.jpg", "opencv_orange.jpg"))
    app.run()
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    assert "No index yet" not in _texts(app) and "press Build" not in _texts(app)
    assert any("channel 0: top" in s.value for s in app.subheader) and len(app.get("image")) >= 3
    assert cache_path("index").is_dir()


def test_the_sample_index_ranks_by_relevance_on_a_toggle(index_app):
    """The app's index of the sample photos keeps the relevance ranking: a toggle shows it, the link keeps it, and
    a patch's full view says where the relevance peaks."""
    at, _ = index_app
    toggle = at.radio(key="lens_idx_by")
    assert toggle.value == "activation" and list(toggle.options) == ["activation", "relevance"]
    toggle.set_value("relevance").run()
    assert not at.exception and not at.error
    assert any(s.value.endswith("images by relevance") for s in at.subheader)
    assert at.query_params["by"] == "relevance"
    at.button(key="lens_idx_expand_0").click().run()
    assert not at.exception
    heat = [c for image in at.main.get("image") for c in image.captions if " over the model input; " in c]
    assert len(heat) == 1 and "relevance " in heat[0] and "highest at grid" in heat[0]
