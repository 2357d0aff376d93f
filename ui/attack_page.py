"""Streamlit glue of the adversarial page (pages/attack.py): the panels drawn from one attack result."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.attack import view
from core.model.predict import top_classes
from core.render import captioned_strip, image_uint8, png_bytes
from core.attack.spec import ATTACK, EVIDENCE, MIN_EPS, attack_settings
from core.spec import canonical
from ui import cache, figures, report, run
from ui.options import technique_form
from ui.widgets import progress_bar


def say(message: view.Message) -> None:
    """Shows a view message with its level (st.success, st.warning, ...)."""
    getattr(st, message.level)(message.text)


def _top5(model, probs) -> pd.DataFrame:
    top = top_classes(model, probs[None], 5)[0]
    return pd.DataFrame({"class": [f"{c.label} ({c.index})" for c in top], "probability": [c.prob for c in top]})


def result_panel(model, result) -> tuple[np.ndarray, view.PerturbationPicture, np.ndarray]:
    """The verdict, the four pictures, the top-5 bars and the confidence curves; returns (adv_u8, delta, strip)."""
    source, new = int(result.source[0]), int(result.adv_index[0])
    for message in view.verdict(result, model.label):
        say(message)
    clean_u8, adv_u8, _ = view.pictures(result)
    delta = view.perturbation_picture(result.perturbation[0].numpy())
    a, b, c, d = st.columns(4)
    a.image(clean_u8, caption=f"original: {model.label(source)}", width="stretch")
    b.image(adv_u8, caption=f"adversarial: {model.label(new)}", width="stretch")
    c.image(delta.rgb, width="stretch", caption=delta.caption())
    d.image(delta.heat, width="stretch", caption=f"perturbation, channel mean in 1/255: {delta.scale.describe()}")
    for column, title, probs in zip(st.columns(2), ("Top-5 before", "Top-5 after"),
                                    (result.clean_probs[0], result.adv_probs[0])):
        column.subheader(title)
        figures.bars(_top5(model, probs), label="class", value="probability", value_title="probability",
                     where=column)
    st.subheader("Confidence over the steps")
    chart = pd.DataFrame(view.confidence(result, model.label)).rename_axis("step").reset_index()
    names = [c for c in chart.columns if c != "step"]
    # the clean class is always blue, the goal always orange, whatever their names
    figures.lines(chart, x="step", y_title="probability", y_domain=(0, 1),
                  colors=dict(zip(names, figures.PALETTE[:2])))
    strip = captioned_strip([(clean_u8, f"original: {model.label(source)}"),
                             (adv_u8, f"adversarial: {model.label(new)}"),
                             (delta.rgb, f"perturbation x{delta.amplification:.0f}")])
    return adv_u8, delta, strip


def report_button(model, selection, values, result, delta, strip) -> None:
    """The "Add to report" button: the strip, the settings, the CLI command and the figures of this attack."""
    settings = attack_settings(values)
    source, new = int(result.source[0]), int(result.adv_index[0])
    report.add_button(lambda: report.item(
        selection, title=f"{settings.method.upper()} attack: {model.label(source)} → {model.label(new)}",
        figure=strip, caption=delta.caption(),
        settings={"method": settings.method, "norm": settings.norm, "eps": view.eps_text(settings.eps, settings.norm),
                  "steps": settings.steps, "goal": settings.target if settings.target is not None else "untargeted",
                  "random start": settings.random_start},
        command=ATTACK.command_line(report.image_arg(selection), model.card, values),
        seconds=float(getattr(result, "seconds", 0.0)), seed=settings.seed if settings.random_start else None,
        figures={"clean probability": float(result.clean_probs[0, source]),
                 "adversarial probability": float(result.adv_probs[0, new]),
                 "L-inf (1/255)": float(result.linf[0]) * 255, "L2": float(result.l2[0])},
        notes=tuple(m.text for m in view.verdict(result, model.label))), key=f"atk_{selection.key}_{canonical(values)}")


def downloads(selection, result, adv_u8, strip) -> None:
    """The figure, the 8-bit adversarial image and the exact float arrays."""
    st.subheader("Downloads")
    d1, d2, d3 = st.columns(3)
    stem = selection.name.rsplit(".", 1)[0]
    d1.download_button("Figure (PNG)", png_bytes(strip), file_name=f"{stem}_attack.png", mime="image/png")
    d2.download_button("Adversarial image (PNG, 8-bit, model input size)", png_bytes(adv_u8),
                       file_name=f"{stem}_adversarial.png", mime="image/png")
    d3.download_button("Arrays (.npz: clean, adversarial, perturbation; float32 3×H×W in [0, 1])", view.npz(result),
                       file_name=f"{stem}_attack.npz", mime="application/octet-stream")
    st.caption("The PNGs are 8-bit: rounding to 1/255 can undo an attack that only just succeeded (the verdict above "
               "says whether it does here). The .npz keeps the exact float values.")


def min_eps_section(model, selection, values) -> None:
    """The "Find the smallest ε" button and, once pressed for these settings, the bisection's result."""
    key = (selection.key, canonical(values))
    if st.button("Find the smallest ε", help="Bisection over ε (at most 8 attacks), starting from the ε above "
                                             "and doubling it while the goal is not met."):
        st.session_state["atk_min_eps_for"] = key
    if st.session_state.get("atk_min_eps_for") != key:
        return
    with progress_bar("Searching for the smallest ε", labelled=True, forget="atk_min_eps_for") as progress:
        found = cache.technique(MIN_EPS, model, selection.model_key, selection.inp.tensor, selection.image_key,
                                values, progress)
    say(view.min_eps_message(found, model.label))
    if bool(found.found[0]):
        r, (a, b, _) = found.result, st.columns(3)
        a.image(image_uint8(r.adversarial[0]), width="stretch",
                caption=f"adversarial at the smallest ε: {model.label(int(r.adv_index[0]))}")
        small = view.perturbation_picture(r.perturbation[0].numpy())
        b.image(small.rgb, width="stretch", caption=f"its perturbation: {small.caption()}")


