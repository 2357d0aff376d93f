"""The audit's Ray engine gives the local engine's maps and clusters, on a local Ray started once here."""
from __future__ import annotations

import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _local_on_one_thread(model, root, **options):
    """The local engine on one thread, as each of two actors on the two CPUs runs: Grad-CAM's channel sum
    cancels, and another thread count's rounding moves a map's small cells by percents."""
    import torch

    from core.audit.audit import run_audit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_audit(model, root, **options)
    finally:
        torch.set_num_threads(threads)


def test_ray_audit_equals_local_with_a_bad_file(tmp_path):
    from core.audit.audit import run_audit
    from core.audit.demo import SHORTCUT_HEAD, build_shortcut_set
    from core.model import load_model

    build_shortcut_set(tmp_path)
    (tmp_path / "stamped" / "broken.png").write_bytes(b"\x89PNG not really")
    model = load_model(None, str(SHORTCUT_HEAD))
    local = _local_on_one_thread(model, tmp_path, classes=["stamped"])
    remote = run_audit(model, tmp_path, classes=["stamped"], engine="ray", workers=2)
    assert [e["image"] for e in remote.errors] == [e["image"] for e in local.errors] == ["stamped/broken.png"]
    (a,), (b,) = local.classes, remote.classes
    assert a.images == b.images
    np.testing.assert_allclose(b.maps, a.maps, atol=1e-6)
    assert (a.assignment == b.assignment).all()
    assert [(k.id, k.images) for k in a.clusters] == [(k.id, k.images) for k in b.clusters]


def test_ray_audit_equals_local_over_several_blocks_on_two_actors(tmp_path):
    """150 images (three of the engine's 64-image blocks, split between two actors) with an unreadable one in the
    middle of a block: the same errors, maps and clusters as the local engine."""
    import shutil

    from core.audit.audit import run_audit
    from core.audit.demo import SHORTCUT_HEAD, build_shortcut_set
    from core.model import load_model

    demo, root = tmp_path / "demo", tmp_path / "set"
    build_shortcut_set(demo)
    for cls in ("plain", "stamped"):
        (root / cls).mkdir(parents=True)
        files = sorted((demo / cls).glob("*.png"))
        for n in range(75):
            shutil.copy(files[n % len(files)], root / cls / f"{n:03d}.png")
    (root / "plain" / "040-broken.png").write_bytes(b"\x89PNG not really")
    model = load_model(None, str(SHORTCUT_HEAD))
    local = _local_on_one_thread(model, root)
    remote = run_audit(model, root, engine="ray", workers=2)
    assert [e["image"] for e in remote.errors] == [e["image"] for e in local.errors] == ["plain/040-broken.png"]
    assert len(local.classes) == len(remote.classes) == 2
    for a, b in zip(local.classes, remote.classes):
        assert a.images == b.images and len(a.images) == 75
        np.testing.assert_allclose(b.maps, a.maps, atol=1e-6)
        assert (a.assignment == b.assignment).all()
        assert [(k.id, k.images) for k in a.clusters] == [(k.id, k.images) for k in b.clusters]


def test_on_a_running_cluster_the_actors_stay_for_the_next_audit_and_leave_when_idle(tmp_path):
    """With an address (here the test's Ray, already running) the pool is kept: a second audit of the same model
    finds the same actor, which has served the first audit's blocks; an actor idle for its limit leaves."""
    import time

    from core.audit import ray_engine
    from core.audit.audit import run_audit
    from core.audit.demo import SHORTCUT_HEAD, build_shortcut_set
    from core.model import load_model
    from core.model.identity import weights_fingerprint

    build_shortcut_set(tmp_path)
    model = load_model(None, str(SHORTCUT_HEAD))
    first = run_audit(model, tmp_path, engine="ray", workers=1, address="auto")
    key = ray_engine.pool_key(weights_fingerprint(model), "gradcam", 2, 8, ray_engine.default_heap_keep_mb())
    actor = ray.get_actor(f"lens-audit-{key}-0", namespace=ray_engine.NAMESPACE)
    try:
        blocks = ray.get(actor.served.remote())
        assert blocks >= 1
        second = run_audit(model, tmp_path, engine="ray", workers=1, address="auto")
        assert ray.get(actor.served.remote()) == 2 * blocks  # the same actor served both
        assert [(k.id, k.images) for c in first.classes for k in c.clusters] == \
            [(k.id, k.images) for c in second.classes for k in c.clusters]
    finally:
        ray.kill(actor)

    idle = ray.remote(ray_engine._Mapper).options(num_cpus=0.1).remote(
        spec=("load", "embedded", "embedded"), fingerprint="-", method="gradcam", threads=1, idle_seconds=1.0)
    assert ray.get(idle.served.remote()) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get(idle.served.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("an idle actor stayed past its limit")
