"""Net2Vec: a planted concept on a synthetic layer, set IoU by hand, colour naming, mask folders, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.cli import main
from core.hooks import hook_count
from core.features.net2vec import (COLOUR_TERMS, colour_concepts, colour_names, fit_concept, load_concept_masks,
                                    net2vec, set_iou)


def test_planted_concept_is_recovered_and_beats_single_channels():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(12, 32, 16, 16, generator=g)
    # the concept is on where channels 3 and 7 are jointly high: no single channel can segment it
    masks = (acts[:, 3] + acts[:, 7]) > 1.5
    fit = fit_concept(acts, masks, "planted", iterations=300)
    assert fit.held_out
    assert set(fit.top_channels[:2]) == {3, 7}
    assert fit.weights[3] > 0 and fit.weights[7] > 0
    others = torch.cat([fit.weights[:3], fit.weights[4:7], fit.weights[8:]])
    assert others.abs().max() < 0.25 * min(fit.weights[3], fit.weights[7])
    assert fit.iou > 0.85
    assert fit.best_channel in (3, 7)
    assert fit.iou > fit.iou_best_channel + 0.1
    assert fit.predicted.shape == masks.shape and fit.predicted.dtype == torch.bool


def test_single_channel_concept_is_found_by_both():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(16, 16, 12, 12, generator=g)
    masks = acts[:, 5] > 1.0
    fit = fit_concept(acts, masks, "one", iterations=300)
    assert fit.best_channel == 5 and fit.top_channels[0] == 5
    assert fit.weights[5] > 5 * fit.weights[torch.arange(16) != 5].abs().max()
    assert fit.iou_best_channel > 0.95 and fit.iou > 0.8  # the learnt weights carry some noise from the fit


def test_set_iou_by_hand():
    a = torch.tensor([[True, True, False], [False, False, False]])
    b = torch.tensor([[True, False, False], [True, False, False]])
    assert set_iou(a, b) == pytest.approx(1 / 3)  # one shared pixel over three in the union (over both images)
    assert set_iou(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)) == 0.0


def test_colour_names_of_pure_colours():
    names = list(COLOUR_TERMS)
    for term, rgb in [("red", (220, 20, 20)), ("green", (30, 160, 40)), ("blue", (30, 60, 220)),
                      ("white", (250, 250, 250)), ("black", (5, 5, 5)), ("yellow", (250, 230, 30))]:
        x = torch.tensor(rgb, dtype=torch.float32).div(255).view(1, 3, 1, 1).expand(1, 3, 8, 8)
        assert names[int(colour_names(x, size=4)[0, 0, 0])] == term
    half = torch.zeros(2, 3, 8, 8)
    half[:, 0, :, :4] = 1.0  # left half red, right half black
    c = colour_concepts(half, size=8)
    assert set(c) == {"red", "black"}
    assert c["red"][:, :, :4].all() and not c["red"][:, :, 4:].any()


def test_mask_folder_layouts(tmp_path):
    (tmp_path / "masks" / "sky").mkdir(parents=True)
    m = np.zeros((20, 20), np.uint8)
    m[:10] = 255
    Image.fromarray(m).save(tmp_path / "masks" / "sky" / "a.png")
    got = load_concept_masks(tmp_path / "masks", ["x/a.jpg", "x/b.jpg"], size=4)
    assert set(got) == {"sky"}
    assert got["sky"][0, :2].all() and not got["sky"][0, 2:].any() and not got["sky"][1].any()
    flat = load_concept_masks(tmp_path / "masks" / "sky", ["a.jpg"], size=4)
    assert set(flat) == {"sky"}
    from core.images import ImageError
    with pytest.raises(ImageError):
        load_concept_masks(tmp_path / "masks", ["zzz.jpg"])


def test_on_a_model_no_hooks_left(convnext_atto):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 64, 64)
    before = x.clone()
    fits = net2vec(convnext_atto, x, "stages.1", colour_concepts(x, size=16), size=16, iterations=20)
    assert fits and all(0 <= f.iou <= 1 and 0 <= f.iou_best_channel <= 1 for f in fits)
    assert torch.equal(x, before) and hook_count(convnext_atto) == 0


def test_cli_colors_and_masks(tmp_path, samples, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ["chelsea.jpg", "coffee.jpg", "opencv_orange.jpg", "flower.jpg"]:
        (imgs / name).write_bytes((samples / name).read_bytes())
    base = ["net2vec", str(imgs), "--model", "embedded", "--layer", "blocks.3", "--size", "14",
            "--iterations", "20", "--json"]
    assert main(base + ["--concepts", "colors"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["concepts"]
    for c in out["concepts"]:
        assert set(c) == {"name", "iou", "iou_best_channel", "best_channel", "top_channels"}
        assert c["name"] in COLOUR_TERMS and 0 <= c["iou"] <= 1 and 0 <= c["best_channel"] < 80
    masks = tmp_path / "masks" / "top"
    masks.mkdir(parents=True)
    m = np.zeros((50, 50), np.uint8)
    m[:20] = 1
    Image.fromarray(m).save(masks / "chelsea.png")
    assert main(base + ["--concepts", str(tmp_path / "masks")]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)["concepts"]] == ["top"]
    assert main(base[:-1] + ["--concepts", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_best_cuts_match_a_brute_force_search_with_ties():
    """Every column's cut: the IoU of ``scores > cut`` is the best over all cuts between distinct values."""
    from core.features.net2vec import best_cuts

    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(300, 7, generator=gen).round(decimals=1)  # many ties
    truth = torch.rand(300, generator=gen) < 0.3
    ious, cuts = best_cuts(scores, truth, chunk=3)
    for j in range(scores.shape[1]):
        col = scores[:, j]
        values = torch.unique(col)
        brute = max(set_iou(col > t, truth) for t in torch.cat([values - 1e-3, values]))
        assert ious[j].item() == pytest.approx(brute, abs=1e-6)
        assert set_iou(col > cuts[j], truth) == pytest.approx(brute, abs=1e-6)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernel", "written-out"])
