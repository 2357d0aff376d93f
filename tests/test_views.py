"""Core view modules the pages draw with: the index diagram and opening layer, filter pictures, file encoders."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from core.catalogue import catalogue
from core.features import view as features_view
from core.features.filters import Kernels
from core.index.view import architecture_dot, group_choice, layer_group, opening_choice, opening_layer
from core.render import boxed, captioned_strip, labelled_tile, npz_bytes, padded, png_bytes, tile_grid


def test_layer_group():
    assert layer_group("stages.2.blocks.5.mlp.fc1") == "stages.2"
    assert layer_group("stages.1.downsample") == "stages.1"
    assert layer_group("stem.0") == "stem"
    assert layer_group("blocks.6") == "blocks.6"          # EfficientNet's stages are called blocks
    assert layer_group("layer3.1.conv2") == "layer3"      # a ResNet's
    assert layer_group("stages") == "stages"


def test_opening_layer_is_the_deepest_with_a_field_of_at_most_half_the_input():
    rf = {"stages.0": 11, "stages.1": 35, "stages.2": 112, "stages.3": 500}
    layers = {name: SimpleNamespace(receptive_field=r) for name, r in rf.items()}
    assert opening_layer(layers, 224) == "stages.2"       # 112 <= 224 // 2
    assert opening_layer(layers, 223) == "stages.1"       # 112 > 223 // 2 = 111
    assert opening_layer({"a": SimpleNamespace(receptive_field=300), "b": SimpleNamespace(receptive_field=400)},
                         224) == "b"                      # none is small: the last
    with pytest.raises(ValueError, match="no layers"):
        opening_layer({}, 224)


def test_the_layer_the_page_and_warm_open_on():
    indexed = ["stages.1", "stages.2.blocks.0.mlp.fc1", "stages.2.blocks.1", "stages.2", "stages.3"]
    assert group_choice(indexed, "stages.2") == "stages.2"   # the part's own output when indexed
    assert group_choice(indexed[:3], "stages.2") == "stages.2.blocks.0.mlp.fc1"  # else its first indexed layer
    with pytest.raises(ValueError, match="no indexed layer"):
        group_choice(indexed, "stem")
    rf = {"stages.1": 35, "stages.2.blocks.0.mlp.fc1": 60, "stages.2.blocks.1": 90, "stages.3": 500}
    layers = {name: SimpleNamespace(receptive_field=r) for name, r in rf.items()}
    assert opening_layer(layers, 224) == "stages.2.blocks.1" and opening_choice(layers, 224) == (
        "stages.2.blocks.0.mlp.fc1")  # the select box starts on its part's first indexed layer, as the page does


def test_architecture_diagram_of_convnext(convnext_atto):
    dot = architecture_dot(catalogue(convnext_atto), ["stages.1", "stages.2.downsample"], "stages.1")
    chain = dot[dot.rindex("; ") + 2:-2]
    assert chain == ('"stem" -> "stages.0" -> "stages.1.downsample" -> "stages.1" -> "stages.2.downsample" -> '
                     '"stages.2" -> "stages.3.downsample" -> "stages.3"')
    assert '"stages.2" [label="stages.2\\n6 blocks"' in dot  # convnext_atto: depths 2, 2, 6, 2
    assert '"stages.1" [label="stages.1\\n2 blocks" shape=box style=filled fillcolor="#3b5bdb"' in dot  # chosen
    assert '"stages.2" [label="stages.2\\n6 blocks" shape=box style=filled fillcolor="#dbe4ff"' in dot  # indexed
    assert '"stages.3" [label="stages.3\\n2 blocks" shape=box color="#adb5bd"' in dot  # not indexed: grey
    assert '"stages.2.downsample" [label="downsample" shape=box style="rounded,filled" fillcolor="#dbe4ff"' in dot
    assert '"stages.3.downsample" [label="downsample" shape=box style="rounded,filled" fillcolor="#f1f3f5"' in dot
    assert dot.startswith("digraph { rankdir=LR;")


def test_png_and_npz_bytes_round_trip():
    picture = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(picture)))), picture)
    data = np.load(io.BytesIO(npz_bytes(a=torch.arange(6, dtype=torch.float32).view(2, 3), b=np.ones(2, np.int64))))
    np.testing.assert_array_equal(data["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert data["a"].dtype == np.float32 and data["b"].dtype == np.int64


def test_captioned_strip_boxed_and_padded():
    red = np.zeros((10, 4, 3), np.uint8)
    red[..., 0] = 255
    strip = captioned_strip([(red, "a"), (red[:6], "b")], caption_height=22)
    assert strip.shape == (32, 8, 3)
    assert (strip[22:, :4] == (255, 0, 0)).all() and (strip[22:28, 4:] == (255, 0, 0)).all()
    assert (strip[28:, 4:] == 255).all()  # the shorter picture leaves white below it
    box = np.asarray(boxed(np.zeros((8, 8, 3), np.uint8), (2, 2, 6, 6), width=1, color=(0, 0, 255)))
    assert (box[2, 2:6] == (0, 0, 255)).all() and (box[5, 2:6] == (0, 0, 255)).all()  # right/bottom exclusive
    assert (box[3:5, 3:5] == 0).all() and (box[6:, :] == 0).all()
    pad = padded(Image.new("RGB", (40, 20), (0, 0, 0)), 10)
    assert pad.size == (10, 10)
    assert np.asarray(pad)[0, 0].tolist() == [255, 255, 255] and np.asarray(pad)[5, 5].tolist() == [0, 0, 0]


def test_labelled_tiles_are_equal_whatever_the_source_and_keep_pixels_sharp():
    wide = labelled_tile(Image.new("RGB", (300, 40), (0, 0, 0)), 64, "#1  activation 3.21")
    tiny = labelled_tile(np.zeros((3, 3, 3), np.uint8), 64, "a label far too long to fit in sixty-four pixels")
    assert wide.shape == tiny.shape == (64 + 20, 64, 3) and wide.dtype == np.uint8
    assert (wide[:64, :64][:, 0] == 255).sum() > 0 and (wide[30:34, :, :] == 0).all()  # aspect kept, padded white
    assert (wide[64:] < 128).any()  # the label is written on the band
    # nearest-neighbour: a 2x2 checkerboard stays two flat blocks per row (no grey in between)
    board = np.zeros((2, 2, 3), np.uint8)
    board[0, 0] = board[1, 1] = 255
    sharp = labelled_tile(board, 64, "", nearest=True)[:64]
    assert set(np.unique(sharp)) == {0, 255}
    grid = tile_grid([wide, tiny, wide], 2, gap=4)
    assert grid.shape == (2 * 84 + 4, 2 * 64 + 4, 3) and (grid[88:, 68:] == 255).all()


def test_kernel_grid_labels_tiles_and_keeps_the_largest_norms():
    tiles = torch.rand(10, 1, 7, 7)
    norms = torch.arange(10.0)
    grid = features_view.kernel_grid(Kernels("dw", tiles, tiles, norms, (1, 1)), limit=4, columns=2)
    assert grid.channels == (9, 8, 7, 6) and grid.total == 10
    side = features_view.TILE
    assert grid.picture.shape == (2 * (side + 20) + 4, 2 * side + 4, 3)
    # the first tile is channel 9's kernel, each weight a flat 10x10 block at most one level apart from its value
    block = grid.picture[: side, : side][1 + side // 7 // 2, 1 + side // 7 // 2]
    assert side // 7 >= 10 and abs(int(block[0]) - round(float(tiles[9, 0, 0, 0]) * 255)) <= 1
    every = features_view.kernel_grid(Kernels("rgb", torch.rand(3, 3, 4, 4), torch.rand(3, 3, 4, 4),
                                              torch.ones(3), (4, 4)))
    assert every.channels == (0, 1, 2) and every.picture.shape[1] == 3 * side + 2 * 4


# ---------------------------------------------------------------------- the CLI writes the pages' pictures

@pytest.fixture(scope="module")
def tiny():
    from tests.conftest import make_tiny

    return make_tiny("convnext_atto", num_classes=10)


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _cli(monkeypatch, tiny, command: str, *args: str) -> dict:
    """``python -m core <command> ... --json`` in this process, on the tiny model."""
    import importlib
    import json

    from core.cli import main

    monkeypatch.setattr(importlib.import_module(f"core.cli.commands.{command}"), "model_from_args", lambda _: tiny)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    assert main([command, *args, "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize("method", ["saliency", "gradcam"])  # a signed map and an unsigned one
def test_attribute_png_is_the_attribution_pages_picture(monkeypatch, tmp_path, tiny, samples, method):
    from core.attribution.registry import attribute
    from core.attribution.view import figure
    from core.images import load_image, preprocess

    payload = _cli(monkeypatch, tiny, "attribute", str(samples / "chelsea.jpg"), "--method", method,
                   "--out-dir", str(tmp_path))
    inp = preprocess(load_image(samples / "chelsea.jpg"), tiny.card.data_config)
    page = figure(attribute(tiny, inp.batch, None, method=method), inp.tensor)[0]  # the page's default view
    written = _png(payload["results"][0]["png"])
    assert written.shape == page.shape and written.shape[1] > inp.tensor.shape[-1]  # the colour bar is there
    assert np.array_equal(written, page)


def test_contrast_pngs_are_the_error_pages_why_maps(monkeypatch, tmp_path, tiny, samples):
    from core.errors.explain import explain_mistake
    from core.errors.view import mistake_figure
    from core.images import load_image, preprocess

    payload = _cli(monkeypatch, tiny, "contrast", str(samples / "chelsea.jpg"), "--true", "1", "--predicted", "2",
                   "--method", "gradcam", "--out-dir", str(tmp_path))
    inp = preprocess(load_image(samples / "chelsea.jpg"), tiny.card.data_config)
    maps = explain_mistake(tiny, inp.batch, 2, 1, methods={"gradcam": {}})
    for r in payload["results"]:
        assert np.array_equal(_png(r["png"]), mistake_figure(maps, "gradcam", r["map"], inp.tensor)[0]), r["map"]


def test_filters_pngs_are_the_pages_kernel_grids(monkeypatch, tmp_path, tiny):
    from core.features.filters import depthwise_kernels, first_layer_kernels

    dw = "stages.0.blocks.0.conv_dw"
    payload = _cli(monkeypatch, tiny, "filters", "--depthwise", dw, "--out-dir", str(tmp_path))
    assert np.array_equal(_png(payload["pngs"]["first_layer"]),
                          features_view.kernel_grid(first_layer_kernels(tiny)).picture)
    every = features_view.kernel_grid(depthwise_kernels(tiny, dw))  # all of them, not the page's largest few
    assert np.array_equal(_png(payload["pngs"]["depthwise"]), every.picture) and len(every.channels) == every.total
