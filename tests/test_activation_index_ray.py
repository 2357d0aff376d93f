"""The Ray engine of the activation index equals the local engine (issue 14), with the relevance ranking too
(issue 26), on a local Ray started once here."""
from __future__ import annotations

import os

import numpy as np
import pytest
import ray
import torch

from core.index import build_index, open_index
from tests.test_activation_index import EXTRA, LAYERS, MIXED, _assert_same, _write_images, atto, folder  # noqa: F401
from tests.test_activation_index_relevance import live  # noqa: F401

torch.set_num_threads(1)  # see test_activation_index: the machine is shared


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (starting one takes seconds; each build also starts its actors). A throwaway
    local Ray needs no auth token (Ray 2.60 otherwise looks for one under ~/.ray)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _assert_identical(got, want):
    assert [i.path for i in got.images] == [i.path for i in want.images]
    assert [(i.sha256, i.box, i.size) for i in got.images] == [(i.sha256, i.box, i.size) for i in want.images]
    for layer in LAYERS:
        _assert_same(got, want, layer)  # same (image, y, x) per channel and rank, values within 1e-5
        # the sums are float64 over float32 maxima that depend on batch composition: same tolerance as locally
        np.testing.assert_allclose(got.statistics(layer), want.statistics(layer), rtol=1e-5, atol=1e-6)


def test_ray_build_equals_local_build_with_a_bad_file(atto, folder, tmp_path):
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    local = build_index(atto, folder, tmp_path / "local", layers=LAYERS, top_k=4, batch_size=3)
    seen = []
    remote = build_index(atto, folder, tmp_path / "ray", layers=LAYERS, top_k=4, batch_size=3, engine="ray",
                         workers=2, progress=lambda f, m: seen.append(f))
    assert remote.added == local.added == len(MIXED)
    assert [s["image"] for s in remote.skipped] == [s["image"] for s in local.skipped] == [str(folder / "broken.png")]
    assert "truncated or corrupt" in remote.skipped[0]["error"]
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    _assert_identical(remote.index, local.index)
    build = open_index(tmp_path / "ray").manifest["build"]
    assert (build["engine"], build["workers"], build["added"]) == ("ray", 2, len(MIXED)) and build["seconds"] > 0
    assert open_index(tmp_path / "local").manifest["build"]["engine"] == "local"


def test_ray_build_resumes_after_cancel_and_adds_only_new_images(atto, folder, tmp_path):
    first = build_index(atto, folder, tmp_path / "ray", layers=LAYERS, top_k=4, batch_size=3, engine="ray",
                        workers=1, cancel=lambda: True)
    assert first.cancelled and len(first.index) == 3  # the first batch is merged and saved, then it stops
    _write_images(folder, EXTRA)
    resumed = build_index(atto, folder, tmp_path / "ray", layers=LAYERS, top_k=4, batch_size=3, engine="ray",
                          workers=1)
    assert not resumed.cancelled and not resumed.notes
    assert resumed.added == len(MIXED) + len(EXTRA) - 3  # only the images not indexed yet were read
    fresh = build_index(atto, folder, tmp_path / "fresh", layers=LAYERS, top_k=4, batch_size=3)
    _assert_identical(resumed.index, fresh.index)


def test_ray_build_with_relevance_equals_local_build(live, folder, tmp_path):
    """The same batches through the same pass: both rankings identical (values within float32 rounding of
    the same computation in another process)."""
    local = build_index(live, folder, tmp_path / "local", layers=LAYERS, top_k=4, batch_size=3, relevance=True)
    remote = build_index(live, folder, tmp_path / "ray", layers=LAYERS, top_k=4, batch_size=3, engine="ray",
                         workers=2, relevance=True)
    assert remote.index.has_relevance and remote.index.spec == local.index.spec
    _assert_identical(remote.index, local.index)
    for layer in LAYERS:
        for channel in range(local.index.layer(layer).channels):
            got = remote.index.top(layer, channel, by="relevance")
            want = local.index.top(layer, channel, by="relevance")
            assert [(p.image, p.y, p.x) for p in got] == [(p.image, p.y, p.x) for p in want]
            np.testing.assert_allclose([p.value for p in got], [p.value for p in want], rtol=1e-5, atol=1e-6)


def test_a_ray_worker_keeps_freed_memory_as_the_driver_says(monkeypatch):
    """The actors (index and audit) get the driver's heap setting as an argument: a worker process does not see
    the driver's environment."""
    import torch

    from core.index import ray_engine

    kept = []
    monkeypatch.setattr(ray_engine, "keep_freed_memory", lambda mb: kept.append(mb) or True)
    threads = torch.get_num_threads()
    try:
        ray_engine.prepare_worker(1, 256)
        assert torch.get_num_threads() == 1
        ray_engine.prepare_worker(1, 0)
    finally:
        torch.set_num_threads(threads)
    assert kept == [256]
