"""The result store survives a restart, recomputes corrupt entries and keeps its byte bounds; `warm` writes what the
app reads (issue 12)."""
from __future__ import annotations

import importlib
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from core.serve.store import ResultStore, key_digest

KB = 1024


def value(n_floats: int, fill: float = 1.0) -> np.ndarray:
    return np.full(n_floats, fill, dtype=np.float32)


def size_of(v) -> int:
    return len(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL))


class Counter:
    def __init__(self, v):
        self.v, self.calls = v, 0

    def __call__(self):
        self.calls += 1
        return self.v


def test_a_restarted_store_reads_the_disk(tmp_path):
    key = ("attribution", "arch|fp", "img", "saliency", 1, "{}")
    first = ResultStore(1 << 20, tmp_path, version="v1")
    compute = Counter({"map": torch.arange(6.0).view(2, 3), "n": 3})
    out = first.get_or_compute(key, compute)
    assert compute.calls == 1 and first.get_or_compute(key, compute) is out and first.hits["memory"] == 1

    restarted = ResultStore(1 << 20, tmp_path, version="v1")  # a new process: nothing in memory
    again = restarted.get_or_compute(key, compute)
    assert compute.calls == 1 and restarted.hits["disk"] == 1
    assert torch.equal(again["map"], out["map"]) and again["n"] == 3
    assert restarted.get_or_compute(key, compute) is again  # now from memory


def test_a_new_code_version_misses_and_drops_the_old_files(tmp_path):
    key = ("k",)
    ResultStore(1 << 20, tmp_path, version="old").put(key, value(10))
    new = ResultStore(1 << 20, tmp_path, version="new")
    assert new.get(key) is None and key not in new
    assert not (tmp_path / "results" / "old").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_corrupt_entry_is_recomputed(tmp_path, damage):
    key = ("perturbation", "m", "i", 3)
    ResultStore(1 << 20, tmp_path, version="v").put(key, value(1000, 2.0))
    path = tmp_path / "results" / "v" / key_digest(key, "v")[:2] / f"{key_digest(key, 'v')}.pkl"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = b"not a result at all"
    path.write_bytes(bytes(data))

    store = ResultStore(1 << 20, tmp_path, version="v")
    compute = Counter(value(1000, 3.0))
    out = store.get_or_compute(key, compute)
    assert compute.calls == 1 and store.hits["corrupt"] == 1 and float(out[0]) == 3.0
    fresh = ResultStore(1 << 20, tmp_path, version="v")  # the rewritten file is whole again
    assert float(fresh.get(key)[0]) == 3.0 and fresh.hits["disk"] == 1


def test_memory_is_bounded_in_bytes_least_recently_used_first(tmp_path):
    one = size_of(value(25 * KB))  # ~100 KB each
    store = ResultStore(int(2.5 * one), tmp_path, version="v")
    for i in range(3):
        store.put(("r", i), value(25 * KB, i))
    assert store.memory_used == 2 * one
    assert store.get(("r", 0)) is not None and store.hits["disk"] == 1  # evicted from memory, still on disk
    memory_only = ResultStore(int(2.5 * one), None, version="v")
    for i in range(3):
        memory_only.put(("r", i), value(25 * KB, i))
    assert memory_only.get(("r", 0)) is None and memory_only.get(("r", 2)) is not None
    memory_only.put(("big",), value(100 * KB))  # larger than the whole bound: not kept, nothing else dropped
    assert memory_only.get(("big",)) is None and memory_only.memory_used == 2 * one


