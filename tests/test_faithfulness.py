"""Faithfulness and sanity metrics (core.evaluation, issue 13): known-truth cases and the reference libraries."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core.evaluation import (DeletionBaseline, auc, cascade_groups, curves, evaluate, mask_file, pixel_order,
                             pointing, randomisation, rise_blur, road, step_counts)
from core.evaluation.curves import baseline_image, target_probs
from core.images import ImageError
from core.model import wrap
from core.stats import spearman

SIDE = 32
PATCH = (slice(8, 16), slice(16, 24))  # rows, columns of the one patch the toy model reads


class PatchNet(nn.Module):
    """Two classes; logit 0 = 6 × the mean normalised value of one 8×8 patch, logit 1 = 0."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.zeros(1, 3, SIDE, SIDE)
        w[:, :, PATCH[0], PATCH[1]] = 6.0 / (3 * 64)
        self.weight = nn.Parameter(w)
        self.num_classes = 2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = (z * self.weight).sum(dim=(1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], 1)


@pytest.fixture(scope="module")
def patch_model():
    return wrap(PatchNet(), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=SIDE)


@pytest.fixture(scope="module")
def patch_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, SIDE, SIDE, generator=g) * 0.3  # dark background
    x[:, PATCH[0], PATCH[1]] = 1.0                    # the bright patch the model reads
    return x


def _maps():
    true = torch.zeros(SIDE, SIDE)
    true[PATCH[0], PATCH[1]] = 1.0
    rand = torch.rand(SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    return true, rand, -true


def test_step_counts_order_and_auc_follow_the_definition():
    assert step_counts(10, 4).tolist() == [0, 3, 5, 8, 10]            # round(2.5) = 3, halves up
    assert step_counts(224 * 224, 50)[1] == 1004                       # round(1003.52)
    assert pixel_order(np.array([[1.0, 3.0], [3.0, 0.0]])).tolist() == [1, 2, 0, 3]  # ties by pixel index
    assert auc([1.0, 1.0, 1.0], 2) == pytest.approx(1.0)
    assert auc([0.0, 1.0], 1) == pytest.approx(0.5)


def test_true_map_beats_random_beats_inverted(patch_model, patch_image):
    true, rand, inverted = _maps()
    res = {name: curves(patch_model, patch_image, m, 0, steps=16, batch_size=8)
           for name, m in (("true", true), ("random", rand), ("inverted", inverted))}
    dele = {k: v.deletion_auc for k, v in res.items()}
    ins = {k: v.insertion_auc for k, v in res.items()}
    assert dele["true"] < dele["random"] < dele["inverted"], dele
    assert ins["true"] > ins["random"] > ins["inverted"], ins
    # the 64 patch pixels are gone after round(k·1024/16) >= 64, i.e. k = 1: p = 1/2 from there on
    assert res["true"].deletion[1] == pytest.approx(0.5, abs=1e-6)
    r_true = road(patch_model, patch_image, true, 0)
    r_inv = road(patch_model, patch_image, inverted, 0)
    assert r_true.score > r_inv.score + 0.05, (r_true.score, r_inv.score)


@pytest.mark.parametrize("baseline", list(DeletionBaseline))
def test_curve_end_points_are_exact(patch_model, patch_image, baseline):
    _, rand, _ = _maps()
    c = curves(patch_model, patch_image, rand, 0, steps=10, baseline=baseline, batch_size=4)
    x = patch_image.unsqueeze(0)
    p_x = float(target_probs(patch_model, x, 0)[0])
    p_base = float(target_probs(patch_model, baseline_image(patch_model, x, baseline), 0)[0])
    p_blur = float(target_probs(patch_model, rise_blur(x), 0)[0])
    # float32 logits of ~6 through a float64 softmax: batch composition moves them by ~1e-6
    assert c.deletion[0] == pytest.approx(p_x, abs=1e-5)
    assert c.deletion[-1] == pytest.approx(p_base, abs=1e-5)
    assert c.insertion[0] == pytest.approx(p_blur, abs=1e-5)
    assert c.insertion[-1] == pytest.approx(p_x, abs=1e-5)
    assert len(c.deletion) == len(c.insertion) == 11
    if baseline is DeletionBaseline.MEAN:  # the model's mean colour is what the normalised model sees as zero
        assert p_base == pytest.approx(0.5, abs=1e-6)


def test_blur_is_rise_kernel_11_sigma_5_reflect():
    x = torch.zeros(1, 3, 21, 21)
    x[0, :, 10, 10] = 1.0
    y = rise_blur(x)[0, 0]
    t = torch.arange(-5, 6, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / 5) ** 2)
    k = k / k.sum()
    assert torch.allclose(y[5:16, 5:16], k[:, None] * k[None, :], atol=1e-7)
    assert float(y[:, :5].abs().max()) == 0.0  # the support is 11 × 11


