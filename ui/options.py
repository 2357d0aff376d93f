"""Widgets generated from a method's option spec (:class:`core.attribution.spec.Option`).

The same declaration gives the command-line flags, so a method's options are written once. Widgets are laid out
in columns in declaration order; an option whose ``visible`` predicate fails is neither shown nor passed.
"""
from __future__ import annotations

import streamlit as st

from core.attribution.spec import MethodSpec, Option


def option_widgets(spec: MethodSpec, model, key: str, *, columns: int = 3, layer_names=None,
                   default_layer: str | None = None) -> dict[str, object]:
    """Draw a widget per declared option of ``spec``; returns the chosen options by keyword.

    Args:
        model: the loaded model (its input side bounds pixel-sized options).
        key: prefix of the widget keys: ``{key}_{method}_{option}``.
        layer_names: catalogue names for ``layer`` options; default_layer: their starting value.
    """
    chosen: dict[str, object] = {}
    if not spec.options:
        return chosen
    cols = st.columns(columns)
    slot = 0
    for opt in spec.options:
        if not opt.shown(chosen):
            continue
        context = {"side": int(model.card.input_size[-1]), **chosen}
        with cols[slot % columns]:
            chosen[opt.name] = _widget(spec, opt, context, f"{key}_{spec.name}_{opt.name}", layer_names,
                                       default_layer)
        slot += 1
    return chosen


def _widget(spec: MethodSpec, opt: Option, context: dict, key: str, layer_names, default_layer):
    label, help_ = opt.title, opt.help[:1].upper() + opt.help[1:]
    default = spec.start(opt, context)
    if opt.layer:
        names = list(layer_names or [])
        start = names.index(default_layer) if default_layer in names else 0
        return st.selectbox(label, names, index=start, key=key, help=help_)
    if opt.choices:
        return st.selectbox(label, list(opt.choices), index=list(opt.choices).index(default), key=key, help=help_)
    if opt.kind is bool:
        return st.checkbox(label, value=bool(default), key=key, help=help_)
    low, high, step = (Option.value(b, context) for b in (opt.low, opt.high, opt.step))
    cast = float if opt.kind is float else int
    low, high = (None if v is None else cast(v) for v in (low, high))
    kwargs = {"step": cast(step)} if step is not None else {}
    if opt.number_input or low is None or high is None:
        return cast(st.number_input(label, min_value=low, max_value=high, value=default, key=key, help=help_,
                                    **kwargs))
    return cast(st.slider(label, low, high, default, key=key, help=help_, **kwargs))
