"""The serving layer as one package (core/serve): one cache root for everything kept between runs, small modules,
process tuning that describes what it did."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import core.serve
from core.errors.cache import PredictionCache, model_directory
from core.index import default_directory
from core.serve import ResultStore, tune_process


def test_results_indexes_and_predictions_share_one_cache_root(convnext_atto, tmp_path, monkeypatch, samples):
    """LENS_CACHE_DIR, read when each path is asked for (not at import): results/, index/ and predictions/."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LENS_CACHE_DIR", str(root))
    store = ResultStore.from_env()
    store.put(("k",), np.ones(4, np.float32))
    assert store.directory.parent == root / "results" and list(store.directory.glob("*/*.pkl"))
    index = default_directory(convnext_atto, samples)
    assert index.parent == root / "index"
    predictions = model_directory(convnext_atto)
    assert predictions.parent == root / "predictions"
    cache = PredictionCache(predictions, num_classes=10)
    cache.put("a" * 64, np.zeros(10, np.float32))
    cache.save()
    assert (predictions / "predictions.npz").is_file()
    assert not [p for p in predictions.iterdir() if p.name != "predictions.npz"]  # no temporary file left
    other = tmp_path / "other"
    monkeypatch.setenv("LENS_CACHE_DIR", str(other))  # read again at the next call
    assert default_directory(convnext_atto, samples).parent == other / "index"
    assert model_directory(convnext_atto).parent == other / "predictions"
    assert model_directory(convnext_atto, tmp_path / "given").parent == tmp_path / "given"  # --cache-dir wins


def test_every_serve_module_is_under_400_lines():
    folder = Path(core.serve.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert {"scheduling.py", "store.py", "memory.py", "tuning.py"} <= set(sizes)
    assert max(sizes.values()) < 400, sizes


def test_process_tuning_describes_what_it_did_and_a_bad_setting(monkeypatch):
    """Off by setting (nothing changes in this process), and a bad value is described instead of raised."""
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("LENS_MALLOC_ARENAS", "0")
    monkeypatch.setenv("LENS_GC_FREEZE", "0")
    assert tune_process() == {"malloc arenas": "glibc's default (LENS_MALLOC_ARENAS=0)",
                              "garbage collector": "not frozen (LENS_GC_FREEZE=0)"}
    monkeypatch.setenv("LENS_MALLOC_ARENAS", "two")
    monkeypatch.setenv("LENS_GC_FREEZE", "yes")
    rows = tune_process()
    assert rows["malloc arenas"].startswith("glibc's default: LENS_MALLOC_ARENAS must be a whole number")
    assert rows["garbage collector"].startswith("not frozen: LENS_GC_FREEZE must be a whole number")
