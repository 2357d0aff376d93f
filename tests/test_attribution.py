"""Attribution methods: properties worked out by hand, and Captum as the reference where Captum is right."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.attribution.registry import REGISTRY, NotApplicable, attribute
from core.attribution.smoothgrad import smoothgrad
from core.hooks import hook_count
from core.memo import PerModel
from core.model import wrap

from tests.conftest import lock_is_free, make_tiny


@pytest.fixture(scope="module")
def convnext_live():
    """convnext_atto with layer scale 1 (timm's 1e-6 init makes a random ConvNeXt almost linear)."""
    return make_tiny("convnext_atto", seed=1, num_classes=10, ls_init_value=1.0)


@pytest.fixture(scope="module")
def x64():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _no_function_mode() -> bool:
    return torch._C._len_torch_function_stack() == 0


# ------------------------------------------------------------------------------------------- registry

def test_registry_lists_every_method_and_refuses_unknown_options(convnext_atto, x64):
    assert list(REGISTRY) == ["saliency", "input-x-gradient", "integrated-gradients", "smoothgrad", "guided-backprop",
                              "deconvolution", "gradcam", "guided-gradcam", "occlusion", "cam", "lrp", "rollout",
                              "grad-rollout"]
    with pytest.raises(ValueError, match="no option"):
        attribute(convnext_atto, x64, 0, method="saliency", samples=3)
    with pytest.raises(ValueError, match="unknown method"):
        attribute(convnext_atto, x64, 0, method="magic")


TRANSFORMER_ONLY = ("rollout", "grad-rollout")  # attention rollouts: refused on a CNN (tests/test_transformers.py)


@pytest.mark.parametrize("method", [m for m in REGISTRY if m not in TRANSFORMER_ONLY])
def test_every_method_shapes_ranges_and_leaves_input_alone(convnext_live, x64, method):
    x = x64.clone()
    opts = {"smoothgrad": {"samples": 4}, "integrated-gradients": {"steps": 4},
            "occlusion": {"window": 16, "stride": 16}}.get(method, {})
    seen = []
    a = attribute(convnext_live, x, [3, 5], method=method, progress=lambda f, m: seen.append(f), **opts)
    assert torch.equal(x, x64)
    assert a.map.shape == (2, 64, 64) and a.map.dtype == torch.float32 and torch.isfinite(a.map).all()
    assert a.target == [3, 5] and a.method == method and a.seconds >= 0
    if a.raw is not None:
        assert a.raw.shape == (2, 3, 64, 64)
        torch.testing.assert_close(a.map, a.raw.sum(1))
    if method == "gradcam":
        assert a.map.min() >= 0 and not a.signed
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    assert hook_count(convnext_live) == 0 and _no_function_mode()


def test_default_target_is_the_predicted_class(convnext_live, x64):
    predicted = convnext_live(x64).argmax(-1).tolist()
    assert attribute(convnext_live, x64, method="saliency").target == predicted
    assert smoothgrad(convnext_live, x64, samples=1, noise=0.0, precision="fp32").target == predicted


# ----------------------------------------------------------------------------------------- SmoothGrad

def test_smoothgrad_without_noise_and_one_sample_is_saliency(convnext_live, x64):
    s = attribute(convnext_live, x64, [1, 2], method="saliency")
    sg = smoothgrad(convnext_live, x64, [1, 2], samples=1, noise=0.0, precision="fp32")
    torch.testing.assert_close(sg.raw, s.raw)


@pytest.mark.parametrize("nt_type,base", [("smoothgrad", "saliency"), ("smoothgrad_sq", "saliency"),
                                          ("vargrad", "input-x-gradient")])
def test_fast_engine_equals_captum_noise_tunnel(convnext_live, x64, nt_type, base):
    from captum.attr import InputXGradient, NoiseTunnel, Saliency

    x, target, seed = x64[:1], 4, 7
    ours = smoothgrad(convnext_live, x, target, samples=6, noise=0.2, nt_type=nt_type, base=base, seed=seed,
                      precision="fp32", batch_size=4)
    kind, kw = (Saliency, {"abs": False}) if base == "saliency" else (InputXGradient, {})
    torch.manual_seed(seed)  # NoiseTunnel draws from the global RNG; ours from a generator with the same seed
    ref = NoiseTunnel(kind(convnext_live)).attribute(x.clone(), nt_type=nt_type, nt_samples=6,
                                                      nt_samples_batch_size=4, stdevs=0.2, target=target, **kw)
    torch.testing.assert_close(ours.raw, ref, rtol=1e-4, atol=1e-7)
    if nt_type != "smoothgrad":
        assert ours.raw.min() >= -1e-7 and not ours.signed


def test_smoothgrad_is_seeded_and_independent_of_batching(convnext_live, x64):
    a = smoothgrad(convnext_live, x64, [0, 1], samples=4, seed=3, precision="fp32", batch_size=3)
    b = smoothgrad(convnext_live, x64, [0, 1], samples=4, seed=3, precision="fp32", batch_size=4)
    c = smoothgrad(convnext_live, x64[:1], [0], samples=4, seed=4, precision="fp32")
    one = smoothgrad(convnext_live, x64[1:], [1], samples=4, seed=3, precision="fp32")
    torch.testing.assert_close(a.raw, b.raw, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(a.raw[1:], one.raw)
    assert not torch.allclose(a.raw[:1], c.raw)


def test_smoothgrad_preview_refines_after_each_batch(convnext_live, x64):
    previews = []
    result = smoothgrad(convnext_live, x64[:1], 0, samples=10, batch_size=4, precision="fp32",
                        preview=lambda m, f: previews.append((m.clone(), f)))
    # the first batch of 4 is passed as 2 + 2 (the first picture after two passes), then batches of 4
    assert [round(f, 3) for _, f in previews] == [0.2, 0.4, 0.8, 1.0]
    torch.testing.assert_close(previews[-1][0], result.map)
    # the noise is drawn a batch at a time either way (the same draws on any device): only the grouping of the
    # float32 sums differs
    plain = smoothgrad(convnext_live, x64[:1], 0, samples=10, batch_size=4, precision="fp32")
    torch.testing.assert_close(result.map, plain.map, rtol=1e-4, atol=1e-5 * float(plain.map.abs().max()))


def test_smoothgrad_bf16_runs_and_tracks_fp32(convnext_live, x64):
    fp32 = smoothgrad(convnext_live, x64[:1], 2, samples=4, precision="fp32")
    bf16 = smoothgrad(convnext_live, x64[:1], 2, samples=4, precision="bf16")
    assert bf16.options["precision"] == "bf16" and bf16.raw.dtype == torch.float32
    corr = np.corrcoef(fp32.map.flatten().numpy(), bf16.map.flatten().numpy())[0, 1]
    assert corr > 0.9


def test_smoothgrad_over_integrated_gradients_uses_noise_tunnel(convnext_live, x64):
    a = smoothgrad(convnext_live, x64[:1], 0, samples=2, base="integrated-gradients", steps=4, precision="fp32")
    assert a.options["engine"] == "captum" and a.raw.shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="ReLU-only"):
        smoothgrad(convnext_live, x64[:1], 0, samples=2, base="guided-backprop", engine="captum")


# ------------------------------------------------------------------------------------ gradient family

def test_integrated_gradients_complete(convnext_live, x64):
    a = attribute(convnext_live, x64[:1], 3, method="integrated-gradients", steps=24)
    with torch.no_grad():
        gap = convnext_live(x64[:1])[0, 3] - convnext_live(torch.zeros_like(x64[:1]))[0, 3]
    assert float(a.map.sum()) == pytest.approx(float(gap), rel=0.02, abs=1e-3)


def test_input_x_gradient_is_gradient_times_input(convnext_live, x64):
    s = attribute(convnext_live, x64, 1, method="saliency")
    ixg = attribute(convnext_live, x64, 1, method="input-x-gradient")
    torch.testing.assert_close(ixg.raw, s.raw * x64)


# ----------------------------------------------------------------------------------- guided / deconv

def test_guided_backprop_on_convnext_differs_from_gradient_where_captum_does_not(convnext_live, x64):
    from captum.attr import GuidedBackprop

    target = [1, 2]
    s = attribute(convnext_live, x64, target, method="saliency").raw
    g = attribute(convnext_live, x64, target, method="guided-backprop")
    d = attribute(convnext_live, x64, target, method="deconvolution").raw
    assert (g.raw - s).abs().max() > 0.1 * s.abs().max()
    assert (d - s).abs().max() > 0.1 * s.abs().max()
    assert "12 GELU" in g.notes[0]
    captum = torch.cat([GuidedBackprop(convnext_live).attribute(x64[i:i + 1].clone(), target=t)
                        for i, t in enumerate(target)])
    torch.testing.assert_close(captum, s, rtol=1e-4, atol=1e-7)  # Captum only overrides nn.ReLU


@pytest.mark.parametrize("method", ["guided-backprop", "deconvolution"])
def test_rule_equals_captum_on_a_relu_net(resnet_tiny, x64, method):
    from captum.attr import Deconvolution, GuidedBackprop

    ours = attribute(resnet_tiny, x64, [0, 7], method=method).raw
    kind = GuidedBackprop if method == "guided-backprop" else Deconvolution
    ref = torch.cat([kind(resnet_tiny).attribute(x64[i:i + 1].clone(), target=t) for i, t in enumerate([0, 7])])
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-8)


