"""Adversarial perturbation: how little it takes to change the model's mind, and what changes in its evidence."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.attack.spec import ATTACK
from core.spec import canonical
from ui import attack_page, cache, forms, run, sidebar
from ui.widgets import progress_bar

st.title("Adversarial perturbation")
st.caption("FGSM and PGD in pixel space: every step is projected onto the ε-ball around the image and clamped to "
           "[0, 1]. L∞ budgets are in 1/255 (one 8-bit grey level); L2 budgets in [0, 1]-pixel units.")

selection = sidebar.current()
if selection is not None:
    model, inp = selection.model, selection.inp
    st.caption(f"Model: {sidebar.model_name(model)}.")
    values = forms.attack_settings(model)
    if not run.button("Run attack", (selection.key, canonical(values)), "atk_run"):
        st.stop()
    try:
        with progress_bar(f"{values['method'].upper()} attack", labelled=True) as progress:
            result = cache.technique(ATTACK, model, selection.model_key, inp.tensor, selection.image_key, values,
                                     progress)
    except ValueError as e:
        st.error(f"Attack not run: {e}")
        st.stop()
    adv_u8, delta, strip = attack_page.result_panel(model, result)
    attack_page.report_button(model, selection, values, result, delta, strip)
    attack_page.min_eps_section(model, selection, values)
    attack_page.downloads(selection, result, adv_u8, strip)
    attack_page.smoothgrad_panel(model, selection, values, result)
