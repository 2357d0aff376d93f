"""Adversarial perturbation: how little it takes to change the model's mind, and what changes in its evidence."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from core.attack.attacks import PIXEL, AttackMethod as Method, Norm
from core.model.predict import top_classes
from core.render import Colormap, colorize, image_uint8, normalize_map, overlay
from ui import cache, sidebar

st.title("Adversarial perturbation")
st.caption("FGSM and PGD in pixel space: every step is projected onto the ε-ball around the image and clamped to "
           "[0, 1]. L∞ budgets are in 1/255 (one 8-bit grey level); L2 budgets in [0, 1]-pixel units.")


def _progress_bar(label: str):
    bar = st.progress(0.0, text=label)
    return bar, lambda fraction, message: bar.progress(min(max(fraction, 0.0), 1.0), text=f"{label}: {message}")


def _settings_form(model) -> tuple:
    with st.form("attack_form"):
        c1, c2, c3 = st.columns(3)
        method = c1.radio("Method", [m.value for m in Method], index=1, horizontal=True, key="atk_method",
                          format_func=str.upper, help="FGSM: one step of size ε. PGD: projected steps of size 'step'.")
        norm = c1.radio("Norm", [n.value for n in Norm], horizontal=True, key="atk_norm",
                        format_func=lambda n: {"linf": "L∞", "l2": "L2"}[n])
        eps_linf = c2.slider("ε (L∞, in 1/255)", 0.25, 32.0, 4.0, 0.25, key="atk_eps")
        eps_l2 = c2.slider("ε (L2, pixel units)", 0.05, 10.0, 0.5, 0.05, key="atk_eps_l2")
        step_linf = c3.slider("PGD step (L∞, in 1/255)", 0.25, 8.0, 1.0, 0.25, key="atk_step")
        step_l2 = c3.slider("PGD step (L2)", 0.01, 2.0, 0.125, 0.005, key="atk_step_l2")
        c4, c5, c6 = st.columns(3)
        steps = c4.slider("PGD steps", 1, 100, 10, key="atk_steps")
        labels = ["untargeted: any other class"] + [f"{i}: {model.label(i)}" for i in range(model.card.num_classes)]
        target = c5.selectbox("Goal", labels, key="atk_target",
                              help="Untargeted moves away from the current prediction; a class moves toward it.")
        random_start = c6.checkbox("Random start", key="atk_random_start")
        early_stop = c6.checkbox("Stop once the goal is met", value=True, key="atk_early_stop")
        seed = c6.number_input("Seed", 0, 2**31 - 1, 0, key="atk_seed")
        st.form_submit_button("Run attack", type="primary")
    unit = PIXEL if norm == Norm.LINF.value else 1.0
    eps, step = (eps_linf, step_linf) if norm == Norm.LINF.value else (eps_l2, step_l2)
    goal = None if target == labels[0] else int(target.split(":", 1)[0])
    return (method, norm, eps * unit, step * unit, int(steps), goal, bool(random_start), bool(early_stop), int(seed))


def _eps_text(value: float, norm: str) -> str:
    return f"{value / PIXEL:.2f}/255" if norm == Norm.LINF.value else f"{value:.3f}"


def _perturbation_image(delta: np.ndarray, eps: float, norm: str) -> np.ndarray:
    """Channel mean of δ (3, H, W) on a diverging map: ±ε at the ends for L∞, ±max|δ| for L2."""
    mean = delta.mean(0)
    if norm == Norm.LINF.value:
        return colorize(np.clip(mean / eps, -1, 1), Colormap.DIVERGING)
    return colorize(normalize_map(mean, signed=True, clip_percentile=100), Colormap.DIVERGING)


def _figure_png(panels: list[tuple[np.ndarray, str]]) -> bytes:
    h = max(p.shape[0] for p, _ in panels)
    w = sum(p.shape[1] for p, _ in panels)
    canvas = Image.new("RGB", (w, h + 22), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for picture, caption in panels:
        canvas.paste(Image.fromarray(picture), (x, 22))
        draw.text((x + 4, 4), caption, fill="black")
        x += picture.shape[1]
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _top5(model, probs) -> pd.DataFrame:
    top = top_classes(model, probs[None], 5)[0]
    return pd.DataFrame({"class": [f"{c.label} ({c.index})" for c in top], "probability": [c.prob for c in top]})


def _smoothgrad_panel(model, selection, settings, result, source: int, new: int) -> None:
    st.subheader("What changed in the evidence: SmoothGrad before and after")
    try:
        import core.attribution.registry  # noqa: F401  (lands with the attribution branch)
    except ImportError:
        st.info("The SmoothGrad comparison needs the attribution module (core.attribution, from the attribution "
                "branch), which is not installed in this build.")
        return
    c1, c2 = st.columns(2)
    samples = c1.slider("SmoothGrad samples", 4, 50, 16, key="atk_sg_samples",
                        help="Noisy copies per map; four maps are computed (two images, two classes).")
    noise = c2.slider("SmoothGrad noise σ (fraction of the pixel range)", 0.0, 0.5, 0.15, 0.01, key="atk_sg_noise")
    classes = (source,) if new == source else (source, new)
    bar, progress = _progress_bar("SmoothGrad")
    try:
        maps = cache.smoothgrad_before_after(model, selection.model_key, result.clean[0], result.adversarial[0],
                                             selection.image_key, settings, classes, samples, noise, progress)
    except (ValueError, RuntimeError) as e:
        bar.empty()
        st.error(f"SmoothGrad failed: {e}")
        return
    bar.empty()
    clean_img, adv_img = result.clean[0], result.adversarial[0]
    for c in classes:
        before, after = maps[(c, "clean")], maps[(c, "adversarial")]
        scale = max(float(np.percentile(np.abs(np.stack([before, after])), 99.5)), 1e-12)  # shared: comparable
        role = "clean class" if c == source else "new class"
        st.markdown(f"**{role}: {model.label(c)} ({c})**")
        a, b, d = st.columns(3)
        a.image(overlay(clean_img, np.clip(np.abs(before) / scale, 0, 1)), caption="clean image", width="stretch")
        b.image(overlay(adv_img, np.clip(np.abs(after) / scale, 0, 1)), caption="adversarial image",
                width="stretch")
        d.image(colorize(np.clip((np.abs(after) - np.abs(before)) / scale, -1, 1), Colormap.DIVERGING),
                caption="difference |after| − |before| (red: more evidence after the attack)", width="stretch")
    if new == source:
        st.caption("The attack did not change the class, so only the clean class is shown.")


def _min_eps_section(model, selection, settings, norm: str) -> None:
    key = (selection.key, settings)
    if st.button("Find the smallest ε", help="Bisection over ε (at most 8 attacks), starting from the ε above "
                                             "and doubling it while the goal is not met."):
        st.session_state["atk_min_eps_for"] = key
    if st.session_state.get("atk_min_eps_for") != key:
        return
    bar, progress = _progress_bar("Searching for the smallest ε")
    found = cache.smallest_eps(model, selection.model_key, selection.inp.tensor, selection.image_key, settings,
                               progress)
    bar.empty()
    attacks = int(found.attacks[0])
    if bool(found.found[0]):
        r = found.result
        st.success(f"Smallest ε found: **{_eps_text(float(found.eps[0]), norm)}** reaches the goal "
                   f"({model.label(int(r.adv_index[0]))} at {float(r.adv_probs[0].max()):.1%}); "
                   f"{_eps_text(float(found.below[0]), norm)} does not. {attacks} attacks.")
        a, b, _ = st.columns(3)
        a.image(image_uint8(r.adversarial[0]), width="stretch",
                caption=f"adversarial at the smallest ε: {model.label(int(r.adv_index[0]))}")
        b.image(_perturbation_image(r.perturbation[0].numpy(), float(found.eps[0]), norm), width="stretch",
                caption="its perturbation (channel mean)")
    else:
        st.warning(f"No ε up to {_eps_text(float(found.below[0]), norm)} reaches the goal "
                   f"({attacks} attacks). Try more PGD steps or a larger step.")


selection = sidebar.current()
if selection is not None:
    model, inp = selection.model, selection.inp
    settings = _settings_form(model)
    method, norm, eps = settings[0], settings[1], settings[2]
    bar, progress = _progress_bar(f"{method.upper()} attack")
    try:
        result = cache.adversarial(model, selection.model_key, inp.tensor, selection.image_key, settings, progress)
    except ValueError as e:
        bar.empty()
        st.error(f"Attack not run: {e}")
        st.stop()
    bar.empty()
    source, new = int(result.source[0]), int(result.adv_index[0])
    clean_p, adv_p = result.clean_probs[0], result.adv_probs[0]
    linf, l2 = float(result.linf[0]), float(result.l2[0])
    sizes = f"‖δ‖∞ = {linf / PIXEL:.2f}/255, ‖δ‖₂ = {l2:.3f}, {int(result.steps_taken[0])} steps"
    if result.targeted and int(result.target[0]) == int(result.clean_index[0]):
        st.info(f"The model already says {model.label(source)}: a targeted attack toward it has nothing to do. "
                "Pick another goal class.")
    elif bool(result.success[0]):
        st.success(f"The model changed its mind: {model.label(source)} {float(clean_p[source]):.1%} → "
                   f"{model.label(new)} {float(adv_p[new]):.1%} with ε = {_eps_text(eps, norm)} ({sizes}).")
        new8 = int(result.adv8_probs[0].argmax())
        said8 = f"{model.label(new8)} {float(result.adv8_probs[0, new8]):.1%}"
        if bool(result.success_8bit[0]):
            st.caption(f"Rounded to 8 bits per channel, as the PNG below stores it, it still works: {said8}.")
        else:
            st.warning(f"Rounded to 8 bits per channel, as the PNG below stores it, the attack is undone: the model "
                       f"says {said8}. The .npz keeps the exact values; a slightly larger ε survives rounding.")
    else:
        goal = (f"reach {model.label(result.target[0].item())}" if result.targeted
                else "change the prediction")
        st.warning(f"The attack failed: within ε = {_eps_text(eps, norm)} and {result.steps} steps it did not "
                   f"{goal}. The model still says {model.label(new)} at {float(adv_p[new]):.1%} ({sizes}). "
                   "Try a larger ε, more steps, or 'Find the smallest ε'.")

    clean_u8, adv_u8 = image_uint8(result.clean[0]), image_uint8(result.adversarial[0])
    delta = result.perturbation[0].numpy()
    delta_u8 = _perturbation_image(delta, eps, norm)
    a, b, c = st.columns(3)
    a.image(clean_u8, caption=f"original: {model.label(source)}", width="stretch")
    b.image(adv_u8, caption=f"adversarial: {model.label(new)}", width="stretch")
    c.image(delta_u8, width="stretch",
            caption="perturbation, channel mean (blue −, red +; ends at ±ε)" if norm == Norm.LINF.value
            else "perturbation, channel mean (blue −, red +; ends at ±max|δ|)")

    left, right = st.columns(2)
    for column, title, probs in ((left, "Top-5 before", clean_p), (right, "Top-5 after", adv_p)):
        with column:
            st.subheader(title)
            st.bar_chart(_top5(model, probs), x="class", y="probability", horizontal=True, sort="-probability")

    st.subheader("Confidence over the steps")
    traj = result.trajectory
    goal_name = (f"P({model.label(result.target[0].item())})" if result.targeted
                 else "P(most probable other class)")
    chart = pd.DataFrame({f"P({model.label(source)})": traj.source_prob[0].numpy(),
                          goal_name: traj.goal_prob[0].numpy()}, index=pd.Index(range(traj.loss.shape[1]), name="step"))
    st.line_chart(chart.dropna(), x_label="step", y_label="probability")

    _min_eps_section(model, selection, settings, norm)

    st.subheader("Downloads")
    d1, d2, d3 = st.columns(3)
    figure = _figure_png([(clean_u8, f"original: {model.label(source)}"), (adv_u8, f"adversarial: {model.label(new)}"),
                          (delta_u8, "perturbation")])
    d1.download_button("Figure (PNG)", figure, file_name=f"{selection.name.rsplit('.', 1)[0]}_attack.png",
                       mime="image/png")
    png = io.BytesIO()
    Image.fromarray(adv_u8).save(png, format="PNG")
    d2.download_button("Adversarial image (PNG, 8-bit, model input size)", png.getvalue(),
                       file_name=f"{selection.name.rsplit('.', 1)[0]}_adversarial.png", mime="image/png")
    buf = io.BytesIO()
    np.savez_compressed(buf, clean=result.clean[0].numpy(), adversarial=result.adversarial[0].numpy(),
                        perturbation=delta)
    d3.download_button("Arrays (.npz: clean, adversarial, perturbation; float32 3×H×W in [0, 1])", buf.getvalue(),
                       file_name=f"{selection.name.rsplit('.', 1)[0]}_attack.npz", mime="application/octet-stream")
    st.caption("The PNGs are 8-bit: rounding to 1/255 can undo an attack that only just succeeded (the verdict above "
               "says whether it does here). The .npz keeps the exact float values.")

    _smoothgrad_panel(model, selection, settings, result, source, new)
