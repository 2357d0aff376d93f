"""The HTML report: self-contained (every image inline, no external request), and its commands reproduce."""
from __future__ import annotations

import html
import json
import re
import shlex

import numpy as np
import pytest
import torch

from core.attribution.registry import attribute
from core.report import ReportItem, render_html, versions
from tests.conftest import SAMPLES
from tests.test_cli import run_cli

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*['"]?\s*(?!data:)[a-z]+:""", re.I)


def _images(page: str) -> list[str]:
    return re.findall(r"<img [^>]*src='([^']*)'", page)


def test_cli_report_contract_and_reproducible_command(tmp_path, embedded, cat_input):
    out = tmp_path / "sub" / "cat.html"
    image = str(SAMPLES / "chelsea.jpg")
    r = run_cli("report", image, "--methods", "saliency", "gradcam", "--model", "embedded", "--out", str(out),
                "--json")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert set(payload) == {"report", "results"} and payload["report"] == str(out)
    assert [res["method"] for res in payload["results"]] == ["saliency", "gradcam"]
    assert all(set(res) == {"method", "seconds"} and res["seconds"] > 0 for res in payload["results"])
    page = out.read_text()
    # self-contained: the image, the prediction and both figures inline; nothing fetched from anywhere
    imgs = _images(page)
    assert len(imgs) == 3 and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert not EXTERNAL.search(page) and "<script" not in page and "@import" not in page and "url(" not in page
    assert embedded.card.fingerprint in page and embedded.card.arch in page
    assert f"torch</th><td>{torch.__version__}" in page and "timm</th>" in page and "convnext-lens</th>" in page
    assert "tiger cat (282)" in page and "%" in page
    commands = [html.unescape(c) for c in re.findall(r"<pre><code>(.*?)</code></pre>", page)]
    assert len(commands) == 2 and all(c.startswith("python -m core attribute ") for c in commands)
    # the saliency command, run as printed, gives the map the report shows (same image, target, model)
    argv = shlex.split(commands[0])[3:]
    r2 = run_cli(*argv, "--out-dir", str(tmp_path / "repro"), "--json")
    assert r2.returncode == 0, r2.stderr
    again = np.load(tmp_path / "repro" / "chelsea.npy")
    target = json.loads(r2.stdout)["results"][0]["target"]
    direct = attribute(embedded, cat_input.batch, target, method="saliency").map[0].numpy()
    assert target == 282 and again.shape == direct.shape
    np.testing.assert_allclose(again, direct, rtol=1e-4, atol=1e-6 * float(np.abs(direct).max()))


def test_cli_report_bad_method_is_one_line_exit_2(tmp_path):
    r = run_cli("report", str(SAMPLES / "chelsea.jpg"), "--methods", "saliency", "nonsense", "--model", "embedded",
                "--out", str(tmp_path / "r.html"), "--json")
    assert r.returncode == 2 and r.stdout == "" and "unknown method 'nonsense'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.html").exists()


def test_method_that_does_not_apply_is_listed_and_the_report_still_written(tmp_path, monkeypatch, capsys):
    import core.attribution.registry as registry
    from core.attribution.base import NotApplicable
    from core.cli import main

    real = registry.attribute  # core.report.spec.run_report looks it up when it runs

    def fake(model, x, target, *, method, **kw):
        if method == "cam":
            raise NotApplicable("CAM needs a linear classifier")
        return real(model, x, target, method=method, **kw)

    monkeypatch.setattr(registry, "attribute", fake)
    out = tmp_path / "r.html"
    code = main(["report", str(SAMPLES / "coffee.jpg"), "--methods", "cam", "saliency", "--model", "embedded",
                 "--out", str(out), "--json"])
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert code == 2 and [r["method"] for r in payload["results"]] == ["saliency"]
    assert payload["errors"] == [{"method": "cam", "error": "cam: CAM needs a linear classifier"}]
    assert "error: cam: CAM needs a linear classifier" in captured.err and out.exists()


