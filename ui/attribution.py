"""Attribution glue for the pages: generated option widgets and a cached computation with progress and preview."""
from __future__ import annotations

import streamlit as st

from core.attribution.base import Attribution, NotApplicable
from core.attribution.registry import REGISTRY
from core.attribution.view import View, figure
from core.catalogue import default_layer
from ui import cache, permalink
from ui.options import option_widgets
from ui.permalink import Param
from ui.widgets import progress_bar


def method_options(method: str, model, key: str) -> dict:
    """The widgets generated from the method's option spec; returns the chosen options."""
    spec = REGISTRY[method]
    names = default = None
    if spec.layer:
        names = [layer.name for layer in cache.layers(model, cache.model_key(model))]
        default = default_layer(model).name
    # every option travels in the page's link under its own name
    permalink.bind([Param(o.name, f"{key}_{method}_{o.name}", _kind(o),
                          options=(list(o.choices) or names) if (o.choices or o.layer) else None)
                    for o in spec.options])
    return option_widgets(spec, model, key, layer_names=names, default_layer=default)


def _kind(option) -> type:
    return option.kind if option.kind in (bool, int, float) else str


def compute(sel, method: str, target: int, opts: dict, preview_slot=None):
    """The cached attribution, with a progress bar (and a refining preview for SmoothGrad) the first time."""
    def preview(values, fraction):
        partial = Attribution(map=values, raw=None, method=method, target=[target], seconds=0.0)
        shown, scale = figure(partial, sel.inp.tensor, view=View.OVERLAY)
        preview_slot.image(shown, width=400, caption=f"refining: {fraction:.0%}; {scale.describe()}")
    try:
        with progress_bar(f"{REGISTRY[method].title}...") as progress:  # with Stop while it computes
            return cache.attribution(sel.model, sel.model_key, sel.inp.tensor, sel.image_key, method, target, opts,
                                     progress=progress, preview=preview if preview_slot is not None else None)
    except (NotApplicable, ValueError) as e:
        st.error(f"{REGISTRY[method].title} does not apply here: {e}")
        return None
    except Exception as e:  # never a traceback in the app: name the failure in one line
        st.error(f"{REGISTRY[method].title} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return None
    finally:
        if preview_slot is not None:
            preview_slot.empty()