def test_batches_never_one_forward_per_step(patch_model, patch_image):
    calls = []
    handle = patch_model.net.register_forward_pre_hook(lambda m, inp: calls.append(inp[0].shape[0]))
    try:
        curves(patch_model, patch_image, _maps()[1], 0, steps=50, batch_size=16)
    finally:
        handle.remove()
    assert sum(calls) == 101 and len(calls) == 7  # 2·S + 1 images in ceil(101 / 16) forwards


class SmallCNN(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2),
                         nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 5))
        self.num_classes = 5


def _edges(model, x, target):
    """An "explanation" that ignores the model: the image's gradient magnitude."""
    g = x[0].mean(0)
    gy, gx = torch.zeros_like(g), torch.zeros_like(g)
    gy[1:-1] = g[2:] - g[:-2]
    gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
    return (gx ** 2 + gy ** 2).sqrt()


@pytest.fixture(scope="module")
def small_cnn():
    torch.manual_seed(0)
    return wrap(SmallCNN(), input_size=SIDE)


def test_edge_detector_fails_randomisation_and_gradient_passes(small_cnn, patch_image):
    from core.evaluation import method_explainer

    x = patch_image.unsqueeze(0)
    assert [n for n, _ in cascade_groups(small_cnn)] == ["8", "4", "2", "0"]
    edges = randomisation(small_cnn, x, 0, _edges)
    assert not edges.passed and min(edges.spearman) == pytest.approx(1.0)
    grad = randomisation(small_cnn, x, 0, method_explainer("saliency"))
    assert grad.passed and grad.at_half < 0.5, grad.spearman
    assert grad.maps.shape == (4, SIDE, SIDE)


def test_randomised_copies_share_what_they_keep_and_leave_the_model_alone(small_cnn, patch_image):
    from core.evaluation.randomisation import _fresh, randomised_copy

    before = {n: p.clone() for n, p in small_cnn.named_parameters()}
    groups = cascade_groups(small_cnn)
    gen = torch.Generator().manual_seed(0)
    fresh = {id(p): _fresh(p, gen) for p in groups[0][1].parameters()}
    twin = randomised_copy(small_cnn, fresh, [groups[0][1]])
    assert twin.net[0].weight is small_cnn.net[0].weight          # shared, not copied
    assert twin.net[8].weight is not small_cnn.net[8].weight      # the randomised head
    w, new = small_cnn.net[8].weight, twin.net[8].weight
    assert float(new.std()) == pytest.approx(float(w.std()), rel=0.3)   # 80 draws: the std within 30 %
    assert all(torch.equal(before[n], p) for n, p in small_cnn.named_parameters())


def test_convnext_blocks_stay_live_after_randomisation():
    from core.evaluation.randomisation import _fresh
    from tests.conftest import make_tiny

    live = make_tiny("convnext_atto", num_classes=10, ls_init_value=1.0)
    assert [n for n, _ in cascade_groups(live)][:3] == ["head", "stages.3", "stages.2"]
    gammas = [p for n, p in live.named_parameters() if n.endswith("gamma")]
    assert gammas, "the model has layer scale"
    gen = torch.Generator().manual_seed(0)
    for g in gammas:  # the trained gamma (1.0 here) keeps its level: timm's initialiser would give 1e-6
        assert float(_fresh(g, gen).abs().mean()) > 0.5


def test_pointing_hit_and_miss_by_construction():
    v = torch.zeros(64, 64)
    v[10, 10] = 1.0
    mask = np.zeros((64, 64), bool)
    mask[25:40, 10:20] = True                # 15 rows below the peak: a hit at tolerance 15
    assert pointing(v, mask).hit
    mask2 = np.zeros((64, 64), bool)
    mask2[26:40, 10:20] = True               # 16 rows: a miss
    p = pointing(v, mask2)
    assert not p.hit and p.point == (10, 10) and p.energy == 0.0
    v2 = torch.zeros(64, 64)
    v2[30, 15] = 3.0
    v2[0, 0] = 1.0
    p2 = pointing(v2, mask2)
    assert p2.hit and p2.energy == pytest.approx(0.75)
    with pytest.raises(ValueError, match="empty"):
        pointing(v, np.zeros((64, 64), bool))


def test_mask_from_alpha_and_from_a_file(tmp_path):
    from core.evaluation import alpha_mask

    config = {"input_size": (3, 32, 32), "crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear",
              "mean": (0.5,) * 3, "std": (0.5,) * 3}
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 128
    rgba[:32, :32, 3] = 255  # the object: top-left quarter
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    m = alpha_mask(buf.getvalue(), config)
    assert m.shape == (32, 32) and m[:15, :15].all() and not m[17:, 17:].any()
    buf2 = io.BytesIO()
    Image.fromarray(rgba[..., :3]).save(buf2, format="PNG")
    assert alpha_mask(buf2.getvalue(), config) is None
    grey = np.zeros((64, 64), np.uint8)
    grey[32:, 32:] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(grey).save(path)
    m2 = mask_file(str(path), config, (64, 64))
    assert m2[17:, 17:].all() and not m2[:15, :15].any()
    with pytest.raises(ImageError, match="must match the image"):
        mask_file(str(path), config, (100, 80))


