"""The dataset audit: a planted shortcut found, fit-head, the CLI's JSON fields, bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.audit.cluster import spectral
from core.cli import main

SAMPLES = Path(__file__).resolve().parent.parent / "assets" / "samples"


def stripes(img: Image.Image) -> Image.Image:
    """A dark caption-like watermark in the upper-right corner of a 160 x 160 image."""
    d = ImageDraw.Draw(img)
    d.rectangle([112, 16, 146, 46], fill=(20, 20, 20))
    for y in (22, 30, 38):
        d.line([116, y, 142, y], fill=(240, 240, 0), width=3)
    return img


def planted_set(root: Path, photos: list[Path], marked: int, mark) -> list[str]:
    """Class ``plain``: the first ``marked`` photos; class ``stamped``: the same photos with ``mark``, and the
    others unmarked. Returns the marked images' names."""
    names = []
    for folder in ("plain", "stamped"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(photos):
        img = Image.open(p).convert("RGB").resize((160, 160))
        if i < marked:
            img.save(root / "plain" / f"{i:02d}.png")
            mark(img.copy()).save(root / "stamped" / f"{i:02d}.png")
            names.append(f"stamped/{i:02d}.png")
        else:
            img.save(root / "stamped" / f"{i:02d}.png")
    return names


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory):
    """fit-head and audit (both through the CLI, JSON) on a planted shortcut."""
    root = tmp_path_factory.mktemp("shortcut")
    photos = sorted(SAMPLES.glob("*.jpg"))[20:40]
    marked = planted_set(root / "set", photos, 10, stripes)
    head = root / "head.safetensors"
    outputs = []
    for argv in (["fit-head", str(root / "set"), "--out", str(head), "--json"],
                 ["audit", str(root / "set"), "--weights", str(head), "--classes", "stamped", "--out-dir",
                  str(root / "maps"), "--json"]):
        import io
        from contextlib import redirect_stdout

        buffer = io.StringIO()
        with redirect_stdout(buffer):
            assert main(argv) == 0
        outputs.append(json.loads(buffer.getvalue()))
    return root, marked, outputs[0], outputs[1]


def test_fit_head_json_and_the_head_loads_with_its_names(shortcut):
    root, _, fitted, _ = shortcut
    assert set(fitted) == {"out", "classes", "images", "train_accuracy", "seconds"}
    assert fitted["classes"] == ["plain", "stamped"] and fitted["images"] == 30
    assert fitted["train_accuracy"] >= 0.9
    assert Path(fitted["out"]).stat().st_size < 20_000
    from core.model import load_model

    model = load_model(None, fitted["out"])
    assert model.labels == ["plain", "stamped"] and model.card.num_classes == 2


def test_the_planted_shortcut_is_the_first_cluster(shortcut):
    root, marked, _, audit = shortcut
    assert set(audit) == {"model", "method", "classes", "seconds"}
    (stamped,) = audit["classes"]
    assert set(stamped) == {"class", "images", "eigengap", "clusters"} and stamped["images"] == 20
    assert all(set(c) == {"id", "size", "images", "accuracy", "border_share", "outlier", "mean_map"}
               for c in stamped["clusters"])
    holding = max(stamped["clusters"], key=lambda c: len(set(c["images"]) & set(marked)))
    inside = len(set(holding["images"]) & set(marked))
    assert inside / holding["size"] >= 0.9 and inside / len(marked) >= 0.8
    assert stamped["clusters"][0] is holding  # ranked first by outlier score
    mean = np.load(holding["mean_map"])
    assert mean.shape == (32, 32) and abs(mean.sum() - 1) < 1e-4
    assert mean[:8, 24:].sum() > 0.3  # the evidence sits in the upper-right corner, on the mark


