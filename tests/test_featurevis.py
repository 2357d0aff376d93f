"""Feature visualisation, filter views and the ``visualize`` command."""
from __future__ import annotations

import json
import threading

import pytest
import torch

from core.features.featurevis import Objective, interpolate, measure, visualize
from core.features.optimisation import (FourierImage, Settings, _fused_transform, _stepwise_transform,
                                        robust_transform)
from core.features.filters import depthwise_kernels, depthwise_layers, first_layer_kernels, mosaic, weight_stats
from core.hooks import hook_count
from core.catalogue import find_layer, layer_output

QUICK = Settings(steps=2, size=64, coarse=0.0)


# ---------------------------------------------------------------------------------------- parameterisation

@pytest.mark.parametrize("fourier", [True, False])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("hw", [(32, 32), (33, 50)])
def test_parameterisation_round_trips(fourier, decorrelate, hw):
    torch.manual_seed(1)
    images = 0.05 + 0.9 * torch.rand(2, 3, *hw)
    param = FourierImage.from_images(images, fourier=fourier, decorrelate=decorrelate)
    with torch.no_grad():
        back = param()
    assert back.shape == images.shape
    assert torch.allclose(back, images, atol=1e-4)


def test_fourier_image_is_valid_rgb_and_spectrum_scaled():
    param = FourierImage(3, 40, 40, generator=torch.Generator().manual_seed(0), sd=1.0)
    img = param().detach()
    assert img.min() > 0 and img.max() < 1
    # 1/f scaling: the lowest non-zero frequency weighs more than the highest
    assert float(param.scale[0, 0, 0, 1, 0]) > float(param.scale[0, 0, 20, 20, 0])


