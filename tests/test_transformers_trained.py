"""A tiny ViT and a tiny Swin trained here (seconds on a CPU) on a task whose class is decided by one marked patch:
the class-specific maps must point at that patch (pointing game), and plain rollout must not depend on the class.

The pointing game is scored per patch (the 8×8 cell holding most of the map's absolute mass), since the question is
which patch decided, not which pixel. Grad-CAM's score on these models depends on the training seed (see
docs/transformers.md), so its test records the score without making the suite depend on it.
"""
from __future__ import annotations

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from core.attribution import attribute
from core.model import wrap

SIDE, PATCH, CLASSES = 32, 8, 3
CELLS = SIDE // PATCH


def marked(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (n, 3, 32, 32) in [0, 1], class (n,), marked cell (n,)): dim noise, and at one random cell an 8×8
    black-and-white pattern naming the class (horizontal stripes, vertical stripes, checkerboard). Every class has
    its own pattern at the one bright patch, so none can be told by the absence of the others' evidence elsewhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIDE, SIDE, generator=g) * 0.4
    y = torch.randint(0, CLASSES, (n,), generator=g)
    cell = torch.randint(0, CELLS * CELLS, (n,), generator=g)
    r, c = torch.meshgrid(torch.arange(PATCH), torch.arange(PATCH), indexing="ij")
    patterns = torch.stack([(r // 2) % 2, (c // 2) % 2, (r // 2 + c // 2) % 2]).float()
    for i in range(n):
        row, col = divmod(int(cell[i]), CELLS)
        x[i, :, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] = patterns[y[i]]
    return x, y, cell


def trained(net: torch.nn.Module, steps: int = 300):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is many times faster on a shared machine
    try:
        return _train(net, steps)
    finally:
        torch.set_num_threads(threads)


def _train(net: torch.nn.Module, steps: int):
    model = wrap(net, name=type(net).__name__, input_size=SIDE)
    params = list(model.net.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    model.net.train()
    for step in range(steps):
        x, y, _ = marked(64, seed=1000 + step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    model.net.eval()
    x, y, _ = marked(128, seed=7)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy > 0.95, f"{type(net).__name__} did not learn the task ({accuracy:.2f})"
    return model


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return trained(VisionTransformer(img_size=SIDE, patch_size=PATCH, embed_dim=64, depth=2, num_heads=4,
                                     mlp_ratio=2.0, num_classes=CLASSES))


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return trained(SwinTransformer(img_size=SIDE, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2),
                                   num_heads=(1, 2), mlp_ratio=2.0, num_classes=CLASSES))


def pointing(model, method: str, **options) -> float:
    """Share of test images whose map peaks inside the marked patch (the true class explained)."""
    x, y, cell = marked(40, seed=99)
    maps = attribute(model, x, y, method=method, **options).map
    assert maps.shape == (40, SIDE, SIDE) and torch.isfinite(maps).all()
    mass = maps.abs().view(40, CELLS, PATCH, CELLS, PATCH).sum((2, 4)).flatten(1)
    return float((mass.argmax(1) == cell).float().mean())


@pytest.mark.parametrize("method", ["grad-rollout", "saliency", "input-x-gradient", "integrated-gradients"])
@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_class_maps_point_at_the_marked_patch(arch, method, request):
    model = request.getfixturevalue(arch)
    assert pointing(model, method) >= 0.9


@pytest.mark.parametrize("rule", ["zplus", "epsilon", "cp"])
@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_lrp_points_at_the_marked_patch(arch, rule, request):
    """AttnLRP (z+ or epsilon on the linear layers) and CP-LRP."""
    assert pointing(request.getfixturevalue(arch), "lrp", rule=rule) >= 0.9


@pytest.mark.xfail(strict=False, reason="Grad-CAM's pointing score on tiny transformers varies with the seed")
@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_gradcam_points_at_the_marked_patch(arch, request):
    assert pointing(request.getfixturevalue(arch), "gradcam") >= 0.9


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_plain_rollout_is_the_same_for_every_class(arch, request):
    model = request.getfixturevalue(arch)
    x, _, _ = marked(4, seed=5)
    maps = [attribute(model, x, [k] * 4, method="rollout").map for k in range(CLASSES)]
    assert all(torch.equal(maps[0], m) for m in maps[1:])
    grads = [attribute(model, x, [k] * 4, method="grad-rollout").map for k in range(CLASSES)]
    assert not torch.allclose(grads[0], grads[1])