def test_evaluate_a_given_map_skips_randomisation_with_a_reason(patch_model, patch_image):
    true, _, _ = _maps()
    e = evaluate(patch_model, patch_image, 0, values=true.numpy(), metrics=["deletion", "randomisation"], steps=8)
    assert e.method == "map" and e.curves is not None and e.curves.insertion == ()
    assert "cannot be recomputed" in e.skipped["randomisation"]
    with pytest.raises(ValueError, match="model input size"):
        evaluate(patch_model, patch_image, 0, values=np.zeros((8, 8)), metrics=["deletion"])


def test_cancel_stops_the_curves(patch_model, patch_image):
    from core.progress import Cancelled

    with pytest.raises(Cancelled):
        curves(patch_model, patch_image, _maps()[1], 0, cancel=lambda: True)


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    a = np.random.default_rng(0).normal(size=200)
    b = a + np.random.default_rng(1).normal(size=200)
    b[:20] = 0.0  # ties
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(torch.from_numpy(a).float().reshape(10, 20), torch.from_numpy(b).float()) == pytest.approx(
        spearmanr(a.astype(np.float32), b.astype(np.float32)).statistic, abs=1e-9)
    assert spearman(a, np.zeros(200)) == 0.0


# ------------------------------------------------------------------------------------------------ the CLI