def test_robust_transform_is_seeded_and_keeps_values_in_range():
    x = torch.rand(1, 3, 64, 64)
    a = robust_transform(x, Settings(), torch.Generator().manual_seed(3))
    b = robust_transform(x, Settings(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert abs(a.shape[-1] - (64 + 2 * 12 - 8 - 4)) <= 0


@pytest.mark.parametrize("hw", [(64, 64), (50, 70)])
def test_fused_transform_equals_the_stepwise_chain(hw):
    """One grid_sample = pad, jitter, scale/rotate, jitter: same values and input gradient, same random draws.

    The fused grid is computed from a different (composed) affine map, so its sampling coordinates differ by a
    few float32 ulps of a normalised coordinate (~1e-7) times half the side in pixels; a bilinear sample moves by
    at most that times the largest neighbour difference (1 for images in [0, 1]). Gradients: each input pixel
    collects at most 4 bilinear weights per output pixel it feeds (fewer than 2 outputs per input axis at scale
    >= 0.95), each weight off by the same coordinate error.
    """
    torch.manual_seed(0)
    coord = 16 * torch.finfo(torch.float32).eps * max(hw)
    for seed in range(4):
        x = torch.rand(2, 3, *hw, requires_grad=True)
        gen_a, gen_b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a, b = _fused_transform(x, Settings(), gen_a), _stepwise_transform(x, Settings(), gen_b)
        assert a.shape == b.shape == (2, 3, hw[0] + 12, hw[1] + 12)
        assert float((a - b).abs().max()) <= coord
        g = torch.randn_like(a)
        (ga,), (gb,) = torch.autograd.grad(a, x, g), torch.autograd.grad(b, x, g)
        assert float((ga - gb).abs().max()) <= 4 * 4 * coord * float(g.abs().max())
        assert torch.equal(gen_a.get_state(), gen_b.get_state())  # the same draws: the next step's are too
    assert not torch.equal(a, _fused_transform(x, Settings(), torch.Generator().manual_seed(99)))


# ---------------------------------------------------------------------------------------------- mechanics

def test_layer_output_matches_a_full_forward(convnext_atto):
    info = find_layer(convnext_atto, "stages.1")
    x = torch.rand(2, 3, 64, 64)
    from core.hooks import capture
    with capture(convnext_atto, {"s": convnext_atto.layer("stages.1")}) as out, torch.no_grad():
        convnext_atto(x)
    with torch.no_grad():
        stopped = layer_output(convnext_atto, x, info)
    with torch.enable_grad():  # the gradient path feature visualisation uses
        xg = x.clone().requires_grad_(True)
        layer_output(convnext_atto, xg, info, grad=True).sum().backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0
    assert torch.allclose(stopped, out["s"])
    assert hook_count(convnext_atto) == 0


def test_visualize_is_deterministic_and_leaves_no_hooks(convnext_atto):
    a = visualize(convnext_atto, "stages.1", 3, settings=QUICK)
    b = visualize(convnext_atto, "stages.1", 3, settings=QUICK)
    c = visualize(convnext_atto, "stages.1", 3, settings=Settings(steps=2, size=64, coarse=0.0, seed=1))
    assert a.images.shape == (1, 3, 64, 64) and 0 <= a.images.min() and a.images.max() <= 1
    assert torch.equal(a.images, b.images) and a.values == b.values
    assert not torch.equal(a.images, c.images)
    assert len(a.history) == 2 and not a.cancelled
    assert hook_count(convnext_atto) == 0
    # the reported value is a plain forward pass at model-input size, recomputed here independently
    assert a.values[0] == pytest.approx(float(measure(convnext_atto, a.images, "stages.1", 3)[0]), rel=1e-5)


def test_objective_rises_for_each_kind(convnext_atto):
    s = Settings(steps=8, size=64, coarse=0.0, lr=0.1)
    for objective, layer, ch in [(Objective.CHANNEL, "stages.2", 5), (Objective.UNIT, "stages.2", 5),
                                 (Objective.LOGIT, "", 2)]:
        v = visualize(convnext_atto, layer, ch, objective=objective, settings=s)
        assert v.history[-1] > v.history[0], objective
        if objective is not Objective.LOGIT:  # a random-init net's logits hardly depend on the image
            assert v.values[0] > v.baseline, objective


def test_coarse_phase_then_full_size(convnext_atto):
    v = visualize(convnext_atto, "stages.1", 0, settings=Settings(steps=6, size=64, coarse=0.5))
    assert v.images.shape[-1] == 64 and len(v.history) == 6


def test_cancel_returns_partial_result(convnext_atto):
    stop = threading.Event()
    seen = []

    def progress(fraction, message):
        seen.append(fraction)
        if len(seen) == 2:
            stop.set()
    v = visualize(convnext_atto, "stages.1", 0, settings=Settings(steps=50, size=64, coarse=0.0),
                  progress=progress, cancel=stop)
    assert v.cancelled and len(v.history) == 2 and v.images.shape == (1, 3, 64, 64)


def test_no_hooks_after_an_exception(convnext_atto):
    def boom(_f, _m):
        raise RuntimeError("stop here")
    with pytest.raises(RuntimeError, match="stop here"):
        visualize(convnext_atto, "stages.1", 0, settings=QUICK, progress=boom)
    assert hook_count(convnext_atto) == 0


def test_bad_requests_are_refused(convnext_atto):
    with pytest.raises(ValueError, match="not a valid channel"):
        visualize(convnext_atto, "stages.1", 10_000, settings=QUICK)
    with pytest.raises(KeyError):
        visualize(convnext_atto, "stages.99", 0, settings=QUICK)
    with pytest.raises(ValueError, match="class"):
        visualize(convnext_atto, "", 10, objective=Objective.LOGIT, settings=QUICK)


def test_diversity_batch_and_interpolation(convnext_atto):
    d = visualize(convnext_atto, "stages.2", 1, settings=Settings(steps=3, size=64, coarse=0, batch=2,
                                                                    diversity=1.0))
    assert d.images.shape[0] == 2 and len(d.values) == 2
    assert not torch.allclose(d.images[0], d.images[1])
    i = interpolate(convnext_atto, "stages.2", 1, 4, frames=3, settings=QUICK)
    assert i.images.shape[0] == 3 and i.channels == (1, 4)
    assert i.weights == ((1.0, 0.0), (0.5, 0.5), (0.0, 1.0))
    first = float(measure(convnext_atto, i.images[:1], "stages.2", 1)[0])
    assert i.values[0] == pytest.approx(first, rel=1e-5)


def test_threads_on_a_shared_model_give_serial_results(convnext_atto):
    serial = [visualize(convnext_atto, "stages.1", c, settings=QUICK).images for c in (0, 1)]
    results = {}

    def work(c):
        results[c] = visualize(convnext_atto, "stages.1", c, settings=QUICK).images
    threads = [threading.Thread(target=work, args=(c,)) for c in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(results[0], serial[0]) and torch.equal(results[1], serial[1])
    assert hook_count(convnext_atto) == 0


# --------------------------------------------------------------------------------------- real semantics

def test_generated_image_beats_random_and_every_sample_photo(embedded):
    """ImageNet EfficientNet-Lite0 at a 128-pixel input (cheap): the optimised image must excite the channel
    far more than noise and more than any of the 70 sample photos."""
    from core.images import load_image, preprocess, sample_images
    from core.model import wrap

    model = wrap(embedded.net, mean=embedded.card.mean, std=embedded.card.std, input_size=128)
    layer, channel = "blocks.4", 10
    v = visualize(model, layer, channel, settings=Settings(steps=24))
    photos = torch.stack([preprocess(load_image(p), model.card.data_config).tensor for p in sample_images()])
    best_photo = float(measure(model, photos, layer, channel).max())
    noise = float(measure(model, torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(0)),
                          layer, channel).max())
    assert v.values[0] > best_photo
    assert v.values[0] - noise > 5 * max(1e-6, abs(best_photo - noise))


# ------------------------------------------------------------------------------------------------ filters

def test_first_layer_kernels_are_the_patchify_stem_in_pixel_space(convnext_atto):
    k = first_layer_kernels(convnext_atto)
    w = convnext_atto.net.stem[0].weight
    assert k.layer == "stem.0" and k.tiles.shape == (40, 3, 4, 4) and k.stride == (4, 4)
    assert torch.allclose(k.weights, w / convnext_atto.std.view(1, 3, 1, 1))
    assert 0 <= k.tiles.min() and k.tiles.max() <= 1
    # each tile reaches the end of the range at its largest weight, and 0 maps to grey
    assert torch.allclose(k.tiles.flatten(1).sub(0.5).abs().amax(1), torch.full((40,), 0.5))
    assert torch.allclose(k.norms, k.weights.flatten(1).norm(dim=1))


def test_depthwise_kernels_and_stats(convnext_atto, resnet_tiny):
    names = depthwise_layers(convnext_atto)
    assert "stages.0.blocks.0.conv_dw" in names and len(names) == 2 + 2 + 6 + 2
    d = depthwise_kernels(convnext_atto, names[0])
    assert d.tiles.shape == (40, 1, 7, 7)
    with pytest.raises(ValueError, match="not a depthwise"):
        depthwise_kernels(convnext_atto, "stem.0")
    assert first_layer_kernels(resnet_tiny).tiles.shape == (64, 3, 7, 7)
    from core.features.filters import _tiles
    w = torch.randn(3, 3, 4, 4)
    w[1] *= 1e-8  # a dead kernel: grey, not its noise stretched to full contrast
    t = _tiles(w)
    assert torch.allclose(t[1], torch.full_like(t[1], 0.5), atol=1e-4) and t[0].sub(0.5).abs().max() == 0.5
    stats = weight_stats(convnext_atto)
    row = next(s for s in stats if s.name == "stem.0")
    w = convnext_atto.net.stem[0].weight
    assert row.mean == pytest.approx(float(w.mean())) and row.abs_max == pytest.approx(float(w.abs().max()))
    assert row.params == w.numel() + 40 and row.dead == 0
    m = mosaic(d.tiles, columns=8, zoom=2)
    assert m.shape == (3, 5 * 15 + 1, 8 * 15 + 1)


# ---------------------------------------------------------------------------------------------------- CLI

def test_cli_visualize(tmp_path, capsys):
    from core.cli import main

    code = main(["visualize", "--model", "convnext_atto", "--weights", "random", "--layer", "stages.0",
                 "--channel", "2", "--steps", "2", "--size", "64", "--out-dir", str(tmp_path), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"layer", "channel", "objective", "png", "seconds"} <= set(payload)
    assert payload["layer"] == "stages.0" and payload["channel"] == 2
    assert isinstance(payload["objective"], float) and isinstance(payload["seconds"], float)
    assert (tmp_path / payload["png"].rsplit("/", 1)[-1]).is_file()
    code = main(["visualize", "--model", "convnext_atto", "--weights", "random", "--layer", "stages.0",
                 "--channel", "999", "--steps", "2", "--out-dir", str(tmp_path), "--json"])
    assert code == 2 and "not a valid channel" in capsys.readouterr().err
    code = main(["visualize", "--model", "convnext_atto", "--weights", "random", "--channel", "0", "--rotate", "200",
                 "--out-dir", str(tmp_path)])
    assert code == 2 and "--rotate must be between 0 and 180 degrees" in capsys.readouterr().err


def test_visualize_flags_and_page_values_come_from_one_declaration():
    import argparse

    from core.features.featurevis_spec import DEFAULT_FRAMES, FEATUREVIS, INTERACTION, optimisation, target_of

    parser = argparse.ArgumentParser()
    FEATUREVIS.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --channel is required on the command line
    context = {"side": 224, "classes": 1000, "labels": (), "layer": "stages.3", "target": None}
    values = FEATUREVIS.from_args(parser.parse_args(["--channel", "7"]), context)
    assert values == FEATUREVIS.defaults(context, channel=7)  # what the page starts with, for channel 7
    assert target_of(values) == ("stages.3", 7) and optimisation(values) == Settings(size=224)
    logit = FEATUREVIS.from_args(parser.parse_args(["--channel", "281", "--objective", "logit", "--pixels",
                                                    "--size", "96"]), context)
    assert target_of(logit) == ("", 281) and "layer" not in logit and "channel" not in logit
    assert optimisation(logit) == Settings(size=96, fourier=False)
    frames = INTERACTION.defaults(context)
    assert optimisation(frames).batch == DEFAULT_FRAMES and (frames["a"], frames["b"]) == (0, 1)


def test_other_threads_forward_passes_run_through_while_optimising(convnext_atto):
    """A plain forward from another thread (as the home page's predict does) must not be stopped by our hook."""
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = convnext_atto(x)
    results, errors = [], []

    def other():
        try:
            for _ in range(5):
                with torch.no_grad():
                    results.append(convnext_atto(x))
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(e)
    t = threading.Thread(target=other)
    t.start()
    visualize(convnext_atto, "stages.0", 0, settings=QUICK)
    t.join()
    assert not errors and all(torch.allclose(r, expected) for r in results)


def test_cli_filters(tmp_path, capsys):
    from core.cli import main

    code = main(["filters", "--model", "convnext_atto", "--weights", "random", "--depthwise",
                 "stages.0.blocks.0.conv_dw", "--out-dir", str(tmp_path), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert payload["first_layer"] == {"layer": "stem.0", "kernels": 40, "size": [4, 4], "stride": [4, 4]}
    assert (tmp_path / "first_layer.png").is_file() and (tmp_path / "depthwise.png").is_file()
    assert any(r["name"] == "head.fc" for r in payload["layers"])
    assert main(["filters", "--model", "convnext_atto", "--weights", "random", "--depthwise", "stem.0",
                 "--json"]) == 2
    assert "not a depthwise" in capsys.readouterr().err
