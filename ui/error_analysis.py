"""Streamlit pieces of the Error analysis page: the summary, the confusion matrix, the galleries, the "Why?" panel
(with the contrastive concept ranking) and the separating channels with their dataset examples. The page holds the
layout and calls these; every call into core goes through ``ui.cache``."""
from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core import dataroots
from core.concepts.spec import CONCEPTS
from core.errors.demo import DEMO_CSV, DEMO_HEAD
from core.errors.spec import MISTAKE_MAPS, Mistake, errors_command
from core.images import ImageError, load_image, preprocess
from core.errors.view import confusion_figure, mistake_figure, separation_figure
from core.render import captioned_strip
from core.report import ReportItem, contrast_command
from ui import cache, concepts_page, figures, index_cache, report, uploads
from ui.index_page import patch_tile
from ui.options import setting_widget
from ui.widgets import progress_bar

DEMO = "Demo: coarse head on the embedded model (assets/demo)"
PERCENT = st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1)


def model_for(source: str, selection) -> tuple:
    """``(model, model_key, default_folder)`` for the page's "Model" choice: the demo head or the sidebar's."""
    if source == DEMO:
        model = cache.get_model(None, str(DEMO_HEAD))
        return model, cache.model_key(model), str(DEMO_CSV)
    return selection.model, selection.model_key, ""


def classes_hint(model) -> str:
    """The prompt for a labelled folder, naming the model's first twelve classes."""
    return (f"Name a labelled folder. The model's classes: {', '.join(model.labels[:12])}"
            f"{', ...' if len(model.labels) > 12 else ''}.")


def summary(ev) -> None:
    """Images, accuracy and mistakes; the skipped items; a warning when there are too few images."""
    a, b, c = st.columns(3)
    a.metric("Images", len(ev.images))
    b.metric("Accuracy", f"{ev.accuracy:.1%}")
    c.metric("Mistakes", int((ev.true != ev.predicted).sum()))
    if ev.skipped:
        with st.expander(f"{len(ev.skipped)} items skipped"):
            st.dataframe(pd.DataFrame([{"item": s.item, "reason": s.reason} for s in ev.skipped]), hide_index=True,
                         width="stretch")
    if len(ev.images) < 20:
        st.warning(f"Only {len(ev.images)} images: precision and recall move a lot with each image.")


def confusion_chart(ev) -> alt.LayerChart:
    """The confusion matrix as a clickable heat map (selection ``cell`` over true and predicted) with counts."""
    names = list(ev.class_names)
    cells = pd.DataFrame([{"true": names[i], "predicted": names[j], "count": int(ev.confusion[i, j])}
                          for i in range(len(names)) for j in range(len(names))])
    base = alt.Chart(cells).encode(x=alt.X("predicted:N", sort=names, title="predicted"),
                                   y=alt.Y("true:N", sort=names, title="true"))
    pick = alt.selection_point(fields=["true", "predicted"], name="cell")
    heat = base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), legend=None),
                                   tooltip=["true", "predicted", "count"]).add_params(pick)
    text = base.mark_text().encode(text="count:Q", color=alt.condition(alt.datum.count > ev.confusion.max() / 2,
                                                                         alt.value("white"), alt.value("black")))
    return (heat + text).properties(height=max(240, 44 * len(names)))


def follow_click(event, names: list[str]) -> None:
    """A newly clicked matrix cell becomes the chosen true/predicted pair (``err_true``/``err_pred``)."""
    chosen = (event.get("selection", {}).get("cell") or [None])[0] if event else None
    if chosen and chosen.get("true") in names and chosen.get("predicted") in names \
            and st.session_state.get("err_last_click") != chosen:
        st.session_state["err_last_click"] = chosen
        st.session_state["err_true"], st.session_state["err_pred"] = chosen["true"], chosen["predicted"]


def per_class(ev, model, folder: str) -> None:
    """The per-class precision, recall and support table, and "Add to report" for it with the matrix."""
    st.markdown("**Per class**")
    rows = [{"class": s.name, "precision": s.precision, "recall": s.recall, "support": s.support}
            for s in ev.per_class]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"precision": PERCENT, "recall": PERCENT})
    report.add_button(lambda: ReportItem(
        title=f"Confusion matrix of {Path(folder).name} ({len(ev.images)} images, accuracy {ev.accuracy:.1%})",
        figure=confusion_figure(ev.confusion, ev.class_names),
        caption="Rows: true class; columns: predicted class; the framed diagonal counts the right answers. "
                "Colours: dark 0 to bright the largest count (images). Precision: the share of a class's "
                "predictions that are right; recall: the share of its images found; '-' where undefined.",
        settings={"model": model.card.name, "folder": report.path_arg(folder), "images": len(ev.images),
                  "skipped": len(ev.skipped)},
        command=errors_command(report.path_arg(folder), model.card),
        seconds=float(ev.seconds), figures={"accuracy": float(ev.accuracy)},
        table=tuple({**r, "precision": _percent(r["precision"]), "recall": _percent(r["recall"])} for r in rows)),
        key=f"err_matrix_{model.card.fingerprint}_{folder}_{len(ev.images)}")


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value:.1%}"


