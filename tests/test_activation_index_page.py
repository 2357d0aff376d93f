"""AppTest for the Dataset examples page: build an index from the page, browse patches, reverse lookup."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import core.index.build as core_index

PAGE = "pages/activation_index.py"


@pytest.fixture
def index_app(app, tmp_path, monkeypatch, samples):
    """The dashboard (conftest's ``app``) on this page, with the index cache and a small folder in tmp."""
    monkeypatch.setattr(core_index, "CACHE_ROOT", tmp_path / "cache")
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
    assert "No index yet" in _texts(at)
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
    directory = Path(core_index.CACHE_ROOT)
    data = next(directory.rglob("topk-*.npz"))
    data.write_bytes(data.read_bytes()[:50])
    os.utime(next(directory.rglob("manifest.json")))  # a new stamp, as a rewrite would give
    at.run()
    assert not at.exception and "damaged" in _texts(at)
    at.button(key="lens_idx_build").click().run()
    assert not at.exception and "rebuilding" in _texts(at)