def test_disk_is_bounded_in_bytes_oldest_use_first(tmp_path):
    one = size_of(value(25 * KB)) + 40  # header: magic and checksum
    store = ResultStore(1 << 30, tmp_path, disk_bytes=int(2.5 * one), version="v")
    store.put(("r", 0), value(25 * KB, 0))
    store.put(("r", 1), value(25 * KB, 1))
    fresh = ResultStore(1 << 30, tmp_path, disk_bytes=int(2.5 * one), version="v")
    assert fresh.get(("r", 0)) is not None  # touches r0: r1 is now the least recently used
    import os
    import time
    p1 = fresh._path(key_digest(("r", 1), "v"))
    os.utime(p1, (time.time() - 60, time.time() - 60))
    fresh.put(("r", 2), value(25 * KB, 2))
    assert fresh.disk_used <= 2.5 * one
    restarted = ResultStore(1 << 30, tmp_path, disk_bytes=int(2.5 * one), version="v")
    assert ("r", 1) not in restarted and ("r", 0) in restarted and ("r", 2) in restarted


def test_a_failing_computation_stores_nothing(tmp_path):
    store = ResultStore(1 << 20, tmp_path, version="v")

    def boom():
        raise RuntimeError("injected")
    with pytest.raises(RuntimeError, match="injected"):
        store.get_or_compute(("f",), boom)
    assert ("f",) not in store and not list((tmp_path / "results" / "v").glob("*/*.pkl"))


def test_unpicklable_results_stay_in_memory(tmp_path):
    store = ResultStore(1 << 20, tmp_path, version="v")
    store.put(("fn",), lambda: 1)
    assert callable(store.get(("fn",))) and not list((tmp_path / "results" / "v").glob("*/*.pkl"))


# ------------------------------------------------------------------------------------------------ warm

