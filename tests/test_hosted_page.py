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


def page_text(at, keys: bool = True) -> str:
    """Every string the page shows (elements' values, labels, captions, helps), and with ``keys`` the element
    tree's whole text (widget keys included)."""
    parts = []
    for node in at.main:
        for attr in ("value", "label", "body", "help", "placeholder", "caption", "captions", "options"):
            v = getattr(node, attr, None)
            if isinstance(v, (str, list, tuple)):
                parts.append(str(v))
    return "\n".join(parts + ([repr(at.main)] if keys else []))


def _error_page(app):
    app.session_state["lens_model_choice"] = "embedded"
    app.session_state["err_model"] = "The sidebar's model"  # the page opens on the demo; a visitor's own set
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


def test_a_symlink_out_of_the_data_root_is_refused(app, hosted, monkeypatch, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    monkeypatch.setenv("LENS_DATA_ROOT", str(root))
    at = _error_page(app)
    at.text_input(key="err_folder_False").set_value(str(root / "escape")).run()
    assert [e.value for e in at.error] == [NOT_AVAILABLE]
    assert not any(name in page_text(at) for name in SERVER_NAMES)


def _page(app, page):
    app.session_state["lens_model_choice"] = "embedded"
    app.run()
    app.switch_page(page).run()
    assert not app.exception, app.exception
    return app


@pytest.mark.parametrize("page, key", [("pages/activation_index.py", "lens_idx_folder"),
                                       ("pages/net2vec.py", "lens_n2v_folder")])
def test_other_folder_pages_are_confined(app, hosted, page, key):
    at = _page(app, page)
    assert not [t for t in at.text_input if t.key == "lens_idx_open"]  # no index directory anywhere on the server
    at.text_input(key=key).set_value("/etc").run()
    assert not at.exception, at.exception
    assert NOT_AVAILABLE in [e.value for e in at.error]
    assert not any(name in page_text(at) for name in SERVER_NAMES)


def test_audit_is_confined_and_its_demo_set_still_opens(app, hosted):
    """The audit's folder box names no server folder (its class choices listed /etc's folders); the demo set,
    which the server builds in its cache, is the demo's own and needs no path."""
    app.session_state["aud_model"] = "The sidebar's model"
    at = _page(app, "pages/audit.py")
    at.text_input(key="aud_folder_False").set_value("/etc").run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [NOT_AVAILABLE]
    assert not any(name in page_text(at) for name in SERVER_NAMES)
    at.session_state["aud_go"] = False  # the demo's audit itself: tests/test_audit_page.py
    at.radio(key="aud_model").set_value(at.radio(key="aud_model").options[1]).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert not [t for t in at.text_input if t.key == "aud_folder_True"]
    assert any(c.value.startswith("The demo set") for c in at.caption)
    assert str(hosted) not in page_text(at, keys=False)


def test_dataset_examples_builds_an_index_over_an_uploaded_zip(app, hosted):
    at = _page(app, "pages/activation_index.py")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in ("chelsea.jpg", "coffee.jpg", "flower.jpg"):
            z.writestr(f"photos/{name}", (SAMPLES / name).read_bytes())
    at.file_uploader(key="lens_idx_upload").set_value(("photos.zip", out.getvalue(), "application/zip")).run()
    assert at.text_input(key="lens_idx_folder").value == "uploads/photos/photos"
    at.button(key="lens_idx_build").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(c.value.startswith("3 images from uploads/photos/photos") for c in at.caption), \
        [c.value for c in at.caption]
    assert "3 images from uploads" in page_text(at, keys=False)
    assert str(hosted) not in page_text(at, keys=False)  # the server's cache folder is never shown


def test_a_page_visit_sweeps_expired_areas(app, hosted, monkeypatch):
    import os
    import time

    from core import uploads
    from ui import uploads as ui_uploads

    monkeypatch.setenv("LENS_UPLOAD_TTL", "60")
    stale = uploads.session_area("closed-tab")
    (stale / "set").mkdir()
    past = time.time() - 120
    os.utime(stale / uploads.MARK, (past, past))
    monkeypatch.setattr(ui_uploads, "_last_sweep", [0.0])
    app.run()
    assert not app.exception, app.exception
    assert not stale.exists()