def test_the_written_out_fit_matches_torch_adam(fused, monkeypatch):
    """The closed-form gradient and Adam's update (PyTorch's fused kernel, or written out where a device has none)
    against autograd + torch.optim.Adam; float32 over 50 steps: a weight moves by at most lr per step, differences
    stay at rounding level (bound 1e-4)."""
    from core.features.net2vec import _fit_logistic

    if not fused:
        monkeypatch.delattr(torch, "_fused_adam_")
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(2000, 12, generator=gen)
    target = (a[:, 0] - a[:, 3] > 0.5).float()
    weight = torch.where(target > 0, 0.7, 0.3)
    w, b = _fit_logistic(a, target, weight, 50, 0.05)
    theta = torch.zeros(13, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        z = a @ theta[:12] + theta[12]
        (torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none") * weight).mean().backward()
        opt.step()
    assert torch.allclose(w, theta[:12].detach(), atol=1e-4)
    assert b == pytest.approx(float(theta[12].detach()), abs=1e-4)
    assert float(w.abs().max()) > 0.5  # it did learn


def test_cli_flags_and_page_defaults_come_from_one_declaration(capsys):
    """``--layer`` and ``--concepts`` stay required; ``--size`` takes any side (the page's stops bound its widget
    only); the help shows the declared defaults."""
    from core.cli import build_parser
    from core.features.net2vec import DEFAULT_SIZE
    from core.features.net2vec_spec import ITERATIONS, NET2VEC

    parser, _ = build_parser()
    args = parser.parse_args(["net2vec", "f", "--layer", "l", "--concepts", "colors", "--size", "20"])
    assert (args.layer, args.concepts, args.size, args.iterations) == ("l", "colors", 20, None)
    assert NET2VEC.from_args(args, {"layer": "x"}) == {"layer": "l", "concepts": "colors", "size": 20,
                                                       "iterations": ITERATIONS}
    for missing in (["--concepts", "colors"], ["--layer", "l"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["net2vec", "f", *missing])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["net2vec", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"analysis grid (default {DEFAULT_SIZE})" in shown and f"(default {ITERATIONS})" in shown
    assert NET2VEC.defaults({"layer": "blocks.3"}) == {"layer": "blocks.3", "concepts": "colors",
                                                       "size": DEFAULT_SIZE, "iterations": ITERATIONS}
