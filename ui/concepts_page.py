"""Streamlit glue of the Concepts page (pages/concepts.py): the panels drawn from one concepts result."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.attribution.view import figure
from core.concepts.spec import CONCEPTS, DELETION
from core.render import captioned_strip
from core.spec import canonical
from ui import cache, figures, report, run
from ui.options import technique_form
from ui.widgets import progress_bar


def _name(chosen: tuple[int, ...]) -> str:
    return f"channel {chosen[0]}" if len(chosen) == 1 else "channels " + "+".join(map(str, chosen))


def ranking(model, result) -> None:
    """The verdict line and the ranked bar chart of relevance share."""
    rel = result.relevance
    target = int(rel.target[0])
    against = f" against {model.label(int(rel.contrast[0]))}" if rel.contrast is not None else ""
    st.markdown(f"**{model.label(target)}**{against}: relevance at `{rel.layer.name}` totals "
                f"**{float(rel.total[0]):.4g}** (explained output {float(rel.score[0]):.4g}).")
    rows = [{"channel": _name(c), "share": float(rel.share[0, list(c)].sum())} for c in result.maps.channels[0]]
    figures.bars(pd.DataFrame(rows), label="channel", value="share", value_title="share of the layer's relevance")


def maps(model, selection, result, columns: int = 3) -> list:
    """Each mapped channel's conditional heat map (with colour bar) and its dataset examples; returns the
    (picture, caption) pairs for the report."""
    pictures = []
    target = int(result.relevance.target[0])
    cols = st.columns(columns)
    for k, chosen in enumerate(result.maps.channels[0]):
        where = cols[k % columns]
        picture, scale = figure(result.maps.attribution(k, 0, target), selection.inp.tensor)
        share = float(result.relevance.share[0, list(chosen)].sum())
        caption = f"{_name(chosen)}: {share:.1%} of the relevance"
        figures.show(picture, scale, caption=caption, where=where)
        pictures.append((picture, caption))
        if len(chosen) == 1:
            examples(model, result.relevance.layer.name, chosen[0], where)
    return pictures


def examples(model, layer: str, channel: int, where) -> None:
    """A strip of the channel's dataset examples from the index of the sample photos, when it was built."""
    try:
        patches = cache.sample_patches(model, layer, channel, 4)
    except (KeyError, ValueError, OSError) as e:
        where.caption(f"No dataset examples: {e}")
        return
    if patches is None:
        where.caption("Dataset examples: build the index of the sample photos (Dataset examples page).")
        return
    if patches:
        where.image([crop for _, crop in patches], width=64,
                    caption=[f"{p.value:.3g}" for p, _ in patches])
        where.caption("Sample photos where the channel fires most (activation-ranked).")


def report_button(model, selection, values, result, pictures) -> None:
    rel = result.relevance
    strip = captioned_strip(pictures[:6]) if pictures else None
    report.add_button(lambda: report.item(
        selection, title=f"Concepts at {rel.layer.name}: {model.label(int(rel.target[0]))}", figure=strip,
        caption="Conditional LRP maps of the most relevant channels",
        settings={k: v for k, v in values.items() if v not in (None, ())},
        command=CONCEPTS.command_line(report.image_arg(selection), model.card, values),
        seconds=float(result.seconds),
        figures={_name(c): float(rel.share[0, list(c)].sum()) for c in result.maps.channels[0]}),
        key=f"cpt_{selection.key}_{canonical(values)}")


def deletion(model, selection, values) -> None:
    """The faithfulness curves behind their own button."""
    st.subheader("Is the ranking faithful? Deleting channels")
    chosen = technique_form(DELETION, cache.context(model))
    draws = chosen["draws"]
    if not run.button("Delete channels", (selection.key, canonical(values), canonical(chosen)), "cpt_del_run",
                      help="Sets the top-k channels' activations to zero (k = 1..20) and watches the logit."):
        return
    subject = (selection.inp.tensor, values["layer"], values.get("target"))
    with progress_bar("Deleting channels") as progress:
        d = cache.technique(DELETION, model, selection.model_key, subject,
                            (selection.image_key, values["layer"], values.get("target")), chosen, progress)
    frame = pd.DataFrame({"k": d.ks, "top-k by relevance": d.relevance[0].numpy(),
                          "top-k by activation": d.activation[0].numpy(),
                          f"k random (mean of {draws})": d.random[0].numpy()})
    figures.lines(frame, x="k", y_title="drop of the target logit")
    st.caption("A faithful ranking drops the logit more than deleting random channels or those that fire most.")
