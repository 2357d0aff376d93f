"""The adversarial page under AppTest (embedded model, chelsea.jpg, small SmoothGrad settings)."""
from __future__ import annotations

import importlib.util

from tests.test_attack import one_thread  # noqa: F401  (autouse fixture: one intra-op thread for this module)

HAS_ATTRIBUTION = importlib.util.find_spec("core.attribution") is not None


def _open(app):
    app.session_state["atk_sg_samples"] = 4
    app.run()
    app.switch_page("pages/attack.py").run()
    assert not app.exception
    return app


def _submit(app):
    next(b for b in app.button if b.label == "Run attack").click().run()
    assert not app.exception


def test_default_attack_flips_the_cat_and_shows_everything(app):
    app = _open(app)
    assert app.title[0].value == "Adversarial perturbation"
    assert not app.error
    assert any(s.value.startswith("The model changed its mind: tiger cat") for s in app.success)
    subheaders = [s.value for s in app.subheader]
    assert {"Top-5 before", "Top-5 after", "Confidence over the steps", "Downloads"} <= set(subheaders)
    labels = [b.proto.label for b in app.get("download_button")]
    assert any(label.startswith("Figure (PNG)") for label in labels) and any(".npz" in label for label in labels)
    assert any(label.startswith("Adversarial image (PNG") for label in labels)
    assert any("Rounded to 8 bits" in c.value for c in [*app.caption, *app.warning])
    assert "What changed in the evidence: SmoothGrad before and after" in subheaders
    if HAS_ATTRIBUTION:
        assert any(m.value.startswith("**new class: Egyptian cat") for m in app.markdown)
        assert not any("needs the attribution module" in i.value for i in app.info)
    else:
        assert any("needs the attribution module" in i.value for i in app.info)


def test_failed_attack_is_said_plainly_and_smallest_eps_is_found(app):
    app = _open(app)
    app.radio(key="atk_method").set_value("fgsm")
    app.slider(key="atk_eps").set_value(0.25)
    app.selectbox(key="atk_target").set_value("1: goldfish")
    _submit(app)
    assert any(w.value.startswith("The attack failed") and "goldfish" in w.value for w in app.warning)
    assert not app.success
    app.radio(key="atk_method").set_value("pgd")
    app.selectbox(key="atk_target").set_value("untargeted: any other class")
    _submit(app)
    next(b for b in app.button if b.label == "Find the smallest ε").click().run()
    assert not app.exception and not app.error
    assert any(s.value.startswith("Smallest ε found") and "/255" in s.value for s in app.success)