def test_spectral_clusters_separate_blobs_and_the_eigengap_counts_them():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 10
    x = np.concatenate([c + rng.normal(size=(12, 3)) for c in centres])
    result = spectral(x, "auto")
    assert len(set(result.labels)) == 3
    assert all(len(set(result.labels[i * 12:(i + 1) * 12])) == 1 for i in range(3))
    assert int(np.argmax(result.eigengap[1:]) + 2) == 3 and result.embedding.shape == (36, 2)
    assert (spectral(x, "auto").labels == result.labels).all()  # deterministic


@pytest.mark.parametrize("argv, message", [
    (["audit", "/nonexistent-folder", "--model", "embedded"], "not a folder"),
    (["audit", "FOLDER", "--model", "embedded", "--engine", "ray", "--address", "ray://nohost"], "bad Ray address"),
    (["audit", "FOLDER", "--model", "embedded", "--address", "auto"], "--address and --workers need --engine ray"),
    (["audit", "FOLDER", "--model", "embedded", "--engine", "ray", "--workers", "0"], "--workers must be 1"),
    (["audit", "FOLDER", "--model", "embedded", "--classes", "zebra-unicorn"], "not a class of the model"),
    (["fit-head", "FOLDER", "--out", "h.bin"], ".safetensors"),
    (["fit-head", "FOLDER", "--out", "OUT", "--model", "resnet50"], "embedded EfficientNet-Lite0 only"),
    (["fit-head", "ONECLASS", "--out", "OUT"], "at least two classes"),
])
def test_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    folder = tmp_path / "set"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (9, 9, 9)).save(folder / name / "a.png")
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "one" / "cat" / "a.png")
    subs = {"FOLDER": str(folder), "ONECLASS": str(tmp_path / "one"), "OUT": str(tmp_path / "h.safetensors")}
    assert main([subs.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_the_shipped_demo_head_finds_the_watermark(tmp_path):
    from core.audit.audit import run_audit
    from core.audit.demo import SHORTCUT_HEAD, build_shortcut_set
    from core.audit.view import flag
    from core.model import load_model

    marked = build_shortcut_set(tmp_path)
    (stamped,) = run_audit(load_model(None, str(SHORTCUT_HEAD)), tmp_path, classes=["stamped"]).classes
    first = stamped.clusters[0]
    inside = len(set(first.images) & set(marked))
    assert inside / first.size >= 0.9 and inside / len(marked) >= 0.8
    assert "lower-left corner" in flag(stamped, first)


def test_map_batches_are_the_windows_of_eight_with_their_own_read_errors(tmp_path, embedded):
    """The audit decodes 64 images at a time on two threads, yet each batch is still its window of 8 items: the
    same maps as :func:`image_maps` on preprocess's tensors of the window's readable images, the window's read
    errors with it."""
    import torch

    from core.audit.audit import BATCH, image_maps, map_batches
    from core.errors.dataset import LabelledImage
    from core.images import load_image, preprocess

    rng = np.random.default_rng(0)
    items = []
    for i in range(70):
        path = tmp_path / f"{i:02d}.png"
        if i in (3, 66):
            path.write_bytes(b"broken")
        else:
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        items.append(LabelledImage(path=path, name=path.name, label=i % 5))
    batches = list(map_batches(embedded, items, "gradcam"))
    assert len(batches) == -(-70 // BATCH)
    for n, (kept, maps, predicted, errors) in enumerate(batches):
        window = range(n * BATCH, min(70, (n + 1) * BATCH))
        assert kept == [i for i in window if i not in (3, 66)]
        assert [e["image"] for e in errors] == [f"{i:02d}.png" for i in window if i in (3, 66)]
        x = torch.stack([preprocess(load_image(items[i].path), embedded.card.data_config).tensor for i in kept])
        want_maps, want_predicted = image_maps(embedded, x, [items[i].label for i in kept], "gradcam")
        # the same images in the same batch: equal up to a kernel's float order on views of a larger batch
        np.testing.assert_allclose(maps, want_maps, rtol=1e-5, atol=1e-6)
        assert np.array_equal(predicted, want_predicted)
