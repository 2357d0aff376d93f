"""Relevance maximisation in the activation index (issue 26, point 2): the relevance top-k against core.concepts'
channel relevance image by image, the crop at the relevance peak, the one-pass LRP at several layers, the CLI's
``--relevance`` / ``--by``, old indexes, extending and rebuilding."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from core.attribution.lrp_layers import layer_pass, relevance_at
from core.catalogue import find_layer, to_nchw
from core.cli import main
from core.concepts import channel_relevance
from core.hooks import hook_count
from core.images import list_images, load_image, preprocess
from core.index import NoRelevance, build_index, open_index
from core.index import store
from core.index.passes import RELEVANCE, RELEVANCE_BATCH
from core.model import wrap
from tests.conftest import make_tiny
from tests.test_activation_index import EXTRA, LAYERS, MIXED, _assert_same, _write_images, folder  # noqa: F401

torch.set_num_threads(1)  # see test_activation_index: the machine is shared

@pytest.fixture(scope="module")
def live():
    """convnext_atto with channels-last block MLPs and layer scale 1 (a random-init ConvNeXt with the default 1e-6
    is nearly the identity, and its relevance nearly all on the shortcut): seeded, 10 classes, input 64."""
    return make_tiny("convnext_atto", seed=1, num_classes=10, conv_mlp=False, ls_init_value=1.0)


# Equality, not a tolerance: the pieces compared below run the same operations on the same tensors (LRP's rules
# keep every forward value, and the graph above a layer is the same whether or not it goes on below it), so they
# agree to the bit. Comparing batches of different composition would not: LRP's z+ ratio (the output over its
# positive part) amplifies float32 rounding where a unit's positive contributions nearly cancel, and the relevance
# of one image moves by up to a percent of the layer's largest value between batch compositions (the same with
# layer_pass alone; docs/activation-index.md). So every comparison of two builds uses the same batches.


# ------------------------------------------------------------------------------- LRP at several layers at once

@pytest.mark.parametrize("name, layers", [
    ("live", ["stages.1", "stages.2.blocks.0.mlp.fc1", "stages.3"]),
    # the stem's activation after its folded BatchNorm, a downsample shortcut (conv + folded BatchNorm), a stage
    ("resnet_tiny", ["act1", "layer2.0.downsample", "layer3"]),
])
def test_one_pass_at_several_layers_equals_one_layer_pass_each(request, name, layers):
    """The graph starts at the first layer (its output a leaf, no rule below it): the relevance at every layer is
    what layer_pass computes with the whole graph, and the outputs are the layers' outputs."""
    model = request.getfixturevalue(name)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    both = relevance_at(model, x, layers=layers)
    with torch.no_grad():
        assert torch.equal(both.target, model(x).argmax(1))
    for layer in layers:
        single = layer_pass(model, x, both.target, layer=layer)
        assert single.relevance.abs().max() > 0  # a live layer (timm zero-inits a residual branch's last norm)
        assert torch.equal(both.relevance[layer], single.relevance)
        assert torch.equal(both.outputs[layer], single.output.detach())
    assert hook_count(model) == 0


# ----------------------------------------------------------------------------------------- the relevance top-k

def _direct(model, folder, layer, batch_size):
    """Per image (sorted by path, in the build's batches): core.concepts' channel relevance for the prediction (C,)
    and the relevance map at the layer (C, h, w)."""
    info = find_layer(model, layer)
    paths = list_images(folder)
    rows = []
    for lo in range(0, len(paths), batch_size):
        chunk = paths[lo:lo + batch_size]
        x = torch.stack([preprocess(load_image(p), model.card.data_config).tensor for p in chunk])
        rel = channel_relevance(model, x, None, layer=layer)
        with torch.no_grad():
            assert torch.equal(rel.target, model(x).argmax(1))  # each image's predicted class
        maps = to_nchw(layer_pass(model, x, None, layer=layer).relevance, info)
        rows += [(path, rel.relevance[i], maps[i]) for i, path in enumerate(chunk)]
    return info, rows


def test_relevance_top_k_is_each_images_channel_relevance_and_the_crop_is_at_its_peak(live, folder, tmp_path):
    index = build_index(live, folder, tmp_path / "idx", layers=LAYERS, top_k=4, batch_size=3, relevance=True).index
    assert index.has_relevance and index.spec["relevance"] == RELEVANCE and RELEVANCE_BATCH >= 3
    h_in, w_in = index.input_size
    for layer in LAYERS:
        info, rows = _direct(live, folder, layer, 3)
        assert any(float(r.abs().max()) > 0 for _, r, _ in rows)
        for c in range(info.channels):
            # by relevance, descending; ties keep the earlier image, as the index does
            want = sorted(((float(r[c]), path, m[c]) for path, r, m in rows), key=lambda e: -e[0])[:4]
            got = index.top(layer, c, by="relevance")
            assert [p.by for p in got] == ["relevance"] * 4 and [p.rank for p in got] == [0, 1, 2, 3]
            assert [(p.image, p.value) for p in got] == [(path, value) for value, path, _ in want]
            for patch, (_, _, m) in zip(got, want):
                # the crop: the receptive field of the unit where the channel's relevance is highest
                assert (patch.y, patch.x) == divmod(int(m.flatten().argmax()), info.grid[1])
                assert patch.input_box == info.box(patch.y, patch.x, h_in, w_in)
                assert patch.box == index.to_original(patch.image_id, patch.input_box)
    # the activation ranking of a relevance build (read from the LRP pass) is the plain build's
    plain = build_index(live, folder, tmp_path / "plain", layers=LAYERS, top_k=4, batch_size=3).index
    for layer in LAYERS:
        _assert_same(index, plain, layer)
    assert hook_count(live) == 0