class _Net(nn.Module):
    """conv -> act -> conv -> act -> pool -> linear; activations as modules or as functional calls."""

    def __init__(self, functional: bool):
        super().__init__()
        torch.manual_seed(5)
        self.c1, self.c2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 4)
        self.functional = functional
        self.a1, self.a2 = nn.ReLU(), nn.ReLU(inplace=True)

    def forward(self, x):
        if self.functional:
            h = self.c2(F.relu(self.c1(x))).relu_()
        else:
            h = self.a2(self.c2(self.a1(self.c1(x))))
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("method", ["guided-backprop", "deconvolution"])
def test_functional_and_in_place_activations_get_the_rule(x64, method):
    from captum.attr import Deconvolution, GuidedBackprop

    functional, modules = wrap(_Net(True)), wrap(_Net(False))
    ours = attribute(functional, x64, 2, method=method).raw
    kind = GuidedBackprop if method == "guided-backprop" else Deconvolution
    ref = kind(modules).attribute(x64.clone(), target=2)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-8)
    plain = attribute(functional, x64, 2, method="saliency").raw
    assert not torch.allclose(ours, plain)


def test_guided_refused_without_rectifiers(x64):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(NotApplicable, match="no rectifying activation"):
        attribute(wrap(net), x64, 0, method="guided-backprop")
    with pytest.raises(NotApplicable, match="no rectifying activation"):
        smoothgrad(wrap(net), x64, 0, samples=2, base="guided-backprop")
    assert _no_function_mode()


