"""CAM and LRP: theory-derived properties on tiny seeded models."""
from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn

from tests.conftest import make_tiny
from core.attribution.cam import NotApplicable, cam
from core.hooks import capture, hook_count
from core.attribution.lrp import FirstRule, LrpRule, lrp, prepare
from core.model import wrap


def _x(n=2, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------------------- CAM

def test_cam_equals_gradcam_at_the_last_layer_on_gap_linear(resnet_tiny):
    """Grad-CAM's channel weights are mean_xy d logit / dA = w_kc / (h w) on a GAP + linear head, so
    Grad-CAM = ReLU(CAM) / (h w)."""
    x = _x()
    before = x.clone()
    result = cam(resnet_tiny, x, target=[3, 7])
    assert torch.equal(x, before)
    xg = x.clone().requires_grad_(True)
    with capture(resnet_tiny, {"l4": resnet_tiny.layer("layer4")}, detach=False) as out:
        logits = resnet_tiny(xg)
    chosen = logits[[0, 1], [3, 7]]
    (grad,) = torch.autograd.grad(chosen.sum(), out["l4"])
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    gradcam = torch.relu((alpha * out["l4"]).sum(1)).detach()
    h, w = gradcam.shape[-2:]
    assert torch.allclose(torch.relu(result.grid) / (h * w), gradcam, atol=1e-6, rtol=1e-4)
    assert result.notes[0].startswith("exact") and result.target == [3, 7]
    assert result.map.shape == (2, 64, 64)
    assert torch.allclose(result.grid.mean((1, 2)) + torch.tensor(result.metrics["constant"]),
                          chosen.detach(), atol=1e-5)


def test_cam_linearises_convnext_layernorm_exactly_at_the_image(convnext_atto):
    x = _x()
    result = cam(convnext_atto, x)
    with torch.no_grad():
        logits = convnext_atto(x)
    assert result.target == [int(i) for i in logits.argmax(1)]
    assert result.notes[0].startswith("linearised") and "LayerNorm" in result.notes[0]
    assert torch.allclose(torch.tensor(result.metrics["logit"]), logits.max(1).values, atol=1e-5)
    assert torch.allclose(result.grid.mean((1, 2)) + torch.tensor(result.metrics["constant"]), logits.max(1).values,
                          atol=1e-4)


def test_cam_refuses_heads_that_are_not_pool_then_linear():
    model = make_tiny("mobilenetv3_small_050", num_classes=10)
    with pytest.raises(NotApplicable, match="not global average pooling"):
        cam(model, _x(1))
    hidden = make_tiny("convnext_atto", num_classes=10, head_hidden_size=32)
    with pytest.raises(NotApplicable, match="hidden layer"):
        cam(hidden, _x(1))


# -------------------------------------------------------------------------------------------------- LRP

def _without_biases(model):
    """A copy of ``model`` with every bias, LayerNorm shift and BatchNorm mean set to zero: LRP rules that
    conserve relevance must then give ``relevance_sum == logit``."""
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
    return wrap(net, mean=tuple(model.card.mean), std=tuple(model.card.std), input_size=64)


@pytest.fixture(scope="module")
def unbiased(convnext_atto, resnet_tiny):
    # timm's layer scale of 1e-6 switches a random ConvNeXt's blocks off: the live copy runs them (GELU, LayerNorm)
    live = make_tiny("convnext_atto", num_classes=10, ls_init_value=1.0)
    return {"convnext_atto": _without_biases(convnext_atto), "convnext_atto_live": _without_biases(live),
            "resnet18": _without_biases(resnet_tiny)}


@pytest.mark.parametrize("arch,rule,first", [("convnext_atto", r, f) for r in (LrpRule.ZPLUS, LrpRule.EPSILON)
                                             for f in FirstRule]
                         # z+ drops what an output with no positive contribution carries once the blocks are live
                         + [("convnext_atto_live", LrpRule.EPSILON, f) for f in FirstRule]
                         + [("resnet18", LrpRule.ZPLUS, FirstRule.ZB), ("resnet18", LrpRule.EPSILON, FirstRule.FLAT)])
def test_lrp_conserves_relevance_without_biases(arch, rule, first, unbiased):
    """Stated tolerance: |relevance_sum - logit| <= 1e-3 |logit| (float32, LRP-epsilon with epsilon 1e-9)."""
    r = lrp(unbiased[arch], _x(1), target=1, rule=rule, first=first, epsilon=1e-9)
    for s, logit in zip(r.metrics["relevance_sum"], r.metrics["logit"]):
        assert abs(s - logit) <= 1e-3 * abs(logit) + 1e-6
    assert r.map.shape == (1, 64, 64) and torch.allclose(r.map, r.raw.sum(1))


def test_lrp_zero_equals_gradient_times_input_on_relu_nets(resnet_tiny):
    """LRP-0 on a ReLU network (biases included) equals gradient x input (Ancona et al. 2018)."""
    x = _x()
    r = lrp(resnet_tiny, x, target=4, rule=LrpRule.EPSILON, first=FirstRule.EPSILON, epsilon=1e-9)
    xn = resnet_tiny.normalise(x).requires_grad_(True)
    (g,) = torch.autograd.grad(resnet_tiny.net(xn)[:, 4].sum(), xn)
    expected = (xn * g).detach()
    assert torch.allclose(r.raw, expected, atol=1e-5 * float(expected.abs().max()), rtol=1e-3)


def test_batchnorm_is_folded_without_changing_the_function(resnet_tiny):
    prep = prepare(resnet_tiny)
    assert prep.folded == 20  # every BatchNorm of resnet18 follows a convolution
    x = _x()
    with torch.no_grad():
        assert torch.allclose(prep.net(resnet_tiny.normalise(x)), resnet_tiny(x), atol=1e-4)
    # the shared model is untouched
    assert not torch.allclose(resnet_tiny.net.bn1.running_var, torch.ones(64) - resnet_tiny.net.bn1.eps)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv3_small_050"])
def test_prepared_copy_shares_unfolded_tensors_and_never_writes_the_model(arch):
    """The prepared copy shares every tensor the folding leaves alone (no second copy of the weights) and writes
    none: the model's state is bit-identical after LRP, and a second call gives the first call's map."""
    model = make_tiny(arch, num_classes=10, seed=3)
    before = _state(model)
    x = _x(1)
    first = lrp(model, x, rule=LrpRule.ZPLUS)
    prep = prepare(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    own = {id(t) for t in list(model.net.parameters()) + list(model.net.buffers())}
    folded = {m for m in prep.net.modules() if isinstance(m, nn.Conv2d) and id(m.weight) not in own}
    assert prep.folded > 0 and len(folded) == prep.folded  # only the folded convolutions have new tensors
    kept = [t for m in prep.net.modules() if m not in folded for t in m.parameters(recurse=False)]
    assert kept and all(id(t) in own for t in kept)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prep.net.modules())  # folded ones are gone
    again = lrp(model, x, rule=LrpRule.ZPLUS)
    assert torch.equal(again.raw, first.raw)
    eps = lrp(model, x, rule=LrpRule.EPSILON)
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert not torch.equal(eps.raw, first.raw)


def test_two_threads_preparing_at_once_build_one_copy():
    model = make_tiny("resnet18", num_classes=10, seed=4)
    got: list = []
    start = threading.Barrier(2)

    def work():
        start.wait()
        got.append(prepare(model))
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 2 and got[0] is got[1]
    assert hook_count(model) == 0 and hook_count(got[0].net) == 0


def test_prepare_traces_nets_that_refuse_the_small_trace_at_their_own_size():
    """A net whose head only accepts its own input size (a Linear on the flat map) is traced at that size."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 80 * 80, 3))
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    net.num_classes = 3
    model = wrap(net, input_size=80)
    prep = prepare(model)
    assert prep.folded == 1 and prep.first is prep.net[0]
    x = _x(1, 80)
    with torch.no_grad():
        assert torch.allclose(prep.net(model.normalise(x)), model(x), atol=1e-5)


def test_zplus_and_epsilon_differ_and_logit_reported(convnext_atto):
    x = _x()
    a = lrp(convnext_atto, x, rule=LrpRule.EPSILON)
    b = lrp(convnext_atto, x, rule=LrpRule.ZPLUS)
    with torch.no_grad():
        top = convnext_atto(x).max(1).values
    assert torch.allclose(torch.tensor(a.metrics["logit"]), top, atol=1e-4)
    assert not torch.allclose(a.map, b.map)
    assert a.metrics["relevance_sum"] == pytest.approx([float(v) for v in a.raw.flatten(1).sum(1)], rel=1e-5)


def test_lrp_refuses_layers_without_a_rule():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softplus(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(NotApplicable, match="Softplus"):
        lrp(wrap(net, input_size=32), _x(1, 32))


def test_lrp_no_hooks_left_inputs_untouched_and_errors_clean(convnext_atto):
    x = _x()
    before = x.clone()
    lrp(convnext_atto, x)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="out of range"):
        lrp(convnext_atto, x, target=99)
    assert hook_count(convnext_atto) == 0 and hook_count(prepare(convnext_atto).net) == 0


def test_lrp_threads_on_a_shared_model_give_serial_results(convnext_atto):
    xs = [_x(1, seed=s) for s in (1, 2)]
    serial = [lrp(convnext_atto, x, rule=LrpRule.ZPLUS).map for x in xs]
    out = {}

    def work(i):
        out[i] = lrp(convnext_atto, xs[i], rule=LrpRule.ZPLUS).map
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert torch.equal(out[i], serial[i])


def test_lrp_trace_stops_at_the_pixels_layer_when_there_is_nothing_to_fold(monkeypatch, convnext_atto, resnet_tiny):
    """The preparation's trace finds the layer on the pixels; a net without BatchNorm is traced no further (its
    last convolution never runs), a net with BatchNorm is traced whole (its conv -> BatchNorm pairs folded)."""
    from core.attribution import lrp_prepare as lrp_module

    original, ran = lrp_module._trace, []

    def watched(net, shape, device):  # net: the private copy being prepared
        last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
        handle = last.register_forward_hook(lambda *_: ran.append(1))
        try:
            return original(net, shape, device)
        finally:
            handle.remove()

    monkeypatch.setattr(lrp_module, "_trace", watched)
    for model, stem, folds in ((convnext_atto, "stem.0", False), (resnet_tiny, "conv1", True)):
        lrp_module._cache.pop(model, None)
        ran.clear()
        prep = prepare(model)
        assert {m: n for n, m in prep.net.named_modules()}[prep.first] == stem
        assert (prep.folded > 0) == folds and bool(ran) == folds, (stem, prep.folded, ran)
        lrp_module._cache.pop(model, None)  # the next test prepares it unwatched


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 6, 3, padding=1), nn.Linear(4, 6)])
def test_zplus_on_a_non_negative_input_is_one_product_with_the_same_value_and_gradient(layer):
    from core.attribution.lrp import _plus_from
    torch.manual_seed(0)
    shape = (2, 4, 5, 5) if isinstance(layer, nn.Conv2d) else (2, 7, 4)
    a = torch.relu(torch.randn(shape, dtype=torch.float64)).requires_grad_(True)  # zeros included, as after ReLU
    layer = layer.double()
    out = layer(a)
    fast, denominator = _plus_from(layer, a, out, {})
    w = layer.weight.detach()
    conv = (lambda t, k: torch.nn.functional.conv2d(t, k, padding=1)) if isinstance(layer, nn.Conv2d) else (
        lambda t, k: torch.nn.functional.linear(t, k))
    signed = conv(a.abs(), w.abs()) + conv(a, w)  # a w + |a| |w|: the formula for inputs of either sign
    assert torch.allclose(fast, signed, rtol=0, atol=1e-12)
    assert type(fast.grad_fn).__name__ != "AddBackward0"  # one product: no sum of two
    assert torch.equal(denominator == torch.inf, fast.detach() == 0)  # no positive contribution: factor 0
    g = torch.randn_like(fast)
    (grad_fast,) = torch.autograd.grad(fast, a, g)
    (grad_signed,) = torch.autograd.grad(signed, a, g)
    positive = a.detach() > 0  # where a == 0 the relevance a * grad is 0 either way
    assert torch.allclose(grad_fast[positive], grad_signed[positive], rtol=0, atol=1e-12)
    mixed, _ = _plus_from(layer, a - 0.5, layer(a - 0.5), {})
    assert type(mixed.grad_fn).__name__ == "AddBackward0"  # signed: the two-product formula


def test_zplus_rounding_of_cancelling_terms_is_not_divided_by():
    """A unit whose contributions are all negative has z+ = 0, but ``a w + |a| |w|`` in float32 leaves
    rounding: its relevance must be dropped (as in exact arithmetic), not divided by that rounding."""
    from core.attribution.lrp import ROUNDING, _plus_from
    torch.manual_seed(0)
    layer = nn.Linear(512, 2)
    with torch.no_grad():
        layer.weight[0] = torch.rand(512) + 0.1  # unit 0: w > 0, and a < 0 below: every contribution negative
        layer.bias.fill_(3.0)
    a = -(torch.rand(1, 3, 512) + 0.1)
    zp2, denominator = _plus_from(layer, a, layer(a), {})
    magnitude = (a.abs() @ layer.weight.abs().T)[..., 0]
    assert (zp2[..., 0].abs() < magnitude * ROUNDING).all()  # what is left of z+ = 0 is rounding
    assert (denominator[..., 0] == torch.inf).all() and (denominator[..., 1] < torch.inf).all()


def test_lrp_float32_equals_float64_on_the_trained_embedded_model(embedded, cat_input):
    """A trained ReLU6 network has many units with no positive contribution but a bias: z+ must not amplify
    float32 rounding there (before the fix, float32 was off float64 by 46 % of the map's largest value)."""
    from core.model import load_model
    x = cat_input.tensor[None]
    single = lrp(embedded, x).raw.double()
    double = lrp(load_model("embedded").double(), x.double()).raw
    assert (single - double).abs().max() <= 1e-3 * double.abs().max()
    assert single.sum().item() == pytest.approx(double.sum().item(), rel=1e-4)
