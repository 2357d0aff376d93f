"""Attribution: which pixels made the model say this class? One method in detail, or several side by side."""
from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's pages-directory mode before PyTorch loads; see ui/__init__)

import streamlit as st

from core.attribution.base import Sign
from core.attribution.registry import REGISTRY
from core.attribution.view import CLIP, SIGN, VIEW, View, figure, metric_lines, npy_bytes
from core.render import CLIP_PERCENTILE, png_bytes
from ui import cache, faithfulness, permalink, report, run, sidebar
from ui.attribution import compute, grid, method_options, sides
from ui.options import widget
from ui.permalink import Param

st.title("Attribution")
st.caption("Which pixels made the model say this class? Gradients, SmoothGrad, integrated gradients, guided "
           "backprop (correct on GELU networks), Grad-CAM, occlusion, CAM and LRP.")

selection = sidebar.current()


if selection is not None:
    model, inp = selection.model, selection.inp
    st.caption(f"Model: {sidebar.model_name(model)}.")
    top = cache.top_classes(model, selection.model_key, inp.tensor, selection.image_key, 5)
    permalink.bind([Param("method", "attr_method", options=list(REGISTRY)),
                    Param("target", "attr_target_mode", options=["Predicted", "Choose a class"]),
                    Param("class", "attr_target", int), Param("view", "attr_view", options=[v.value for v in View]),
                    Param("sign", "attr_sign", options=[s.value for s in Sign]), Param("clip", "attr_clip", float)])
    left, right = st.columns([2, 3])
    with left:
        mode = st.radio("Target class", ["Predicted", "Choose a class"], horizontal=True, key="attr_target_mode")
        if mode == "Predicted":
            target = top[0]["index"]
            st.caption(f"Predicted: **{top[0]['label']}** ({target}), {top[0]['prob']:.1%}")
        else:
            labels = [f"{model.label(i)} ({i})" for i in range(model.card.num_classes)]
            target = st.selectbox("Class (type to search)", range(len(labels)), format_func=labels.__getitem__,
                                  index=top[0]["index"], key="attr_target")
    with right:
        titles = {name: spec.title for name, spec in REGISTRY.items()}
        method = st.selectbox("Method", list(REGISTRY), format_func=titles.get, key="attr_method",
                              index=list(REGISTRY).index("smoothgrad"))
        st.caption(REGISTRY[method].summary)
    opts = method_options(method, model, "attr")

    tab_one, tab_grid = st.tabs(["Map", "Compare methods"])
    with tab_one:
        go = run.button("Compute the map", (selection.key, method, target, repr(sorted(opts.items()))), "attr_run")
        preview_slot = st.empty() if REGISTRY[method].preview else None
        result = compute(selection, method, target, opts, preview_slot) if go else None
        if result is not None:
            if result.notes:
                st.info("\n\n".join(n[0].upper() + n[1:] for n in result.notes))
            for line in metric_lines(result):
                st.markdown(line)
            if REGISTRY[method].caveat:
                st.caption(REGISTRY[method].caveat)
            c1, c2, c3 = st.columns(3)
            shown = {"signed": result.signed}
            with c1:
                view = widget(VIEW, VIEW.start(shown), shown, "attr_view")
            sign = c2.radio(SIGN.title, list(SIGN.choices), index=list(SIGN.choices).index(SIGN.start(shown)),
                            key="attr_sign", disabled=not result.signed, horizontal=True)
            with c3:
                clip = widget(CLIP, CLIP.start(shown), shown, "attr_clip")
            fig, scale = figure(result, inp.tensor, view=view, sign=sign, clip_percentile=clip)
            a, b = st.columns([1, 1.3])
            a.image(inp.tensor.permute(1, 2, 0).numpy(), caption=f"{selection.name} as the model sees it",
                    width="stretch")
            b.image(fig, width="stretch", caption=f"{titles[method]} for {model.label(target)} ({target}), "
                                                  f"{result.seconds:.2f} s ({model.card.arch}). Colours: "
                                                  f"{scale.describe()}.")
            report.add_button(lambda: report.attribution(
                selection, result, title=f"{titles[method]} for {model.label(target)} ({target})"),
                key=f"attr_{selection.key}_{method}_{target}_{sorted(opts.items())}")
            d1, d2 = st.columns(2)
            stem = f"{selection.name.rsplit('.', 1)[0]}_{method}_{target}"
            d1.download_button("Download figure (PNG)", png_bytes(fig), f"{stem}.png", "image/png",
                               key="attr_png")
            d2.download_button("Download raw map (.npy)", npy_bytes(result), f"{stem}.npy",
                               "application/octet-stream", key="attr_npy",
                               help="float32 HxW, aligned with the model input (after resize and crop)")
            faithfulness.map_section(selection, method, target, opts, result)

    with tab_grid:
        other = sidebar.second_model(selection)
        pair = sides(selection, target, other, chosen=target if mode == "Choose a class" else None)
        if pair.other is not None:
            st.caption(f"Classes: {pair.rule}. Each model sees the image through its own preprocessing.")
        chosen = st.multiselect("Methods", list(REGISTRY), format_func=titles.get, key="attr_grid_methods",
                                default=["saliency", "smoothgrad", "guided-backprop", "gradcam"])
        st.caption(f"Each with its default options, same image and {'class' if pair.other is None else 'classes'}; "
                   f"overlays, all signs, {CLIP_PERCENTILE:g} % clipping.")
        if chosen and run.button("Compute the grid", (pair.key, tuple(chosen)), "attr_grid_run"):
            cells = grid(pair, chosen)
            report.add_button(lambda: report.grid(pair, chosen, cells), key=f"grid_{pair.key}_{tuple(chosen)}")
        faithfulness.compare_section(pair)
