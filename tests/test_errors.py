"""Error analysis (issue 17): class names, labelled folders, evaluation and its cache, contrastive maps."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

from core.cli import main
from core.errors.dataset import read_labelled
from core.errors.evaluate import class_stats, confusion_matrix, evaluate, report
from core.errors.explain import contrastive, separation
from core.images import ImageError
from core.model.labels import LabelsError, check_count, labels_from_weights, parse_labels, read_labels, with_labels
from core.model import load_model, wrap

COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


# ------------------------------------------------------------------------------------------ class names

def test_label_text_and_json_files(tmp_path):
    (tmp_path / "a.txt").write_text("bathroom\nBedroom \nkitchen\n\n")
    assert read_labels(tmp_path / "a.txt") == ["bathroom", "Bedroom", "kitchen"]
    (tmp_path / "b.json").write_text(json.dumps(["bathroom", "bedroom"]))
    assert read_labels(tmp_path / "b.json") == ["bathroom", "bedroom"]


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("   \n\n", "empty"),
    ("[\"a\", 3]", "JSON must be a list of strings"),
    ("{\"a\": 1}", "JSON must be a list of strings"),
    ("[\"a\", ", "not valid JSON"),
    ("a\n\nb", "class 1 has an empty name"),
])
def test_bad_label_files(content, message):
    with pytest.raises(LabelsError, match=message):
        parse_labels(content.encode(), "names.txt")


def test_label_count_must_match_the_head(tmp_path):
    with pytest.raises(LabelsError, match="has 2 class names but the model's head has 3 outputs"):
        check_count(["a", "b"], 3, "names.txt")
    (tmp_path / "two.txt").write_text("a\nb\n")
    assert read_labels(tmp_path / "two.txt") == ["a", "b"]
    with pytest.raises(LabelsError, match="not found"):
        read_labels(tmp_path / "missing.txt")


def test_cli_labels_mismatch_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "two.txt").write_text("a\nb\n")
    code = main(["layers", "--model", "resnet18", "--weights", "random", "--labels", str(tmp_path / "two.txt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "has 2 class names but the model's head has 1000 outputs" in err[0]


def test_weights_file_carries_its_class_names_and_head_size(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=3)
    save_file(net.state_dict(), str(tmp_path / "m.safetensors"), metadata={"label_names": json.dumps(["x", "y", "z"])})
    model = load_model("resnet18", str(tmp_path / "m.safetensors"))
    assert model.card.num_classes == 3 and model.labels == ["x", "y", "z"] and model.label(1) == "y"
    torch.save({"state_dict": net.state_dict(), "pretrained_cfg": {"label_names": ["p", "q", "r"]}},
               tmp_path / "m.pth")
    assert labels_from_weights(tmp_path / "m.pth") == ["p", "q", "r"]
    (tmp_path / "sub").mkdir()
    save_file(net.state_dict(), str(tmp_path / "sub" / "model.safetensors"))
    (tmp_path / "sub" / "config.json").write_text(json.dumps({"architecture": "resnet18", "label_names": ["u", "v", "w"]}))
    assert load_model("resnet18", str(tmp_path / "sub" / "model.safetensors")).labels == ["u", "v", "w"]
    save_file(net.state_dict(), str(tmp_path / "bad.safetensors"), metadata={"label_names": json.dumps(["x", "y"])})
    with pytest.raises(LabelsError, match="2 class names but the model's head has 3"):
        load_model("resnet18", str(tmp_path / "bad.safetensors"))


def test_with_labels_leaves_the_shared_model_alone(resnet_tiny):
    named = with_labels(resnet_tiny, [f"n{i}" for i in range(10)])
    assert named.label(3) == "n3" and resnet_tiny.label(3) == "class 3"
    assert named.net.conv1.weight is resnet_tiny.net.conv1.weight  # weights shared, not copied
    with pytest.raises(LabelsError, match="9 class names"):
        with_labels(resnet_tiny, [f"n{i}" for i in range(9)])


# -------------------------------------------------------------------------------------- labelled folders

def _solid(path, colour, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def colour_model(calls: list | None = None):
    """A 3-class model that answers the image's dominant colour (red, green, blue) with high confidence."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(3, 3)
            with torch.no_grad():
                self.fc.weight.copy_(torch.eye(3) * 20)
                self.fc.bias.zero_()

        def forward(self, x):
            if calls is not None:
                calls.append(x.shape[0])
            return self.fc(self.pool(x).flatten(1))

    return wrap(Net(), mean=(0, 0, 0), std=(1, 1, 1), labels=["red", "green", "blue"], input_size=32)


