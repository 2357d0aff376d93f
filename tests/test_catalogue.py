"""The layer catalogue is derived from the architecture: names, layouts and receptive fields checked by hand."""
from __future__ import annotations

import pytest
import torch

from core.catalogue import LayerKind, Layout, catalogue, default_layer, find_layer, to_nchw
from core.hooks import capture, hook_count

from tests.conftest import make_tiny


@pytest.fixture(scope="module")
def convnext_tiny():
    return make_tiny("convnext_tiny", num_classes=10)


def test_convnext_tiny_lists_stem_downsamples_blocks_and_block_internals(convnext_tiny):
    layers = {l.name: l for l in catalogue(convnext_tiny, (3, 224, 224))}
    assert layers["stem"].kind is LayerKind.STEM and layers["stem"].channels == 96
    for i, (channels, grid, blocks) in enumerate([(96, 56, 3), (192, 28, 3), (384, 14, 9), (768, 7, 3)]):
        stage = layers[f"stages.{i}"]
        assert stage.kind is LayerKind.STAGE and stage.feature
        assert stage.channels == channels and stage.grid == (grid, grid) and stage.reduction == 224 // grid
        for b in range(blocks):
            assert layers[f"stages.{i}.blocks.{b}"].kind is LayerKind.BLOCK
        if i > 0:
            assert layers[f"stages.{i}.downsample"].kind is LayerKind.DOWNSAMPLE
    block = "stages.2.blocks.5"
    assert layers[f"{block}.conv_dw"].layout is Layout.NCHW and layers[f"{block}.conv_dw"].kind is LayerKind.CONV
    for part, channels in (("norm", 384), ("mlp.fc1", 1536), ("mlp.act", 1536), ("mlp.fc2", 384), ("mlp", 384)):
        assert layers[f"{block}.{part}"].layout is Layout.NHWC, part
        assert layers[f"{block}.{part}"].channels == channels, part
    assert layers[block].layout is Layout.NCHW
    assert default_layer(convnext_tiny).name == "stages.3"


def test_nhwc_outputs_are_reported_in_their_real_layout(convnext_tiny):
    layer = find_layer(convnext_tiny, "stages.1.blocks.0.mlp.fc1")
    with capture(convnext_tiny, {layer.name: convnext_tiny.layer(layer.name)}) as out:
        convnext_tiny(torch.rand(1, 3, 224, 224))
    t = out[layer.name]
    assert t.shape == (1, 28, 28, 768)
    assert to_nchw(t, layer).shape == (1, 768, 28, 28)
    assert hook_count(convnext_tiny) == 0


def test_receptive_fields_worked_out_by_hand(convnext_atto):
    layers = {l.name: l for l in catalogue(convnext_atto, (3, 224, 224))}
    # stem: 4x4 stride 4 -> field 4, jump 4, first centre at 1.5
    g = layers["stem"].rf[0]
    assert (g.size, g.jump, g.start) == (4, 4, 1.5)
    # stage 0: two 7x7 depthwise convs at jump 4 -> 4 + 2 * 6 * 4
    assert layers["stages.0"].receptive_field == 52
    # stage 1: 2x2 stride-2 downsample (+1 * 4) then two 7x7 at jump 8 -> 52 + 4 + 2 * 6 * 8
    assert layers["stages.1"].receptive_field == 152
    assert layers["stages.1"].rf[1].jump == 8 and layers["stages.1"].rf[1].start == 3.5


def test_receptive_field_with_padding_and_pooling(resnet_tiny):
    layers = {l.name: l for l in catalogue(resnet_tiny, (3, 224, 224))}
    conv1, pool = layers["conv1"].rf[0], layers["maxpool"].rf[0]
    assert (conv1.size, conv1.jump, conv1.start) == (7, 2, 0)     # 7x7 stride 2 pad 3
    assert (pool.size, pool.jump, pool.start) == (11, 4, 0)       # 3x3 stride 2 pad 1
    assert layers["layer1.0"].receptive_field == 27               # two 3x3 at jump 4
    box = layers["maxpool"].box(0, 0, 224, 224)
    assert box == (0, 0, 6, 6)                                    # centre 0, half-width 5, clipped


def test_tf_same_padding_is_followed(embedded):
    stem = find_layer(embedded, "conv_stem").rf[0]
    assert (stem.size, stem.jump, stem.start) == (3, 2, 1)  # TF "SAME" pads only right/bottom at stride 2


def test_unknown_layer_names_valid_ones(convnext_atto):
    with pytest.raises(KeyError, match="stages"):
        find_layer(convnext_atto, "stages.9")


def test_catalogue_leaves_no_hooks(convnext_atto):
    catalogue(convnext_atto, (3, 96, 96))
    assert hook_count(convnext_atto) == 0


def test_capture_removes_hooks_after_an_exception(convnext_atto):
    with pytest.raises(RuntimeError):
        with capture(convnext_atto, {"stages.0": convnext_atto.layer("stages.0")}):
            convnext_atto(torch.rand(1, 3, 64, 64))
            raise RuntimeError("boom")
    assert hook_count(convnext_atto) == 0
