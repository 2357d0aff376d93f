"""The activation index: top-k vs brute force, receptive fields vs gradients, incremental add, rebuilds, CLI."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.catalogue import find_layer, layer_outputs
from core.index import IndexCorrupt, build_index, open_index
from core.model.identity import weights_fingerprint
from core.index.topk import channel_maxima
from core.cli import main
from core.hooks import capture, hook_count
from core.images import load_image, preprocess
from core.model import wrap
from tests.conftest import make_tiny

# One intra-op thread: with the machine shared, two OpenMP threads spin against other processes and a forward
# pass of convnext_atto at 64 px went from 15 ms to 1.5 s. Results do not depend on the thread count.
torch.set_num_threads(1)

LAYERS = ["stages.1", "stages.2.blocks.0.mlp.fc1", "stages.3"]  # fc1 is NHWC (a Linear) when conv_mlp=False


@pytest.fixture(scope="module")
def atto():
    """convnext_atto with channels-last block MLPs, like convnext_tiny (seeded, 10 classes, input 64)."""
    return make_tiny("convnext_atto", seed=1, num_classes=10, conv_mlp=False)


def _write_images(folder: Path, specs) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(specs))
    paths = []
    for name, (w, h), mode in specs:
        a = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
        img = Image.fromarray(a, "RGBA")
        img = img if mode == "RGBA" else img.convert("RGB").convert(mode)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        paths.append(path)
    return paths


MIXED = [("a.png", (80, 60), "RGB"), ("b.png", (50, 90), "L"), ("c.png", (64, 64), "RGBA"), ("d.jpg", (120, 70), "RGB"),
         ("e.png", (33, 47), "P"), ("sub/f.png", (200, 64), "RGB"), ("g.tif", (70, 70), "CMYK"), ("h.png", (64, 65), "LA")]
EXTRA = [("i.png", (90, 40), "RGB"), ("j.png", (40, 90), "RGB"), ("k.jpg", (66, 99), "L")]


@pytest.fixture
def folder(tmp_path):
    _write_images(tmp_path / "imgs", MIXED)
    return tmp_path / "imgs"


def _brute_force(model, folder: Path, layer: str):
    """Every image forwarded alone; per channel the images sorted by spatial maximum."""
    info = find_layer(model, layer)
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        x = preprocess(load_image(path), model.card.data_config).batch
        with capture(model, {layer: model.layer(layer)}) as out, torch.no_grad():
            model(x)
        t = out[layer].permute(0, 3, 1, 2) if info.layout.value == "NHWC" else out[layer]
        rows.append((path, t[0].flatten(1)))
    result = []
    for c in range(info.channels):
        entries = [(float(t[c].max()), int(t[c].argmax()), path) for path, t in rows]
        result.append(sorted(entries, key=lambda e: -e[0]))
    return info, result


def _table(index, layer):
    """(image, y, x) per channel and rank, and the values (compared with a tolerance: batch sizes differ)."""
    info = index.layer(layer)
    tops = [index.top(layer, c) for c in range(info.channels)]
    return [[(p.image.name, p.y, p.x) for p in top] for top in tops], np.array([[p.value for p in top] for top in tops])


def _assert_same(a, b, layer):
    (places_a, values_a), (places_b, values_b) = _table(a, layer), _table(b, layer)
    assert places_a == places_b
    np.testing.assert_allclose(values_a, values_b, rtol=1e-5, atol=1e-5)


def _reduction_length(model) -> int:
    """The longest dot product in one forward pass: the largest fan-in of any convolution or linear layer."""
    fan_in = [m.weight[0].numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return max(fan_in)


def _statistics_tolerance(model, index, layer) -> tuple[float, float]:
    """Absolute tolerances (mean, std) for comparing channel statistics of two builds that batched differently.

    Each per-image maximum v comes out of float32 dot products of length at most K, summed in an order that
    depends on the batch composition and the CPU's kernels, so two builds may differ by |dv| <= 2 u K M (u the
    float32 unit roundoff, M the largest |v|). The mean of n values then moves by at most that much; the std
    by at most max|v - mean| / std * |dv| <= sqrt(n - 1) |dv| (Samuelson's inequality). The float64 sums add
    nothing measurable on top.
    """
    u = float(np.finfo(np.float32).eps) / 2
    magnitude = float(np.abs(_table(index, layer)[1]).max())
    dv = 2 * u * _reduction_length(model) * magnitude
    return dv, dv * np.sqrt(max(1, len(index) - 1))


def _assert_same_statistics(model, a, b, layer):
    mean_tol, std_tol = _statistics_tolerance(model, a, layer)
    (mean_a, std_a), (mean_b, std_b) = a.statistics(layer), b.statistics(layer)
    np.testing.assert_allclose(mean_a, mean_b, rtol=0, atol=mean_tol)
    np.testing.assert_allclose(std_a, std_b, rtol=0, atol=std_tol)


# ------------------------------------------------------------------------------------------ receptive fields

class _Geo(nn.Module):
    """Convs with odd/even kernels, strides, dilation, asymmetric F.pad, avg and max pools; smooth activations."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 5, stride=2, padding=2)
        self.c = nn.AvgPool2d(3, stride=2, padding=1)
        self.d = nn.Conv2d(4, 4, 3, dilation=2, padding=2)
        self.e = nn.Conv2d(4, 4, 2, stride=2)
        self.f = nn.MaxPool2d(3, stride=1, padding=1)
        self.head = nn.Linear(4, 5)
        self.num_classes = 5

    def forward(self, x):
        x = torch.tanh(self.b(torch.tanh(self.a(x))))
        x = self.c(x)
        x = F.pad(x, (1, 0, 2, 0))
        x = torch.tanh(self.e(torch.tanh(self.d(x))))
        x = self.f(x)
        return self.head(x.mean((2, 3)))


def _gradient_box(model, layer, row, col, size, batch):
    """Bounding box of the input pixels with a non-zero gradient of unit (row, col), over ``batch`` random inputs
    (max pooling routes the gradient to one pixel per window, so one input would under-report)."""
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size, requires_grad=True)
    with capture(model, {layer.name: model.layer(layer.name)}, detach=False) as out:
        model(x)
    t = out[layer.name].permute(0, 3, 1, 2) if layer.layout.value == "NHWC" else out[layer.name]
    # a random mix of channels: a plain sum is constant after a channel LayerNorm (zero gradient)
    (t[:, :, row, col] * torch.rand(t.shape[1])).sum().backward()
    hit = x.grad.abs().sum((0, 1)) > 0
    rows, cols = hit.any(1).nonzero().flatten(), hit.any(0).nonzero().flatten()
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