def test_imagefolder_case_insensitive_names_indices_unknown_and_broken(tmp_path):
    _solid(tmp_path / "Red" / "r1.png", COLOURS["red"])
    _solid(tmp_path / "1" / "g1.png", COLOURS["green"])          # a class index
    _solid(tmp_path / "purple" / "p1.png", (200, 0, 200))          # no such class
    _solid(tmp_path / "loose.png", COLOURS["blue"])                # not in a class folder
    (tmp_path / "blue").mkdir()
    (tmp_path / "blue" / "notes.txt").write_text("hello")
    (tmp_path / "blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _solid(tmp_path / "blue" / "b1.png", COLOURS["blue"])
    found = read_labelled(tmp_path, ["red", "green", "blue"])
    assert found.layout == "imagefolder"
    assert {(i.name, i.label) for i in found.items} == {("Red/r1.png", 0), ("1/g1.png", 1), ("blue/b1.png", 2),
                                                        ("blue/broken.jpg", 2)}
    reasons = {s.item: s.reason for s in found.skipped}
    assert reasons["purple/"].startswith("unknown class folder: 'purple' is not a class of the model")
    assert "not in a class folder" in reasons["loose.png"]
    assert "not an image file type" in reasons["blue/notes.txt"]
    result = evaluate(colour_model(), tmp_path, cache_dir=tmp_path / "cache")
    assert len(result.images) == 3
    broken = {s.item: s.reason for s in result.skipped}["blue/broken.jpg"]
    assert broken.startswith("truncated or corrupt image")


def test_csv_layout(tmp_path):
    _solid(tmp_path / "img" / "a.png", COLOURS["red"])
    _solid(tmp_path / "img" / "b.png", COLOURS["green"])
    (tmp_path / "set.csv").write_text("file,label\nimg/a.png,RED\nimg/b.png,1\nimg/c.png,red\nimg/a.png,violet\n")
    found = read_labelled(tmp_path / "set.csv", ["red", "green", "blue"])
    assert found.layout == "csv"
    assert [(i.name, i.label) for i in found.items] == [("img/a.png", 0), ("img/b.png", 1)]
    assert {s.item: s.reason for s in found.skipped}["img/c.png"] == "no such file"
    assert any("unknown class: 'violet'" in s.reason for s in found.skipped)
    with pytest.raises(ImageError, match="no labelled images"):
        read_labelled(tmp_path / "img", ["red", "green", "blue"])


# ------------------------------------------------------------------------------------------- evaluation

def _colour_folder(root, counts):
    for true, colours in counts.items():
        for i, colour in enumerate(colours):
            _solid(root / true / f"{colour}{i}.png", COLOURS[colour])


def test_planted_mistake_confusion_and_per_class_against_hand_count(tmp_path):
    # red: 3 red + 1 blue (the planted mistake); green: 2 green + 1 red; blue: 2 blue
    _colour_folder(tmp_path / "data", {"red": ["red", "red", "red", "blue"], "green": ["green", "green", "red"],
                                      "blue": ["blue", "blue"]})
    result = evaluate(colour_model(), tmp_path / "data", cache_dir=tmp_path / "cache")
    expected = np.array([[3, 0, 1],
                         [1, 2, 0],
                         [0, 0, 2]])
    np.testing.assert_array_equal(result.confusion, expected)
    assert result.accuracy == pytest.approx(7 / 9)
    stats = {s.name: s for s in result.per_class}
    assert stats["red"].precision == pytest.approx(3 / 4) and stats["red"].recall == pytest.approx(3 / 4)
    assert stats["green"].precision == pytest.approx(1.0) and stats["green"].recall == pytest.approx(2 / 3)
    assert stats["blue"].precision == pytest.approx(2 / 3) and stats["blue"].recall == pytest.approx(1.0)
    assert [s.support for s in result.per_class] == [4, 3, 2]
    mistakes = result.mistakes()
    assert {(m.image, m.true, m.predicted) for m in mistakes} == {("red/blue3.png", 0, 2), ("green/red2.png", 1, 0)}
    assert all(m.prob > 0.9 and m.true_prob < 0.05 for m in mistakes)
    assert mistakes[0].prob >= mistakes[1].prob
    payload = report(result, top=1)
    assert set(payload) == {"images", "accuracy", "classes", "confusion", "per_class", "mistakes", "errors"}
    assert payload["classes"] == ["red", "green", "blue"] and payload["confusion"] == expected.tolist()
    assert set(payload["mistakes"][0]) == {"image", "true", "predicted", "prob", "true_prob"}
    assert len(payload["mistakes"]) == 1


def test_precision_is_none_for_a_class_never_predicted():
    m = confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 0]), [0, 1])
    stats = class_stats(m, [0, 1], ["a", "b"])
    assert stats[1].precision is None and stats[1].recall == 0.0 and stats[0].precision == pytest.approx(1 / 3)


