"""Faithfulness and sanity next to every map: the evidence under a map, and the "Compare methods" view.

The drawing functions take :class:`core.evaluation.Evaluation` results; the two ``*_section`` functions hold the
few widgets, call ``ui.cache`` (cached, with progress) and draw. The attribution page calls them.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import streamlit as st

from core.attribution.base import NotApplicable
from core.attribution.registry import REGISTRY
from core.evaluation import Evaluation, Metric
from core.evaluation.spec import COMPARE, EVALUATION, MapSubject, curve_values, map_key
from core.images import ImageError
from core.render import heat_figure
from ui import cache, run
from ui import report as ui_report
from ui.uploads import SMALL_UPLOAD_MB
from ui.options import setting_widget, technique_form
from ui.widgets import progress_bar

CURVES = "faith_curves"  # the curves' Stop leaves this in run.STOPPED (they start without a button) ...
CURVES_FOR = "faith_curves_for"  # ... and this session-state key says which curves it stopped


# ------------------------------------------------------------------------------------------- drawing

def curves_frame(results: dict[str, Evaluation], which: tuple[str, ...] = ("deletion", "insertion")) -> pd.DataFrame:
    """Long table (fraction, curve, probability) of the curves of each named result, for a line chart."""
    rows = []
    for name, e in results.items():
        c = e.curves
        if c is None:
            continue
        for kind in which:
            values = getattr(c, kind)
            label = kind if len(results) == 1 else f"{name}: {kind}"
            rows += [{"fraction of pixels changed": k / c.steps, "curve": label, "probability": v}
                     for k, v in enumerate(values)]
    return pd.DataFrame(rows)


def sanity_badge(e: Evaluation) -> None:
    """pass / fail with the correlation once the top half of the network is randomised."""
    r = e.randomisation
    if r is None:
        st.caption("Sanity (randomisation): " + e.skipped.get(Metric.RANDOMISATION.value, "not run"))
        return
    text = (f"sanity {'pass' if r.passed else 'fail'}: Spearman {r.at_half:.2f} with the top half "
            f"({r.groups[r.half]} and above) randomised")
    st.badge(text, color="green" if r.passed else "red", icon=":material/check:" if r.passed else ":material/close:")
    if not r.passed:
        st.caption("The map barely changes when the model's weights are replaced: it shows the image more than what "
                   "the model does with it (Adebayo et al. 2018).")


def evidence(e: Evaluation) -> None:
    """Under a map: deletion and insertion AUC, the two curves as a small plot, the sanity badge."""
    c = e.curves
    if c is not None:
        a, b, d = st.columns(3)
        a.metric("Deletion AUC", f"{c.deletion_auc:.3f}", help="Probability of the class as the most important "
                 f"pixels are replaced by the {c.baseline} baseline, {c.steps} steps. Lower is better.")
        b.metric("Insertion AUC", f"{c.insertion_auc:.3f}", help="Probability as the most important pixels are "
                 "put back into a blurred image. Higher is better.")
        d.metric("Insertion − deletion", f"{c.difference:+.3f}", help="Higher is better; near 0 or negative means "
                 "the map ranks pixels no better than chance for this model.")
        st.line_chart(curves_frame({e.method: e}), x="fraction of pixels changed", y="probability", color="curve",
                      height=180)
        if c.difference <= 0:
            st.warning("Weak evidence: deleting this map's top pixels hurts the class no more than inserting them "
                       "helps it. Deletion images are out of distribution; see ROAD in Compare methods.")
    sanity_badge(e)


def thumbnails(e: Evaluation, per_row: int = 7) -> None:
    """The map after each randomisation step (|map|, each scaled to itself)."""
    r = e.randomisation
    if r is None:
        return
    pics = [heat_figure(np.abs(e.map.numpy()), signed=False, units="|map|")[0]]
    caps = ["trained"]
    for name, rho, m in zip(r.groups, r.spearman, r.maps):
        pics.append(heat_figure(np.abs(m.numpy()), signed=False, units="|map|")[0])
        caps.append(f"…{name}: ρ {rho:.2f}")
    st.image(pics[:per_row * 2], caption=caps[:per_row * 2], width=150)
    st.caption("Each thumbnail on its own colour bar: dark = its smallest |map|, bright = its 99.5th percentile.")


def _named(key, titles: Mapping[str, str]) -> tuple[str | None, str]:
    """(model or None, method title) of a result key: a method, or a (model, method) pair."""
    model, method = key if isinstance(key, tuple) else (None, key)
    return model, titles.get(method, method)


def _label(key, titles: Mapping[str, str]) -> str:
    model, title = _named(key, titles)
    return title if model is None else f"{model}: {title}"


def comparison_table(results: Mapping, titles: Mapping[str, str], classes: Mapping[str, str] | None = None
                     ) -> pd.DataFrame:
    """One row per method, ranked by insertion − deletion (best first). Results keyed by (model, method) pairs
    (two models) get a model column, and a class column from ``classes`` (model -> the class its maps explain)."""
    rows = []
    for key, e in results.items():
        model, title = _named(key, titles)
        row = {} if model is None else {"model": model, "class": (classes or {}).get(model, str(e.target))}
        row["method"] = title
        if e.curves is not None:
            row.update({"insertion − deletion": e.curves.difference, "deletion AUC": e.curves.deletion_auc,
                        "insertion AUC": e.curves.insertion_auc})
        if e.road is not None:
            row["ROAD"] = e.road.score
        if e.randomisation is not None:
            r = e.randomisation
            row["sanity"] = f"{'pass' if r.passed else 'fail'} (ρ {r.at_half:.2f})"
        if e.pointing is not None:
            row["pointing"] = "hit" if e.pointing.hit else "miss"
            row["energy in mask"] = e.pointing.energy
        row["seconds"] = e.seconds
        rows.append(row)
    df = pd.DataFrame(rows)
    if "insertion − deletion" in df:
        df = df.sort_values("insertion − deletion", ascending=False, kind="stable")
    return df.reset_index(drop=True)


def comparison(results: Mapping, titles: Mapping[str, str], failures: Mapping,
               classes: Mapping[str, str] | None = None) -> pd.DataFrame | None:
    """The ranked table, the curves overlaid, and the randomisation thumbnails of each method (keys: methods, or
    (model, method) pairs for two models); returns the table (None without results)."""
    table = None
    if results:
        table = comparison_table(results, titles, classes)
        st.dataframe(table, hide_index=True, width="stretch")
        first = next(iter(results.values()))
        if first.pointing is not None:
            st.caption(f"Pointing game: the map's maximum within {first.pointing.tolerance} px of the object; energy: "
                       f"share of the positive map inside the mask (chance: {first.pointing.mask_fraction:.0%}).")
        st.line_chart(curves_frame({_label(k, titles): v for k, v in results.items()}),
                      x="fraction of pixels changed", y="probability", color="curve", height=300)
        for key, e in results.items():
            if e.randomisation is not None:
                st.markdown(f"**{_label(key, titles)}**: map after each cascade step (head first)")
                thumbnails(e)
    for key, reason in failures.items():
        model, title = _named(key, titles)
        st.caption(f"{title} not evaluated{'' if model is None else f' on {model}'}: {reason}")
    return table


# ------------------------------------------------------------------------------------------- sections

def _one_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"


def _mask(sel, uploaded) -> tuple[np.ndarray | None, str]:
    """(object mask at the model input size or None, key): an uploaded mask, else the image's alpha channel."""
    from core.evaluation.pointing import alpha_mask, mask_file

    config = sel.model.card.data_config
    if uploaded is not None:
        data = uploaded.getvalue()
        return mask_file(data, config, sel.inp.original_size, name=uploaded.name), cache.content_key(data)
    last = st.session_state.get("lens_last_image")  # the raw bytes the sidebar decoded (alpha survives there)
    if last is None:
        return None, "none"
    m = alpha_mask(last[0], config, name=last[1])
    return m, ("alpha:" + sel.image_key) if m is not None else "none"


