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


@pytest.mark.parametrize("method", list(REGISTRY))
def test_every_attribution_runs_on_cuda_and_returns_cpu(on_gpu, method):
    model, x = on_gpu
    opts = {"smoothgrad": {"samples": 4}, "integrated-gradients": {"steps": 4},
            "occlusion": {"window": 16, "stride": 16}}.get(method, {})
    r = attribute(model, x, 0, method=method, **opts)
    assert r.map.device.type == "cpu" and torch.isfinite(r.map).all()
    cpu = attribute(make_tiny("convnext_atto", seed=1, num_classes=10, ls_init_value=1.0), x, 0, method=method, **opts)
    # TF32 / different kernels: agreement to a few per cent of the map's scale
    assert (r.map - cpu.map).abs().max() <= 0.05 * cpu.map.abs().max() + 1e-6


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