# -------------------------------------------------------------------------------- Grad-CAM / occlusion

def test_gradcam_equals_captum_layer_gradcam(resnet_tiny, x64):
    from captum.attr import LayerGradCam

    ours = attribute(resnet_tiny, x64, [1, 6], method="gradcam", layer="layer3").map
    lg = LayerGradCam(resnet_tiny, resnet_tiny.net.layer3)
    ref = torch.cat([F.interpolate(lg.attribute(x64[i:i + 1], target=t, relu_attributions=True), size=(64, 64),
                                   mode="bilinear") for i, t in enumerate([1, 6])])[:, 0]
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)


def test_gradcam_on_channels_last_layer_and_bad_layer(convnext_live, x64):
    nhwc = make_tiny("convnext_atto", seed=2, num_classes=10, conv_mlp=False, ls_init_value=1.0)
    a = attribute(nhwc, x64, 0, method="gradcam", layer="stages.2.blocks.0.mlp")  # channels-last block MLP
    assert a.map.shape == (2, 64, 64) and "NHWC" in a.notes[0] and a.map.std() > 0
    with pytest.raises(NotApplicable, match="no spatial layer"):
        attribute(convnext_live, x64, 0, method="gradcam", layer="nope")


def test_gradcam_for_the_cat_peaks_on_the_cat(embedded, samples):
    """The cat photo shrunk into the top-left quadrant of a brick wall: the cat-class map peaks there."""
    from core.images import load_image, preprocess

    canvas = load_image(samples / "brick.jpg").resize((224, 224))
    canvas.paste(load_image(samples / "chelsea.jpg").resize((112, 112)), (0, 0))
    x = preprocess(canvas, embedded.card.data_config).batch
    with torch.no_grad():
        cat = int(embedded(x)[0, 281:286].argmax()) + 281  # the most likely of ImageNet's domestic cats
    cam = attribute(embedded, x, cat, method="gradcam").map[0]
    row, col = divmod(int(cam.argmax()), cam.shape[1])
    assert row < 112 and col < 112