def default_cell(ev) -> None:
    """Start on the most confused off-diagonal cell (or the first diagonal one) unless a valid pair is chosen."""
    names = list(ev.class_names)
    off = [(i, j) for i in range(len(names)) for j in range(len(names)) if i != j and ev.confusion[i, j]]
    worst = max(off, key=lambda ij: ev.confusion[ij]) if off else (0, 0)
    if "err_true" not in st.session_state or st.session_state["err_true"] not in names:
        st.session_state["err_true"], st.session_state["err_pred"] = names[worst[0]], names[worst[1]]


def cell_title(n: int, true_name: str, pred_name: str) -> str:
    """The heading of a cell's gallery."""
    return (f"**{n} image{'' if n == 1 else 's'} of {true_name} predicted {pred_name}**"
            + (" (correct)" if true_name == pred_name else ""))


def gallery(ev, model, folder: str, rows: list[int], key: str, per_row: int = 6) -> None:
    """Thumbnails with their prediction, each with a button (key ``{key}_{row}``) that explains it."""
    for start in range(0, len(rows), per_row):
        for col, r in zip(st.columns(per_row), rows[start:start + per_row]):
            p, t = int(ev.predicted[r]), int(ev.true[r])
            try:
                col.image(cache.thumbnail(str(ev.paths[r]), ev.hashes[r]), width="stretch")
            except ImageError as e:
                col.caption(str(e))
            col.caption(f"{ev.images[r]}: **{model.label(p)}** {ev.probs[r, p]:.0%}"
                        + (f" (true {model.label(t)} {ev.probs[r, t]:.0%})" if p != t else ""))
            if col.button("Explain", key=f"{key}_{r}"):
                st.session_state["err_explain"] = (folder, ev.hashes[r])


def feature_layers(model, model_key: str) -> list[str]:
    """The names of the model's feature layers, shallow to deep."""
    return [l.name for l in cache.layers(model, model_key) if l.feature]


def explain_panel(ev, model, model_key: str, folder: str, layer: str | None, context: dict) -> None:
    """"Why <image>?": Grad-CAM (at the page's ``layer``) and SmoothGrad for the predicted class, the true class
    and their contrast (:data:`core.errors.spec.MISTAKE_MAPS`; ``context``: the model's, cache.context), then the
    channels of ``layer`` that push the prediction over the true class (:func:`contrast_concepts`)."""
    explain = st.session_state.get("err_explain")  # (folder, image hash): nothing stale after a folder change
    row = ev.hashes.index(explain[1]) if explain and explain[0] == folder and explain[1] in ev.hashes else None
    if row is None:
        return
    st.subheader(f"Why {ev.images[row]}?")
    p, t = int(ev.predicted[row]), int(ev.true[row])
    c1, c2, c3 = st.columns(3)
    c1.caption(f"Grad-CAM at {layer} (the Layer above)." if layer else "No feature layer: Grad-CAM is not drawn.")
    samples = setting_widget(MISTAKE_MAPS, "samples", context, where=c2)
    true_choice = c3.selectbox("True class", list(range(model.card.num_classes)), index=t, key=f"err_truefor_{row}",
                               format_func=lambda i: f"{model.label(i)} ({i})",
                               help="Compare against another class than the label if you like.")
    if p == true_choice:
        st.info(f"The model is right here ({model.label(p)}): the contrast of a class with itself is zero. "
                "Pick another class to compare with.")
    try:
        inp = preprocess(load_image(ev.paths[row]), model.card.data_config)
    except ImageError as e:
        st.error(str(e))
        st.stop()
    with progress_bar("explaining") as report:
        result = cache.technique(MISTAKE_MAPS, model, model_key, Mistake(inp.tensor, p, int(true_choice)),
                                 (ev.hashes[row], p, int(true_choice)),
                                 MISTAKE_MAPS.complete({"layer": layer, "samples": samples}, context), report)
    titles = {"predicted": f"for {model.label(p)} (predicted)", "true": f"for {model.label(true_choice)} (true)",
              "contrast": f"{model.label(p)} rather than {model.label(true_choice)}"}
    for method, title in (("gradcam", "Grad-CAM"), ("smoothgrad", "SmoothGrad")):
        shown = []
        for col, role in zip(st.columns(3), ("predicted", "true", "contrast")):
            shown.append((*figures.show(*mistake_figure(result, method, role, inp.tensor), where=col,
                                        caption=f"{title} {titles[role]}"), titles[role]))
        _pin_why(ev, model, row, result, method, title, shown, p, int(true_choice))
    st.caption("Contrast = attribution of logit(predicted) − logit(true): red is evidence for the predicted class "
               "rather than the true one, blue the other way (Grad-CAM's contrast is taken before its ReLU). "
               "SmoothGrad maps are signed.")
    if p != true_choice:
        contrast_concepts(ev, model, model_key, row, inp.tensor, p, int(true_choice), layer, context)


