"""The Stop button (ui/widgets.py progress_bar + ui/run.py): shown while a job computes, it stops the job and
the rerun says "stopped" instead of starting the job again.

AppTest runs a script to its end, so the interruption Streamlit makes when Stop is pressed (a RerunException at
the job's next progress report) is played by ``st.stop()`` at a progress report: the same BaseException path of
the scheduler, and the bar with its Stop button stays on screen to be pressed. The real press mid-job is
tests/test_load_browser.py's Stop test.
"""
from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest


def _script():
    import streamlit as st

    from core.serve import Scheduler
    from ui import run
    from ui.widgets import progress_bar

    sched = st.session_state.setdefault("sched", Scheduler(max_jobs=1, cores=1, memory_bytes=1 << 30))
    st.session_state.setdefault("started", 0)
    st.session_state.setdefault("states", [])
    n = st.number_input("n", 1, 10, 2, key="n")

    def compute(job, report):
        st.session_state["started"] += 1
        st.session_state["states"].append(job)
        for i in range(4):
            report(i / 4, f"step {i}")
            if st.session_state.get("interrupt"):
                st.stop()  # what a Stop press (or any rerun) does at the job's next element call
        return n * 10

    if run.button("Compute", (n,), key="go"):
        with progress_bar("computing") as progress:
            stored = st.session_state.setdefault("stored", {})  # the result store's part
            value = stored[n] if n in stored else sched.run(("k", n), compute, progress=progress)
            stored[n] = value
        st.markdown(f"result {value}")
    # a job started by a plain button whose pressed state is kept in session state (as Net2Vec's)
    if st.button("Other", key="other"):
        st.session_state["other_for"] = n
    if st.session_state.get("other_for") == n:
        with progress_bar("other", forget="other_for") as progress:
            value = sched.run(("other", n), compute, progress=progress)
        st.markdown(f"other {value}")


def _stop_buttons(at) -> list:
    return [b for b in at.button if str(b.key).startswith("lens_stop_")]


def test_stop_cancels_the_job_and_the_rerun_does_not_restart_it():
    at = AppTest.from_function(_script).run()
    at.session_state["interrupt"] = True
    at.button(key="go").click().run()
    sched = at.session_state["sched"]
    job = at.session_state["states"][-1]
    assert job.state == "cancelled" and sched.status()["running"] == 0
    stops = _stop_buttons(at)
    assert [b.label for b in stops] == ["Stop"]  # drawn at the first progress report, still on screen

    at.session_state["interrupt"] = False
    stops[0].click().run()
    assert not at.exception
    assert at.session_state["started"] == 1  # not started again by the rerun
    assert not [m for m in at.markdown if m.value.startswith("result")]
    assert any("Stopped. Press **Compute**" in c.value for c in at.caption)
    assert [t.value for t in at.toast] == ["Stopped."]
    assert "run" not in at.query_params  # a link made now does not carry the stopped result

    at.button(key="go").click().run()  # pressing again computes, and the "stopped" note goes
    assert at.session_state["started"] == 2 and any(m.value == "result 20" for m in at.markdown)
    assert not any("Stopped" in c.value for c in at.caption)
    assert not _stop_buttons(at)  # the finished job's bar and Stop button are gone

    at.run()  # a rerun with the result stored: no job, so no Stop button flashes
    assert at.session_state["started"] == 2 and not _stop_buttons(at)


def test_stop_forgets_a_plain_buttons_pressed_state():
    at = AppTest.from_function(_script).run()
    at.session_state["interrupt"] = True
    at.button(key="other").click().run()
    assert at.session_state["states"][-1].state == "cancelled"
    at.session_state["interrupt"] = False
    _stop_buttons(at)[0].click().run()
    assert not at.exception
    assert "other_for" not in at.session_state and at.session_state["started"] == 1
    assert not [m for m in at.markdown if m.value.startswith("other")]
    assert [t.value for t in at.toast] == ["Stopped."]


