"""CAM and LRP on the selected image (until they join the attribution page's method list)."""
from __future__ import annotations

import streamlit as st

from core.cam import NotApplicable
from core.lrp import FirstRule, Rule
from core.render import Colormap, normalize_map, overlay
from ui import cache, sidebar

st.title("CAM and LRP")
st.caption("Class activation maps (Zhou et al. 2016) and layer-wise relevance propagation (Bach et al. 2015) "
           "with rules for GELU and LayerNorm (Ali et al. 2022), so it works on ConvNeXt.")

selection = sidebar.current()
if selection is None:
    st.stop()
model, inp = selection.model, selection.inp
top = cache.top_classes(model, selection.model_key, inp.tensor, selection.image_key, 5)
choices = [c["index"] for c in top]
c1, c2 = st.columns([2, 1])
target = c1.selectbox("Class", choices, format_func=lambda i: f"{model.label(i)} ({i})", key="cl_target")
method = c2.radio("Method", ["cam", "lrp"], format_func={"cam": "CAM", "lrp": "LRP"}.get, horizontal=True,
                  key="cl_method")
options: tuple = ()
if method == "lrp":
    o1, o2, o3 = st.columns(3)
    rule = o1.selectbox("Rule (convolutions)", [r.value for r in Rule], index=1, key="cl_rule",
                        help="epsilon: damps noise; zplus: positive evidence only, conserves relevance.")
    first = o2.selectbox("First layer (pixels)", [f.value for f in FirstRule], key="cl_first",
                         help="zb: the box rule for pixels in [0, 1]; flat: spread over the receptive field.")
    epsilon = o3.number_input("Epsilon (x layer std)", 0.0, 5.0, 0.25, step=0.05, key="cl_eps")
    options = (rule, first, float(epsilon))

try:
    with st.spinner("Computing..."):
        result = cache.cam_lrp(model, selection.model_key, inp.tensor, selection.image_key, method, int(target),
                               options)
except NotApplicable as e:
    st.error(f"{method.upper()} does not apply to {model.card.arch}: {e}")
    st.stop()

signed = normalize_map(result.map[0], signed=True)
left, right = st.columns(2)
left.image(overlay(inp.tensor, signed, cmap=Colormap.DIVERGING, alpha=0.6), width="stretch",
           caption="red: evidence for the class, blue: against")
right.image(overlay(inp.tensor, normalize_map(result.map[0].clamp(min=0)), cmap=Colormap.HEAT), width="stretch",
            caption="positive part only")
if method == "cam":
    (st.info if result.linearised else st.success)(result.note[0].upper() + result.note[1:])
    st.markdown(f"Logit **{result.logit[0]:.4g}** = mean of the map ({float(result.raw[0].mean()):.4g}) + "
                f"constant ({result.constant[0]:.4g}).")
else:
    share = result.relevance_sum[0] / result.logit[0] if result.logit[0] else float("nan")
    st.markdown(f"Relevance sum **{result.relevance_sum[0]:.4g}** for a logit of **{result.logit[0]:.4g}** "
                f"({share:.0%} conserved; biases, LayerNorm shifts and epsilon absorb the rest). "
                f"{result.bn_folded} BatchNorm layers folded.")