def test_cache_predicts_only_new_images(tmp_path):
    calls: list[int] = []
    model = colour_model(calls)
    calls.clear()  # wrap() probed the head size with one forward
    _colour_folder(tmp_path / "data", {"red": ["red", "red"], "blue": ["blue"]})
    first = evaluate(model, tmp_path / "data", cache_dir=tmp_path / "cache")
    assert first.predicted_now == 3 and sum(calls) == 3
    calls.clear()
    again = evaluate(model, tmp_path / "data", cache_dir=tmp_path / "cache")
    assert again.predicted_now == 0 and calls == []
    np.testing.assert_array_equal(again.probs, first.probs)
    _solid(tmp_path / "data" / "green" / "g0.png", COLOURS["green"])
    _solid(tmp_path / "data" / "green" / "g1.png", (30, 200, 40))
    grown = evaluate(model, tmp_path / "data", cache_dir=tmp_path / "cache")
    assert grown.predicted_now == 2 and sum(calls) == 2 and len(grown.images) == 5
    other = colour_model(calls)  # other weights: another cache entry
    with torch.no_grad():
        other.net.fc.weight.mul_(0.5)
    calls.clear()
    assert evaluate(other, tmp_path / "data", cache_dir=tmp_path / "cache").predicted_now == 5
    assert sum(calls) == 5


