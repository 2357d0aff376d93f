"""Hosted mode on the pages (AppTest): server folders refused with one generic line, a visitor's zip analysed."""
from __future__ import annotations

import io
import zipfile

import pytest

from core.dataroots import NOT_AVAILABLE
from tests.conftest import SAMPLES

SERVER_NAMES = ("passwd", "X11", "PackageKit", "fstab", "bash.bashrc", "ld.so", "debian_version")


@pytest.fixture
def hosted(monkeypatch, tmp_path):
    monkeypatch.setenv("LENS_HOSTED", "1")
    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LENS_DATA_ROOT", raising=False)
    return tmp_path / "cache"


def page_text(at) -> str:
    """Every string the page shows (elements' values, labels, captions, helps)."""
    parts = []
    for node in at.main:
        for attr in ("value", "label", "body", "help", "placeholder", "caption", "captions"):
            v = getattr(node, attr, None)
            if isinstance(v, (str, list, tuple)):
                parts.append(str(v))
    return "\n".join(parts + [repr(at.main)])


def _error_page(app):
    app.session_state["lens_model_choice"] = "embedded"
    app.run()
    app.switch_page("pages/error_analysis.py").run()
    assert not app.exception, app.exception
    return app


@pytest.mark.parametrize("text", ["/etc", "../", "/", "../../etc", "assets"])
def test_server_folders_get_the_generic_line_and_no_names(app, hosted, text):
    at = _error_page(app)
    at.text_input(key="err_folder_False").set_value(text).run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [NOT_AVAILABLE]
    shown = page_text(at)
    for name in SERVER_NAMES:
        assert name not in shown, name


def imagefolder_zip() -> bytes:
    """Three classes of sample photos with one planted mistake: a cat photo filed under 'espresso'."""
    members = {"mine/tiger cat/chelsea.jpg": SAMPLES / "chelsea.jpg",
               "mine/espresso/coffee.jpg": SAMPLES / "coffee.jpg",
               "mine/espresso/cat2.jpg": SAMPLES / "chelsea.jpg"}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, path in members.items():
            z.writestr(name, path.read_bytes())
    return out.getvalue()


def test_uploaded_imagefolder_zip_gives_the_matrix_with_the_planted_mistake(app, hosted):
    at = _error_page(app)
    at.file_uploader(key="err_upload").set_value(("mine.zip", imagefolder_zip(), "application/zip")).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.text_input(key="err_folder_False").value == "uploads/mine/mine"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "3" and metrics["Mistakes"] == "1"
    assert any("1 image of espresso predicted tiger cat" in m.value for m in at.markdown), [m.value for m in at.markdown]
    assert any("cat2.jpg" in c.value for c in at.caption)
    area = next((hosted / "uploads").iterdir())
    assert (area / "mine" / "mine" / "espresso" / "cat2.jpg").is_file()


def test_zip_slip_upload_is_refused_on_the_page(app, hosted):
    at = _error_page(app)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("../../evil.jpg", b"x")
    at.file_uploader(key="err_upload").set_value(("slip.zip", out.getvalue(), "application/zip")).run()
    assert not at.exception, at.exception
    assert any("'..'" in e.value for e in at.error)
    assert not list(hosted.parent.rglob("evil.jpg"))