def test_occlusion_equals_captum(convnext_live, x64):
    from captum.attr import Occlusion

    ours = attribute(convnext_live, x64[:1], 3, method="occlusion", window=24, stride=16, fill="gray").map
    ref = Occlusion(convnext_live).attribute(x64[:1], sliding_window_shapes=(3, 24, 24), strides=(3, 16, 16),
                                             target=3, baselines=0.5)
    torch.testing.assert_close(ours, ref.mean(1), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------- safety on a shared model

class _Boom(nn.Module):
    armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("boom")
        return x


def test_no_hook_or_mode_left_after_an_exception(x64):
    boom = _Boom()
    model = wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), boom, nn.Conv2d(4, 4, 3), nn.ReLU(),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)))
    from core.catalogue import catalogue
    catalogue(model)
    boom.armed = True
    for method in ("gradcam", "guided-gradcam", "guided-backprop", "deconvolution"):
        with pytest.raises(RuntimeError, match="boom"):
            attribute(model, x64, 0, method=method, **({"layer": "3"} if "gradcam" in method else {}))
        assert hook_count(model) == 0 and _no_function_mode()
    assert lock_is_free(model)


def test_threads_sharing_a_model_get_the_serial_results(convnext_live, x64):
    jobs = [("guided-backprop", {}), ("gradcam", {}), ("saliency", {}), ("deconvolution", {})]
    serial = {m: attribute(convnext_live, x64, 1, method=m, **o).map for m, o in jobs}
    results, errors = {}, []

    def work(m, o):
        try:
            results[m] = attribute(convnext_live, x64, 1, method=m, **o).map
        except Exception as e:  # surfaced below
            errors.append(e)
    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for m, _ in jobs:
        torch.testing.assert_close(results[m], serial[m])


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_writes_maps_and_json(tmp_path, samples, capsys):
    from core.cli import main

    code = main(["attribute", str(samples / "chelsea.jpg"), "--model", "embedded", "--method", "gradcam",
                 "--out-dir", str(tmp_path), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    (r,) = payload["results"]
    assert payload["method"] == "gradcam"
    assert r["shape"] == [224, 224] and 281 <= r["target"] <= 285 and r["label"]
    assert len(r["input_box"]) == 4 and r["seconds"] > 0
    m = np.load(r["npy"])
    assert m.shape == (224, 224) and m.dtype == np.float32
    assert (tmp_path / "chelsea.png").is_file()


def test_cli_refuses_with_one_line(samples, capsys):
    from core.cli import main

    assert main(["attribute", str(samples / "chelsea.jpg"), "--model", "embedded", "--method", "gradcam",
                 "--layer", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err
    assert main(["attribute", str(samples / "chelsea.jpg"), "--model", "embedded", "--method", "saliency",
                 "--samples", "3"]) == 2
    capsys.readouterr()
    assert main(["attribute", str(samples / "chelsea.jpg"), "--model", "embedded", "--method", "rollout"]) == 2
    err = capsys.readouterr().err.strip()  # a method that does not apply: its reason, in one line
    assert err.startswith("error:") and "no attention layers" in err and "\n" not in err


@pytest.mark.parametrize("faster", [True, False])
def test_auto_precision_follows_the_measurement_once_per_model_and_size(convnext_live, x64, monkeypatch, faster,
                                                                      fresh_profile):
    import core.attribution.smoothgrad as sg

    calls = []
    monkeypatch.setattr(sg, "native_bf16", lambda: True)
    monkeypatch.setattr(sg, "fastest_precision", lambda model, x, candidates: calls.append(tuple(x.shape)) or (
        candidates[0] if faster else sg.Precision.FP32))
    monkeypatch.setattr(sg, "_measured", PerModel())
    expected = "bf16" if faster else "fp32"
    for _ in range(2):
        result = smoothgrad(convnext_live, x64[:1], 0, samples=2, precision="auto")
        assert result.options["precision"] == expected
    smoothgrad(convnext_live, x64[:1, :, :32, :32], 0, samples=2, precision="auto")
    assert calls == [(1, 3, 64, 64), (1, 3, 32, 32)]  # timed once per input size, then remembered
    monkeypatch.setattr(sg, "native_bf16", lambda: False)
    assert smoothgrad(convnext_live, x64[:1], 0, samples=2, precision="auto").options["precision"] == "fp32"


def test_reduced_precisions_per_device_and_fp16_refused_on_the_cpu(convnext_live, x64, monkeypatch):
    import core.attribution.smoothgrad as sg

    P = sg.Precision
    monkeypatch.setattr(sg, "native_bf16", lambda: False)
    assert sg.reduced_precisions(torch.device("cpu")) == ()
    monkeypatch.setattr(sg, "native_bf16", lambda: True)
    assert sg.reduced_precisions(torch.device("cpu")) == (P.BF16,)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert sg.reduced_precisions(torch.device("cuda", 0)) == (P.FP16, P.BF16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert sg.reduced_precisions(torch.device("cuda", 0)) == (P.FP16,)
    assert sg.reduced_precisions(torch.device("mps")) == (P.FP16,)
    with pytest.raises(ValueError, match="fp16 autocast is for a GPU"):
        smoothgrad(convnext_live, x64[:1], 0, samples=2, precision="fp16")


def test_scaled_backward_is_the_same_gradient(convnext_live, x64):
    from core.attribution.base import input_gradient

    t = torch.tensor([3])
    plain = input_gradient(convnext_live, x64[:1], t)
    # a power-of-two scale is exact in float32 (no overflow here): the very same numbers
    assert torch.equal(input_gradient(convnext_live, x64[:1], t, scale=1024.0), plain)


def test_precision_timing_probe_runs_and_leaves_no_state(convnext_live, x64):
    from core.attribution.smoothgrad import Precision, fastest_precision

    x = x64[:1].clone()
    assert fastest_precision(convnext_live, x, (Precision.BF16,), repeats=1) in (Precision.FP32, Precision.BF16)
    assert torch.equal(x, x64[:1]) and hook_count(convnext_live) == 0 and not torch.is_autocast_enabled("cpu")


def test_integrated_gradients_equals_captum_and_previews(convnext_live, x64):
    from captum.attr import IntegratedGradients

    previews = []
    ours = attribute(convnext_live, x64[:1], 3, method="integrated-gradients", steps=12, batch_size=5,
                     preview=lambda m, f: previews.append((m.clone(), f)))
    ref = IntegratedGradients(convnext_live).attribute(x64[:1], baselines=torch.zeros_like(x64[:1]), target=3,
                                                       n_steps=12, internal_batch_size=5)
    # float32 sums over 12 points in a different order: 1e-4 of the largest value is ample
    torch.testing.assert_close(ours.raw, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # the first picture after 2 of the 12 points (at the middles of the path's halves), then batches of 5
    assert [round(f, 3) for _, f in previews] == [0.167, 0.583, 1.0]
    torch.testing.assert_close(previews[-1][0], ours.map)
    # the first points span the path, so the first preview already points the same way as the final map
    first = previews[0][0].flatten()
    assert float(torch.corrcoef(torch.stack([first, ours.map.flatten()]))[0, 1]) > 0.5


def test_integrated_gradients_measures_its_batch_and_agrees_with_a_fixed_one(x64, monkeypatch):
    from core.attribution import base
    from core.attribution.base import chosen_batch

    model = make_tiny("convnext_atto", seed=6, num_classes=10, ls_init_value=1.0)  # nothing remembered for it yet
    # the clock as on a CPU where 4 is the fastest per image and 8 slower: 16 is never tried
    timed = base.MeasuredBatches.timed
    monkeypatch.setattr(base.MeasuredBatches, "timed", lambda self, k, s: timed(self, k, k * {8: 2.0}.get(k, 1.0)))

    def run(**kw):
        seen = []
        r = attribute(model, x64[:1], 3, method="integrated-gradients", steps=24,
                      preview=lambda m, f: seen.append(round(f * 24)), **kw)
        return r, [b - a for a, b in zip([0] + seen, seen)]  # the chunk sizes

    auto, sizes = run()
    assert sizes == [2, 4, 8, 4, 4, 2]  # the preview's 2 points, trials at 4 and 8, then the fastest
    assert chosen_batch(model, x64.shape[1:], "gradient") == 4 and chosen_batch(model, x64.shape[1:]) is None
    again, sizes = run()
    assert sizes == [2] + [4] * 5 + [2]  # remembered: no trials the second time
    fixed, sizes = run(batch_size=8)
    assert sizes == [2, 8, 8, 6]
    # the same 24 points in other batches: float32 sums in another order
    for r in (auto, again):
        torch.testing.assert_close(r.raw, fixed.raw, rtol=1e-4, atol=1e-4 * float(fixed.raw.abs().max()))


def test_batches_with_a_short_first_batch():
    from core.attribution.base import batches

    assert batches(10, 8) == [slice(0, 8), slice(8, 10)]
    assert batches(10, 8, 2) == [slice(0, 2), slice(2, 10)]
    assert batches(1, 8, 2) == [slice(0, 1)]
    assert batches(10, 2, 4) == batches(10, 2)  # a "first" batch no shorter than the rest changes nothing


def test_measured_batches_stop_at_the_first_slower_trial_and_remember_per_kind():
    from core.attribution.base import TRIAL_BATCHES, MeasuredBatches, chosen_batch

    def run(model, per_image, kind="forward", fixed=None, chunks=6):
        sizes = MeasuredBatches(model, (3, 8, 8), kind, fixed, first=2)
        seen = []
        for _ in range(chunks):
            seen.append(sizes.next())
            sizes.timed(seen[-1], seen[-1] * per_image.get(seen[-1], 1.0))
        return seen

    assert TRIAL_BATCHES == (4, 8, 16)
    a, b = nn.Identity(), nn.Identity()
    # 8 is slower per image than 4: 16 is never tried, 4 is used and remembered for forward passes only
    assert run(a, {4: 1.0, 8: 1.5, 16: 0.1}) == [2, 4, 8, 4, 4, 4]
    assert chosen_batch(a, (3, 8, 8)) == 4 and chosen_batch(a, (3, 8, 8), "gradient") is None
    assert run(a, {}) == [2, 4, 4, 4, 4, 4]  # remembered: no trials
    # faster and faster: every trial, the fastest kept (the first chunk is never timed: it pays the warm-up)
    assert run(b, {2: 0.01, 4: 1.0, 8: 0.8, 16: 0.9}, kind="gradient") == [2, 4, 8, 16, 8, 8]
    assert chosen_batch(b, (3, 8, 8), "gradient") == 8 and chosen_batch(b, (3, 8, 8)) is None
    assert run(nn.Identity(), {}, fixed=5) == [2, 5, 5, 5, 5, 5]  # a given batch: nothing measured
    # a short chunk (the end of a run) is not a trial
    sizes = MeasuredBatches(nn.Identity(), (3, 8, 8), "forward", None, first=2)
    sizes.next(), sizes.next()
    sizes.timed(3, 0.1)
    assert sizes.measuring and sizes.next() == 4


def test_occlusion_measures_its_batch_on_its_own_chunks_and_remembers_it(x64, monkeypatch):
    from core.attribution import base
    from core.attribution.base import chosen_batch
    from core.attribution.occlusion import occlusion

    model = make_tiny("convnext_atto", seed=5, num_classes=10, ls_init_value=1.0)  # nothing remembered for it yet
    assert chosen_batch(model, x64.shape[1:]) is None
    # the clock as on a CPU where 4 is the fastest per image and 8 slower: 16 is never tried
    timed = base.MeasuredBatches.timed
    monkeypatch.setattr(base.MeasuredBatches, "timed", lambda self, k, s: timed(self, k, k * {8: 2.0}.get(k, 1.0)))

    def run(**kw):
        seen = []
        r = occlusion(model, x64[:1], 3, window=8, stride=8, preview=lambda m, f: seen.append(round(f * 64)), **kw)
        return r, [b - a for a, b in zip([0] + seen, seen)]  # the chunk sizes

    auto, sizes = run()
    assert chosen_batch(model, x64.shape[1:]) == 4
    # the preview chunk, the trials at 4 and 8 (timed), then the fastest for the rest
    assert sizes == [4, 4, 8] + [4] * 12
    again, sizes = run()
    assert sizes == [4] * 16  # remembered: no trials the second time
    fixed, sizes = run(batch_size=8)
    assert sizes == [4] + [8] * 7 + [4]
    # the same windows in other batches: forward passes of the same images, float32 sums in another order
    for r in (auto, again):
        torch.testing.assert_close(r.map, fixed.map, rtol=1e-4, atol=1e-5 * float(fixed.map.abs().max()))


def test_occlusion_preview_comes_early_spans_the_image_and_ends_at_the_map(convnext_live, x64):
    previews = []
    r = attribute(convnext_live, x64[:1], 3, method="occlusion", window=8, stride=8, batch_size=16,
                  preview=lambda m, f: previews.append((m.clone(), f)))
    assert previews[0][1] == 4 / 64  # a first batch of 4 of the 8 x 8 windows
    first = previews[0][0][0] != 0
    rows, cols = first.any(1).nonzero()[:, 0], first.any(0).nonzero()[:, 0]
    assert int(rows.max() - rows.min()) >= 32 and int(cols.max() - cols.min()) >= 32  # spread, not one corner
    torch.testing.assert_close(previews[-1][0], r.map)


def test_smoothgrad_stop_compares_halves_on_a_grid(convnext_live, x64, monkeypatch):
    """converge_grid=P: the halves are compared as P x P grids of cell means after every second batch; sampling
    stops at the first check that reaches the threshold, and the stopped map is the fixed-n map of that many
    samples (the same noise draws)."""
    import core.attribution.smoothgrad as sg

    m = torch.arange(16.0).reshape(4, 4)
    torch.testing.assert_close(sg.on_grid(m, 2), torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    assert sg.on_grid(m, 0) is m
    seen = []
    real = sg.spearman

    def spy(a, b):
        seen.append((tuple(a.shape), real(a, b)))
        return seen[-1][1]

    monkeypatch.setattr(sg, "spearman", spy)
    r = smoothgrad(convnext_live, x64[:1], 0, samples=96, converge=0.99, converge_grid=4, precision="fp32")
    used = r.options["samples_used"]
    assert all(shape == (4, 4) for shape, _ in seen) and len(seen) == used // 16
    assert all(rho < 0.99 for _, rho in seen[:-1]) and seen[-1][1] >= 0.99 and used < 96
    assert "on a 4 × 4 grid" in r.notes[0] and r.options["converge_grid"] == 4
    fixed = smoothgrad(convnext_live, x64[:1], 0, samples=used, precision="fp32")
    torch.testing.assert_close(r.map, fixed.map, rtol=1e-5, atol=1e-5 * float(fixed.map.abs().max()))
    seen.clear()
    never = smoothgrad(convnext_live, x64[:1], 0, samples=32, converge=0.99999, converge_grid=0, precision="fp32")
    assert never.options["samples_used"] == 32 and seen[0][0] == (64, 64) and "all were used" in never.notes[0]
    with pytest.raises(ValueError, match="grid side"):
        smoothgrad(convnext_live, x64[:1], 0, samples=4, converge=0.9, converge_grid=-1)


def test_smoothgrad_convergence_stop(convnext_live, x64):
    """Stops when two independent halves agree (Spearman ρ); the map then matches an independent 400-sample map.

    Measured on this seeded case: ρ = 0.998 with the 400-sample map after 16 samples; 0.98 leaves a margin."""
    from core.stats import spearman

    auto = smoothgrad(convnext_live, x64[:1], 0, samples=200, converge=0.98, converge_grid=0, precision="fp32")
    ref = smoothgrad(convnext_live, x64[:1], 0, samples=400, seed=1, precision="fp32")
    used = auto.options["samples_used"]
    assert used < 200 and used % 16 == 0 and f"{used} samples (stopped" in auto.notes[0]
    assert spearman(auto.map, ref.map) >= 0.98
    stricter = smoothgrad(convnext_live, x64[:1], 0, samples=64, converge=0.99999, converge_grid=0, precision="fp32")
    assert stricter.options["samples_used"] == 64  # not reached: runs to the maximum
    fixed = smoothgrad(convnext_live, x64[:1], 0, samples=24, precision="fp32")
    assert fixed.options["samples_used"] == 24 and fixed.options["converge"] == 0.0
    with pytest.raises(ValueError, match="fast engine"):
        smoothgrad(convnext_live, x64[:1], 0, samples=4, converge=0.98, engine="captum")


@pytest.mark.parametrize("bf16_seconds,chosen", [(0.018, "fp32"), (0.008, "bf16")])
def test_auto_takes_a_reduced_precision_only_when_clearly_faster(monkeypatch, bf16_seconds, chosen):
    """A near tie goes to fp32 (the same map in every process); bf16 only when REDUCED_MARGIN faster."""
    import time as _time

    from core.attribution import smoothgrad as sg

    def fake_gradient(model, x, target, scale=1.0):
        _time.sleep(bf16_seconds if torch.is_autocast_enabled("cpu") else 0.020)

    monkeypatch.setattr(sg, "input_gradient", fake_gradient)
    picked = sg.fastest_precision(torch.nn.Identity(), torch.zeros(1, 3, 8, 8), (sg.Precision.BF16,), repeats=2)
    assert picked.value == chosen


def test_auto_precision_is_decided_once_per_machine_not_per_process(convnext_live, x64, monkeypatch, fresh_profile):
    """A later process (here: the memory dropped) reads the first one's choice rather than timing again under
    whatever load it finds; another input size is a choice of its own."""
    import subprocess
    import sys

    import core.attribution.smoothgrad as sg
    from core import profile

    monkeypatch.setattr(sg, "native_bf16", lambda: True)
    monkeypatch.setattr(sg, "_measured", PerModel())
    monkeypatch.setattr(sg, "fastest_precision", lambda model, x, candidates: sg.Precision.BF16)
    assert smoothgrad(convnext_live, x64[:1], 0, samples=2, precision="auto").options["precision"] == "bf16"
    assert len(list(fresh_profile.glob("precision-*.json"))) == 1
    profile.forget()
    monkeypatch.setattr(sg, "_measured", PerModel())
    monkeypatch.setattr(sg, "fastest_precision", lambda model, x, candidates: sg.Precision.FP32)
    assert smoothgrad(convnext_live, x64[:1], 0, samples=2, precision="auto").options["precision"] == "bf16"
    assert smoothgrad(convnext_live, x64[:1, :, :32, :32], 0, samples=2,
                      precision="auto").options["precision"] == "fp32"
    # a real second process finds the same file
    code = ("from core import profile; import json, sys; "
            "print(profile.remembered('demo', {'k': 1}, lambda: sys.argv[1]))")
    env = {**__import__("os").environ, "LENS_PROFILE_DIR": str(fresh_profile)}
    first = subprocess.run([sys.executable, "-c", code, "one"], env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    second = subprocess.run([sys.executable, "-c", code, "two"], env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert (first.stdout.strip(), second.stdout.strip()) == ("one", "one"), (first.stderr, second.stderr)


def test_profile_first_store_wins_and_an_unwritable_folder_measures_in_memory(tmp_path, monkeypatch):
    from core import profile

    monkeypatch.setenv("LENS_PROFILE_DIR", str(tmp_path))
    path = tmp_path / "x.json"
    assert profile._store(path, "key", "a") == "a"
    assert profile._store(path, "key", "b") == "a"  # a second process measuring at once takes the first's
    path.write_text("not json")
    assert profile._store(path, "key", "c") == "c" and profile._read(path, "key") == "c"
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LENS_PROFILE_DIR", str(blocker / "sub"))  # a folder under a file cannot be made
    profile.forget()
    assert profile.remembered("demo", {"k": 2}, lambda: "measured") == "measured"
    monkeypatch.setenv("LENS_PROFILE_DIR", "off")
    profile.forget()
    assert profile.remembered("demo", {"k": 3}, lambda: "m") == "m" and profile.profile_dir() is None
    profile.forget()


@pytest.mark.parametrize("total,logit,attn,weak,cp_hint", [
    (0.98, 1.0, False, False, False),   # conserved within the tolerance: no warning
    (0.26, 0.78, True, True, True),     # AttnLRP's softmax absorbs two thirds: said, with the cp rule offered
    (0.5, 1.0, False, True, False),     # a CNN whose epsilon absorbs half: said, no transformer advice
    (0.1, 0.0, False, True, False),     # no logit to compare with
])
def test_lrp_conservation_line_says_when_it_is_weak(total, logit, attn, weak, cp_hint):
    from core.attribution.base import Attribution
    from core.attribution.view import metric_lines

    notes = ("ViT, AttnLRP: softmax by gradient x input",) if attn else ("zplus (convolutions)",)
    attr = Attribution(map=torch.zeros(1, 4, 4), raw=None, method="lrp", target=[0], seconds=0.0, notes=notes,
                       metrics={"relevance_sum": (total,), "logit": (logit,)})
    (line,) = metric_lines(attr)
    assert ("Weakly conserved" in line) == weak and ("cp rule" in line) == cp_hint
    assert ("AttnLRP's softmax" in line) == attn
    assert (f"{total / logit:.0%} conserved" if logit else "n/a conserved") in line