def test_cli_errors_json(tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=3)
    save_file(net.state_dict(), str(tmp_path / "m.safetensors"))
    (tmp_path / "names.json").write_text(json.dumps(["red", "green", "blue"]))
    _colour_folder(tmp_path / "data", {"red": ["red"], "green": ["green"], "blue": ["blue"]})
    code = main(["errors", str(tmp_path / "data"), "--model", "resnet18", "--weights", str(tmp_path / "m.safetensors"),
                 "--labels", str(tmp_path / "names.json"), "--top", "5", "--cache-dir", str(tmp_path / "c"), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(payload) == {"images", "accuracy", "classes", "confusion", "per_class", "mistakes"}
    assert payload["images"] == 3 and payload["classes"] == ["red", "green", "blue"]
    assert sum(map(sum, payload["confusion"])) == 3
    code = main(["errors", str(tmp_path / "nowhere"), "--model", "resnet18", "--weights", "random", "--json"])
    assert code == 2 and "not a folder or a .csv file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- contrastive map

def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 64, 64, generator=g)


@pytest.mark.parametrize("method, options", [("saliency", {}), ("gradcam", {"relu": False}),
                                             ("smoothgrad", {"samples": 4, "precision": "fp32"})])
def test_contrastive_map_is_the_difference_of_class_maps(resnet_tiny, method, options):
    from core.attribution.registry import attribute

    x = _image()
    p, t = 3, 7
    contrast = contrastive(resnet_tiny, x, p, t, method=method, **options).map
    difference = (attribute(resnet_tiny, x, p, method=method, **options).map
                  - attribute(resnet_tiny, x, t, method=method, **options).map)
    scale = float(difference.abs().max())
    assert scale > 0
    # float32 sums in another order: error ~1e-6 of the map's magnitude; 1e-4 leaves margin on any CPU
    torch.testing.assert_close(contrast, difference, rtol=0, atol=1e-4 * scale)
    assert float(contrastive(resnet_tiny, x, p, p, method="saliency").map.abs().max()) == 0.0


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A seeded 3-class resnet18 saved as safetensors: what ``--model resnet18 --weights FILE`` loads."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("contrast") / "m.safetensors"
    save_file(timm.create_model("resnet18", num_classes=3).state_dict(), str(path))
    return str(path)


def test_cli_contrast_computes_the_pages_maps(tmp_path, capsys, resnet_file):
    """``python -m core contrast`` writes the maps the Error analysis page shows (``explain_mistake``, the call
    behind the page's Why? panel) for the same image, classes, method and options."""
    from core.errors.explain import explain_mistake
    from core.images import load_image, preprocess
    from tests.conftest import SAMPLES

    image = str(SAMPLES / "chelsea.jpg")
    code = main(["contrast", image, "--true", "1", "--predicted", "2", "--method", "smoothgrad", "--samples", "4",
                 "--precision", "fp32", "--model", "resnet18", "--weights", resnet_file, "--out-dir", str(tmp_path),
                 "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(payload) == {"method", "model", "image", "predicted", "predicted_label", "true", "true_label",
                            "options", "notes", "shape", "input_box", "seconds", "npz", "results"}
    assert (payload["predicted"], payload["true"], payload["options"]["samples"]) == (2, 1, 4)
    assert [(r["map"], r["target"], r["signed"]) for r in payload["results"]] == [
        ("predicted", 2, True), ("true", 1, True), ("contrast", 2, True)]
    assert all((tmp_path / f"chelsea-{role}.png").stat().st_size > 0 for role in ("predicted", "true", "contrast"))
    saved = np.load(payload["npz"])
    model = load_model("resnet18", resnet_file)
    x = preprocess(load_image(image), model.card.data_config).batch
    page = explain_mistake(model, x, 2, 1, methods={"smoothgrad": {"samples": 4, "precision": "fp32"}})
    for role in ("predicted", "true", "contrast"):
        expected = page.maps[("smoothgrad", role)]
        assert saved[role].shape == expected.shape == tuple(payload["shape"])
        # same seed and noise; float32 sums in another order: ~1e-6 of the magnitude, 1e-4 leaves margin
        np.testing.assert_allclose(saved[role], expected, rtol=0, atol=1e-4 * float(np.abs(expected).max()))
    # signed SmoothGrad is linear in the score: the contrast is the difference of the class maps
    difference = saved["predicted"] - saved["true"]
    np.testing.assert_allclose(saved["contrast"], difference, rtol=0, atol=1e-4 * float(np.abs(difference).max()))
    # without --predicted the model's own prediction is explained
    assert main(["contrast", image, "--true", "0", "--method", "saliency", "--model", "resnet18", "--weights",
                 resnet_file, "--json"]) == 0
    expected_top = int(model(x).argmax(1)[0])
    assert json.loads(capsys.readouterr().out)["predicted"] == expected_top


@pytest.mark.parametrize("extra, message", [
    (["--true", "3"], "error: --true must be between 0 and 2"),
    (["--true", "0", "--predicted", "-1"], "error: --predicted must be between 0 and 2"),
    (["--true", "0", "--layer", "layer4"], "error: --layer does not apply to --method saliency"),
])
def test_cli_contrast_bad_input_is_one_line_exit_2(capsys, resnet_file, extra, message):
    from tests.conftest import SAMPLES

    code = main(["contrast", str(SAMPLES / "chelsea.jpg"), "--method", "saliency", *extra, "--model", "resnet18",
                 "--weights", resnet_file, "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith(message) and len(captured.err.strip().splitlines()) == 1


def test_cli_contrast_bad_image_is_one_line_exit_2(tmp_path, capsys, resnet_file):
    (tmp_path / "notes.txt").write_text("not an image")
    code = main(["contrast", str(tmp_path / "notes.txt"), "--true", "0", "--method", "saliency", "--model",
                 "resnet18", "--weights", resnet_file, "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "not an image" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_contrastive_refuses_a_model_without_linear_head():
    from core.attribution.base import NotApplicable

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = wrap(net, input_size=32)
    with pytest.raises(NotApplicable, match="final linear classifier"):
        contrastive(model, torch.rand(1, 3, 32, 32), 1, 0, method="saliency")


def test_separation_statistic_by_hand():
    a = np.array([[5.0, 1.0], [7.0, 2.0]])            # mistaken images, 2 channels
    b = np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]])  # correct images
    d, auc = separation(a, b)
    pooled = np.sqrt(((5 - 6) ** 2 + (7 - 6) ** 2 + (1 - 2) ** 2 + 0 + (3 - 2) ** 2) / 3)
    assert d[0] == pytest.approx((6 - 2) / pooled)
    assert auc[0] == pytest.approx(1.0)
    # channel 1: pairs (1|1,2,3)->0 + 0.5 tie, (2|1,2,3)-> 1 + 0.5 tie: (0.5 + 1.5) / 6
    assert auc[1] == pytest.approx(2.0 / 6)
    assert abs(d[0]) > abs(d[1])


def test_demo_head_loads_with_its_names_and_six_outputs():
    from core.errors.demo import DEMO_HEAD

    assert DEMO_HEAD.stat().st_size < 64 * 1024  # a head, not a network
    model = load_model(weights=str(DEMO_HEAD))
    assert model.card.num_classes == 6 and model.card.arch == "tf_efficientnet_lite0"
    assert model.labels == ["animal", "food", "interior", "object", "outdoor", "person"]
    assert "+head:sha256:" in model.card.fingerprint
    x = torch.rand(2, 3, 224, 224)
    assert model(x).shape == (2, 6)


def test_model_key_follows_the_class_names(resnet_tiny):
    from core.model.labels import labels_digest

    named = with_labels(resnet_tiny, [f"n{i}" for i in range(10)])
    assert labels_digest(named.labels) != labels_digest(resnet_tiny.labels)


def test_one_model_identity_keys_every_cache(resnet_tiny, tmp_path):
    """The result store, the activation index and the prediction cache key on one identity: class names change
    only the result-store key; the weights change all three; an in-memory net is keyed by its weights' bytes."""
    from core.errors.cache import model_directory
    from core.index import default_directory
    from core.model.identity import model_identity
    from core.keys import model_key

    named = with_labels(resnet_tiny, [f"n{i}" for i in range(10)])
    ident = model_identity(resnet_tiny)
    assert model_key(resnet_tiny) == ident.key and ident.fingerprint.startswith("params:")
    assert model_key(named) != model_key(resnet_tiny)
    assert default_directory(named, tmp_path) == default_directory(resnet_tiny, tmp_path)
    assert model_directory(named, tmp_path) == model_directory(resnet_tiny, tmp_path)
    other = wrap(timm.create_model("resnet10t", num_classes=10))
    assert model_identity(other).fingerprint != ident.fingerprint
    assert default_directory(other, tmp_path) != default_directory(resnet_tiny, tmp_path)
    assert model_directory(other, tmp_path) != model_directory(resnet_tiny, tmp_path)
    # a manifest stores the preprocessing as JSON (lists): it still names this model
    assert ident.same_outputs(ident.fingerprint, json.loads(json.dumps(resnet_tiny.card.data_config)))


def test_every_model_command_takes_labels():
    import argparse

    from core.cli import build_parser

    parser, _ = build_parser()
    with_weights = []
    stack = [parser]
    while stack:  # every (sub)parser that takes --weights takes --labels too
        p = stack.pop()
        options = {s for a in p._actions for s in a.option_strings}
        if "--weights" in options:
            with_weights.append(p.prog)
            assert "--labels" in options, p.prog
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())
    assert len(with_weights) >= 10  # predict, attribute, attack, errors, index build, ...


def test_cli_errors_separate_lists_the_pages_channels(capsys):
    """``errors --separate T P --layer L`` (the command of the page's separating-channels pin) ranks the channels
    the page shows: the same call on the same evaluation."""
    from core.errors.demo import DEMO_CSV, DEMO_HEAD
    from core.errors.explain import separating_channels

    argv = ["errors", str(DEMO_CSV), "--weights", str(DEMO_HEAD), "--top", "1", "--separate", "animal", "2",
            "--layer", "blocks.6", "--channels", "3", "--json"]
    assert main(argv) == 0
    sep = json.loads(capsys.readouterr().out)["separating"]
    assert (sep["layer"], sep["true"], sep["predicted"], len(sep["channels"])) == ("blocks.6", "animal", "interior", 3)
    assert sep["weak"] and sep["mistaken"] + sep["correct"] == 6
    model = load_model(weights=str(DEMO_HEAD))
    page = separating_channels(model, evaluate(model, DEMO_CSV), 0, 2, "blocks.6", n=3)
    assert [c["channel"] for c in sep["channels"]] == [c.channel for c in page.channels]
    for ours, theirs in zip(sep["channels"], page.channels):
        assert ours["effect"] == pytest.approx(theirs.effect, rel=1e-4) and ours["auc"] == theirs.auc


@pytest.mark.parametrize("extra, message", [
    (["--separate", "animal", "interior"], "error: --separate needs --layer"),
    (["--separate", "animal", "fish", "--layer", "blocks.6"], "error: --separate: 'fish' is not one class"),
    (["--separate", "food", "food", "--layer", "blocks.6"], "error: --separate: choose an off-diagonal cell"),
])
def test_cli_errors_separate_bad_input_is_one_line_exit_2(capsys, extra, message):
    from core.errors.demo import DEMO_CSV, DEMO_HEAD

    assert main(["errors", str(DEMO_CSV), "--weights", str(DEMO_HEAD), *extra, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines()[-1].startswith(message)
    assert len([line for line in captured.err.splitlines() if line.startswith("error:")]) == 1


def test_report_pictures_of_the_matrix_and_the_separating_channels():
    from core.errors.explain import SeparatingChannel
    from core.errors.view import CELL, confusion_figure, separation_figure

    counts = np.array([[4, 0], [1, 2]])
    pic = confusion_figure(counts, ["red", "a very long class name indeed"])
    assert pic.dtype == np.uint8 and pic.ndim == 3 and pic.shape[0] >= 40 + 2 * CELL
    # the cell of 4 (bright end of the sequential map) is brighter than the empty cell (dark end), off its text
    left = pic.shape[1] - 78 - 4 - 2 * CELL  # the colour bar (78 px) sits right of the matrix
    bright, dark = pic[40 + 3, left + 3].astype(int), pic[40 + 3, left + CELL + 3].astype(int)
    assert bright.sum() > 500 and dark.sum() < 60
    bars = separation_figure([SeparatingChannel(7, 2.0, 0.9, 1.0, 0.5), SeparatingChannel(3, -1.0, 0.2, 0.1, 0.4)])
    zero = 150 + 360 // 2
    red_row, blue_row = bars[22 + 13], bars[22 + 26 + 13]
    assert red_row[zero + 100, 0] > red_row[zero + 100, 2] and tuple(red_row[zero - 100]) == (255, 255, 255)
    assert blue_row[zero - 50, 2] > blue_row[zero - 50, 0] and tuple(blue_row[zero + 50]) == (255, 255, 255)
