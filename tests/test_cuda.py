"""Every technique with the model on a CUDA GPU (skipped on machines without one)."""
from __future__ import annotations

import pytest
import torch

from core.attribution.registry import REGISTRY, attribute
from core.perturbation.masks import extremal_perturbation, meaningful_perturbation
from tests.conftest import make_tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.fixture(scope="module")
def on_gpu():
    m = make_tiny("convnext_atto", seed=1, num_classes=10, ls_init_value=1.0).to("cuda")
    return m, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", [m for m in REGISTRY if m not in ("rollout", "grad-rollout")])  # a CNN here
def test_every_attribution_runs_on_cuda_and_returns_cpu(on_gpu, method):
    model, x = on_gpu
    # SmoothGrad without noise: a CUDA generator draws other numbers than the CPU's (the noise path: below)
    opts = {"smoothgrad": {"samples": 4, "noise": 0.0, "precision": "fp32"}, "integrated-gradients": {"steps": 4},
            "occlusion": {"window": 16, "stride": 16}}.get(method, {})
    r = attribute(model, x, 0, method=method, **opts)
    assert r.map.device.type == "cpu" and torch.isfinite(r.map).all()
    cpu = attribute(make_tiny("convnext_atto", seed=1, num_classes=10, ls_init_value=1.0), x, 0, method=method, **opts)
    # TF32 / different kernels: agreement to a few per cent of the map's scale
    assert (r.map - cpu.map).abs().max() <= 0.05 * cpu.map.abs().max() + 1e-6


@pytest.mark.parametrize("precision", ["fp16", "bf16", "auto"])
def test_smoothgrad_reduced_precision_on_cuda(on_gpu, precision):
    model, x = on_gpu
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    fp32 = attribute(model, x, 0, method="smoothgrad", samples=8, precision="fp32")
    r = attribute(model, x, 0, method="smoothgrad", samples=8, precision=precision)
    assert r.options["precision"] in (("fp32", "fp16", "bf16") if precision == "auto" else (precision,))
    assert r.map.device.type == "cpu" and torch.isfinite(r.map).all() and r.map.abs().max() > 0
    # the same noise draws (the generator is on the device); autocast rounds to 8-11 bits per operation
    assert float(torch.corrcoef(torch.stack([r.map.flatten(), fp32.map.flatten()]))[0, 1]) >= 0.98


def test_masks_run_on_cuda_and_return_cpu(on_gpu):
    model, x = on_gpu
    for r in (extremal_perturbation(model, x, 0, iterations=4), meaningful_perturbation(model, x, 0, iterations=4)):
        assert r.masks.device.type == "cpu" and torch.isfinite(r.masks).all()


def test_attack_runs_on_cuda_and_returns_cpu(on_gpu):
    from core.attack.attacks import attack

    model, x = on_gpu
    r = attack(model, x, None, steps=3, random_start=True, seed=0)
    assert r.adversarial.device.type == "cpu" and r.trajectory.loss.device.type == "cpu"
    # a perturbation within its budget (the random start is seeded on the CPU: the same on every device)
    assert float((r.adversarial - x).abs().max()) <= float(r.eps[0]) + 1e-6


def _cpu_input(x):  # inputs as the pages give them: decoded on the CPU
    return x.cpu()


def test_featurevis_runs_on_cuda_and_returns_cpu(on_gpu):
    from core.features.featurevis import Settings, interpolate, visualize

    model, _ = on_gpu
    for r in (visualize(model, "stages.1", 0, settings=Settings(steps=3, size=64, batch=2, diversity=0.1)),
              interpolate(model, "stages.1", 0, 1, frames=3, settings=Settings(steps=2, size=32))):
        assert r.images.device.type == "cpu" and torch.isfinite(r.images).all()


def test_filters_return_cpu(on_gpu):
    from core.features.filters import depthwise_kernels, depthwise_layers, first_layer_kernels

    model, _ = on_gpu
    for k in (first_layer_kernels(model), depthwise_kernels(model, depthwise_layers(model)[0])):
        assert k.tiles.device.type == "cpu" and k.weights.device.type == "cpu"


def test_net2vec_runs_on_cuda_and_returns_cpu(on_gpu):
    from core.features.net2vec import colour_concepts, net2vec

    model, _ = on_gpu
    xs = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    concepts = dict(list(colour_concepts(xs, size=16, min_fraction=0.0).items())[:2])
    for fit in net2vec(model, xs, "stages.1", concepts, size=16, iterations=10):
        assert fit.predicted.device.type == "cpu" and fit.weights.device.type == "cpu" and 0 <= fit.iou <= 1


def test_similarity_runs_on_cuda_and_returns_cpu(on_gpu):
    from core.features.similarity import layer_features, similarity_map

    model, x = on_gpu
    sim = similarity_map(layer_features(model, _cpu_input(x), "stages.1"), (1, 2))
    assert sim.map.device.type == "cpu" and float(sim.map[1, 2]) == 1.0


def test_index_builds_and_queries_on_cuda(on_gpu, tmp_path):
    import numpy as np
    from PIL import Image

    from core.index import build_index, channel_map

    model, x = on_gpu
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    r = build_index(model, tmp_path / "imgs", tmp_path / "idx", layers=["stages.1"], top_k=2, batch_size=2)
    assert len(r.index) == 5 and r.index.excited_by(model, _cpu_input(x), "stages.1", n=3)
    assert channel_map(model, _cpu_input(x), "stages.1", 0).device.type == "cpu"


def test_error_analysis_runs_on_cuda(on_gpu, tmp_path):
    import dataclasses

    import numpy as np
    from PIL import Image

    from core.errors.evaluate import evaluate
    from core.errors.explain import explain_mistake, separating_channels

    model, x = on_gpu
    rng = np.random.default_rng(0)
    for label in ("0", "1"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)).save(
                tmp_path / "set" / label / f"{i}.png")
    ev = evaluate(model, tmp_path / "set", use_cache=False)
    assert np.allclose(ev.probs.sum(1), 1, atol=1e-4)
    maps = explain_mistake(model, _cpu_input(x), 1, 0, methods={"gradcam": {}})
    assert all(np.isfinite(m).all() for m in maps.maps.values())
    ev = dataclasses.replace(ev, true=np.zeros(6, np.int64), predicted=np.array([1, 1, 0, 0, 0, 1], np.int64))
    assert len(separating_channels(model, ev, 0, 1, "stages.1", n=3).channels) == 3


def test_faithfulness_runs_on_cuda(on_gpu):
    from core.evaluation import evaluate

    model, x = on_gpu
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[16:40, 16:40] = True
    ev = evaluate(model, _cpu_input(x), 0, method="saliency", steps=4, mask=mask.numpy())
    assert ev.curves and ev.road and ev.randomisation and ev.pointing and not ev.skipped
    assert ev.map.device.type == "cpu" and ev.randomisation.maps.device.type == "cpu"
