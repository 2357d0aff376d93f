"""Concept relevance (core/concepts): conservation, agreement with zennit-crp, planted truth, the CLI contract."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from core.attribution.lrp import lrp
from core.attribution.lrp_layers import layer_pass
from core.concepts import channel_relevance, concepts, conditional_maps
from core.model import wrap
from tests.conftest import SAMPLES


def _x(n=2, side=64, seed=0):
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_name, layer", [("convnext_atto", "stages.0"), ("resnet_tiny", "layer1")])
def test_channels_conserve_the_layer_total_and_maps_sum_to_the_lrp_map(request, model_name, layer):
    model = request.getfixturevalue(model_name)
    x = _x(1, 32)
    c = concepts(model, x, 3, layer=layer, channels=list(range(c_count(model, layer))))
    independent = layer_pass(model, x, 3, layer=layer).relevance.double().flatten(1).sum(1)
    rel = c.relevance
    assert torch.allclose(rel.relevance.double().sum(1), independent, rtol=1e-4, atol=0)
    assert torch.allclose(rel.total.double(), independent, rtol=1e-4, atol=0)
    assert torch.allclose(rel.share.double().sum(1), torch.ones(1, dtype=torch.float64), atol=1e-4)
    full = lrp(model, x, 3).map
    assert c.maps.maps.shape == (1, rel.relevance.shape[1], 32, 32)
    assert (c.maps.maps.sum(1) - full).abs().max() <= 1e-4 * full.abs().max()
    # one batched backward or one map at a time: the same maps
    some = conditional_maps(model, x, 3, layer=layer, channels=[int(rel.order[0, 0]), (1, 2)])
    assert torch.allclose(some.maps[:, 0], c.maps.maps[:, int(rel.order[0, 0])], atol=1e-6)
    assert torch.allclose(some.maps[:, 1], c.maps.maps[:, 1] + c.maps.maps[:, 2], atol=1e-6)


def c_count(model, layer):
    from core.catalogue import find_layer
    return find_layer(model, layer).channels


def test_top_channels_are_sorted_and_the_contrast_is_the_logit_difference(convnext_atto):
    x = _x(1)
    c = concepts(convnext_atto, x, 3, layer="stages.2", top=4, contrast=5)
    rel = c.relevance
    top = rel.top(4)
    assert [t[0] for t in c.maps.channels[0]] == top
    assert all(rel.relevance[0, a] >= rel.relevance[0, b] for a, b in zip(top, top[1:]))
    with torch.no_grad():
        logits = convnext_atto(x)[0]
    assert rel.score[0] == pytest.approx(float(logits[3] - logits[5]), rel=1e-5)
    assert int(rel.contrast[0]) == 5 and int(rel.target[0]) == 3
    # the contrast's split is the difference of the two classes' splits (relevance is linear in the output)
    a = channel_relevance(convnext_atto, x, 3, layer="stages.2", rule="epsilon")
    b = channel_relevance(convnext_atto, x, 5, layer="stages.2", rule="epsilon")
    d = channel_relevance(convnext_atto, x, 3, layer="stages.2", contrast=5, rule="epsilon")
    assert torch.allclose(d.relevance, a.relevance - b.relevance, atol=1e-5 * a.relevance.abs().max())


def test_bad_layer_and_channel_are_value_errors(convnext_atto):
    with pytest.raises(ValueError, match="no spatial layer"):
        channel_relevance(convnext_atto, _x(1), layer="nope")
    with pytest.raises(ValueError, match="not a channel"):
        conditional_maps(convnext_atto, _x(1), layer="stages.1", channels=[999])


def _planted(carrier: int = 5):
    """Conv stem -> ReLU -> conv (the layer) -> ReLU -> pool -> linear, where class 0 reads channel ``carrier``
    only and the other channels, more strongly activated, feed the other classes."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        net[2].weight.abs_()
        net[2].bias.fill_(0.1)
        net[2].weight[carrier] *= 0.2  # the carrier fires least: activation ranking misses it
        net[6].weight.zero_()
        net[6].weight[0, carrier] = 3.0
        net[6].weight[1:, [c for c in range(8) if c != carrier]] = 1.0
        net[6].bias.zero_()
    return wrap(net.eval(), name="planted", input_size=32)