def contrast_concepts(ev, model, model_key: str, row: int, x, p: int, t: int, layer: str | None,
                      context: dict) -> None:
    """The contrastive concept ranking of one mistake: the channels of ``layer`` ranked by their LRP relevance for
    logit(``p``) − logit(``t``) (:data:`core.concepts.spec.CONCEPTS` with ``contrast``), as a bar chart of shares,
    each with its conditional map on the image ``x`` (3, H, W) in [0, 1]; and "Add to report"."""
    st.markdown(f"**Which concepts make it {model.label(p)} rather than {model.label(t)}**")
    if layer is None:
        st.caption("No feature layer: no concepts to rank.")
        return
    values = CONCEPTS.complete({"layer": layer, "target": p, "contrast": t}, context)
    try:
        with progress_bar("concept relevance") as progress:
            result = cache.technique(CONCEPTS, model, model_key, x, ev.hashes[row], values, progress)
    except ValueError as e:  # NotApplicable: a layer LRP has no rule for
        st.warning(f"Concepts not computed: {e}")
        return
    concepts_page.ranking(model, result)
    st.caption(f"The channels of {layer} ranked by their LRP relevance for logit({model.label(p)}) − "
               f"logit({model.label(t)}) (concept relevance with a contrast); shares are signed and sum to 100 % "
               "over all channels. Each map: that channel's relevance alone, back on the image.")
    pictures = concepts_page.maps(model, None, result, image=x, with_examples=False)
    rel = result.relevance
    command = CONCEPTS.command_line(report.path_arg(str(ev.paths[row])), model.card, values)
    report.add_button(lambda: ReportItem(
        title=f"Why {Path(ev.images[row]).name}? Concepts of {layer}: {model.label(p)} rather than {model.label(t)}",
        figure=captioned_strip(pictures[:6]) if pictures else None,
        caption=f"Conditional LRP maps of the channels of {layer} most relevant for logit({model.label(p)}) − "
                f"logit({model.label(t)}), with their shares of the layer's relevance.",
        settings={"model": model.card.name, "image": ev.images[row], "layer": layer,
                  "predicted": f"{model.label(p)} ({p})", "true": f"{model.label(t)} ({t})"},
        command=command, seconds=float(result.seconds),
        figures={concepts_page.channel_name(c): float(rel.share[0, list(c)].sum()) for c in result.maps.channels[0]}),
        key=f"err_why_concepts_{model.card.fingerprint}_{ev.hashes[row]}_{p}_{t}_{layer}")


def _pin_why(ev, model, row: int, result, method: str, title: str, shown: list, p: int, t: int) -> None:
    """"Add to report" for one row of the Why? panel: the three maps with their colour bars, and the
    ``python -m core contrast`` command that computes them."""
    first = result.results[(method, "predicted")]
    options = {k: getattr(v, "value", v) for k, v in first.options.items()}

    def make() -> ReportItem:
        return ReportItem(
            title=f"Why {Path(ev.images[row]).name}? {title}: {model.label(p)} rather than {model.label(t)}",
            figure=captioned_strip([(pic, caption) for pic, _, caption in shown]),
            caption=" ".join(f"{caption.capitalize()}: {scale.describe()}." for _, scale, caption in shown)
            + " Contrast = attribution of logit(predicted) − logit(true): red is evidence for the predicted class "
              "rather than the true one" + (" (Grad-CAM's contrast is taken before its ReLU)." if method == "gradcam"
                                            else "."),
            settings={"model": model.card.name, "image": ev.images[row], "method": method,
                      "predicted": f"{model.label(p)} ({p})", "true": f"{model.label(t)} ({t})", **options},
            command=contrast_command(report.path_arg(str(ev.paths[row])), model.card, method=method, predicted=p,
                                     true=t, options=options),
            seconds=float(sum(result.results[(method, role)].seconds for role in ("predicted", "true", "contrast"))),
            seed=options.get("seed"), notes=tuple(first.notes))

    report.add_button(make, key=f"err_why_{method}_{model.card.fingerprint}_{ev.hashes[row]}_{p}_{t}_"
                                f"{sorted(options.items())}")


