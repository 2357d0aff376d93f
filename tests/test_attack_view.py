"""core.attack.view: the attack page's pictures, sentences and downloads, checked without Streamlit."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from core.attack import view
from core.attack.attacks import PIXEL, Norm, attack
from core.attack.search import MinEpsResult
from core.render import ColourMap, Scale, colorbar, colourise, overlay

from tests.test_attack import one_thread  # noqa: F401  (autouse fixture: one intra-op thread for this module)

WHITE = (247, 247, 247)  # the diverging map's centre (value 0)


@pytest.fixture(scope="module")
def flipped(embedded, cat_input):
    """PGD L∞ 4/255, 10 steps on chelsea.jpg: the page's default attack, which flips the tiger cat."""
    return attack(embedded, cat_input.batch, method="pgd", norm="linf", eps=4 * PIXEL, step=PIXEL, steps=10)


def test_eps_text_uses_the_units_the_user_set():
    assert view.eps_text(4 * PIXEL, Norm.LINF) == "4.00/255"
    assert view.eps_text(0.5, "l2") == "0.500"


def test_verdict_of_a_successful_attack(embedded, flipped):
    label = embedded.label
    new = int(flipped.adv_index[0])
    said = view.verdict(flipped, label)
    assert said[0].level == "success"
    assert said[0].text.startswith(f"The model changed its mind: tiger cat {float(flipped.clean_probs[0, 282]):.1%} "
                                   f"→ {label(new)} {float(flipped.adv_probs[0, new]):.1%} with ε = 4.00/255")
    n = int(flipped.steps_taken[0])
    assert f"{n} step{'' if n == 1 else 's'})" in said[0].text  # never "1 steps"
    kept = bool(flipped.success_8bit[0])
    assert said[1].level == ("caption" if kept else "warning")
    new8 = int(flipped.adv8_probs[0].argmax())
    assert f"{label(new8)} {float(flipped.adv8_probs[0, new8]):.1%}" in said[1].text
    undone = view.verdict(dataclasses.replace(flipped, success_8bit=torch.tensor([not kept])), label)[1]
    assert undone.level == ("warning" if kept else "caption")


def test_verdict_of_a_failed_and_of_a_pointless_attack(embedded, flipped):
    failed = view.verdict(dataclasses.replace(flipped, success=torch.tensor([False])), embedded.label)
    assert [m.level for m in failed] == ["warning"]
    assert failed[0].text.startswith("The attack failed: within ε = 4.00/255 and 10 steps it did not change the "
                                     "prediction.")
    pointless = view.verdict(dataclasses.replace(flipped, target=flipped.clean_index.clone()), embedded.label)
    assert [m.level for m in pointless] == ["info"] and "already says tiger cat" in pointless[0].text


def test_min_eps_message(embedded, flipped):
    found = MinEpsResult(eps=torch.tensor([3 * PIXEL]), below=torch.tensor([1.5 * PIXEL]),
                         found=torch.tensor([True]), attacks=torch.tensor([5]), result=flipped, seconds=0.1)
    message = view.min_eps_message(found, embedded.label)
    assert message.level == "success"
    assert message.text.startswith("Smallest ε found: **3.00/255** reaches the goal")
    assert message.text.endswith("1.50/255 does not. 5 attacks.")
    missed = view.min_eps_message(dataclasses.replace(found, found=torch.tensor([False])), embedded.label)
    assert missed.level == "warning" and missed.text.startswith("No ε up to 1.50/255 reaches the goal (5 attacks)")


def test_pictures_confidence_and_npz(flipped):
    clean, adv, delta = view.pictures(flipped)
    h, w = flipped.clean.shape[-2:]
    assert clean.shape == adv.shape == delta.shape == (h, w, 3)
    assert np.abs(adv.astype(int) - clean.astype(int)).max() <= 5  # ε = 4/255, plus rounding of both images
    # the perturbation at its real range: the largest change reaches black or white (never a near-white ±ε map)
    assert delta.min() <= 1 or delta.max() >= 254
    curves = view.confidence(flipped, lambda i: f"class {i}")
    assert list(curves) == ["P(class 282)", "P(most probable other class)"]
    assert all(c.shape == (11,) for c in curves.values())  # the clean image and 10 steps
    data = np.load(io.BytesIO(view.npz(flipped)))
    assert sorted(data.files) == ["adversarial", "clean", "perturbation"]
    np.testing.assert_array_equal(data["adversarial"], flipped.adversarial[0].numpy())
    np.testing.assert_array_equal(data["perturbation"], flipped.perturbation[0].numpy())
    assert data["clean"].dtype == np.float32


def test_evidence_pictures_share_one_scale_and_carry_colour_bars():
    image = torch.full((3, 4, 4), 0.5)
    before = np.zeros((4, 4))
    before[0, 0] = 1.0
    same = view.evidence_pictures(image, image, before, before)
    assert (same.before == same.after).all() and (same.difference[:4, :4] == WHITE).all()
    # uniform evidence 0.5 before, 1.0 after: one scale (1.0) for both, so the two overlays differ, as a
    # per-map scale (both 1 everywhere) would hide
    ev = view.evidence_pictures(image, image, np.full((4, 4), 0.5), np.full((4, 4), 1.0))
    np.testing.assert_array_equal(ev.before[:4, :4], overlay(image, np.full((4, 4), 0.5)))
    np.testing.assert_array_equal(ev.after[:4, :4], overlay(image, np.ones((4, 4))))
    assert (ev.difference[:4, :4] == colourise(np.array([[0.5]]), ColourMap.DIVERGING)[0, 0]).all()
    # each picture has its bar to the right (a bar is at least 60 pixels tall: short pictures are padded)
    assert ev.before.shape == ev.after.shape == ev.difference.shape == (60, 4 + 78, 3)
    assert ev.scale == Scale(False, 0.0, 1.0, 99.5, "|SmoothGrad|")
    np.testing.assert_array_equal(ev.difference[:, 4:], colorbar(Scale(True, -1.0, 1.0, 99.5, "|SmoothGrad|"), 60))
