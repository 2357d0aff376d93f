"""`python -m core predict`: the JSON contract, bad inputs, exit codes, no tracebacks."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, SAMPLES


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LENS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_predict_json_contract_with_the_default_model_offline():
    r = run_cli("predict", str(SAMPLES / "chelsea.jpg"), str(SAMPLES / "coffee.jpg"), "--top", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "embedded" and out["weights"] == "embedded"
    assert [res["image"] for res in out["results"]] == [str(SAMPLES / "chelsea.jpg"), str(SAMPLES / "coffee.jpg")]
    cat, coffee = out["results"]
    assert len(cat["top"]) == 3 and set(cat["top"][0]) == {"index", "label", "prob"}
    assert cat["top"][0]["label"] in {"tiger cat", "Egyptian cat", "tabby"}
    assert coffee["top"][0]["label"] == "espresso" and coffee["top"][0]["prob"] > 0.9
    assert "errors" not in out
    assert "note:" in r.stderr  # the fallback is said, not hidden


def test_bad_images_are_listed_and_good_ones_still_reported(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    r = run_cli("predict", str(empty), str(SAMPLES / "coffee.jpg"), str(text), "--model", "embedded", "--json")
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert [res["image"] for res in out["results"]] == [str(SAMPLES / "coffee.jpg")]
    assert [e["image"] for e in out["errors"]] == [str(empty), str(text)]
    assert "empty file" in out["errors"][0]["error"] and "not an image" in out["errors"][1]["error"]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in r.stderr


def test_bad_weights_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    r = run_cli("predict", str(SAMPLES / "coffee.jpg"), "--model", "convnext_atto", "--weights", str(bad), "--json")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "safetensors" in r.stderr and "Traceback" not in r.stderr


def test_random_weights_and_text_output():
    r = run_cli("predict", str(SAMPLES / "coffee.jpg"), "--model", "convnext_atto", "--weights", "random", "--top", "2")
    assert r.returncode == 0, r.stderr
    assert "convnext_atto (random weights)" in r.stdout and r.stdout.count("%") == 2


def test_layers_lists_the_catalogue():
    r = run_cli("layers", "--model", "convnext_atto", "--weights", "random", "--kind", "stage", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [l["name"] for l in out["layers"]] == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert out["layers"][1] == {"name": "stages.1", "kind": "stage", "type": "ConvNeXtStage", "channels": 80,
                                "grid": [28, 28], "layout": "NCHW", "reduction": 8, "receptive_field": 152,
                                "feature": True, "prefix": 0}  # prefix: tokens before the grid (transformers)


def test_a_bad_heap_setting_is_one_line_exit_2():
    env = {**os.environ, "LENS_OFFLINE": "1", "LENS_HEAP_KEEP_MB": "lots"}
    r = subprocess.run([sys.executable, "-m", "core", "layers", "--json"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "error: LENS_HEAP_KEEP_MB must be a whole number of at least 0, got 'lots'"


def test_every_command_keeps_freed_memory_first(monkeypatch):
    """The command line asks glibc to keep freed memory (its dataset commands run batch after batch) before the
    command runs."""
    from core import cli
    from core.serve import tuning

    calls = []
    monkeypatch.setattr(tuning, "keep_freed_memory", lambda: calls.append("kept") or True)
    parser, modules = cli.build_parser()
    monkeypatch.setattr(modules["layers"], "run", lambda args: calls.append("ran") or {"errors": []})
    assert cli.main(["layers", "--json"]) == 0
    assert calls == ["kept", "ran"]