def map_section(sel, method: str, target: int, options: dict, result) -> None:
    """Under ``result``, the map of ``method`` with ``options``: curves and AUCs (computed at once), the sanity
    badge (on request). Stop under the progress bar stops the curves (the map stays) until "Compute the curves"
    or another map; stopping the sanity check forgets its button's press."""
    st.markdown("##### Faithfulness and sanity")
    context = cache.context(sel.model, target)
    a, b = st.columns([1, 2])
    steps = setting_widget(EVALUATION, "steps", context, where=a)
    values = curve_values(context, steps=steps)  # the curves' values: what `python -m core warm` stores
    with b:
        run_sanity = run.button("Sanity check", (sel.key, method, target, repr(sorted(options.items()))),
                                "faith_sanity", help="Recomputes the map once per randomised stage of the network.")
    if run_sanity:
        values = {**values, "metrics": (*values["metrics"], Metric.RANDOMISATION.value)}
    curves = (sel.key, method, target, repr(sorted(options.items())), steps)
    if not run_sanity and st.session_state.get(run.STOPPED) == CURVES and st.session_state.get(CURVES_FOR) == curves:
        st.caption("Deletion and insertion curves stopped.")
        st.button("Compute the curves", key="faith_curves_go", on_click=st.session_state.pop, args=(run.STOPPED, None))
        return
    st.session_state[CURVES_FOR] = curves
    try:
        with progress_bar("deletion and insertion...", forget=run.latest() if run_sanity else CURVES) as progress:
            e = cache.technique(EVALUATION, sel.model, sel.model_key,
                                MapSubject(sel.inp.tensor, target, method, options, result.map[0]),
                                map_key(sel.model_key, sel.image_key, method, target, options), values, progress)
    except (NotApplicable, ValueError) as err:
        st.caption(f"Not evaluated: {err}")
        return
    except Exception as err:  # never a traceback in the app: name the failure in one line
        st.error(f"Evaluation failed: {_one_line(err)}")
        return
    evidence(e)
    st.caption("Details, definitions and caveats: docs/faithfulness.md. ROAD, pointing game and all methods side by "
               "side: the Compare methods tab.")


