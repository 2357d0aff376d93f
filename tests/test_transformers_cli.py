"""Every technique through the command line on random-weight transformers and ConvNeXt V2: maps of the input size
with finite values, or a one-line refusal where a method does not apply (one image, few samples and steps)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import core.cli as cli
from core.attribution.registry import REGISTRY
from tests.conftest import SAMPLES

MODELS = {  # a token (or spatial) layer for the layer techniques
    "vit_tiny_patch16_224": "blocks.5",
    "deit_tiny_distilled_patch16_224": "blocks.5",
    "swin_tiny_patch4_window7_224": "layers.2",
    "eva02_tiny_patch14_224": "blocks.5",
    "convnextv2_atto": "stages.2",
}
REFUSED = {  # (model, method): what the refusal says
    ("convnextv2_atto", "rollout"): "no attention layers",
    ("convnextv2_atto", "grad-rollout"): "no attention layers",
    ("vit_tiny_patch16_224", "cam"): "class token",
    ("deit_tiny_distilled_patch16_224", "cam"): "class token",
}
FEW = {"integrated-gradients": ["--steps", "2"], "smoothgrad": ["--samples", "2"],
       "occlusion": ["--window", "112", "--stride", "112"]}


pytestmark = pytest.mark.usefixtures("cli_loads_each_model_once")


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = cli.main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.fixture(scope="module")
def image():
    return str(next(p for p in sorted(SAMPLES.iterdir()) if p.suffix == ".jpg"))


@pytest.mark.parametrize("model", list(MODELS))
def test_every_attribution_method(model, image, tmp_path, capsys):
    side = 224
    for method in REGISTRY:
        code, payload, err = run(capsys, "attribute", image, "--method", method, "--model", model,
                                 "--weights", "random", "--out-dir", str(tmp_path / method), *FEW.get(method, []))
        if (model, method) in REFUSED:
            assert code == 2 and err.count("\n") == 1 and REFUSED.get((model, method), "") in err, (method, err)
            continue
        assert code == 0, (method, err)
        (result,) = payload["results"]
        saved = np.load(result["npy"])
        assert saved.shape == (side, side) and np.isfinite(saved).all(), method


@pytest.mark.parametrize("model", list(MODELS))
def test_every_other_technique_on_token_layers(model, image, tmp_path, capsys):
    layer = MODELS[model]
    common = ["--model", model, "--weights", "random"]
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sorted(SAMPLES.glob("*.jpg"))[:2]:
        shutil.copy(p, folder / p.name)
    runs = {
        "evaluate": ["evaluate", image, "--method", "saliency", "--metrics", "deletion,insertion", "--steps", "2"],
        "attack": ["attack", image, "--steps", "1", "--out-dir", str(tmp_path / "atk")],
        "perturb": ["perturb", image, "--iterations", "2", "--out-dir", str(tmp_path / "mask")],
        "similarity": ["similarity", image, "--layer", layer, "--at", "100,60", "--out-dir", str(tmp_path / "sim")],
        "net2vec": ["net2vec", str(folder), "--layer", layer, "--concepts", "colors", "--size", "14",
                    "--iterations", "3"],
        "visualize": ["visualize", "--layer", layer, "--channel", "3", "--steps", "2", "--out-dir",
                      str(tmp_path / "vis")],  # a coarse step at half size, then one at the input size
        "visualize-class": ["visualize", "--objective", "logit", "--channel", "3", "--steps", "2", "--out-dir",
                            str(tmp_path / "vis")],
        "index": ["index", "build", str(folder), "--layers", layer, "--top-k", "2", "--out", str(tmp_path / "ix")],
        "top": ["index", "top", "--layer", layer, "--channel", "0", "--k", "2", str(tmp_path / "ix")],
    }
    for name, argv in runs.items():
        extra = common if name != "top" else []
        code, payload, err = run(capsys, *argv, *extra)
        assert code == 0, (name, err)
        if name == "similarity":
            saved = np.load(payload["npy"] if "npy" in payload else payload["results"][0]["npy"])
            assert saved.ndim == 2 and np.isfinite(saved).all()


@pytest.mark.parametrize("model", list(MODELS))
def test_lrp_json_keeps_relevance_sum_and_logit_and_cp_selects_cp_lrp(model, image, capsys):
    for rule in ("zplus", "cp"):
        code, payload, err = run(capsys, "attribute", image, "--method", "lrp", "--rule", rule, "--model", model,
                                 "--weights", "random")
        if model == "convnextv2_atto" and rule == "cp":
            assert code == 2 and err.count("\n") == 1 and "no attention" in err, err
            continue
        assert code == 0, (rule, err)
        (result,) = payload["results"]
        assert np.isfinite([result["relevance_sum"], result["logit"]]).all()
        assert payload["options"]["rule"] == rule
        if model != "convnextv2_atto":
            assert ("CP-LRP" if rule == "cp" else "AttnLRP") in payload["notes"][0]
