"""ui.run (one rule for heavy work) and ui.permalink (settings in the URL) on a minimal script."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _script():
    import streamlit as st

    from ui import permalink, run
    from ui.permalink import Param

    permalink.bind([Param("n", "n", int), Param("mode", "mode", options=["a", "b"]),
                    Param("on", "on", bool), Param("pick", "pick", list, options=["x", "y", "z"])])
    n = st.number_input("n", 1, 10, 2, key="n")
    mode = st.radio("mode", ["a", "b"], key="mode")
    st.checkbox("on", key="on")
    st.multiselect("pick", ["x", "y", "z"], key="pick")
    st.session_state.setdefault("runs", 0)
    if run.button("Compute", (n, mode), key="go"):
        st.session_state["runs"] += 1
        st.markdown(f"result {n}{mode}")


def test_nothing_runs_until_pressed_and_a_change_asks_again():
    at = AppTest.from_function(_script).run()
    assert not at.markdown and any("Press **Compute**" in c.value for c in at.caption)
    at.button(key="go").click().run()
    assert [m.value for m in at.markdown] == ["result 2a"] and at.query_params["run"] == "go"
    at.checkbox(key="on").check().run()  # a setting outside params keeps the result
    assert [m.value for m in at.markdown] == ["result 2a"]
    at.number_input(key="n").set_value(3).run()
    assert not at.markdown and any("Settings changed" in c.value for c in at.caption)
    assert "run" not in at.query_params and at.query_params["n"] == "3"


def test_a_link_restores_typed_settings_and_runs():
    at = AppTest.from_function(_script)
    at.query_params.update({"n": "7", "mode": "b", "on": "1", "pick": ["z", "x"], "run": "go"})
    at.run()
    assert not at.exception
    assert at.number_input(key="n").value == 7 and at.radio(key="mode").value == "b"
    assert at.checkbox(key="on").value is True and at.multiselect(key="pick").value == ["z", "x"]
    assert [m.value for m in at.markdown] == ["result 7b"]
    at.number_input(key="n").set_value(5).run()  # the user's change wins over the link
    assert at.number_input(key="n").value == 5 and at.query_params["n"] == "5"


def test_a_bad_link_value_is_ignored_with_a_caption():
    at = AppTest.from_function(_script)
    at.query_params.update({"n": "many", "mode": "c"})
    at.run()
    assert not at.exception
    assert at.number_input(key="n").value == 2 and at.radio(key="mode").value == "a"
    captions = " ".join(c.value for c in at.caption)
    assert "n=many is not available" in captions and "mode=c is not available" in captions