def test_planted_channel_is_ranked_first_with_share_one():
    model = _planted(5)
    x = _x(2, 32, seed=1)
    rel = channel_relevance(model, x, 0, layer="2")
    assert rel.order[:, 0].tolist() == [5, 5]
    assert rel.share[:, 5].min() > 0.999
    from core.catalogue import find_layer, layer_output
    acts = layer_output(model, x, find_layer(model, "2")).sum((2, 3))
    assert (acts.argmax(1) != 5).all()  # the strongest channel is another one


def _bn_net():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    return net.eval()


def test_agrees_with_zennit_crp_on_a_relu_batchnorm_net():
    crp = pytest.importorskip("crp.attribution", reason="zennit-crp (requirements-crp.txt) is not installed")
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import SpecialFirstLayerMapComposite
    from zennit.rules import Epsilon, Norm, Pass, ZBox, ZPlus
    from zennit.types import Activation, AvgPool, Convolution, Linear

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = wrap(_bn_net(), mean=mean, std=std, name="bn-net", input_size=24)
    x = _x(1, 24, seed=2)
    layer, channel, target = "3", 2, 1
    ours = concepts(model, x, target, layer=layer, channels=[channel, 5], epsilon=1e-9)

    reference = _bn_net()  # zennit merges BatchNorm into its own copy's weights
    xn = model.normalise(x).requires_grad_(True)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    low, high = ((0 - m) / s).expand_as(xn), ((1 - m) / s).expand_as(xn)
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (AvgPool, Norm()), (Convolution, ZPlus(stabilizer=1e-12, zero_params="bias")),
                   (Linear, Epsilon(epsilon=1e-12))],
        first_map=[(Convolution, ZBox(low, high, stabilizer=1e-12, zero_params="bias"))], canonizers=[SequentialMergeBatchNorm()])
    attribution = crp.CondAttribution(reference, no_param_grad=True)
    full = attribution(xn, [{"y": [target]}], composite, record_layer=[layer])
    theirs_rel = full.relevances[layer].sum((2, 3))[0]
    scale = theirs_rel.abs().max()
    assert (ours.relevance.relevance[0] - theirs_rel).abs().max() <= 1e-4 * scale
    cond = attribution(xn, [{"y": [target], layer: [channel]}], composite)
    theirs_map = cond.heatmap[0]
    assert (ours.maps.maps[0, 0] - theirs_map).abs().max() <= 1e-4 * theirs_map.abs().max()


# ------------------------------------------------------------------------------------------------------ CLI