def smoothgrad_panel(model, selection, values, result) -> None:
    """SmoothGrad of the clean and adversarial images for the clean and the new class, behind its own button."""
    source, new = int(result.source[0]), int(result.adv_index[0])
    st.subheader("What changed in the evidence: SmoothGrad before and after")
    evidence_values = technique_form(EVIDENCE, cache.context(model), columns=2)
    classes = (source,) if new == source else (source, new)
    subject_key = (selection.image_key, canonical(values), classes)  # the adversarial image follows from these
    if not run.button("Compare the evidence", (selection.key, subject_key, canonical(evidence_values)), "atk_sg_run",
                      help="Four SmoothGrad maps: the clean and adversarial images, for both classes."):
        return
    try:
        with progress_bar("SmoothGrad", labelled=True) as progress:
            maps = cache.technique(EVIDENCE, model, selection.model_key,
                                   (result.clean[0], result.adversarial[0], classes), subject_key, evidence_values,
                                   progress)
    except (ValueError, RuntimeError) as e:
        st.error(f"SmoothGrad failed: {e}")
        return
    for c in classes:
        evidence = view.evidence_pictures(result.clean[0], result.adversarial[0], maps[(c, "clean")],
                                          maps[(c, "adversarial")])
        st.markdown(f"**{'clean class' if c == source else 'new class'}: {model.label(c)} ({c})**")
        for column, picture, caption in zip(st.columns(3), (evidence.before, evidence.after, evidence.difference), (
                "clean image", "adversarial image",
                "difference |after| − |before| (blue: less, red: more evidence after the attack)")):
            column.image(picture, caption=caption, width="stretch")
        st.caption(f"|SmoothGrad| on one scale for both images: {evidence.scale.describe()}; the difference "
                   f"ends at ±{evidence.scale.hi:.3g}.")
    if new == source:
        st.caption("The attack did not change the class, so only the clean class is shown.")
