"""Attribution glue for the pages: generated option widgets, a cached computation with progress and preview, and
the method grid of one or two models."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.attribution.base import Attribution, NotApplicable
from core.attribution.registry import REGISTRY
from core.attribution.view import View, figure
from core.catalogue import default_layer
from core.model.labels import paired_target
from ui import cache, permalink
from ui.options import option_widgets
from ui.permalink import Param
from ui.sidebar import Selection, model_name
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


@dataclass(frozen=True)
class Side:
    """One model's side of a comparison: the selection (the model, the image as it sees it), the class its maps
    explain, and the name the page gives the model (distinct between the two)."""

    sel: Selection
    target: int
    name: str


@dataclass(frozen=True)
class Sides:
    """The models the method grid and the ranking show: the sidebar's, and the second model when one is set.

    Attributes:
        sides: one or two :class:`Side`.
        rule: how each model's class was chosen (one line; "" with one model).
        chosen: the class chosen on the page, or None when each model explains its own top class.
    """

    sides: tuple[Side, ...]
    rule: str = ""
    chosen: int | None = None

    @property
    def first(self) -> Side:
        return self.sides[0]

    @property
    def other(self) -> Side | None:
        return self.sides[1] if len(self.sides) > 1 else None

    @property
    def key(self) -> tuple:
        """What the results depend on: each model, image and class."""
        return tuple((s.sel.key, s.target) for s in self.sides)

    @property
    def command_target(self) -> int | None:
        """The ``--target`` of a command reproducing the view (None: left out, each model's top class)."""
        return self.first.target if self.other is None else self.chosen


def sides(sel: Selection, target: int, other: Selection | None, *, chosen: int | None) -> Sides:
    """The sidebar's model explaining ``target``, and ``other`` (when set) explaining the class
    :func:`core.model.labels.paired_target` gives it: its own top class, or the same class ``chosen`` on the
    page when both models share their class names."""
    first = Side(sel, int(target), model_name(sel.model))
    if other is None:
        return Sides((first,), "", chosen)
    pair = paired_target(sel.model, other.model, chosen)
    if pair.target is None:
        pair_target = cache.top_classes(other.model, other.model_key, other.inp.tensor, other.image_key, 5)[0]["index"]
    else:
        pair_target = pair.target
    name = model_name(other.model)
    if name == first.name:
        name += " (second)"
    return Sides((first, Side(other, int(pair_target), name)), pair.rule, chosen)


def _attempt(sel, method: str, target: int, opts: dict, preview_slot=None) -> tuple[Attribution | None, str]:
    """(the cached attribution, "") or (None, the one-line reason the method does not apply); shows a progress
    bar (and a refining preview for SmoothGrad) the first time. Other failures raise."""
    def preview(values, fraction):
        partial = Attribution(map=values, raw=None, method=method, target=[target], seconds=0.0)
        shown, scale = figure(partial, sel.inp.tensor, view=View.OVERLAY)
        preview_slot.image(shown, width=400, caption=f"refining: {fraction:.0%}; {scale.describe()}")
    try:
        with progress_bar(f"{REGISTRY[method].title}...") as progress:  # with Stop while it computes
            return cache.attribution(sel.model, sel.model_key, sel.inp.tensor, sel.image_key, method, target, opts,
                                     progress=progress, preview=preview if preview_slot is not None else None), ""
    except (NotApplicable, ValueError) as e:
        return None, str(e)
    finally:
        if preview_slot is not None:
            preview_slot.empty()


def compute(sel, method: str, target: int, opts: dict, preview_slot=None):
    """The cached attribution, with a progress bar (and a refining preview for SmoothGrad) the first time; None
    (with the reason shown as an error) when it does not apply or fails."""
    try:
        result, refusal = _attempt(sel, method, target, opts, preview_slot)
    except Exception as e:  # never a traceback in the app: name the failure in one line
        st.error(f"{REGISTRY[method].title} failed: {_one_line(e)}")
        return None
    if refusal:
        st.error(f"{REGISTRY[method].title} does not apply here: {refusal}")
    return result


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def grid(pair: Sides, methods: list[str]) -> dict[tuple[int, str], Attribution | str]:
    """The method grid: each method's map (default options) for each model's class, one row of cells per model
    (headed by the model's prediction and class when there are two). A method that does not apply to a model
    shows the reason in its cell. Returns (side index, method) -> the attribution, or the reason it is missing."""
    titles = {name: spec.title for name, spec in REGISTRY.items()}
    cells: dict[tuple[int, str], Attribution | str] = {}
    for i, side in enumerate(pair.sides):
        sel = side.sel
        if pair.other is not None:
            top = cache.top_classes(sel.model, sel.model_key, sel.inp.tensor, sel.image_key, 5)[0]
            st.markdown(f"**{side.name}** predicts {top['label']} ({top['index']}), {top['prob']:.1%}; maps for "
                        f"**{sel.model.label(side.target)}** ({side.target})")
        cols = st.columns(min(4, len(methods)))
        for j, name in enumerate(methods):
            with cols[j % len(cols)]:
                try:
                    res, refusal = _attempt(sel, name, side.target, {})
                except Exception as e:  # one cell failing must not hide the others, nor show a traceback
                    cells[i, name] = f"failed: {_one_line(e)}"
                    st.error(f"{titles[name]} failed: {_one_line(e)}")
                    continue
                if res is None:
                    cells[i, name] = refusal
                    st.info(f"**{titles[name]}** does not apply to {sel.model.card.arch}: {refusal}",
                            icon=":material/block:")
                    continue
                cells[i, name] = res
                pic, scale = figure(res, sel.inp.tensor, view=View.OVERLAY)
                st.image(pic, width="stretch", caption=f"{titles[name]} ({res.seconds:.2f} s); {scale.describe()}")
    return cells
