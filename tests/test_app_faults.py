"""A job that raises, at the app level: its own user sees one line, every other session goes on working.

The fault is a test-only attribution method registered here (never in the product): it takes a hook on the
shared model, reports progress (so it is a running job of the scheduler) and raises.
"""
from __future__ import annotations

import time

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.attribution.base import from_raw, input_gradient
from core.attribution.registry import register, unregister
from core.attribution.spec import MethodSpec
from core.hooks import hook_count, hooks_on
from core.serve import scheduler
from tests.conftest import ROOT


def faulty(model, x, target, *, progress=None):
    """Hooks the model, reports half-way, then raises: the injected fault."""
    started = time.perf_counter()
    with hooks_on(model) as hooks:
        hooks.forward(next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), lambda *_: None)
        grad = input_gradient(model, x, target)
        if progress is not None:
            progress(0.5, "half-way")
        raise RuntimeError("injected fault\nsecond line never shown")
    return from_raw(grad, "test-fault", target.tolist(), started)  # pragma: no cover - never reached


FAULT = MethodSpec("test-fault", faulty, "Injected fault", "a test-only method that always raises")


@pytest.fixture
def fault():
    register(FAULT)
    try:
        yield FAULT
    finally:
        unregister(FAULT.name)


def test_a_failing_job_leaves_the_app_usable_for_every_session(fault, app):
    from ui import cache

    second = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    app.run()
    model = cache.get_model(None, None)  # the app's shared model (the embedded one, offline)
    hooks = hook_count(model)
    finished = scheduler().status()["finished"]
    stored = cache.results().hits["computed"]
    app.session_state["attr_method"] = "test-fault"
    app.switch_page("pages/attribution.py").run()
    app.button(key="attr_run").click().run()
    assert not app.exception, app.exception
    assert [e.value for e in app.error] == ["Injected fault failed: RuntimeError: injected fault"]
    status = scheduler().status()
    assert status["running"] == 0 and status["queued"] == 0 and status["finished"] > finished
    assert hook_count(model) == hooks  # no hook left on the shared model
    assert cache.results().hits["computed"] == stored  # nothing stored for the failed job

    second.run()  # another session, after the fault: computes as usual
    second.session_state["attr_method"] = "saliency"
    second.switch_page("pages/attribution.py").run()
    second.button(key="attr_run").click().run()
    assert not second.exception and not second.error
    assert len(second.get("download_button")) == 2  # the map was computed and drawn

    app.selectbox(key="attr_method").set_value("saliency").run()  # and the failing user goes on too
    app.button(key="attr_run").click().run()
    assert not app.exception and not app.error and len(app.get("download_button")) == 2
