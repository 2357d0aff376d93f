"""Attribution: which pixels made the model say this class? One method in detail, or several side by side."""
from __future__ import annotations

import streamlit as st

from core.attribution.base import Attribution, NotApplicable, Sign
from core.attribution.view import View, npy_bytes, picture, png_bytes
from core.attribution.registry import REGISTRY, Method
from core.catalogue import default_layer
from core.attribution.gradients import Baseline
from core.attribution.lrp import FirstRule, Rule
from core.attribution.occlusion import Fill
from core.attribution.smoothgrad import Base, NoiseType, Precision, native_bf16
from ui import cache, faithfulness, sidebar

st.title("Attribution")
st.caption("Which pixels made the model say this class? Gradients, SmoothGrad, integrated gradients, guided "
           "backprop (correct on GELU networks), Grad-CAM, occlusion, CAM and LRP.")

selection = sidebar.current()


def method_options(method: str, model, key: str) -> dict:
    """Widgets for the options of ``method``; returns the chosen options."""
    opts: dict = {}
    cols = st.columns(3)
    if method == "smoothgrad":
        opts["base"] = cols[0].selectbox("Base method", [b.value for b in Base], key=f"{key}_base")
        opts["nt_type"] = cols[1].selectbox("Aggregation", [t.value for t in NoiseType], key=f"{key}_nt",
                                            help="smoothgrad: mean; smoothgrad_sq: mean of squares; vargrad: variance")
        opts["samples"] = cols[2].slider("Samples", 1, 200, 50, key=f"{key}_samples")
        opts["noise"] = cols[0].slider("Noise (fraction of the pixel range)", 0.0, 0.5, 0.15, 0.01,
                                       key=f"{key}_noise", help="The SmoothGrad paper finds 10-20 % best.")
        opts["seed"] = int(cols[1].number_input("Seed", 0, 10_000, 0, key=f"{key}_seed"))
        opts["precision"] = cols[2].selectbox(
            "Precision", [p.value for p in Precision], key=f"{key}_precision",
            help="auto: bf16 autocast where the CPU has native bf16 "
                 f"({'this one has it' if native_bf16() else 'this one does not'}) and it is measured faster for "
                 "this model (timed once), fp32 elsewhere.")
        if opts["base"] == Base.INTEGRATED_GRADIENTS.value:
            opts["steps"] = cols[0].slider("Integration steps", 2, 64, 16, key=f"{key}_sg_steps")
    elif method == "integrated-gradients":
        opts["steps"] = cols[0].slider("Steps", 4, 128, 32, key=f"{key}_steps")
        opts["baseline"] = cols[1].selectbox("Baseline", [b.value for b in Baseline], key=f"{key}_baseline")
    elif REGISTRY[method].layer:
        names = [layer.name for layer in cache.layers(model, cache.model_key(model))]
        default = default_layer(model).name
        opts["layer"] = cols[0].selectbox("Layer", names, index=names.index(default) if default in names else 0,
                                          key=f"{key}_layer", help=f"Default: the last feature stage ({default}).")
    elif method == "lrp":
        opts["rule"] = cols[0].selectbox("Rule (convolutions)", [r.value for r in Rule], key=f"{key}_rule",
                                         help="zplus: positive evidence only, clean maps; epsilon: damps noise.")
        opts["first"] = cols[1].selectbox("First layer (pixels)", [f.value for f in FirstRule], key=f"{key}_first",
                                          help="zb: the box rule for pixels in [0, 1]; flat: spread evenly.")
        opts["epsilon"] = float(cols[2].number_input("Epsilon (x layer std)", 0.0, 5.0, 0.25, step=0.05,
                                                     key=f"{key}_eps"))
    elif method == "occlusion":
        side = model.card.input_size[-1]
        opts["window"] = cols[0].slider("Window (px)", 4, side // 2, max(4, side // 8), key=f"{key}_window")
        opts["stride"] = cols[1].slider("Stride (px)", 2, opts["window"], max(2, opts["window"] // 2),
                                        key=f"{key}_stride")
        opts["fill"] = cols[2].selectbox("Fill", [f.value for f in Fill], key=f"{key}_fill")
    return opts


def compute(sel, method: str, target: int, opts: dict, preview_slot=None):
    """The cached attribution, with a progress bar (and a refining preview for SmoothGrad) the first time."""
    bar = st.progress(0.0, text=f"{REGISTRY[method].title}...")

    def preview(values, fraction):
        partial = Attribution(map=values, raw=None, method=method, target=[target], seconds=0.0)
        preview_slot.image(picture(partial, sel.inp.tensor, view=View.OVERLAY), width=320,
                           caption=f"refining: {fraction:.0%}")
    try:
        return cache.attribution(sel.model, sel.model_key, sel.inp.tensor, sel.image_key, method, target, opts,
                                 progress=lambda f, m: bar.progress(f, text=m),
                                 preview=preview if preview_slot is not None else None)
    except (NotApplicable, ValueError) as e:
        st.error(f"{REGISTRY[method].title} does not apply here: {e}")
        return None
    except Exception as e:  # never a traceback in the app: name the failure in one line
        st.error(f"{REGISTRY[method].title} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return None
    finally:
        bar.empty()
        if preview_slot is not None:
            preview_slot.empty()


if selection is not None:
    model, inp = selection.model, selection.inp
    top = cache.top_classes(model, selection.model_key, inp.tensor, selection.image_key, 5)
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
                              index=list(REGISTRY).index(Method.SMOOTHGRAD.value))
        st.caption(REGISTRY[method].summary)
    opts = method_options(method, model, "attr")

    tab_one, tab_grid = st.tabs(["Map", "Compare methods"])
    with tab_one:
        preview_slot = st.empty() if method == "smoothgrad" else None
        result = compute(selection, method, target, opts, preview_slot)
        if result is not None:
            for note in result.notes:
                if "rule applied" in note or method == "cam":
                    st.info(note[0].upper() + note[1:])
                else:
                    st.caption(note)
            metrics = {name: values[0] for name, values in result.metrics.items()}
            if "relevance_sum" in metrics:
                share = metrics["relevance_sum"] / metrics["logit"] if metrics["logit"] else float("nan")
                st.markdown(f"Relevance sum **{metrics['relevance_sum']:.4g}** for a logit of "
                            f"**{metrics['logit']:.4g}** ({share:.0%} conserved; biases, LayerNorm shifts and "
                            "epsilon absorb the rest).")
            elif "constant" in metrics:
                st.markdown(f"Logit **{metrics['logit']:.4g}** = mean of the map + constant "
                            f"({metrics['constant']:.4g}).")
            if method in ("guided-backprop", "deconvolution", "guided-gradcam"):
                st.caption("Captum and pytorch-grad-cam change only nn.ReLU, so on GELU networks such as ConvNeXt "
                           "their guided maps equal the plain gradient; here the rule reaches every rectifier.")
            c1, c2, c3 = st.columns(3)
            view = c1.radio("View", [v.value for v in View], index=1, key="attr_view")
            sign = c2.radio("Sign", [s.value for s in Sign], index=3 if result.signed else 0, key="attr_sign",
                            disabled=not result.signed, horizontal=True)
            clip = c3.slider("Clip outliers at percentile", 90.0, 100.0, 99.5, 0.1, key="attr_clip")
            fig = picture(result, inp.tensor, view=view, sign=sign, clip_percentile=clip)
            a, b = st.columns(2)
            a.image(inp.tensor.permute(1, 2, 0).numpy(), caption=f"{selection.name} as the model sees it",
                    width="stretch")
            b.image(fig, width="stretch", caption=f"{titles[method]} for {model.label(target)} ({target}), "
                                                  f"{result.seconds:.2f} s")
            d1, d2 = st.columns(2)
            stem = f"{selection.name.rsplit('.', 1)[0]}_{method}_{target}"
            d1.download_button("Download figure (PNG)", png_bytes(fig), f"{stem}.png", "image/png",
                               key="attr_png")
            d2.download_button("Download raw map (.npy)", npy_bytes(result), f"{stem}.npy",
                               "application/octet-stream", key="attr_npy",
                               help="float32 HxW, aligned with the model input (after resize and crop)")
            faithfulness.map_section(selection, method, target, opts, result)  # issue 13

    with tab_grid:
        chosen = st.multiselect("Methods", list(REGISTRY), format_func=titles.get, key="attr_grid_methods",
                                default=["saliency", "smoothgrad", "guided-backprop", "gradcam"])
        st.caption("Each with its default options, same image and target; overlays, all signs, 99.5 % clipping.")
        if chosen and st.toggle("Compute the grid", key="attr_grid_go"):
            cols = st.columns(min(4, len(chosen)))
            for i, name in enumerate(chosen):
                res = compute(selection, name, target, {})
                with cols[i % len(cols)]:
                    if res is not None:
                        st.image(picture(res, inp.tensor, view=View.OVERLAY), width="stretch",
                                 caption=f"{titles[name]} ({res.seconds:.2f} s)")
        faithfulness.compare_section(selection, target)  # issue 13
