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


def test_ray_audit_equals_local_with_a_bad_file(tmp_path):
    from core.audit.audit import run_audit
    from core.audit.demo import SHORTCUT_HEAD, build_shortcut_set
    from core.model import load_model

    build_shortcut_set(tmp_path)
    (tmp_path / "stamped" / "broken.png").write_bytes(b"\x89PNG not really")
    model = load_model(None, str(SHORTCUT_HEAD))
    local = run_audit(model, tmp_path, classes=["stamped"])
    remote = run_audit(model, tmp_path, classes=["stamped"], engine="ray", workers=2)
    assert [e["image"] for e in remote.errors] == [e["image"] for e in local.errors] == ["stamped/broken.png"]
    (a,), (b,) = local.classes, remote.classes
    assert a.images == b.images
    np.testing.assert_allclose(b.maps, a.maps, atol=1e-6)
    assert (a.assignment == b.assignment).all()
    assert [(k.id, k.images) for k in a.clusters] == [(k.id, k.images) for k in b.clusters]