def test_render_html_escapes_and_inlines(embedded):
    item = ReportItem(title="<b>x</b>", figure=np.zeros((8, 8, 3), np.uint8), caption="a & b",
                      settings={"eps": 0.5}, command="python -m core attack 'my file.jpg'", seconds=1.5, seed=3,
                      figures={"faithfulness": 0.25}, notes=("weak: keeps 0.2 %",))
    page = render_html(card=embedded.card, image=torch.rand(3, 16, 16), image_name="up<load>.png",
                       prediction=[{"index": 1, "label": "goldfish", "prob": 0.5}], items=[item],
                       notice="offline fallback")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "up&lt;load&gt;.png" in page
    assert "seed</th><td>3" in page and "1.50 s" in page and "faithfulness</th><td>0.25" in page
    assert "weak: keeps 0.2 %" in page and "offline fallback" in page and "goldfish (1)" in page
    assert all(src.startswith("data:image/png;base64,") for src in _images(page)) and len(_images(page)) == 2
    assert versions()["numpy"] == np.__version__


def test_attack_and_perturb_commands_parse_with_the_cli(embedded):
    from core.cli import build_parser
    from core.attack.spec import ATTACK
    from core.perturbation.spec import MASKS
    from core.spec import model_context

    parser, _ = build_parser()
    values = ATTACK.complete({"random_start": True, "early_stop": False, "seed": 3}, model_context(embedded))
    cmd = ATTACK.command_line("assets/samples/my cat.jpg", embedded.card, values)
    args = parser.parse_args(shlex.split(cmd)[3:])
    assert args.images == ["assets/samples/my cat.jpg"] and args.eps == 4 and args.step == 1 and args.steps == 10
    assert args.random_start and args.no_early_stop and args.seed == 3 and args.model == "embedded"
    # the page's values (TorchRay's 800 steps with the stop) written out, one area per mask
    values = MASKS.defaults(model_context(embedded, target=281))
    cmd = MASKS.command_line("x.jpg", embedded.card, values, extra=["--area", "0.05"])
    args = parser.parse_args(shlex.split(cmd)[3:])
    assert (args.method, args.area, args.variant, args.perturbation, args.iterations, args.target, args.converge) == (
        "extremal", 0.05, "preserve", "blur", 800, "281", True)
    assert MASKS.from_args(args, model_context(embedded)) == {**values, "areas": (0.1,)}  # --area is the command's
    values = MASKS.complete({"method": "meaningful", "converge": False, "target": 3}, model_context(embedded))
    args = parser.parse_args(shlex.split(MASKS.command_line("x.jpg", embedded.card, values))[3:])
    assert (args.method, args.area, args.variant, args.iterations, args.converge) == (
        "meaningful", None, "delete", 300, None)
    assert MASKS.from_args(args, model_context(embedded)) == values


