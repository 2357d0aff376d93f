"""Streamlit glue of the Concepts page (pages/concepts.py): the panels drawn from one concepts result."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.attribution.view import figure
from core.concepts.spec import CONCEPTS, DELETION, EXAMPLES
from core import images as core_images
from core.images import ImageError
from core.index import IndexCorrupt, IndexStale
from core.render import captioned_strip
from core.spec import canonical
from ui import cache, figures, index_cache, index_page, report, run
from ui.options import setting_widget, technique_form
from ui.widgets import progress_bar

STRIP = 4  # dataset examples per channel
ALIKE = 0.9  # mean correlation of the conditional maps above which the page says they are nearly one map


def channel_name(chosen: tuple[int, ...]) -> str:
    """"channel 5", or "channels 3+7" for a set mapped together."""
    return f"channel {chosen[0]}" if len(chosen) == 1 else "channels " + "+".join(map(str, chosen))


def ranking(model, result, where=st) -> None:
    """The verdict line and the ranked bar chart of relevance share."""
    rel = result.relevance
    target = int(rel.target[0])
    against = f" against {model.label(int(rel.contrast[0]))}" if rel.contrast is not None else ""
    where.markdown(f"**{model.label(target)}**{against}: relevance at `{rel.layer.name}` totals "
                   f"**{float(rel.total[0]):.4g}** (explained output {float(rel.score[0]):.4g}).")
    rows = [{"channel": channel_name(c), "share": float(rel.share[0, list(c)].sum())} for c in result.maps.channels[0]]
    figures.bars(pd.DataFrame(rows), label="channel", value="share", value_title="share of the layer's relevance",
                 where=where)


def maps(model, selection, result, columns: int = 3, *, image=None, with_examples: bool = True) -> list:
    """Each mapped channel's conditional heat map (with colour bar) and, ``with_examples``, its dataset examples
    from the index of the sample photos (ranked as the page's toggle says); returns the (picture, caption) pairs
    for the report. ``image``: the input (3, H, W) in [0, 1] under the maps (default the sidebar's)."""
    pictures = []
    target = int(result.relevance.target[0])
    image = selection.inp.tensor if image is None else image
    by = None
    if with_examples:
        by = setting_widget(EXAMPLES, "examples_by", cache.context(model))
        _sample_index(model, selection.model_key)
    alike = result.maps.similarity(0)
    if alike is not None and alike >= ALIKE:
        st.info(f"These {len(result.maps.channels[0])} maps are nearly one map (mean correlation {alike:.2f}): at "
                f"`{result.relevance.layer.name}` the channels differ in how much relevance they carry, not in where "
                "they look. An earlier layer may separate them.")
    cols = st.columns(columns)
    for k, chosen in enumerate(result.maps.channels[0]):
        where = cols[k % columns]
        picture, scale = figure(result.maps.attribution(k, 0, target), image)
        share = float(result.relevance.share[0, list(chosen)].sum())
        caption = f"{channel_name(chosen)}: {share:.1%} of the relevance"
        figures.show(picture, scale, caption=caption, where=where)
        pictures.append((picture, caption))
        if by is not None and len(chosen) == 1:
            examples(model, result.relevance.layer.name, chosen[0], where, by)
    return pictures


def _sample_index(model, model_key: str) -> None:
    """The index of the sample photos with its relevance ranking: when it is not there, the app's background build
    is started (or followed) with its progress bar."""
    if not index_cache.sample_index_ranked(model, model_key):
        folder = str(core_images.SAMPLES)  # read now: tests point it elsewhere
        index_page.sample_index(model, model_key, folder, index_cache.index_directory(model, folder))


def examples(model, layer: str, channel: int, where, by: str = "relevance") -> None:
    """A strip of the channel's dataset examples from the index of the sample photos, ranked ``by`` relevance
    (for each photo's predicted class) or activation."""
    try:
        patches = index_cache.sample_patches(model, layer, channel, STRIP, by)
    except (KeyError, ValueError, OSError, IndexCorrupt, IndexStale, ImageError) as e:
        where.caption(f"No dataset examples: {e}")
        return
    if patches is None:
        where.caption("Dataset examples: the index of the sample photos is not built yet.")
        return
    if patches:
        where.image([crop for _, crop in patches], width=64, caption=[f"{p.value:.3g}" for p, _ in patches])
        where.caption("Sample photos where the channel carries the most relevance for their predicted class "
                      "(relevance-ranked; cropped where its relevance peaks)." if by == "relevance" else
                      "Sample photos where the channel fires most (activation-ranked).")


def report_button(model, selection, values, result, pictures) -> None:
    rel = result.relevance
    strip = captioned_strip(pictures[:6]) if pictures else None
    report.add_button(lambda: report.item(
        selection, title=f"Concepts at {rel.layer.name}: {model.label(int(rel.target[0]))}", figure=strip,
        caption="Conditional LRP maps of the most relevant channels",
        settings={k: v for k, v in values.items() if v not in (None, ())},
        command=CONCEPTS.command_line(report.image_arg(selection), model.card, values),
        seconds=float(result.seconds),
        figures={channel_name(c): float(rel.share[0, list(c)].sum()) for c in result.maps.channels[0]}),
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