def _cli(capsys, *args):
    from core.cli import main

    code = main(["concepts", *args, "--model", "embedded", "--json"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_fields_exactly(capsys, tmp_path, embedded):
    index = tmp_path / "index"
    code, out, err = _cli(capsys, str(SAMPLES / "chelsea.jpg"), "--layer", "blocks.5", "--top", "2",
                          "--contrast", "285", "--out-dir", str(tmp_path))
    assert code == 0, err
    payload = json.loads(out)
    assert set(payload) == {"model", "layer", "results"}
    assert payload["model"] == "embedded" and payload["layer"] == "blocks.5"
    [r] = payload["results"]
    assert set(r) == {"image", "target", "label", "contrast", "total_relevance", "channels", "seconds"}
    assert (r["target"], r["label"], r["contrast"]) == (282, "tiger cat", 285)
    assert len(r["channels"]) == 2
    for c in r["channels"]:
        assert set(c) == {"channel", "relevance", "share", "map"}
        saved = np.load(c["map"])
        assert saved.shape == (224, 224) and saved.dtype == np.float32
        assert (tmp_path / (c["map"][len(str(tmp_path)) + 1:-4] + ".png")).exists()
    assert r["channels"][0]["relevance"] >= r["channels"][1]["relevance"]
    assert r["channels"][0]["share"] == pytest.approx(r["channels"][0]["relevance"] / r["total_relevance"],
                                                      rel=1e-4)
    assert not index.exists()


@pytest.mark.parametrize("args, message", [
    (("--layer", "nope"), "no spatial layer 'nope'"),
    (("--channels", "5000"), "--channels: 5000 is not a channel of blocks.6"),
    (("--channels", "x"), "--channels takes channel indices"),
    (("--target", "5000"), "--target must be between 0 and 999"),
    (("--target", "no such class"), "neither a class index nor a label"),
])
def test_cli_bad_layer_channel_or_target_exit_2_with_one_line(capsys, embedded, args, message):
    code, out, err = _cli(capsys, str(SAMPLES / "chelsea.jpg"), *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_deleting_the_most_relevant_channels_lowers_the_logit_most(embedded, cat_input):
    from core.evaluation.concepts import channel_deletion

    d = channel_deletion(embedded, cat_input.batch, layer="blocks.6", ks=(1, 5), draws=20)
    assert d.relevance.shape == d.random.shape == d.activation.shape == (1, 2)
    k5 = d.ks.index(5)
    assert d.relevance[0, k5] > d.random[0, k5] and d.relevance[0, k5] > d.activation[0, k5]


def test_planted_deletion_of_the_carrier_removes_the_class():
    from core.evaluation.concepts import channel_deletion

    model = _planted(5)
    d = channel_deletion(model, _x(1, 32, seed=1), 0, layer="2", ks=(1,), draws=4)
    assert d.relevance[0, 0] == pytest.approx(float(d.logit[0]), abs=1e-5)  # the class read channel 5 only


def test_cli_index_examples_are_relevance_ranked_with_activation_on_request(capsys, tmp_path, embedded):
    """``--index``: each channel's examples from an index built with ``--relevance``, relevance-ranked (each with
    its relevance), or activation-ranked with ``--examples-by activation``; an index without the ranking is
    refused in one line."""
    import shutil

    from core.index import build_index

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.jpg", "brick.jpg", "coffee.jpg", "astronaut.jpg"):
        shutil.copy(SAMPLES / name, photos / name)
    ranked = build_index(embedded, photos, tmp_path / "ranked", layers=["blocks.5"], top_k=3, relevance=True).index
    plain = build_index(embedded, photos, tmp_path / "plain", layers=["blocks.5"], top_k=3).index
    image = str(SAMPLES / "chelsea.jpg")
    code, out, err = _cli(capsys, image, "--layer", "blocks.5", "--top", "2", "--index", str(ranked.directory))
    assert code == 0, err
    for c in json.loads(out)["results"][0]["channels"]:
        want = ranked.top("blocks.5", c["channel"], by="relevance")
        assert c["examples"] == [{"image": str(p.image), "box": list(p.box), "relevance": p.value} for p in want]
        assert [e["relevance"] for e in c["examples"]] == sorted((e["relevance"] for e in c["examples"]), reverse=True)
    code, out, err = _cli(capsys, image, "--layer", "blocks.5", "--top", "1", "--index", str(plain.directory),
                          "--examples-by", "activation")
    assert code == 0, err
    [c] = json.loads(out)["results"][0]["channels"]
    want = plain.top("blocks.5", c["channel"])
    assert c["examples"] == [{"image": str(p.image), "box": list(p.box), "relevance": None, "activation": p.value}
                             for p in want]
    code, out, err = _cli(capsys, image, "--layer", "blocks.5", "--index", str(plain.directory))
    assert code == 2 and out == "" and err.count("\n") == 1 and "--relevance" in err


def test_map_similarity_is_the_mean_pairwise_correlation():
    from core.concepts import ConditionalMaps
    g = torch.Generator().manual_seed(0)
    # float64: b is orthogonalised to a exactly enough for the 1e-9 below (float32 would leave ~1e-7 per term)
    a, b = torch.randn(8, 8, generator=g, dtype=torch.float64), torch.randn(8, 8, generator=g, dtype=torch.float64)
    b = b - (b * (a - a.mean())).sum() / ((a - a.mean()) ** 2).sum() * (a - a.mean())  # uncorrelated with a

    def maps(*ms):
        stack = torch.stack(ms)[None]
        return ConditionalMaps(((tuple((i,) for i in range(len(ms)))),), stack, stack[:, :, None].expand(-1, -1, 3, -1, -1), 0.0)

    assert maps(a, 2 * a + 1).similarity() == pytest.approx(1.0)  # same place, another amount
    assert maps(a, -a).similarity() == pytest.approx(-1.0)
    assert maps(a, a, b).similarity() == pytest.approx((1 + 0 + 0) / 3, abs=1e-9)
    assert maps(a).similarity() is None and maps(a, torch.zeros(8, 8)).similarity() is None