@pytest.mark.parametrize("arch", ["geo", "atto"])
def test_receptive_fields_equal_gradient_ones(arch, atto):
    model = wrap(_Geo(), input_size=48) if arch == "geo" else atto
    torch.manual_seed(0)
    if arch == "geo":
        for p in model.net.parameters():
            p.data.uniform_(0.02, 0.08)  # small positive weights: no cancelling, no saturated tanh
    size = model.card.input_size[1]
    names = ["a", "b", "c", "d", "e", "f"] if arch == "geo" else [
        "stem", "stages.0.blocks.1.conv_dw", "stages.1.downsample", "stages.1.blocks.0.mlp.fc1",
        "stages.2.blocks.0.norm"]
    batch = 16 if arch == "geo" else 1  # ConvNeXt has no max pooling: one input shows the whole field
    for name in names:
        layer = find_layer(model, name)
        h, w = layer.grid
        for row, col in {(0, 0), (h // 2, w // 2), (h - 1, w - 1), (0, w - 1), (h // 3, 0)}:
            assert layer.box(row, col, size, size) == _gradient_box(model, layer, row, col, size, batch), (name, row, col)
    assert hook_count(model) == 0


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_catalogue_avg_pool_geometry_by_hand(ceil_mode):
    """Regression: avg_pool2d's 5th argument (ceil_mode) was read as the dilation, shrinking the field.
    conv 3x3 pad 1 (size 3, jump 1, start 0) then avg pool 3 stride 2 pad 1: size 3 + 2 = 5, jump 2, start 0."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(3, 2, 1, ceil_mode=ceil_mode),
                        nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 64, 64))
    geo = find_layer(wrap(net, input_size=64), "1").rf[0]
    assert (geo.size, geo.jump, geo.start) == (5.0, 2.0, 0.0)


def test_nhwc_internals_are_catalogued_channels_last(atto):
    layer = find_layer(atto, "stages.2.blocks.0.mlp.fc1")
    assert layer.layout.value == "NHWC" and layer.channels == 4 * find_layer(atto, "stages.2").channels


# ----------------------------------------------------------------------------------------------- top-k

def test_top_k_equals_brute_force_on_mixed_images(atto, folder, tmp_path):
    result = build_index(atto, folder, tmp_path / "idx", layers=LAYERS, top_k=5, batch_size=3)
    index = result.index
    assert len(index) == len(MIXED) and result.added == len(MIXED) and not result.skipped
    for layer in LAYERS:
        info, brute = _brute_force(atto, folder, layer)
        for c in range(info.channels):
            got = index.top(layer, c)
            assert len(got) == 5
            for patch, (value, pos, path) in zip(got, brute[c][:5]):
                assert patch.value == pytest.approx(value, rel=1e-4, abs=1e-4)
                if patch.image != path:  # only a near-tie may swap places between batched and single passes
                    assert abs(patch.value - value) < 1e-4
                else:
                    assert (patch.y, patch.x) == divmod(pos, info.grid[1])
    assert [p.value for p in index.top(LAYERS[0], 0)] == sorted((p.value for p in index.top(LAYERS[0], 0)), reverse=True)
    assert len(index.top(LAYERS[0], 0, k=2)) == 2
    assert hook_count(atto) == 0


def test_fewer_images_than_k_and_bad_files_are_skipped(atto, folder, tmp_path):
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    result = build_index(atto, folder, tmp_path / "idx", layers=["stages.3"], top_k=20, batch_size=4)
    assert len(result.index) == len(MIXED)
    assert [Path(s["image"]).name for s in result.skipped] == ["broken.png"]
    assert len(result.index.top("stages.3", 0)) == len(MIXED)  # empty slots are not reported
    again = build_index(atto, folder, tmp_path / "idx", layers=["stages.3"], top_k=20, batch_size=4)
    assert again.added == 0 and not again.notes  # the broken file is not retried while unchanged


# ----------------------------------------------------------------------------------------- incremental

def test_incremental_add_equals_fresh_build(atto, folder, tmp_path):
    first = build_index(atto, folder, tmp_path / "inc", layers=LAYERS, top_k=4, batch_size=4)
    assert first.added == len(MIXED)
    _write_images(folder, EXTRA)
    second = build_index(atto, folder, tmp_path / "inc", layers=LAYERS, top_k=4, batch_size=4)
    assert second.added == len(EXTRA) and not second.notes
    fresh = build_index(atto, folder, tmp_path / "fresh", layers=LAYERS, top_k=4, batch_size=5)
    for layer in LAYERS:
        _assert_same(second.index, fresh.index, layer)
        _assert_same_statistics(atto, second.index, fresh.index, layer)
    assert build_index(atto, folder, tmp_path / "inc", layers=LAYERS, top_k=4).added == 0


def test_a_complete_index_is_left_untouched_and_a_changed_folder_is_not(atto, folder, tmp_path):
    """Building again over a complete index (same weights, layers, top-k, folder content, the same broken file)
    writes nothing: the manifest keeps its bytes and mtime, the data file stays. A changed image still rebuilds,
    a new one still extends."""
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    d = tmp_path / "keep"
    first = build_index(atto, folder, d, layers=LAYERS, top_k=3)
    manifest = d / "manifest.json"
    before, stamp, files = manifest.read_bytes(), manifest.stat().st_mtime_ns, sorted(os.listdir(d))
    again = build_index(atto, folder, d, layers=LAYERS, top_k=3)
    assert again.added == 0 and not again.notes and not again.cancelled and len(again.index) == len(MIXED)
    assert manifest.read_bytes() == before and manifest.stat().st_mtime_ns == stamp
    assert sorted(os.listdir(d)) == files
    _assert_same(again.index, first.index, "stages.3")

    _write_images(folder, EXTRA[:1])  # a new image: extended, the manifest rewritten
    extended = build_index(atto, folder, d, layers=LAYERS, top_k=3)
    assert extended.added == 1 and not extended.notes and manifest.read_bytes() != before
    changed = folder / "a.png"  # a changed image: rebuilt
    Image.new("RGB", (80, 60), (200, 10, 10)).save(changed)
    os.utime(changed, ns=(stamp, stamp))
    rebuilt = build_index(atto, folder, d, layers=LAYERS, top_k=3)
    assert rebuilt.notes and "changed" in rebuilt.notes[0] and rebuilt.added == len(MIXED) + 1


def test_parallel_workers_equal_one_worker_and_leave_the_model_alone(atto, folder, tmp_path):
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    one = build_index(atto, folder, tmp_path / "w1", layers=LAYERS, top_k=4, batch_size=2, workers=1)
    with atto.lock:  # another session holding the shared lock only delays the replicas' creation
        pass
    three = build_index(atto, folder, tmp_path / "w3", layers=LAYERS, top_k=4, batch_size=2, workers=3)
    assert [i.path for i in three.index.images] == [i.path for i in one.index.images]
    assert [Path(s["image"]).name for s in three.skipped] == ["broken.png"]
    for layer in LAYERS:
        _assert_same(three.index, one.index, layer)
        np.testing.assert_allclose(three.index.statistics(layer), one.index.statistics(layer), rtol=1e-6, atol=1e-6)
    assert hook_count(atto) == 0
    with pytest.raises(ValueError, match="workers"):
        build_index(atto, folder, tmp_path / "w0", workers=0)


def test_cancelled_build_saves_progress_and_resumes(atto, folder, tmp_path):
    calls = []
    result = build_index(atto, folder, tmp_path / "c", layers=LAYERS, top_k=3, batch_size=3,
                         cancel=lambda: bool(calls.append(1)) or True)
    assert result.cancelled and len(open_index(tmp_path / "c")) == 3
    resumed = build_index(atto, folder, tmp_path / "c", layers=LAYERS, top_k=3, batch_size=3)
    assert resumed.added == len(MIXED) - 3
    fresh = build_index(atto, folder, tmp_path / "f", layers=LAYERS, top_k=3)
    _assert_same(resumed.index, fresh.index, "stages.3")


def test_removed_image_changed_weights_or_layers_rebuild(atto, folder, tmp_path):
    build_index(atto, folder, tmp_path / "r", layers=["stages.3"], top_k=3)
    (folder / "a.png").unlink()
    r = build_index(atto, folder, tmp_path / "r", layers=["stages.3"], top_k=3)
    assert r.added == len(MIXED) - 1 and "removed" in r.notes[0]
    other = make_tiny("convnext_atto", seed=2, num_classes=10, conv_mlp=False)
    assert weights_fingerprint(other) != weights_fingerprint(atto)
    r = build_index(other, folder, tmp_path / "r", layers=["stages.3"], top_k=3)
    assert r.added == len(MIXED) - 1 and "weights" in r.notes[0]
    assert r.index.spec["fingerprint"] == weights_fingerprint(other)
    r = build_index(other, folder, tmp_path / "r", layers=["stages.2"], top_k=3)
    assert "layer list" in r.notes[0] and list(r.index.layers) == ["stages.2"]


@pytest.mark.parametrize("damage", ["truncate data", "truncate manifest", "delete data"])
def test_damaged_index_is_detected_and_rebuilt(atto, folder, tmp_path, damage):
    d = tmp_path / "d"
    good = build_index(atto, folder, d, layers=LAYERS, top_k=3)
    data = d / good.index.manifest["data"]["file"]
    if damage == "truncate data":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage == "truncate manifest":
        m = d / "manifest.json"
        m.write_text(m.read_text()[:100])
    else:
        data.unlink()
    with pytest.raises(IndexCorrupt):
        open_index(d)
    rebuilt = build_index(atto, folder, d, layers=LAYERS, top_k=3)
    assert rebuilt.notes and rebuilt.notes[0].startswith("rebuilding") and rebuilt.added == len(MIXED)
    _assert_same(rebuilt.index, good.index, "stages.1")
    assert len(list(d.glob("topk-*.npz"))) <= 2 and not list(d.glob(".*.tmp"))  # new data + the one replaced
    again = build_index(atto, folder, d, layers=LAYERS, top_k=3)
    assert {p.name for p in d.glob("topk-*.npz")} == {rebuilt.index.manifest["data"]["file"],
                                                      again.index.manifest["data"]["file"]}


# ---------------------------------------------------------------------------------------- boxes and crops

def test_patch_box_maps_through_resize_and_crop(tmp_path):
    """An AvgPool 16/16 net on a 64 input: unit (0, 1) sees input columns 16..32, rows 0..16. A 128x64 image is
    centre-cropped (64 high already, crop columns 32..96 at scale 1); a 256x128 one is resized by 1/2 first."""
    net = nn.Sequential(nn.AvgPool2d(16), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 64, 64))
    model = wrap(net, input_size=64)
    folder = tmp_path / "img"
    folder.mkdir()
    for name, (w, h) in {"small.png": (128, 64), "big.png": (256, 128)}.items():
        a = np.zeros((h, w, 3), np.uint8)
        a[: h // 4, w // 2 - w // 8: w // 2, 0] = 255  # bright red block exactly where unit (0, 1) looks
        Image.fromarray(a).save(folder / name)
    index = build_index(model, folder, tmp_path / "idx", layers=["0"], top_k=2).index
    patches = {p.image.name: p for p in index.top("0", 0)}
    assert (patches["small.png"].y, patches["small.png"].x) == (0, 1)
    assert patches["small.png"].input_box == (16, 0, 32, 16)
    assert patches["small.png"].box == (48, 0, 64, 16)
    assert patches["big.png"].box == (96, 0, 128, 32)
    crop = index.crop(patches["big.png"])
    assert crop.size == (32, 32) and np.asarray(crop)[..., 0].min() == 255


def test_box_of_a_unit_in_letterbox_padding_stays_in_the_image(tmp_path):
    """"border" crop mode pads a 128x32 image to 64x64 with the mean colour: a black image's maximum lies in
    the padding, outside the image; its box must still be a non-empty region of the image."""
    import dataclasses

    net = nn.Sequential(nn.AvgPool2d(16), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 64, 64))
    model = wrap(net, input_size=64)
    model.card = dataclasses.replace(model.card, crop_mode="border")
    (tmp_path / "img").mkdir()
    Image.new("RGB", (128, 32)).save(tmp_path / "img" / "black.png")
    index = build_index(model, tmp_path / "img", tmp_path / "idx", layers=["0"], top_k=1).index
    (patch,) = index.top("0", 0)
    assert patch.y in (0, 3)  # a padding row
    left, top, right, bottom = patch.box
    assert 0 <= left < right <= 128 and 0 <= top < bottom <= 32
    assert index.crop(patch).size == (right - left, bottom - top)


def test_cli_build_and_top(tmp_path, folder, capsys):
    out = tmp_path / "cli"
    code = main(["index", "build", str(folder), "--model", "convnext_atto", "--weights", "random",
                 "--layers", "stages.2", "stages.3.blocks.1.conv_dw", "--top-k", "3", "--batch-size", "4",
                 "--workers", "2", "--out", str(out), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["index"] == str(out) and payload["images"] == len(MIXED)
    assert payload["layers"] == ["stages.2", "stages.3.blocks.1.conv_dw"]
    assert isinstance(payload["seconds"], float) and payload["images_per_second"] > 0
    code = main(["index", "top", str(out), "--layer", "stages.2", "--channel", "7", "--k", "2",
                 "--out-dir", str(tmp_path / "crops"), "--json"])
    top = json.loads(capsys.readouterr().out)
    assert code == 0 and top["layer"] == "stages.2" and top["channel"] == 7 and len(top["patches"]) == 2
    first, second = top["patches"]
    assert first["value"] >= second["value"] and set(first) >= {"image", "value", "y", "x", "box"}
    with Image.open(first["image"]) as img, Image.open(first["crop"]) as crop:
        w, h = img.size
        left, t, right, b = first["box"]
        assert 0 <= left < right <= w and 0 <= t < b <= h
        assert crop.size == (right - left, b - t)
    for bad in (["--layer", "stages.9", "--channel", "0"], ["--layer", "stages.2", "--channel", "100000"]):
        assert main(["index", "top", str(out), *bad]) == 2
    assert main(["index", "build", str(folder), "--model", "convnext_atto", "--weights", "random",
                 "--workers", "0", "--out", str(tmp_path / "w0")]) == 2
    assert "--workers" in capsys.readouterr().err
    (out / "manifest.json").write_text("{")
    assert main(["index", "top", str(out), "--layer", "stages.2", "--channel", "0"]) == 2
    err = capsys.readouterr().err
    assert "rebuild" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------- reverse lookup

def test_reverse_lookup_and_selectivity(atto, folder, tmp_path):
    index = build_index(atto, folder, tmp_path / "rl", layers=LAYERS, top_k=4).index
    x = preprocess(load_image(folder / "d.jpg"), atto.card.data_config).batch
    hits = index.excited_by(atto, x, "stages.3", n=5)
    values, pos = channel_maxima(layer_outputs(atto, x, [find_layer(atto, "stages.3")])["stages.3"])
    mean, std = index.statistics("stages.3")
    zs = (values[0].double().numpy() - mean) / std
    assert [h.channel for h in hits] == list(np.argsort(-zs, kind="stable")[:5])
    for h in hits:
        assert h.value == pytest.approx(float(values[0, h.channel]), rel=1e-5)
    sel = index.selectivity("stages.1")
    assert np.isfinite(sel).all() and index.most_selective("stages.1", 3)[0] == int(np.argmax(sel))
    other = make_tiny("convnext_atto", seed=3, num_classes=10, conv_mlp=False)
    with pytest.raises(ValueError, match="not this model"):
        index.excited_by(other, x, "stages.3")


# ------------------------------------------------------------------------------------------- hooks, threads

def test_no_hooks_left_after_exception_and_threads_match_serial(atto, folder, tmp_path):
    with pytest.raises(RuntimeError):
        layer_outputs(atto, torch.zeros(1, 5, 64, 64), [find_layer(atto, "stages.3")])
    assert hook_count(atto) == 0
    serial = build_index(atto, folder, tmp_path / "s", layers=LAYERS, top_k=3, batch_size=2).index
    results = {}

    def work(i):
        results[i] = build_index(atto, folder, tmp_path / f"t{i}", layers=LAYERS, top_k=3, batch_size=2).index

    same = {}

    def same_dir(i):  # two builders on one index: the lock makes the second extend (add nothing)
        same[i] = build_index(atto, folder, tmp_path / "same", layers=LAYERS, top_k=3, batch_size=2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=same_dir, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        for layer in LAYERS:
            _assert_same(results[i], serial, layer)
    assert sorted(r.added for r in same.values()) == [0, len(MIXED)]
    _assert_same(open_index(tmp_path / "same"), serial, "stages.3")
    assert hook_count(atto) == 0


def test_build_and_query_settings_are_declared_once(atto):
    """The page's form, the CLI and the warm-up start from :mod:`core.index.spec`'s defaults."""
    from core.cli import build_parser
    from core.index import DEFAULT_TOP_K, default_layers
    from core.index.build import DEFAULT_BATCH_SIZE
    from core.index.spec import BUILD, TOP, build_context

    assert BUILD.defaults(build_context(atto)) == {"layers": default_layers(atto), "top_k": DEFAULT_TOP_K,
                                                    "batch_size": DEFAULT_BATCH_SIZE, "engine": "local",
                                                    "relevance": False}
    parser, _ = build_parser()
    args = parser.parse_args(["index", "build", "f", "--layers", "stages.1", "stages.2", "--top-k", "300",
                              "--relevance"])
    assert BUILD.from_args(args, build_context(atto)) == {"layers": ("stages.1", "stages.2"), "top_k": 300,
                                                          "batch_size": DEFAULT_BATCH_SIZE, "engine": "local",
                                                          "relevance": True}
    assert BUILD.from_args(parser.parse_args(["index", "build", "f"]), {})["layers"] is None  # the builder's own
    args = parser.parse_args(["index", "top", "d", "--layer", "stages.2", "--channel", "3"])
    assert TOP.from_args(args, {}) == {"layer": "stages.2", "channel": 3, "k": None, "by": "activation"}
    args = parser.parse_args(["index", "top", "d", "--layer", "stages.2", "--channel", "3", "--by", "relevance"])
    assert TOP.from_args(args, {})["by"] == "relevance"
    from core.index.spec import warm_values
    assert warm_values(atto) == {**BUILD.defaults(build_context(atto)), "relevance": True}  # the app's own index
    with pytest.raises(SystemExit):
        parser.parse_args(["index", "top", "d", "--layer", "stages.2"])  # --channel stays required
