"""Weak results are said in words: extremal 'preserve' masks that keep a sliver of the probability, Net2Vec
concepts whose IoUs are near zero."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from core.features.net2vec_view import concept_rows, verdict, weak_concepts
from core.perturbation.masks import Variant
from core.perturbation.view import weak_mask_notes


def _result(variant, scores, base=0.85):
    masks = torch.zeros(len(scores), 10, 10)
    for i, a in enumerate((0.05, 0.1, 0.2)[:len(scores)]):
        masks[i].view(-1)[: int(a * 100)] = 1
    return SimpleNamespace(variant=variant, base_score=base, areas=(0.05, 0.1, 0.2)[:len(scores)],
                           scores=torch.tensor(scores), masks=masks)


def test_preserve_masks_that_keep_a_sliver_are_flagged():
    # the cat photo: 0.2 %, 2.4 % and 28.4 % kept at areas 5/10/20 % (intact about 85 %)
    notes = weak_mask_notes(_result(Variant.PRESERVE, [0.002, 0.024, 0.60]), "tabby")
    assert set(notes) == {0, 1}
    assert "leaves tabby at 0.2%" in notes[0] and "5% of the image" in notes[0] and "larger area" in notes[0]


def test_delete_masks_that_leave_the_class_are_flagged():
    notes = weak_mask_notes(_result(Variant.DELETE, [0.80, 0.01]), "tabby")
    assert set(notes) == {0} and "still leaves tabby at 80.0%" in notes[0]


def _fit(name, iou, best):
    return SimpleNamespace(name=name, iou=iou, iou_best_channel=best, best_channel=3, positives=0.1)


def test_near_zero_iou_is_never_a_win_and_columns_are_readable():
    fits = [_fit("red", 0.0068, 0.0), _fit("sky", 0.31, 0.12), _fit("grass", 0.20, 0.25), _fit("x", 0.2, 0.205)]
    assert [verdict(f) for f in fits] == ["weak: nothing segments it", "combination better",
                                          "single channel better", "about equal"]
    assert weak_concepts(fits) == ["red"]
    row = concept_rows(fits)[0]
    assert list(row) == ["concept", "IoU, learnt combination", "IoU, best single channel", "best channel",
                         "share of concept pixels", "verdict"]


def test_perturbation_is_shown_at_its_real_range_with_the_amplification():
    from core.attack.attacks import PIXEL
    from core.attack.view import perturbation_picture

    delta = torch.zeros(3, 8, 8)
    delta[0, 0, 0], delta[1, 1, 1] = 4 * PIXEL, -2 * PIXEL
    pic = perturbation_picture(delta.numpy())
    # float32 input: relative agreement to a few float32 ulps
    assert abs(pic.amplification / (0.5 / (4 * PIXEL)) - 1) < 1e-6 and abs(pic.max_abs / (4 * PIXEL) - 1) < 1e-6
    assert tuple(pic.rgb[0, 0]) == (255, 128, 128) and tuple(pic.rgb[5, 5]) == (128, 128, 128)
    assert pic.rgb[1, 1, 1] == 64  # -2/255 amplified: a quarter of the way to black
    assert abs(pic.scale.hi - 4 / 3) < 1e-6 and pic.scale.units == "/255"  # channel mean, in 1/255 steps
    assert "×32" in pic.caption() and "4.00/255" in pic.caption()


def test_net2vec_masks_figure_has_equal_tiles_and_the_mask_colour_bar():
    from core.features.net2vec_view import MASK_SCALE, masks_figure
    from core.render import colorbar

    grey = torch.full((3, 8, 8), 0.5)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:, 2:] = True  # the right half is the concept
    fig = masks_figure([grey, grey], [mask, torch.zeros(4, 4, dtype=torch.bool)], ["a.jpg", "b.jpg"], side=40,
                       columns=2)
    assert fig.shape == (60, 2 * 40 + 4 + 78, 3)
    left, right = fig[20, 5].astype(int), fig[20, 35].astype(int)
    assert right.sum() > left.sum() + 100  # bright inside the predicted concept, dark outside
    assert (fig[20, 44 + 5] == fig[20, 5]).all()  # an empty mask is dark everywhere
    np.testing.assert_array_equal(fig[:, 84:], colorbar(MASK_SCALE, 60))