def test_cli_json_contract_absent_fields_and_bad_inputs(tmp_path):
    import json

    from tests.conftest import SAMPLES
    from tests.test_cli import run_cli

    cat = SAMPLES / "chelsea.jpg"
    w, h = Image.open(cat).size
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    np.save(tmp_path / "good.npy", np.random.default_rng(0).random((224, 224)).astype(np.float32))
    r = run_cli("evaluate", str(cat), "--model", "embedded", "--method", "saliency", "--map", str(tmp_path / "good.npy"),
                "--metrics", "deletion,insertion,pointing", "--steps", "4", "--mask", str(tmp_path / "mask.png"),
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "embedded" and "errors" not in out
    assert [res["method"] for res in out["results"]] == ["saliency", "map"]
    for res in out["results"]:
        assert {"image", "method", "target", "deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve",
                "pointing", "seconds"} == set(res)
        assert len(res["deletion_curve"]) == 5 and set(res["pointing"]) >= {"hit", "energy"}
        assert res["insertion_curve"][-1] == pytest.approx(res["deletion_curve"][0], abs=1e-6)

    np.save(tmp_path / "bad.npy", np.zeros((10, 10), np.float32))
    bad = run_cli("evaluate", str(cat), "--model", "embedded", "--map", str(tmp_path / "bad.npy"),
                  "--metrics", "randomisation", "--json")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    err = json.loads(bad.stdout)["errors"]
    assert len(err) == 1 and "model input size" in err[0]["error"] and err[0]["method"] == "map"
    for args, message in ((("--method", "saliency", "--metrics", "deletion,bogus"), "unknown metric 'bogus'"),
                          ((), "give --method"),
                          (("--map", str(tmp_path / "nope.npy")), "no such file")):
        r = run_cli("evaluate", str(cat), "--model", "embedded", *args, "--json")
        assert r.returncode == 2 and r.stdout == "" and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------- reference libraries (dev only)

def test_deletion_matches_quantus_pixel_flipping(patch_model, patch_image, monkeypatch):
    """Quantus PixelFlipping = our deletion when: black baseline, no normalisation or abs, softmax, H·W/S an
    integer (features_in_step = 3·H·W/S, the three channels of a pixel go together because they tie), and
    distinct map values. Quantus has no step 0: its S points are our steps 1..S.

    Quantus's "black" is the minimum of the (perturbed) image, not 0: the two coincide only for an image with
    a 0 pixel, so one is set. Quantus asserts that H·W (one channel) is a multiple of features_in_step although
    it flips the 3·H·W features of the broadcast map; that check (not the loop) is switched off here."""
    quantus = pytest.importorskip("quantus")
    monkeypatch.setattr(quantus.helpers.asserts, "assert_features_in_step", lambda *a, **k: None)
    _, rand, _ = _maps()
    steps = 16
    image = patch_image.clone()
    image[:, -1, -1] = 0.0
    ours = curves(patch_model, image, rand, 0, steps=steps, baseline="black")
    metric = quantus.PixelFlipping(features_in_step=3 * SIDE * SIDE // steps, perturb_baseline="black",
                                   normalise=False, abs=False, disable_warnings=True, display_progressbar=False)
    theirs = metric(model=patch_model, x_batch=image[None].numpy(), y_batch=np.array([0]),
                    a_batch=rand[None, None].numpy(), softmax=True, device="cpu", channel_first=True)[0]
    assert len(theirs) == steps
    np.testing.assert_allclose(ours.deletion[1:], theirs, atol=1e-5)


def test_road_matches_pytorch_grad_cam_road_combined(patch_model, patch_image):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    _, rand, _ = _maps()
    ours = road(patch_model, patch_image, rand, 0, seed=3)
    torch.manual_seed(3)  # their noise comes from the global generator, drawn in the same order as ours
    theirs = ROADCombined()(patch_image[None], rand[None].numpy(), [ClassifierOutputSoftmaxTarget(0)], patch_model)
    assert ours.score == pytest.approx(float(theirs[0]), abs=1e-3)
    assert abs(ours.score) > 1e-2  # a score that is not trivially zero


def test_gradcam_matches_pytorch_grad_cam(resnet_tiny):
    """Theirs is min-max normalised at the layer's grid, then resized; ours is resized, not normalised. Both
    resize bilinearly with half-pixel centres, so theirs is an affine function of ours."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from core.attribution.registry import attribute

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours = attribute(resnet_tiny, x, 3, method="gradcam", layer="layer4").map[0].numpy().ravel()
    with GradCAM(model=resnet_tiny, target_layers=[resnet_tiny.net.layer4]) as cam:
        # our model's weights never require grad, so their graph must start at the input
        theirs = cam(input_tensor=x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(3)])[0].ravel()
    design = np.stack([ours, np.ones_like(ours)], 1)
    coef, *_ = np.linalg.lstsq(design, theirs, rcond=None)
    assert coef[0] > 0
    np.testing.assert_allclose(design @ coef, theirs, atol=1e-4)


class ConvBN(nn.Sequential):
    """A ReLU + BatchNorm net (BatchNorm in eval mode with non-trivial statistics)."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        self.num_classes = 4
        g = torch.Generator().manual_seed(0)
        for m in self:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(8, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(8, generator=g) + 0.5)
                m.weight.data.copy_(torch.rand(8, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(8, generator=g) * 0.1)


@pytest.mark.parametrize("rule", ["zplus", "epsilon"])
def test_lrp_matches_zennit_on_relu_batchnorm(rule):
    """Ours: BatchNorm folded, rule for convolutions, z^B (box [0, 1] in pixels) on the first layer, epsilon on
    the classifier with eps = 0.25 × std of the layer's output per image. zennit: the same rules through a
    SpecialFirstLayerMapComposite with SequentialMergeBatchNorm; its Epsilon takes our scale-free stabiliser as
    a callable, and the output relevance is the target logit (ours starts from the logit, zennit from what it
    is given)."""
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import SpecialFirstLayerMapComposite, layer_map_base
    from zennit.rules import Epsilon, ZBox, ZPlus
    from zennit.types import Convolution, Linear

    from core.attribution.lrp import lrp

    torch.manual_seed(0)
    model = wrap(ConvBN(), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_size=SIDE)
    x = torch.rand(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    ours = lrp(model, x, [1, 2], rule=rule, first="zb", epsilon=0.25)

    def stabilise(z):
        std = z.flatten(1).std(dim=1, unbiased=False).view(-1, *([1] * (z.dim() - 1)))
        return z + (0.25 * std + 1e-12) * torch.where(z >= 0, 1.0, -1.0)

    # z+ and z^B here give biases no relevance: zennit's zero_params="bias" (its default keeps them in z)
    conv_rule = ZPlus(stabilizer=1e-9, zero_params="bias") if rule == "zplus" else Epsilon(epsilon=stabilise)
    xn = model.normalise(x)
    low = ((0 - model.mean) / model.std).expand_as(xn)
    high = ((1 - model.mean) / model.std).expand_as(xn)
    composite = SpecialFirstLayerMapComposite(
        layer_map=layer_map_base(1e-9) + [(Convolution, conv_rule), (Linear, Epsilon(epsilon=stabilise))],
        first_map=[(Convolution, ZBox(low, high, stabilizer=1e-9, zero_params="bias"))], canonizers=[SequentialMergeBatchNorm()])
    net = model.net
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        logits = net(xn)
    start = torch.zeros_like(logits)
    start[0, 1], start[1, 2] = logits[0, 1], logits[1, 2]
    with Gradient(model=net, composite=composite) as attributor:
        _, theirs = attributor(xn.clone().requires_grad_(True), start)
    scale = float(theirs.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours.raw, theirs.float(), atol=1e-4 * scale, rtol=1e-3)
