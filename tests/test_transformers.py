"""Vision transformers: token layers in the catalogue, attention rollout against a direct NumPy rollout, what does
not apply, and the explicit-attention copy that never changes the shared model (tiny random models, seconds)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from core.attribution import NotApplicable, attribute
from core.attribution.rollout import attention_steps
from core.catalogue import LayerKind, Layout, catalogue, default_layer, find_layer, layer_outputs, to_nchw
from core.hooks import hook_count
from core.index.store import layer_from_json, layer_to_json
from core.model import wrap
from core.tokens import attention_modules


def tiny(arch: str, seed: int = 0, sharpen: float = 1.0, **kwargs):
    """A random timm transformer at 64×64 input; ``sharpen`` scales q/k weights so attention is not uniform."""
    torch.manual_seed(seed)
    net = timm.create_model(arch, pretrained=False, img_size=64, num_classes=5, **kwargs)
    with torch.no_grad():
        for _name, attn in attention_modules(net):
            attn.qkv.weight.mul_(sharpen)
    return wrap(net, name=arch, input_size=64)


@pytest.fixture(scope="module")
def vit():
    return tiny("vit_tiny_patch16_224", depth=3, sharpen=20.0)


@pytest.fixture(scope="module")
def deit():
    return tiny("deit_tiny_distilled_patch16_224", depth=2, sharpen=20.0)


@pytest.fixture(scope="module")
def swin():
    return tiny("swin_tiny_patch4_window7_224", window_size=4, embed_dim=16, depths=(2, 2, 2),
                num_heads=(1, 2, 4), sharpen=20.0)


def test_vit_tokens_are_listed_over_the_patch_grid_with_the_class_token_apart(vit):
    layers = {l.name: l for l in catalogue(vit)}
    assert layers["patch_embed"].layout is Layout.NLC and layers["patch_embed"].prefix == 0
    for b in range(3):
        block = layers[f"blocks.{b}"]
        assert (block.kind, block.layout, block.grid, block.prefix, block.channels) == \
            (LayerKind.BLOCK, Layout.NLC, (4, 4), 1, 192)
        assert block.feature and block.receptive_field == 16 and block.reduction == 16
        assert block.box(1, 2, 64, 64) == (32, 16, 48, 32)  # the token's own patch
        for part in ("norm1", "attn", "norm2", "mlp", "mlp.fc1"):
            assert layers[f"blocks.{b}.{part}"].layout is Layout.NLC, part
    assert layers["blocks.1.attn"].kind is LayerKind.ATTN and layers["blocks.1.mlp.fc1"].channels == 768
    assert default_layer(vit).name == "blocks.1"  # class-token head: the last block's patch tokens have no gradient
    x = torch.rand(2, 3, 64, 64)
    prefix: dict = {}
    outs = layer_outputs(vit, x, [layers["blocks.2"], layers["blocks.0.mlp"]], prefix=prefix)
    assert outs["blocks.2"].shape == (2, 192, 4, 4) and prefix["blocks.2"].shape == (2, 1, 192)
    with torch.no_grad():
        tokens = vit.net.blocks[:3](vit.net._pos_embed(vit.net.patch_embed(vit.normalise(x))))
    assert torch.allclose(outs["blocks.2"][:, :, 1, 2], tokens[:, 1 + 4 + 2], atol=1e-5)  # row-major patches
    assert torch.allclose(prefix["blocks.2"][:, 0], tokens[:, 0], atol=1e-5)
    assert hook_count(vit) == 0


def test_deit_keeps_class_and_distillation_tokens_apart(deit):
    block = find_layer(deit, "blocks.1")
    assert (block.layout, block.prefix, block.grid) == (Layout.NLC, 2, (4, 4))
    t = torch.arange(2 * 18 * 3, dtype=torch.float32).view(2, 18, 3)
    assert torch.equal(to_nchw(t, block)[:, :, 0, 0], t[:, 2])


def test_swin_stages_are_nhwc_grids_and_its_mlp_tokens_nlc(swin):
    layers = {l.name: l for l in catalogue(swin)}
    for i, (grid, channels) in enumerate([(16, 16), (8, 32), (4, 64)]):
        stage = layers[f"layers.{i}"]
        assert (stage.layout, stage.grid, stage.channels, stage.receptive_field) == \
            (Layout.NHWC, (grid, grid), channels, 64 // grid)
        assert layers[f"layers.{i}.blocks.1"].kind is LayerKind.BLOCK
        mlp = layers[f"layers.{i}.blocks.0.mlp"]
        assert (mlp.layout, mlp.prefix, mlp.grid) == (Layout.NLC, 0, (grid, grid))
    assert layers["layers.1.downsample"].kind is LayerKind.DOWNSAMPLE
    assert not any("attn" in name for name in layers)  # window attention is per window, not a map of the image
    out = layer_outputs(swin, torch.rand(1, 3, 64, 64), [layers["layers.1.blocks.0.mlp"], layers["layers.2"]])
    assert out["layers.1.blocks.0.mlp"].shape == (1, 32, 8, 8) and out["layers.2"].shape == (1, 64, 4, 4)


def test_convnext_v2_grn_blocks_stay_maps(convnext_atto):
    model = wrap(timm.create_model("convnextv2_atto", pretrained=False, num_classes=5), input_size=64)
    layers = {l.name: l for l in catalogue(model)}
    assert [l.name for l in layers.values() if l.feature] == [f"stages.{i}" for i in range(4)]
    grn = layers["stages.1.blocks.0.mlp.grn"]  # scaled by a global statistic, still a map of the image
    assert (grn.channels, grn.grid) == (320, (8, 8))
    assert layers["stages.1"].receptive_field == {l.name: l for l in catalogue(convnext_atto)}["stages.1"].receptive_field


def test_index_manifests_written_before_token_layers_still_read(vit):
    layer = find_layer(vit, "blocks.0")
    assert layer_from_json(layer_to_json(layer)) == layer
    old = layer_to_json(find_layer(vit, "patch_embed.proj"))
    old.pop("prefix")
    assert layer_from_json(old).prefix == 0


def numpy_rollout(steps, readout: np.ndarray, merges) -> np.ndarray:
    """Abnar & Zuidema's rollout by full matrices: R = Π (0.5 mean_heads(A) + 0.5 I), then readout @ R, with
    Swin's windows scattered into the full matrix and patch merging as an averaging matrix."""
    total = None
    for k, step in enumerate(steps):
        probs = step.probs.numpy().astype(np.float64)
        h, w = step.grid
        length = step.prefix + h * w
        if step.window is None:
            a = probs[0].mean(0)
        else:
            a = np.zeros((length, length))
            idx = np.roll(np.arange(length).reshape(h, w), (-step.shift[0], -step.shift[1]), axis=(0, 1))
            wh, ww = step.window
            windows = [idx[r:r + wh, c:c + ww].ravel() for r in range(0, h, wh) for c in range(0, w, ww)]
            for win, p in zip(windows, probs):
                a[np.ix_(win, win)] = p.mean(0)
        layer = 0.5 * a + 0.5 * np.eye(length)
        if k in merges:  # tokens of the previous grid merged 2×2 into this one
            ph, pw = steps[k - 1].grid
            m = np.zeros((length, ph * pw))
            for r in range(ph):
                for c in range(pw):
                    m[(r // 2) * w + c // 2, r * pw + c] = 0.25
            layer = layer @ m
        total = layer if total is None else layer @ total
    return readout @ total


def test_rollout_agrees_with_numpy_on_vit(vit):
    x = torch.rand(1, 3, 64, 64)
    steps = attention_steps(vit, x)
    assert len(steps) == 3 and steps[0].probs.shape == (1, 3, 17, 17)
    assert float(steps[0].probs.max()) > 0.5  # sharpened: far from uniform, so the test can fail
    readout = np.eye(17)[0]
    expected = numpy_rollout(steps, readout, merges=())[1:].reshape(4, 4)
    got = attribute(vit, x, method="rollout").grid[0].double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_rollout_agrees_with_numpy_on_swin_shifted_windows_and_patch_merging(swin):
    x = torch.rand(1, 3, 64, 64)
    steps = attention_steps(swin, x)
    assert [s.grid for s in steps] == [(16, 16)] * 2 + [(8, 8)] * 2 + [(4, 4)] * 2
    assert [s.shift for s in steps[:2]] == [(0, 0), (2, 2)]
    readout = np.full(16, 1 / 16)
    expected = numpy_rollout(steps, readout, merges=(2, 4)).reshape(16, 16)
    got = attribute(swin, x, method="rollout").grid[0].double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    assert got.sum() == pytest.approx(1.0, abs=1e-5)  # row-stochastic all the way: the weights sum to one


def test_rollout_is_class_agnostic_and_grad_rollout_is_not(vit, deit):
    x = torch.rand(1, 3, 64, 64)
    for model in (vit, deit):
        maps = [attribute(model, x, k, method="rollout").map for k in range(5)]
        assert all(torch.equal(maps[0], m) for m in maps[1:])
        grads = [attribute(model, x, k, method="grad-rollout").map for k in range(3)]
        assert not torch.allclose(grads[0], grads[1]) and all(torch.isfinite(g).all() for g in grads)
        assert grads[0].shape == (1, 64, 64) and float(grads[0].min()) >= 0


def test_rollout_on_a_cnn_is_refused_with_its_reason(convnext_atto):
    for method in ("rollout", "grad-rollout"):
        with pytest.raises(NotApplicable, match="no attention layers"):
            attribute(convnext_atto, torch.rand(1, 3, 64, 64), method=method)


def test_cam_on_transformer_heads():
    model = tiny("vit_tiny_patch16_224", depth=1, global_pool="avg", fc_norm=True)
    a = attribute(model, torch.rand(1, 3, 64, 64), method="cam")
    logit = a.metrics["logit"][0]
    assert a.grid.shape == (1, 4, 4) and float(a.grid.mean()) + a.metrics["constant"][0] == pytest.approx(logit, abs=1e-4)
    with pytest.raises(NotApplicable, match="class token"):
        attribute(tiny("vit_tiny_patch16_224", depth=1), torch.rand(1, 3, 64, 64), method="cam")


class CountAttention(TorchFunctionMode):
    """Counts fused attention kernel calls on this thread (modes are per thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.fused = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.fused += 1
        return func(*args, **(kwargs or {}))


# what one thread explains while another runs plain forwards: rollout switches its private copy to the explicit
# attention path; LRP (AttnLRP and CP-LRP) hooks its own prepared copy
EXPLANATIONS = {"rollout": (("grad-rollout", 0, {}), ("rollout", None, {})),
                "lrp": (("lrp", 0, {}), ("lrp", 1, {"rule": "cp"}))}


@pytest.mark.parametrize("explanations", list(EXPLANATIONS))
def test_explaining_never_changes_another_threads_fused_attention(explanations):
    """While one thread explains, another thread's plain forwards of the shared model keep the fused attention
    kernel and their outputs, and no hook is left behind."""
    model = tiny("vit_tiny_patch16_224", depth=2)
    mods = [m for _n, m in attention_modules(model.net)]
    if not all(m.fused_attn for m in mods):
        pytest.skip("timm's fused attention is disabled in this environment")
    x = torch.rand(1, 3, 64, 64)
    expected = model(x)
    stop, errors, runs = threading.Event(), [], [0]

    def explain():
        try:
            while not stop.is_set():
                for method, target, options in EXPLANATIONS[explanations]:
                    attribute(model, x, target, method=method, **options)
                runs[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
    worker = threading.Thread(target=explain)
    worker.start()
    try:
        for _ in range(30):
            with CountAttention() as count:
                out = model(x)
            assert count.fused == 2 and all(m.fused_attn for m in mods)
            assert torch.allclose(out, expected, atol=1e-5)
    finally:
        stop.set()
        worker.join()
    assert not errors and runs[0] > 0
    assert hook_count(model) == 0


def test_sidebar_names_are_classifiers_with_pretrained_tags():
    from core.model import CONVNEXT_V2_MODELS, TRANSFORMER_MODELS, default_pretrained_name
    from ui.sidebar import _model_widgets  # noqa: F401  (the sidebar imports the lists)

    for name in (*TRANSFORMER_MODELS, *CONVNEXT_V2_MODELS):
        tagged = default_pretrained_name(name)
        assert tagged and timm.models.get_pretrained_cfg(tagged).num_classes > 0, name


def test_random_headless_architecture_gets_a_head():
    from core.model import load_model

    model = load_model("eva02_tiny_patch14_224", "random")
    assert model.card.num_classes == 1000 and "head" in model.card.weights_detail