def test_predict_visualize_similarity_net2vec_and_index_commands_parse_with_the_cli(embedded):
    from core.cli import build_parser
    from core.features.featurevis_spec import FEATUREVIS, VISUALIZE_OUT_DIR
    from core.features.net2vec_spec import NET2VEC
    from core.features.similarity_spec import SIMILARITY
    from core.index.spec import commands as index_commands
    from core.report import predict_command
    from core.spec import model_context

    parser, _ = build_parser()

    def parse(cmd: str):
        assert cmd.startswith("python -m core ")
        return parser.parse_args(shlex.split(cmd)[3:])

    args = parse(predict_command("assets/samples/chelsea.jpg", embedded.card, top=5))
    assert args.command == "predict" and args.images == ["assets/samples/chelsea.jpg"] and args.top == 5
    context = model_context(embedded)

    def visualize_command(**values):
        return FEATUREVIS.command_line(None, embedded.card, FEATUREVIS.complete(values, context),
                                       extra=["--out-dir", VISUALIZE_OUT_DIR])
    args = parse(visualize_command(layer="blocks.2", channel=7, objective="unit", steps=64, size=96, seed=3, lr=0.02,
                                   batch=2, diversity=1.5, rotate=5.0, fourier=False))
    assert (args.layer, args.channel, args.objective, args.steps, args.size, args.seed, args.lr, args.batch,
            args.diversity, args.rotate, args.pixels) == ("blocks.2", 7, "unit", 64, 96, 3, 0.02, 2, 1.5, 5.0, True)
    assert args.model == "embedded" and args.out_dir == "lens-out/visualize"
    args = parse(visualize_command(objective="logit", **{"class": 281}, steps=8, size=64))
    assert args.layer is None and args.objective == "logit" and not args.pixels
    assert (args.channel, args.steps, args.size, args.seed, args.lr, args.rotate) == (281, 8, 64, 0, 0.05, 10.0)
    args = parse(SIMILARITY.command_line("a b.jpg", embedded.card, {"layer": "blocks.5"},
                                         extra=["--other", "coffee.jpg", "--at", "30,112"]))
    assert (args.image, args.other, args.layer, args.at) == ("a b.jpg", "coffee.jpg", "blocks.5", (30.0, 112.0))
    assert parse(SIMILARITY.command_line("a.jpg", embedded.card, {"layer": "blocks.5"}, extra=["--at", "1,2"])
                 ).other is None
    args = parse(NET2VEC.command_line("assets/samples", embedded.card, {"layer": "blocks.4", "concepts": "colors",
                                                                        "size": 14, "iterations": 300}))
    assert (args.folder, args.layer, args.concepts, args.size, args.iterations) == ("assets/samples", "blocks.4",
                                                                                    "colors", 14, 300)
    both = index_commands(embedded.card, ".lens-cache/index/x", {"layer": "blocks.5", "channel": 3, "k": 16},
                          folder="assets/samples", build={"layers": ("blocks.5", "blocks.6"), "top_k": 16})
    build, top = both.split(" && ")
    args = parse(build)
    assert (args.folder, args.layers, args.top_k, args.out, args.model) == (
        "assets/samples", ["blocks.5", "blocks.6"], 16, ".lens-cache/index/x", "embedded")
    args = parse(top)
    assert (args.index, args.layer, args.channel, args.k) == (".lens-cache/index/x", "blocks.5", 3, 16)
    assert index_commands(embedded.card, "/data/idx", {"layer": "l", "channel": 0, "k": 4}) == (
        "python -m core index top /data/idx --layer l --channel 0 --k 4")


def test_errors_and_contrast_commands_parse_with_the_cli(embedded):
    """The Error analysis pins' commands: ``errors`` for the matrix, ``contrast`` for a Why? row (every declared
    option written out, the demo head named by its path in the repository)."""
    from core.cli import build_parser
    from core.errors.demo import DEMO_HEAD
    from core.model import load_model
    from core.errors.spec import errors_command
    from core.report import contrast_command, model_args

    parser, _ = build_parser()
    head = load_model(None, str(DEMO_HEAD))
    assert model_args(head.card) == ["--model", "embedded", "--weights", "assets/demo/coarse-head.safetensors"]
    args = parser.parse_args(shlex.split(errors_command("my data/labels.csv", head.card, top=12))[3:])
    assert (args.command, args.folder, args.top, args.weights) == ("errors", "my data/labels.csv", 12,
                                                                   "assets/demo/coarse-head.safetensors")
    cmd = contrast_command("a b.jpg", embedded.card, method="smoothgrad", predicted=281, true=285,
                           options={"samples": 16, "precision": "fp32", "seed": 0, "unknown": 3, "stdev": None})
    args = parser.parse_args(shlex.split(cmd)[3:])
    assert (args.command, args.image, args.method, args.predicted, args.true) == ("contrast", "a b.jpg", "smoothgrad",
                                                                                 281, 285)
    assert (args.samples, args.precision, args.model) == (16, "fp32", "embedded") and "--unknown" not in cmd
