"""Permalinks: the sidebar's and the page's settings live in the URL (``st.query_params``).

A page lists its settings once as :class:`Param` values (URL name, session-state key of the widget, type) and
calls :func:`restore` before drawing the widgets and :func:`publish` after. A link opened on another machine
with the same version reproduces the view: model, weights, sample photo, page (the URL path) and settings.
An uploaded image cannot travel in a link; :data:`UPLOAD` marks a link made with one.

Restoring happens once per session and parameter, so the URL never overrides what the user changes later;
publishing rewrites the parameters after every run, so the address bar always holds the current view.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import streamlit as st

APPLIED = "_lens_link_applied"
UPLOAD = "upload"  # value of the "image" parameter when the view used an uploaded image


@dataclass(frozen=True)
class Param:
    """One setting in the URL.

    Attributes:
        name: the URL parameter (short, stable: part of every shared link).
        key: the widget's ``st.session_state`` key.
        kind: str, int, float, bool or list (a list of str).
        options: the allowed values (for selectboxes, radios, multiselects); a link value outside them is
            ignored with a notice instead of breaking the widget.
    """

    name: str
    key: str
    kind: type = str
    options: Sequence | None = None


def encode(value, kind: type = str) -> str | list[str]:
    if kind is bool:
        return "1" if value else "0"
    if kind is list:
        return [str(v) for v in value]
    return str(getattr(value, "value", value))


def decode(raw: str | list[str], kind: type = str):
    """The typed value of a URL parameter; raises ValueError when it does not parse."""
    if kind is list:
        return [str(v) for v in (raw if isinstance(raw, list) else [raw])]
    raw = raw[-1] if isinstance(raw, list) else raw
    if kind is bool:
        if raw not in ("0", "1", "true", "false"):
            raise ValueError(raw)
        return raw in ("1", "true")
    return kind(raw)


def restore(params: Iterable[Param], *, on_ignored: Callable[[Param, str], None] | None = None) -> list[str]:
    """Put the link's values into ``st.session_state`` before the widgets are drawn (once per session).

    Returns the names of the parameters that were applied in this run.
    """
    applied: set = st.session_state.setdefault(APPLIED, set())
    done = []
    for p in params:
        if p.name in applied or p.name not in st.query_params:
            continue
        applied.add(p.name)
        raw = st.query_params.get_all(p.name) if p.kind is list else st.query_params[p.name]
        try:
            value = decode(raw, p.kind)
            if p.options is not None:
                allowed = [str(getattr(o, "value", o)) for o in p.options]
                if p.kind is list:
                    if any(str(v) not in allowed for v in value):
                        raise ValueError(raw)
                    value = [p.options[allowed.index(str(v))] for v in value]
                else:
                    if str(value) not in allowed:
                        raise ValueError(raw)
                    value = p.options[allowed.index(str(value))]
        except (TypeError, ValueError):
            (on_ignored or _say_ignored)(p, str(raw))
            continue
        st.session_state[p.key] = value
        done.append(p.name)
    return done


def _say_ignored(p: Param, raw: str) -> None:
    st.caption(f"The link's {p.name}={raw} is not available here; the default is used.")


def publish(params: Iterable[Param], extra: dict | None = None) -> None:
    """Write the current values of ``params`` (and ``extra`` name -> value strings) into the URL."""
    applied: set = st.session_state.setdefault(APPLIED, set())
    for p in params:
        applied.add(p.name)  # from now on the session's own value wins over the URL
        if p.key not in st.session_state:
            continue
        value = encode(st.session_state[p.key], p.kind)
        if st.query_params.get_all(p.name) != (value if isinstance(value, list) else [value]):
            st.query_params[p.name] = value
    for name, value in (extra or {}).items():
        if value is None:
            if name in st.query_params:
                del st.query_params[name]
        elif st.query_params.get(name) != value:
            st.query_params[name] = value


def bind(params: Sequence[Param], extra: dict | None = None) -> None:
    """:func:`restore` then :func:`publish`, in one call before the widgets are drawn.

    At the start of a run ``st.session_state`` already holds every widget's latest value (Streamlit applies
    the user's change before rerunning), so publishing here keeps the URL current without a call at the end of
    the page (which an ``st.stop()`` would skip). Defaults not yet touched stay out of the URL: they are the
    same on every machine with the same version.
    """
    restore(params)
    publish(params, extra)
