"""Widgets generated from declared settings (:class:`core.spec.Setting`): attribution options and techniques.

The same declaration gives the command-line flags, the result key and the report's command, so a setting is
written once. Widgets are laid out in columns in declaration order; a setting whose ``visible`` predicate fails
is neither shown nor passed. Each widget's value travels in the page's link (``ui/permalink.py``).
"""
from __future__ import annotations

import contextlib

import streamlit as st

from core.attribution.spec import MethodSpec
from core.spec import Setting, Technique, evaluate, plain
from ui import permalink
from ui.permalink import Param


def option_widgets(spec: MethodSpec, model, key: str, *, columns: int = 3, layer_names=None,
                   default_layer: str | None = None) -> dict[str, object]:
    """Draw a widget per declared option of an attribution method ``spec``; returns the chosen options.

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
        context = {"side": int(model.card.input_size[-1]), "layer": default_layer, "names": layer_names, **chosen}
        with cols[slot % columns]:
            chosen[opt.name] = widget(opt, spec.start(opt, context), context,
                                      f"{key}_{spec.name}_{opt.name}", layer_names)
        slot += 1
    return chosen


def technique_form(spec: Technique, context: dict, *, columns: int = 3, layer_names=None,
                   fixed: dict | None = None) -> dict[str, object]:
    """Draw a widget per visible setting of ``spec`` (keys ``{prefix}_{key}``, each in the page's link);
    returns the chosen values, as :meth:`Technique.defaults` would give them untouched.

    Args:
        context: :func:`core.spec.model_context` of the sidebar's model (side, classes, labels, layer, target).
        layer_names: catalogue names for ``layer`` settings.
        fixed: values the page sets itself (no widget is drawn for them).
    """
    fixed = dict(fixed or {})
    chosen: dict[str, object] = {}
    cols = st.columns(columns)
    advanced = [s for s in spec.settings if s.advanced and s.widget != "none"]
    slot = 0
    for s in spec.settings:
        if not s.shown(chosen):
            continue
        if s.name in fixed:
            chosen[s.name] = plain(fixed[s.name])
            continue
        if s.advanced or s.widget == "none":  # no widget: the default (completed below)
            continue
        chosen[s.name] = _bound_widget(spec, s, context, chosen, cols[slot % columns], layer_names)
        slot += 1
    if any(s.shown(chosen) and s.name not in fixed for s in advanced):
        with st.expander("Advanced"):
            acols = st.columns(max(1, min(4, len(advanced))))
            for i, s in enumerate(a for a in advanced if a.shown(chosen) and a.name not in fixed):
                chosen[s.name] = _bound_widget(spec, s, context, chosen, acols[i % len(acols)], layer_names)
    return spec.complete(chosen, context)


def setting_widget(spec: Technique, name: str, context: dict, *, chosen: dict | None = None, where=None,
                   layer_names=None):
    """Draw one declared setting of ``spec`` where the page's layout puts it (``where``: a column or container;
    default: in place), keyed and linked as :func:`technique_form` does; returns its value.

    Args:
        chosen: the settings chosen so far (a label, range or key may depend on them).
    """
    return _bound_widget(spec, spec.setting(name), context, dict(chosen or {}),
                         where if where is not None else contextlib.nullcontext(), layer_names)


def _bound_widget(spec: Technique, s: Setting, context: dict, chosen: dict, where, layer_names):
    ctx = {**context, **chosen}
    key = s.widget_key(spec.prefix or spec.name, chosen)
    options = list(layer_names or []) if s.layer else list(s.options(ctx))
    permalink.bind([Param(s.url or s.name, key, _param_kind(s), options=_link_options(s, options, ctx))])
    with where:
        return widget(s, s.start(ctx), ctx, key, layer_names)


def _param_kind(s: Setting) -> type:
    if s.kind is tuple:
        return list
    if s.target:
        return str
    return s.kind if s.kind in (bool, int, float) else str


def _link_options(s: Setting, options: list, ctx: dict):
    if s.target:
        return None
    return options or None


def _target_labels(s: Setting, ctx: dict) -> list[str]:
    labels = list(ctx.get("labels") or ())
    names = [f"{i}: {labels[i] if i < len(labels) else f'class {i}'}" for i in range(int(ctx.get("classes") or
                                                                                         len(labels)))]
    return ([s.optional] if s.optional else []) + names


def widget(s: Setting, default, context: dict, key: str, layer_names=None):
    """One widget for ``s`` starting at ``default``; returns its value in the setting's units."""
    label, help_ = s.label_in(context), s.help[:1].upper() + s.help[1:]
    if s.layer and s.kind is tuple:
        names = list(layer_names or [])
        return tuple(st.multiselect(label, names, default=[n for n in default or () if n in names], key=key,
                                    help=help_))
    if s.layer:
        names = list(layer_names or [])
        default = default if default in names else context.get("layer")  # None: the catalogue's default layer
        start = names.index(default) if default in names else 0
        return st.selectbox(label, names, index=start, key=key, help=help_)
    if s.target:
        labels = _target_labels(s, context)
        start = 0 if default is None else int(default) + (1 if s.optional else 0)
        choice = st.selectbox(label, labels, index=min(start, len(labels) - 1), key=key, help=help_)
        return None if s.optional and choice == s.optional else int(choice.split(":", 1)[0])
    options = list(s.options(context))
    fmt = {"format_func": s.format} if callable(s.format) else {}
    if s.kind is tuple:
        return tuple(st.multiselect(label, options, default=list(default or ()), key=key, help=help_, **fmt))
    if options:
        index = options.index(default) if default in options else 0
        if s.widget == "select_slider":
            return st.select_slider(label, options, value=options[index], key=key, help=help_, **fmt)
        if s.widget == "radio":
            return st.radio(label, options, index=index, key=key, help=help_, horizontal=True, **fmt)
        return st.selectbox(label, options, index=index, key=key, help=help_, **fmt)
    if s.kind is bool:
        if s.widget == "toggle":
            return st.toggle(label, value=bool(default), key=key, help=help_)
        return st.checkbox(label, value=bool(default), key=key, help=help_)
    low, high, step = (evaluate(b, context) for b in (s.low, s.high, s.step))
    cast = float if s.kind is float else int
    low, high = (None if v is None else cast(v) for v in (low, high))
    kwargs = {"step": cast(step)} if step is not None else {}
    kwargs.update({"format": s.format} if isinstance(s.format, str) else {})
    if s.widget == "number" or s.number_input or low is None or high is None:
        return cast(st.number_input(label, min_value=low, max_value=high, value=default, key=key, help=help_,
                                    **kwargs))
    return cast(st.slider(label, low, high, default, key=key, help=help_, **kwargs))


def settings_table(specs) -> list[dict]:
    """One row per setting of every technique in ``specs``: where it is used, its flag, default and range."""
    rows = []
    for spec in specs:
        for s in spec.settings:
            default = s.default if not callable(s.default) else "depends on the model"
            rows.append({"technique": spec.title, "page": spec.page or "Techniques", "setting": s.title,
                         "flag": f"{spec.command} {s.cli_flag}" if spec.command and s.cli else "",
                         "default": str(plain(default)),
                         "range": _range(s), "help": s.help})
    return rows


def _range(s: Setting) -> str:
    if callable(s.low) or callable(s.high) or (s.low is None and s.high is None):
        return ""
    if s.high is None:
        return f"at least {s.low:g}"
    return f"at most {s.high:g}" if s.low is None else f"{s.low:g} to {s.high:g}"
