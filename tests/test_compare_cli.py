"""Two models on the same image from the command line (``--other-model``): evaluate and attribute on the embedded
CNN and a random-weight ViT-Tiny, each model's class by the one rule (its own top class, or the same chosen class
when both share their class names), refusals per model, and the one-model JSON unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest

import core.cli as cli
from core.evaluation import evaluate
from core.images import load_image, preprocess
from core.model.labels import PairedTarget, paired_target, same_classes, with_labels
from core.model.predict import predict
from tests.conftest import SAMPLES, make_tiny

CAT = str(SAMPLES / "chelsea.jpg")
VIT = ("vit_tiny_patch16_224", "random")
WITH_VIT = ["--model", "embedded", "--other-model", VIT[0], "--other-weights", VIT[1]]
FEW = ["--metrics", "deletion,insertion", "--steps", "2"]


pytestmark = pytest.mark.usefixtures("cli_loads_each_model_once")


def _vit():
    from core.cli import common

    return common.load_model(*VIT, device=None)  # the object the commands use


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = cli.main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_paired_target_rule():
    a = make_tiny("convnext_atto", num_classes=10)
    b = make_tiny("resnet18", num_classes=10)
    assert not same_classes(a, b)  # "class i" placeholders name no known label space
    assert paired_target(a, b, None) == PairedTarget(None, "each model explains its own top class")
    assert paired_target(a, b, 3).target is None and "own top class" in paired_target(a, b, 3).rule
    names = [f"bird {i}" for i in range(10)]
    a_named, b_named = with_labels(a, names), with_labels(b, names)
    assert same_classes(a_named, b_named)
    pair = paired_target(a_named, b_named, 3)
    assert pair.target == 3 and "bird 3" in pair.rule
    assert paired_target(a_named, with_labels(b, names[::-1]), 3).target is None  # same names, another order
    assert paired_target(a_named, b_named, None).target is None  # no class chosen: each its own top class


def test_evaluate_two_models(capsys):
    code, out, err = run(capsys, "evaluate", CAT, "--method", "saliency", "rollout", *FEW, *WITH_VIT)
    assert code == 0, err
    vit = _vit()
    x = preprocess(load_image(CAT), vit.card.data_config)  # the ViT sees the image through its own preprocessing
    own = predict(vit, x.batch, k=1)[0][0].index
    assert out["model"] == "embedded" and out["models"] == ["embedded", VIT[0]]
    assert out["target_rule"] == "each model explains its own top class" and "errors" not in out
    got = {(r["model"], r["method"]): r for r in out["results"]}
    assert set(got) == {("embedded", "saliency"), (VIT[0], "saliency"), (VIT[0], "rollout")}
    assert got["embedded", "saliency"]["target"] == 282  # tiger cat
    assert got[VIT[0], "saliency"]["target"] == got[VIT[0], "rollout"]["target"] == own
    for r in got.values():
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1 and len(r["deletion_curve"]) == 3
    direct = evaluate(vit, x.batch, own, method="saliency", metrics=("deletion", "insertion"), steps=2)
    assert got[VIT[0], "saliency"]["deletion_auc"] == pytest.approx(direct.curves.deletion_auc, abs=2e-6)
    assert got[VIT[0], "saliency"]["insertion_auc"] == pytest.approx(direct.curves.insertion_auc, abs=2e-6)
    (refused,) = out["refused"]
    assert (refused["model"], refused["method"], refused["image"]) == ("embedded", "rollout", CAT)
    assert "no attention layers" in refused["reason"]

    # the first model's entries are the one-model command's, whose JSON is unchanged
    code, alone, err = run(capsys, "evaluate", CAT, "--method", "saliency", *FEW, "--model", "embedded")
    assert code == 0, err
    assert set(alone) == {"model", "metrics", "steps", "deletion_baseline", "results"}
    (entry,) = alone["results"]
    paired = {k: v for k, v in got["embedded", "saliency"].items() if k not in ("model", "seconds")}
    assert "model" not in entry and paired == {k: v for k, v in entry.items() if k != "seconds"}


def test_evaluate_a_chosen_class_is_shared_only_with_shared_class_names(capsys, tmp_path):
    code, out, err = run(capsys, "evaluate", CAT, "--method", "saliency", *FEW, "--target", "7", *WITH_VIT)
    assert code == 0, err
    assert [r["target"] for r in out["results"]] == [7, 7]  # both ImageNet-1k: class 7 is the same class
    assert "share their class names" in out["target_rule"]
    names = tmp_path / "names.txt"  # the first model's own names: class 3 means nothing to the second model
    names.write_text("\n".join(f"thing {i}" for i in range(1000)))
    # --device cpu: models of their own in the module's cache (--labels renames the loaded model)
    code, out, err = run(capsys, "evaluate", CAT, "--method", "saliency", *FEW, "--target", "3", "--labels",
                         str(names), "--device", "cpu", *WITH_VIT)
    assert code == 0, err
    vit = _vit()
    own = predict(vit, preprocess(load_image(CAT), vit.card.data_config).batch, k=1)[0][0].index
    assert [r["target"] for r in out["results"]] == [3, own] and "own top class" in out["target_rule"]


def test_a_method_neither_model_takes_is_an_error(capsys):
    code, out, err = run(capsys, "evaluate", CAT, "--method", "rollout", *FEW, "--model", "embedded",
                         "--other-model", "convnext_atto", "--other-weights", "random")
    assert code == 2 and out["results"] == [] and out["refused"] == []
    assert [e["error"].split(":")[0] for e in out["errors"]] == ["rollout on embedded", "rollout on convnext_atto"]
    code, _, err = run(capsys, "attribute", CAT, "--method", "rollout", "--model", "embedded", "--other-model",
                       "convnext_atto", "--other-weights", "random")
    assert code == 2 and err.count("\n") == 1 and "no attention layers" in err


@pytest.mark.parametrize("argv, says", [
    (["evaluate", CAT, "--method", "saliency", "--other-weights", "random"], "--other-weights needs --other-model"),
    (["evaluate", CAT, "--map", "m.npy", "--other-model", "embedded"], "--map is a map of the first model"),
])
def test_bad_pairs_are_one_line_exit_2(capsys, argv, says):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out is None and err.count("\n") == 1 and says in err


def test_attribute_two_models_writes_both_maps(capsys, tmp_path):
    code, out, err = run(capsys, "attribute", CAT, "--method", "saliency", *WITH_VIT, "--out-dir", str(tmp_path))
    assert code == 0, err
    assert out["models"] == ["embedded", VIT[0]] and out["refused"] == []
    first, second = out["results"]
    assert (first["model"], second["model"]) == ("embedded", VIT[0])
    assert first["npy"] == str(tmp_path / "chelsea.npy") and second["npy"] == str(tmp_path / "chelsea.other.npy")
    maps = [np.load(r["npy"]) for r in (first, second)]
    assert all(m.shape == (224, 224) and np.isfinite(m).all() for m in maps)
    assert (tmp_path / "chelsea.other.png").exists() and not np.allclose(maps[0], maps[1])

    code, out, err = run(capsys, "attribute", CAT, "--method", "rollout", *WITH_VIT)
    assert code == 0, err
    assert [r["model"] for r in out["results"]] == [VIT[0]]
    assert [r["model"] for r in out["refused"]] == ["embedded"] and "no attention layers" in out["refused"][0]["reason"]