def test_a_stop_under_one_run_button_leaves_the_others_result():
    """The bar belongs to the run button just before it: stopping the second job keeps the first result."""
    def script():
        import streamlit as st

        from ui import run
        from ui.widgets import progress_bar

        st.session_state.setdefault("runs", [])
        if run.button("First", (1,), key="first"):
            st.markdown("first result")
        if run.button("Second", (2,), key="second"):
            with progress_bar("second") as progress:
                progress(0.5, "half")
                if st.session_state.get("interrupt"):
                    st.stop()
            st.markdown("second result")

    at = AppTest.from_function(script).run()
    at.button(key="first").click().run()
    at.session_state["interrupt"] = True
    at.button(key="second").click().run()
    at.session_state["interrupt"] = False
    [b for b in at.button if str(b.key).startswith("lens_stop_")][0].click().run()
    assert [m.value for m in at.markdown] == ["first result"]
    assert any("Stopped. Press **Second**" in c.value for c in at.caption)


def test_stop_under_the_faithfulness_curves_keeps_the_map(app, monkeypatch, tmp_path):
    """The deletion/insertion curves under an attribution map start without a button; their progress bar has
    Stop like every other: pressing it stops them, the map stays, the rerun does not start them again until
    "Compute the curves" (the real attribution page, embedded model, saliency, 3 curve steps). The Compare
    methods bar has Stop too."""
    import importlib

    import streamlit as st

    from ui import cache

    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "cache"))
    cache.results.clear()
    started = []
    evaluation_module = importlib.import_module("core.evaluation.evaluate")  # the package's name is the function
    evaluate = evaluation_module.evaluate

    def evaluation(model, x, target, *, method, progress=None, **keywords):
        started.append(method)  # on the job's worker thread, which has the session's script context
        if st.session_state.get("interrupt"):
            for _ in range(100):  # 2 s for the script thread to draw the bar and its Stop (it draws every 0.25 s)
                progress(0.1, "deletion 1/3")
                time.sleep(0.02)
            st.stop()  # what a Stop press does: the script thread stops at its next element call
            while True:  # and the job at its next report (JobCancelled)
                progress(0.1, "deletion 1/3")
                time.sleep(0.02)
        return evaluate(model, x, target, method=method, progress=progress, **keywords)
    monkeypatch.setattr(evaluation_module, "evaluate", evaluation)

    app.run()
    app.session_state["attr_method"] = "saliency"
    app.session_state["faith_steps"] = 3
    app.session_state["interrupt"] = True
    app.switch_page("pages/attribution.py").run()
    app.button(key="attr_run").click().run()
    assert started == ["saliency"] and not app.metric
    stops = _stop_buttons(app)
    assert [b.label for b in stops] == ["Stop"]  # under the curves' bar (the map came without a report)

    app.session_state["interrupt"] = False
    stops[0].click().run()
    assert not app.exception and not app.error
    assert started == ["saliency"]  # not started again by the rerun
    assert app.main.get("image"), "the map went with the curves"
    assert any("curves stopped" in c.value for c in app.caption) and not app.metric
    assert [t.value for t in app.toast] == ["Stopped."]

    app.button(key="faith_curves_go").click().run()
    assert started == ["saliency", "saliency"]
    assert {"Deletion AUC", "Insertion AUC"} <= {m.label for m in app.metric} and not _stop_buttons(app)

    # Compare methods: Stop under its bar forgets the press of "Evaluate the methods"
    app.session_state["interrupt"] = True
    app.session_state["faith_cmp_steps"] = 2  # not the stored curves
    app.multiselect(key="faith_methods").set_value(["saliency"])
    app.multiselect(key="faith_metrics").set_value(["deletion", "insertion"]).run()
    app.button(key="faith_go").click().run()
    assert started[-1] == "saliency" and len(started) == 3 and not app.dataframe
    app.session_state["interrupt"] = False
    [stop] = _stop_buttons(app)
    stop.click().run()
    assert not app.exception and len(started) == 3 and not app.dataframe
    assert any("Stopped. Press **Evaluate the methods**" in c.value for c in app.caption)
    cache.results.clear()
