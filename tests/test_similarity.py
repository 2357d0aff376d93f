"""Similarity overlays: exact cosine values, the query cell, receptive-field point mapping, hooks and threads."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.catalogue import find_layer, to_nchw
from core.cli import main
from core.hooks import capture, hook_count
from core.features.similarity import layer_features, similarity_map


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.rand(1, 3, 64, 64)


@pytest.mark.parametrize("layer", ["stages.1", "stages.2.blocks.0.norm"])  # NCHW and an NHWC block internal
def test_map_is_brute_force_cosine_and_one_at_the_query(convnext_atto, image, layer):
    feats = layer_features(convnext_atto, image, layer)
    info = find_layer(convnext_atto, layer)
    assert feats.grid == info.grid and feats.features.shape[0] == info.channels
    with capture(convnext_atto, {layer: convnext_atto.layer(layer)}) as out, torch.no_grad():
        convnext_atto(image)
    raw = to_nchw(out[layer], info)[0]
    for cell in [(0, 0), (info.grid[0] - 1, 1), (info.grid[0] // 2, info.grid[1] - 1)]:
        sim = similarity_map(feats, cell)
        expected = F.cosine_similarity(raw[:, cell[0], cell[1]][:, None, None], raw, dim=0)
        assert sim.map.shape == info.grid
        assert torch.allclose(sim.map, expected, atol=1e-5)
        assert float(sim.map[cell]) == 1.0
        assert sim.at_cell == cell and float(sim.map.max()) <= 1.0 and float(sim.map.min()) >= -1.0
        assert float(sim.map[sim.max_cell]) == float(sim.map.max())


def test_other_image_and_identical_image(convnext_atto, image):
    a = layer_features(convnext_atto, image, "stages.1")
    same = similarity_map(a, (3, 5), layer_features(convnext_atto, image.clone(), "stages.1"))
    assert same.max_cell == (3, 5) and abs(float(same.map[3, 5]) - 1) < 1e-5
    b = layer_features(convnext_atto, torch.rand(1, 3, 64, 64), "stages.1")
    cross = similarity_map(a, (3, 5), b)
    expected = torch.einsum("c,chw->hw", a.features[:, 3, 5], b.features)
    assert torch.allclose(cross.map, expected, atol=1e-6)
    with pytest.raises(ValueError):
        similarity_map(a, (3, 5), layer_features(convnext_atto, image, "stages.2"))
    with pytest.raises(ValueError):
        similarity_map(a, (99, 0))


def test_point_goes_to_the_nearest_receptive_field_centre(convnext_atto, image):
    feats = layer_features(convnext_atto, image, "stages.1")
    rows, cols = feats.grid
    for x, y in [(0, 0), (63.9, 63.9), (10, 50), (31.5, 20.2)]:
        r, c = feats.cell_at(x, y)
        dist = lambda rc: (feats.centre(*rc)[0] - x) ** 2 + (feats.centre(*rc)[1] - y) ** 2  # noqa: E731
        best = min(((i, j) for i in range(rows) for j in range(cols)), key=dist)
        assert dist((r, c)) == pytest.approx(dist(best))
    with pytest.raises(ValueError):
        feats.cell_at(64, 10)


def test_input_untouched_no_hooks_after_error_and_threads_agree(convnext_atto, image):
    before = image.clone()
    serial = similarity_map(layer_features(convnext_atto, image, "stages.1"), (2, 2)).map
    assert torch.equal(image, before)
    with pytest.raises(ValueError, match=r"^expected an RGB batch \(N, 3, H, W\), got shape \(1, 4, 64, 64\)$"):
        layer_features(convnext_atto, torch.rand(1, 4, 64, 64), "stages.1")
    assert hook_count(convnext_atto) == 0
    results = [None] * 4

    def work(i):
        results[i] = similarity_map(layer_features(convnext_atto, image, "stages.1"), (2, 2)).map

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(torch.equal(r, serial) for r in results)
    assert hook_count(convnext_atto) == 0


def test_cli_fields_and_saved_map(tmp_path, samples, capsys):
    args = ["similarity", str(samples / "chelsea.jpg"), "--model", "embedded", "--layer", "blocks.5",
            "--at", "112,90", "--out-dir", str(tmp_path), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"layer", "grid", "at_cell", "max_cell", "npy"}
    m = np.load(out["npy"])
    assert list(m.shape) == out["grid"] and m.dtype == np.float32
    assert m[tuple(out["at_cell"])] == 1.0 and out["max_cell"] == out["at_cell"]
    assert m.min() >= -1 and m.max() <= 1
    assert main(args[:-1] + ["--other", str(samples / "coffee.jpg"), "--json"]) == 0
    other = json.loads(capsys.readouterr().out)
    m2 = np.load(other["npy"])
    assert other["npy"] != out["npy"] and m2[tuple(other["max_cell"])] == m2.max()
    assert main(["similarity", str(samples / "chelsea.jpg"), "--model", "embedded", "--layer", "nope",
                 "--at", "1,1", "--out-dir", str(tmp_path)]) == 2
    assert main(["similarity", str(samples / "chelsea.jpg"), "--model", "embedded", "--layer", "blocks.5",
                 "--at", "500,1", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no spatial layer" in err and "outside" in err and "Traceback" not in err