def compare_section(pair) -> None:
    """Every applicable method on this image, for each model of ``pair`` (:class:`ui.attribution.Sides`): the
    ranked table (a model column with two models), overlaid curves, thumbnails, and Add to report. Progress with
    Stop (methods already finished stay cached, per model)."""
    titles = {name: spec.title for name, spec in REGISTRY.items()}
    two = pair.other is not None
    st.markdown("##### Which map can you trust? Every method, scored" + (" on both models" if two else ""))
    context = cache.context(pair.first.sel.model, pair.first.target)
    chosen_values = technique_form(COMPARE, context, columns=1)
    chosen, metrics, steps = chosen_values["methods"], chosen_values["metrics"], chosen_values["steps"]
    uploaded = st.file_uploader("Object mask for the pointing game (white = object; the image's size)",
                                type=["png", "jpg", "jpeg", "bmp", "webp"], key="faith_mask",
                                max_upload_size=SMALL_UPLOAD_MB)
    masks, mask_key = [], "none"
    for side in pair.sides:  # each model sees the mask through its own preprocessing, as the image
        try:
            mask, mask_key = _mask(side.sel, uploaded)
        except ImageError as err:
            if side is pair.first:  # the same upload: one message
                st.error(str(err))
            mask, mask_key = None, "none"
        masks.append(mask)
    if masks[0] is None:
        st.caption("No object mask: the pointing game needs an upload or an image with an alpha channel.")
    go = run.button("Evaluate the methods", (pair.key, tuple(chosen), tuple(metrics), steps, mask_key),
                    "faith_go", help="Each method with its default options. Results are cached.")
    if not (go and chosen and metrics):
        return
    results, failures = {}, {}
    jobs = [(side, mask, name) for side, mask in zip(pair.sides, masks) for name in chosen]
    with progress_bar("evaluating...") as report:  # Stop forgets the press; finished methods stay cached
        for i, (side, mask, name) in enumerate(jobs):
            sel, target = side.sel, side.target
            key = (side.name, name) if two else name
            who = f" on {side.name}" if two else ""

            def progress(f, m, i=i, name=name, who=who):
                report((i + f) / len(jobs), f"{titles[name]}{who} ({i + 1}/{len(jobs)}): {m}")
            try:
                amap = cache.attribution(sel.model, sel.model_key, sel.inp.tensor, sel.image_key, name, target, {},
                                         progress=lambda f, m: progress(0.2 * f, m)).map[0]
                results[key] = cache.technique(
                    EVALUATION, sel.model, sel.model_key, MapSubject(sel.inp.tensor, target, name, {}, amap, mask),
                    map_key(sel.model_key, sel.image_key, name, target, {}, mask_key if mask is not None else "none"),
                    EVALUATION.complete({"metrics": metrics, "steps": steps}, cache.context(sel.model, target)),
                    lambda f, m: progress(0.2 + 0.8 * f, m))
            except (NotApplicable, ValueError) as err:
                failures[key] = str(err)
            except Exception as err:  # one method failing must not hide the others, nor show a traceback
                failures[key] = f"failed: {_one_line(err)}"
    classes = {s.name: f"{s.sel.model.label(s.target)} ({s.target})" for s in pair.sides}
    table = comparison(results, titles, failures, classes if two else None)
    if table is not None:
        values = EVALUATION.complete({"metrics": metrics, "steps": steps}, context)
        ui_report.add_button(
            lambda: ui_report.comparison(pair, table, values, chosen, uploaded.name if uploaded is not None else None,
                                         seconds=sum(e.seconds for e in results.values())),
            key=f"faith_{pair.key}_{tuple(chosen)}_{tuple(metrics)}_{steps}_{mask_key}")
