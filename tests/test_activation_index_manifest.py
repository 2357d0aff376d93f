"""Index manifests: relative paths plus a root (an index opens where the images are), old manifests still open,
and the Ray engine's errors when ray or the cluster is not there (no Ray is started here)."""
from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from core.cli import main
from core.index import build_index, open_index, summarize
from core.index import ray_engine
from tests.test_activation_index import LAYERS, MIXED, _assert_same, atto, folder  # noqa: F401

torch.set_num_threads(1)


def test_an_index_moved_with_its_images_opens_and_lists_missing_images(atto, folder, tmp_path):
    built = build_index(atto, folder, tmp_path / "idx", layers=["stages.3"], top_k=3, workers=1)
    assert built.index.manifest["root_relative"] == "../imgs"
    moved = tmp_path.parent / (tmp_path.name + "-moved")  # another machine: the same tree under another path
    shutil.move(str(tmp_path), str(moved))
    index = open_index(moved / "idx")
    assert index.root == moved / "imgs" and index.recorded_root == folder and index.missing() == ()
    assert index.load(0).size == index.images[0].size  # the image is found, hash checked
    (moved / "imgs" / "b.png").unlink()
    (moved / "imgs" / "sub" / "f.png").unlink()
    summary = summarize(open_index(moved / "idx"))
    assert summary.missing == ("b.png", "sub/f.png") and summary.missing_count == 2
    assert (summary.engine, summary.workers, summary.images) == ("local", 1, len(MIXED))
    assert summary.build_seconds > 0 and summary.images_per_second > 0
    elsewhere = open_index(moved / "idx", root=tmp_path / "nowhere")  # a root given by the user wins
    assert elsewhere.root == tmp_path / "nowhere" and len(elsewhere.missing()) == len(MIXED)


def test_a_manifest_from_before_issue_14_still_opens_and_extends(atto, folder, tmp_path):
    build_index(atto, folder, tmp_path / "old", layers=["stages.3"], top_k=3, workers=1)
    path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("build", "root_relative"):  # what an index written before this change lacks
        del manifest[key]
    path.write_text(json.dumps(manifest))
    old = open_index(tmp_path / "old")
    summary = summarize(old)
    assert (summary.engine, summary.workers, summary.build_seconds, summary.missing) == (None, None, None, ())
    assert summary.images == len(MIXED)
    again = build_index(atto, folder, tmp_path / "old", layers=["stages.3"], top_k=3, workers=1)
    assert again.added == 0 and not again.notes  # extended, not rebuilt
    assert again.index.manifest["build"]["engine"] == "local"
    _assert_same(again.index, old, "stages.3")


def test_ray_missing_or_cluster_unreachable_is_one_line(monkeypatch, folder, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(ray_engine.EngineUnavailable, match="requirements-ray.txt"):
        ray_engine.connect(None)
    monkeypatch.undo()
    with pytest.raises(ray_engine.EngineUnavailable, match="cannot reach the Ray cluster at ray://127.0.0.1:9"):
        ray_engine.connect("ray://127.0.0.1:9", timeout=2)
    with pytest.raises(ray_engine.EngineUnavailable, match="bad Ray address"):
        ray_engine.connect("localhost:6379")
    args = ["index", "build", str(folder), "--model", "convnext_atto", "--weights", "random", "--out",
            str(tmp_path / "x")]
    assert main([*args, "--engine", "ray", "--address", "ray://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--address", "auto"]) == 2
    assert "--address and --gpus-per-worker need --engine ray" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse refuses an unknown engine
        main([*args, "--engine", "spark"])
    assert exit_.value.code == 2 and "invalid choice: 'spark'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_reports_engine_and_workers(folder, tmp_path, capsys):
    code = main(["index", "build", str(folder), "--model", "convnext_atto", "--weights", "random", "--layers",
                 "stages.3", "--top-k", "2", "--num-workers", "2", "--out", str(tmp_path / "c"), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and (payload["engine"], payload["workers"], payload["images"]) == ("local", 2, len(MIXED))