def test_workers_do_not_change_the_relevance_ranking(live, folder, tmp_path):
    one = build_index(live, folder, tmp_path / "a", layers=LAYERS, top_k=3, batch_size=2, workers=1,
                      relevance=True).index
    two = build_index(live, folder, tmp_path / "b", layers=LAYERS, top_k=3, batch_size=2, workers=2,
                      relevance=True).index
    for layer in LAYERS:
        assert _relevance_table(one, layer) == _relevance_table(two, layer)


def _relevance_table(index, layer):
    """(image, y, x, value) per channel and rank of the relevance ranking."""
    return [[(p.image.name, p.y, p.x, p.value) for p in index.top(layer, c, by="relevance")]
            for c in range(index.layer(layer).channels)]


def _assert_same_relevance(a, b, layer):
    """Same values per channel and rank; the same image and unit except where equal values (ties, kept in image-id
    order, and ids differ between an extended and a fresh build) trade places."""
    for row_a, row_b in zip(_relevance_table(a, layer), _relevance_table(b, layer)):
        assert [e[3] for e in row_a] == [e[3] for e in row_b]
        for i, (ea, eb) in enumerate(zip(row_a, row_b)):
            if ea != eb:
                assert i == len(row_a) - 1 or any(row_a[j][3] == ea[3] for j in (i - 1, i + 1) if 0 <= j < len(row_a))


# ---------------------------------------------------------------------------------- extending, rebuilding, old

def test_extending_keeps_the_ranking_and_asking_for_it_rebuilds(live, folder, tmp_path):
    d = tmp_path / "idx"
    first = build_index(live, folder, d, layers=LAYERS, top_k=3, batch_size=4)
    assert not first.index.has_relevance and "relevance" not in first.index.spec
    with np.load(d / first.index.manifest["data"]["file"]) as npz:  # the format of indexes before relevance
        assert sorted(npz.files) == sorted(f"{i}.{n}" for i in range(len(LAYERS)) for n in store.ARRAYS)
    with pytest.raises(NoRelevance, match="rebuild it with --relevance"):
        first.index.top("stages.3", 0, by="relevance")
    ranked = build_index(live, folder, d, layers=LAYERS, top_k=3, batch_size=1, relevance=True)
    assert ranked.added == len(MIXED) and "relevance ranking was asked for" in ranked.notes[0]
    _write_images(folder, EXTRA)
    extended = build_index(live, folder, d, layers=LAYERS, top_k=3, batch_size=1)  # not asked: kept
    assert extended.added == len(EXTRA) and not extended.notes and extended.index.has_relevance
    fresh = build_index(live, folder, tmp_path / "fresh", layers=LAYERS, top_k=3, batch_size=1, relevance=True)
    for layer in LAYERS:  # one image per pass in both: the same arithmetic
        _assert_same(extended.index, fresh.index, layer)
        _assert_same_relevance(extended.index, fresh.index, layer)
    again = build_index(live, folder, d, layers=LAYERS, top_k=3, relevance=True)
    assert again.added == 0 and not again.notes


def test_a_model_lrp_does_not_apply_to_is_refused_with_the_reason(folder, tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softplus(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model = wrap(net.eval(), input_size=32)
    with pytest.raises(ValueError, match="LRP has no rule for Softplus"):
        build_index(model, folder, tmp_path / "x", layers=["0"], relevance=True)
    assert build_index(model, folder, tmp_path / "y", layers=["0"]).added == len(MIXED)  # without: fine


# ------------------------------------------------------------------------------------------------------- CLI

def test_cli_build_with_relevance_and_top_by_relevance(tmp_path, folder, capsys):
    out, plain = tmp_path / "cli", tmp_path / "plain"
    common = ["--model", "convnext_atto", "--weights", "random", "--layers", "stages.2", "--top-k", "3",
              "--batch-size", "4", "--workers", "1"]
    assert main(["index", "build", str(folder), *common, "--relevance", "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["relevance"] is True and payload["images"] == len(MIXED)
    assert main(["index", "top", str(out), "--layer", "stages.2", "--channel", "5", "--by", "relevance",
                 "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    index = open_index(out)
    assert top["by"] == "relevance" and top["layer"] == "stages.2" and top["channel"] == 5
    assert [(p["image"], p["y"], p["x"], p["box"]) for p in top["patches"]] == [
        (str(p.image), p.y, p.x, list(p.box)) for p in index.top("stages.2", 5, by="relevance")]
    values = [p["value"] for p in top["patches"]]
    assert len(values) == 3 and values == sorted(values, reverse=True)
    assert main(["index", "top", str(out), "--layer", "stages.2", "--channel", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["by"] == "activation"  # the default
    # an index built without it: one line saying how to rebuild, exit status 2
    assert main(["index", "build", str(folder), *common, "--out", str(plain), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["relevance"] is False
    code = main(["index", "top", str(plain), "--layer", "stages.2", "--channel", "0", "--by", "relevance"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--relevance" in err and "Traceback" not in err


def test_an_index_ranked_by_older_rules_is_rebuilt(live, folder, tmp_path):
    import json
    from core.index.build import MANIFEST
    d = tmp_path / "idx"
    build_index(live, folder, d, layers=LAYERS, top_k=3, batch_size=4, relevance=True)
    manifest = json.loads((d / MANIFEST).read_text())
    older = {k: v for k, v in RELEVANCE.items() if k != "revision"}  # as written before the rules' revisions
    manifest["spec"]["relevance"] = older
    (d / MANIFEST).write_text(json.dumps(manifest))
    again = build_index(live, folder, d, layers=LAYERS, top_k=3, batch_size=4)
    assert again.added == len(MIXED) and "relevance ranking's rules changed" in again.notes[0]
    assert again.index.spec["relevance"] == RELEVANCE
