"""The adversarial page under AppTest (embedded model, chelsea.jpg, small SmoothGrad settings)."""
from __future__ import annotations

import re

from core.model.predict import predict

from tests.test_attack import one_thread  # noqa: F401  (autouse fixture: one intra-op thread for this module)


def _open(app):
    app.session_state["atk_sg_samples"] = 4
    app.run()
    app.switch_page("pages/attack.py").run()
    assert not app.exception
    # one rule for heavy work: nothing is attacked before "Run attack" is pressed
    assert not app.success and not app.warning and not app.main.get("image")
    assert any("Press **Run attack**" in c.value for c in app.caption)
    _submit(app)
    return app


def _submit(app):
    next(b for b in app.button if b.label == "Run attack").click().run()
    assert not app.exception


def _captions(app) -> list[str]:
    return [c for image in app.main.get("image") for c in image.captions]


def test_default_attack_flips_the_cat_and_shows_everything(app, embedded, cat_input):
    app = _open(app)
    assert app.title[0].value == "Adversarial perturbation"
    assert not app.error
    # the verdict: the clean probability is the model's own, the budget is kept (PGD L∞ 4/255)
    [said] = [s.value for s in app.success]
    clean = predict(embedded, cat_input.batch, k=1)[0][0]
    assert (clean.label, clean.index) == ("tiger cat", 282)
    assert said.startswith(f"The model changed its mind: tiger cat {clean.prob:.1%} → Egyptian cat ")
    assert "with ε = 4.00/255" in said
    linf = float(re.search(r"‖δ‖∞ = ([0-9.]+)/255", said).group(1))
    assert 0 < linf <= 4.0
    assert any(c.value.startswith("Rounded to 8 bits per channel") for c in [*app.caption, *app.warning])
    # the pictures: the three of the attack, then SmoothGrad (clean, adversarial, difference) for both classes
    captions = _captions(app)
    assert captions[:2] == ["original: tiger cat", "adversarial: Egyptian cat"]
    # the perturbation at its real range: amplified around grey with the factor stated, and a colour bar
    assert captions[2].startswith("perturbation δ amplified ×") and "largest change" in captions[2]
    assert captions[3].startswith("perturbation, channel mean in 1/255: blue negative, white 0")
    assert app.query_params["run"] == "atk_run"
    assert [b.label for b in app.button].count("Add to report") == 1
    assert captions[4:] == []  # SmoothGrad waits for its own button
    subheaders = [s.value for s in app.subheader]
    assert {"Top-5 before", "Top-5 after", "Confidence over the steps", "Downloads"} <= set(subheaders)
    assert len(app.get("vega_lite_chart")) == 3  # two top-5 bars and the confidence curves
    labels = [b.proto.label for b in app.get("download_button")]
    assert labels == ["Figure (PNG)", "Adversarial image (PNG, 8-bit, model input size)",
                      "Arrays (.npz: clean, adversarial, perturbation; float32 3×H×W in [0, 1])"]
    assert "What changed in the evidence: SmoothGrad before and after" in subheaders
    next(b for b in app.button if b.label == "Compare the evidence").click().run()
    assert not app.exception
    assert _captions(app)[4:] == ["clean image", "adversarial image",
                                  "difference |after| − |before| (blue: less, red: more evidence after the attack)"] * 2
    # the colour bars' scale is said under each class's pictures
    scales = [c.value for c in app.caption if c.value.startswith("|SmoothGrad| on one scale for both images: dark 0")]
    assert len(scales) == 2 and all("the difference ends at ±" in c for c in scales)
    assert [m.value for m in app.markdown][:2] == ["**clean class: tiger cat (282)**",
                                                   "**new class: Egyptian cat (285)**"]


def test_failed_attack_is_said_plainly_and_smallest_eps_is_found(app):
    app = _open(app)
    app.radio(key="atk_method").set_value("fgsm")
    app.slider(key="atk_eps").set_value(0.25)
    app.selectbox(key="atk_target").set_value("1: goldfish")
    _submit(app)
    [failed] = [w.value for w in app.warning]
    assert failed.startswith("The attack failed: within ε = 0.25/255 and 1 step it did not reach goldfish. "
                             "The model still says tiger cat")
    assert not app.success
    assert _captions(app)[:2] == ["original: tiger cat", "adversarial: tiger cat"]
    next(b for b in app.button if b.label == "Compare the evidence").click().run()
    assert "The attack did not change the class, so only the clean class is shown." in [c.value for c in app.caption]
    app.radio(key="atk_method").set_value("pgd")
    app.selectbox(key="atk_target").set_value("untargeted: any other class")
    _submit(app)
    next(b for b in app.button if b.label == "Find the smallest ε").click().run()
    assert not app.exception and not app.error
    [found] = [s.value for s in app.success if s.value.startswith("Smallest ε found")]
    smallest, below = (float(v) for v in re.search(r"\*\*([0-9.]+)/255\*\* reaches the goal .* ([0-9.]+)/255 does "
                                                   r"not\. \d+ attacks\.$", found).groups())
    assert below <= smallest <= 0.25  # ε = 0.25/255 already flips the cat: the search goes down from there
    assert any(c.startswith("adversarial at the smallest ε: ") for c in _captions(app))
    assert any(c.startswith("its perturbation: perturbation δ amplified ×") for c in _captions(app))