def test_warm_writes_the_keys_the_attribution_page_reads(app, monkeypatch, tmp_path, samples):
    """`python -m core warm` into LENS_CACHE_DIR, then the Attribution page's default view (SmoothGrad, page
    defaults, predicted class) and the grid's Grad-CAM open without computing anything."""
    from core.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "chelsea.jpg", folder / "chelsea.jpg")
    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["warm", str(folder), "--methods", "smoothgrad", "gradcam", "--pages", "attribution", "--model",
                 "embedded", "--json"])
    assert code == 0

    import core.attribution.registry as registry
    from ui import cache

    def refuse(*_a, **_k):
        raise AssertionError("computed although warm stored it")
    monkeypatch.setattr(registry, "attribute", refuse)
    cache.results.clear()  # a restarted server: the store is built again from the environment
    app.run()
    app.switch_page("pages/attribution.py").run()
    app.button(key="attr_run").click().run()  # one rule for heavy work: the page computes on its button
    assert not app.exception and not app.error, [e.value for e in app.error]
    # the map came from disk (attribute() would have raised); the one computation is the deletion/insertion
    # evaluation drawn under every map, which warm precomputes only with --pages faithfulness (tested below)
    assert cache.results().hits["disk"] == 1 and cache.results().hits["computed"] == 1
    app.multiselect(key="attr_grid_methods").set_value(["smoothgrad", "gradcam"]).run()
    app.button(key="attr_grid_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert cache.results().hits["computed"] == 1  # the grid came from disk too
    cache.results.clear()


def test_warm_cli_json_and_errors(tmp_path, monkeypatch, capsys, samples):
    from core.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "coffee.jpg", folder / "coffee.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    args = ["warm", str(folder), "--methods", "saliency", "--pages", "attribution", "--model", "embedded", "--json"]
    assert main(args) == 2  # an unreadable image is reported (exit 2), the others are warmed
    first = json.loads(capsys.readouterr().out)
    assert first["computed"] == 1 and first["present"] == 0 and len(first["errors"]) == 1
    assert "broken.png" in first["errors"][0]["image"]
    (folder / "broken.png").unlink()
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["computed"] == 0 and second["present"] == 1
    assert main(["warm", str(tmp_path / "nowhere"), "--model", "embedded", "--json"]) == 2
    monkeypatch.setenv("LENS_CACHE_DIR", "off")
    assert main(args) == 2


def test_warm_writes_what_the_attack_perturbation_and_featurevis_pages_read(app, monkeypatch, tmp_path, samples,
                                                                            capsys):
    """`python -m core warm --pages attack perturbation featurevis`, then each page's default view opens from the
    store without computing. To keep the test short the warmed values are computed with fewer iterations (the
    keys are the pages' defaults: what is checked is that the pages read exactly the keys warm wrote)."""
    from dataclasses import replace

    from core.cli import main
    from core.perturbation import masks
    from core.techniques import TECHNIQUES

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "chelsea.jpg", folder / "chelsea.jpg")
    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    run_masks, featurevis = TECHNIQUES["perturbation"].run, TECHNIQUES["featurevis"]
    monkeypatch.setitem(TECHNIQUES, "perturbation", replace(TECHNIQUES["perturbation"], run=lambda m, x, v, **kw: (
        run_masks(m, x, {**v, "iterations": 20}, **kw))))
    monkeypatch.setitem(TECHNIQUES, "featurevis", replace(featurevis, run=lambda m, s, v, progress=None: featurevis.run(
        m, s, {**v, "steps": 8, "size": 64}, progress=progress)))
    assert main(["warm", str(folder), "--pages", "attack", "perturbation", "featurevis", "--model", "embedded",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["computed"] == 3 and not out.get("errors")
    assert sorted((w["page"], w["status"]) for w in out["written"]) == [
        ("attack", "computed"), ("featurevis", "computed"), ("perturbation", "computed")]
    assert {w["image"] for w in out["written"] if w["page"] != "featurevis"} == {str(folder / "chelsea.jpg")}

    from ui import cache

    def refuse(*_a, **_k):
        raise AssertionError("computed although warm stored it")
    monkeypatch.setattr(masks, "perturbation_masks", refuse)
    for name in ("attack", "featurevis", "perturbation"):
        monkeypatch.setitem(TECHNIQUES, name, replace(TECHNIQUES[name], run=refuse))
    cache.results.clear()  # a restarted server
    app.run()
    app.switch_page("pages/attack.py").run()
    app.button(key="atk_run").click().run()
    app.switch_page("pages/perturbation.py").run()
    app.button(key="lens_pert_run").click().run()
    app.switch_page("pages/featurevis.py").run()
    app.button(key="fv_go").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert cache.results().hits["disk"] == 3 and cache.results().hits["computed"] == 0
    cache.results.clear()


def test_warm_writes_what_similarity_net2vec_dataset_examples_and_the_curves_read(app, monkeypatch, tmp_path,
                                                                                  samples, capsys):
    """`python -m core warm --pages faithfulness similarity net2vec index`, a restarted store, then each page's
    default view opens with every computation refused: the curves under the Attribution page's map, Similarity
    (the image's and the default second image's features), the Net2Vec fit over the folder and the Dataset
    examples page's index and reverse lookup all come from what warm wrote. A second warm leaves the complete
    index's files untouched; a changed folder extends it. The warmed values are computed cheaply (saliency under
    the SmoothGrad key, 4 curve steps, 10 Net2Vec steps): the keys are the pages' defaults, and the test checks
    that the pages read exactly those keys."""
    from dataclasses import replace


    import core.attribution.registry as registry
    import core.features.net2vec as core_net2vec
    import core.features.similarity as core_similarity
    import core.index as core_index
    from core.cli import main
    from core.index.spec import EXCITED_N
    from core.techniques import TECHNIQUES

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(samples / "chelsea.jpg", folder / "chelsea.jpg")
    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    evaluation_module = importlib.import_module("core.evaluation.evaluate")  # the package's name is the function
    attribute, evaluate, net2vec = registry.attribute, evaluation_module.evaluate, core_net2vec.net2vec
    monkeypatch.setattr(registry, "attribute", lambda model, x, target, method, **_o: attribute(
        model, x, target, method="saliency"))
    monkeypatch.setattr(evaluation_module, "evaluate", lambda *a, **k: evaluate(*a, **{**k, "steps": 4}))
    monkeypatch.setattr(core_net2vec, "net2vec", lambda *a, **k: net2vec(*a, **{**k, "iterations": 10}))
    args = ["warm", str(folder), "--pages", "faithfulness", "similarity", "net2vec", "index", "--model", "embedded",
            "--json"]
    from core.evaluation import Metric
    from core.evaluation.spec import CURVE_METRICS
    assert CURVE_METRICS == (Metric.DELETION.value, Metric.INSERTION.value)  # what the page draws
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert not out.get("errors") and out["computed"] == 7, out
    assert sorted((w["page"], w["status"]) for w in out["written"]) == [
        ("attribution", "computed"), ("faithfulness", "computed"), ("index", "computed"), ("index", "computed"),
        ("net2vec", "computed"), ("similarity", "computed"), ("similarity", "computed")]
    assert any(w["view"].startswith("reverse lookup") and w["image"] == str(folder / "chelsea.jpg")
               for w in out["written"] if w["page"] == "index")
    manifest = next((tmp_path / "cache" / "index").glob("*/manifest.json"))
    before, stamp = manifest.read_bytes(), manifest.stat().st_mtime_ns
    assert {w["image"] for w in out["written"] if w["page"] == "similarity"} == {
        str(folder / "chelsea.jpg"), str(samples / "coffee.jpg")}  # the page's default second image too
    assert main(args) == 0  # warm again: everything is there, the complete index is not rebuilt
    again = json.loads(capsys.readouterr().out)
    assert again["computed"] == 0 and again["present"] == 7
    assert manifest.read_bytes() == before and manifest.stat().st_mtime_ns == stamp  # not rewritten

    from ui import cache

    def refuse(*_a, **_k):
        raise AssertionError("computed although warm stored it")
    monkeypatch.setattr(registry, "attribute", refuse)
    monkeypatch.setattr(evaluation_module, "evaluate", refuse)
    monkeypatch.setattr(core_net2vec, "net2vec", refuse)
    monkeypatch.setattr(core_similarity, "layer_features", refuse)
    monkeypatch.setitem(TECHNIQUES, "similarity", replace(TECHNIQUES["similarity"], run=refuse))
    monkeypatch.setattr(core_index, "build_index", refuse)
    monkeypatch.setattr(core_index.ActivationIndex, "excited_by", refuse)
    cache.results.clear()  # a restarted server
    app.run()
    app.switch_page("pages/attribution.py").run()
    app.button(key="attr_run").click().run()
    assert {"Deletion AUC", "Insertion AUC"} <= {m.label for m in app.metric}  # the curves, from disk
    app.switch_page("pages/similarity.py").run()
    assert any("best match" in c for image in app.main.get("image") for c in image.captions)
    app.session_state["lens_n2v_folder"] = str(folder)  # not the sample photos' default fit
    app.switch_page("pages/net2vec.py").run()
    app.button(key="lens_n2v_run").click().run()
    assert app.dataframe, "no concept table"
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert cache.results().hits["disk"] == 5 and cache.results().hits["computed"] == 0
    app.session_state["lens_idx_folder"] = str(folder)  # not the sample photos' index
    app.switch_page("pages/activation_index.py").run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert not [i for i in app.info if "No index yet" in i.value]
    assert any("top 16 images" in h.value for h in app.subheader)  # the patch grid of the warmed index
    assert any(h.value.startswith("What chelsea.jpg excites in") for h in app.subheader)
    assert sum("sd) at (" in m.value for m in app.markdown) == EXCITED_N  # the reverse lookup's rows
    assert cache.results().hits["disk"] == 6 and cache.results().hits["computed"] == 0
    cache.results.clear()

    monkeypatch.undo()  # a changed folder: the index is extended (its new image forwarded), not left as it was
    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copy(samples / "coffee.jpg", folder / "coffee.jpg")
    assert main(["warm", str(folder), "--pages", "index", "--model", "embedded", "--json"]) == 0
    changed = json.loads(capsys.readouterr().out)
    assert [w["status"] for w in changed["written"] if w["view"].startswith("2 images")] == ["computed"]
    assert manifest.read_bytes() != before