def separating_table(sep, true_name: str, pred_name: str, model, folder: str) -> None:
    """What the statistic means, the weak-result warning, the table of separating channels and "Add to report"
    for them."""
    st.caption(f"{len(sep.mistaken)} images of {true_name} predicted {pred_name} against {len(sep.correct)} predicted "
               f"correctly. Statistic: {sep.statistic}; > 0 means stronger on the mistakes. AUC: the chance that a "
               "mistaken image has the larger value.")
    if sep.weak:
        st.warning(sep.weak)
    st.dataframe(pd.DataFrame([{"channel": ch.channel, "Cohen's d": round(ch.effect, 2), "AUC": round(ch.auc, 2),
                                "mean on mistakes": round(ch.mean_mistaken, 3),
                                "mean on correct": round(ch.mean_correct, 3)}
                               for ch in sep.channels]), hide_index=True, width="stretch")
    report.add_button(lambda: ReportItem(
        title=f"Channels of {sep.layer} that separate {true_name} predicted {pred_name}",
        figure=separation_figure(sep.channels),
        caption=f"{len(sep.mistaken)} images of {true_name} predicted {pred_name} against {len(sep.correct)} "
                f"predicted correctly. {sep.statistic}; red: stronger on the mistakes, blue: weaker. AUC: the "
                "chance that a mistaken image has the larger value.",
        settings={"model": model.card.name, "folder": report.path_arg(folder), "layer": sep.layer,
                  "cell": f"{true_name} predicted {pred_name}", "channels": len(sep.channels)},
        command=errors_command(report.path_arg(folder), model.card, separate=(sep.true, sep.predicted),
                               values={"layer": sep.layer, "channels": len(sep.channels)}),
        seconds=float(sep.seconds), notes=(sep.weak,) if sep.weak else (),
        table=tuple({"channel": ch.channel, "Cohen's d": f"{ch.effect:+.2f}", "AUC": f"{ch.auc:.2f}",
                     "mean on mistakes": f"{ch.mean_mistaken:.3g}", "mean on correct": f"{ch.mean_correct:.3g}"}
                    for ch in sep.channels)),
        key=f"err_sep_{model.card.fingerprint}_{folder}_{sep.true}_{sep.predicted}_{sep.layer}_{len(sep.channels)}")


def channel_examples(ev, model, layer: str, sep) -> None:
    """Each separating channel's dataset examples from the activation index of the folder's images, or an offer
    to build that index (``err_build_index``) when none covers ``layer``."""
    image_root = str(ev.image_folder)
    index_model = model
    if "+head:" in model.card.fingerprint:  # a head on the embedded backbone: its layers are the embedded model's
        index_model = cache.get_model("embedded", "embedded")
    directory = index_cache.index_directory(index_model, image_root)
    index_stamp = index_cache.index_stamp(directory)
    covered = index_stamp is not None and layer in index_cache.open_activation_index(directory, index_stamp).layers
    if not covered:
        shown = dataroots.shown(image_root, uploads.existing_area()) if dataroots.hosted() else image_root
        st.info(f"No activation index of {shown} covers layer {layer} for this model: build one to see each "
                "channel's dataset examples (the images of the folder that excite it most).")
        if st.button(f"Build the activation index of {shown} at {layer}", key="err_build_index"):
            layers_now = [layer]
            if index_stamp is not None:
                layers_now = sorted(set(index_cache.open_activation_index(directory, index_stamp).layers) | {layer})
            with progress_bar("indexing") as report:
                index_cache.build_activation_index(index_model, image_root, directory, {"layers": tuple(layers_now)},
                                             progress=report)
            st.rerun()
        st.stop()
    index = index_cache.open_activation_index(directory, index_stamp)
    for ch in sep.channels:
        patches = index.top(layer, ch.channel, 6)
        st.markdown(f"**Channel {ch.channel}** (d = {ch.effect:+.2f}): its dataset examples")
        for col, patch in zip(st.columns(6), patches):
            col.image(patch_tile(index_cache.patch_crop(directory, index_stamp, patch.image_id, patch.box), patch, 128),
                      width="stretch", caption=patch.image.name)
