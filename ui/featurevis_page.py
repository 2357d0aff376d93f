"""Streamlit glue of the feature-visualisation page: the run with its progress bar and the result panels.

The page keeps its widgets; everything drawn from a result (image grids, captions, charts, the filter views) is
here so the page stays layout only.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.catalogue import LayerInfo
from core.features import view
from core.features.featurevis import Visualisation
from core.features.featurevis_spec import (FEATUREVIS, FILTERS, FILTERS_OUT_DIR, INTERACTION, OBJECTIVE_LABELS,
                                           VISUALIZE_OUT_DIR, Objective, Settings, depthwise_inside, optimisation,
                                           target_of)
from core.render import captioned_strip, heat_figure, image_uint8
from core.spec import Technique, canonical
from ui import cache, forms, index_cache, permalink, report
from ui.options import setting_widget, technique_form
from ui.permalink import Param
from ui.index_page import patch_tile
from ui.widgets import progress_bar


def visualisation_form(model, info: LayerInfo) -> dict:
    """The activation-maximisation form (:data:`FEATUREVIS`, keys ``fv_*``): the objective, then the channel of
    the page's layer or the class, then the optimisation settings. Returns its values."""
    context = cache.context(model)
    c1, c2 = st.columns(2)
    objective = setting_widget(FEATUREVIS, "objective", context, where=c1)
    if objective == Objective.LOGIT.value:
        index = index_input(c2, "Class", model.card.num_classes, "fv_class", _start(FEATUREVIS, "class", context))
        c2.caption(f"{model.label(index)}; the class logit does not use the layer.")
        fixed = {"objective": objective, "class": index}
    else:
        index = index_input(c2, f"Channel of {info.name}", info.channels, "fv_channel",
                            _start(FEATUREVIS, "channel", context))
        fixed = {"objective": objective, "layer": info.name, "channel": index}
    return forms.featurevis_settings(FEATUREVIS, context, fixed)


def interaction_form(model, info: LayerInfo) -> dict:
    """The neuron-interaction form (:data:`INTERACTION`, keys ``mix_*``): channels A and B of the page's layer,
    then the optimisation settings. Returns its values."""
    context = cache.context(model)
    m1, m2 = st.columns(2)
    a = index_input(m1, f"Channel A of {info.name}", info.channels, "mix_a", _start(INTERACTION, "a", context))
    b = index_input(m2, f"Channel B of {info.name}", info.channels, "mix_b", _start(INTERACTION, "b", context))
    return forms.featurevis_settings(INTERACTION, context, {"layer": info.name, "a": a, "b": b})


def _start(spec: Technique, name: str, context: dict) -> int:
    return int(spec.setting(name).start(context))


def run(selection, spec: Technique, values: dict) -> Visualisation | None:
    """The stored optimisation of ``spec`` (:data:`FEATUREVIS` or :data:`INTERACTION`) behind a progress bar; a
    bad request is shown as an error and gives None."""
    try:
        with progress_bar("optimising...") as progress:
            return cache.technique(spec, selection.model, selection.model_key, None, None, values, progress)
    except (KeyError, ValueError) as e:
        st.error(str(e).strip("'\""))
        return None


def layer_caption(info) -> str:
    """One line describing a layer: kind, channels, grid and receptive field."""
    return (f"{info.kind.value}, {info.channels} channels, grid {info.grid[0]}x{info.grid[1]}, "
            f"receptive field {info.receptive_field} px")


def layer_picker(model, layers: list[LayerInfo]) -> LayerInfo:
    """The page's one layer picker (key ``fv_layer``), after restoring the page's settings from the link."""
    names = [l.name for l in layers]
    permalink.bind([Param("layer", "fv_layer", options=names), Param("channel", "fv_channel", int),
                    Param("class", "fv_class", int), Param("a", "mix_a", int), Param("b", "mix_b", int)])
    start = FEATUREVIS.setting("layer").start(cache.context(model))
    name = st.selectbox("Layer", names, index=names.index(start), key="fv_layer",
                        help="Used by every tab: the channel to visualise, the two channels to mix, and the "
                             "depthwise kernels inside it.")
    info = layers[names.index(name)]
    st.caption(f"{name}: {layer_caption(info)}.")
    return info


def index_input(where, label: str, n: int, key: str, default: int) -> int:
    """A number input for an index in [0, n). The value is kept when the layer changes and it exists there; a
    remembered or linked value beyond a narrower layer is clamped, and a caption says so (until it is changed)."""
    if key in st.session_state and not 0 <= int(st.session_state[key]) < n:
        old = int(st.session_state[key])
        st.session_state[key] = min(max(0, old), n - 1)
        st.session_state[f"{key}_clamped"] = (label, old, st.session_state[key])
    value = int(where.number_input(f"{label} (0-{n - 1})", 0, n - 1, min(default, n - 1), key=key))
    note = st.session_state.get(f"{key}_clamped")
    if note and note[0] == label and note[2] == value:
        where.caption(f"{note[1]} does not exist here (0-{n - 1}): clamped to {value}.")
    return value


def history_chart(result: Visualisation) -> None:
    st.line_chart(pd.DataFrame({"objective (transformed images)": list(result.history)}), height=180)


def show_images(result: Visualisation) -> None:
    """The optimised images (up to 4 a row) with their objective, the summary line and the history."""
    cols = st.columns(min(4, len(result.images)) or 1)
    for i, img in enumerate(result.images):
        cols[i % len(cols)].image(image_uint8(img), width="stretch", caption=f"objective {result.values[i]:.3g}")
    st.markdown(f"Objective at the model's input size: **{result.values[0]:.4g}** (mid-grey image: "
                f"{result.baseline:.4g}). {len(result.history)} steps in {result.seconds:.1f} s.")
    history_chart(result)


def show_frames(result: Visualisation) -> None:
    """The interpolation frames in one row, each captioned with its weights and objective, then the history."""
    cols = st.columns(len(result.images))
    for col, img, (wa, wb), v in zip(cols, result.images, result.weights, result.values):
        col.image(image_uint8(img), width="stretch", caption=f"{wa:.2f} A + {wb:.2f} B: {v:.3g}")
    history_chart(result)


def _settings_rows(settings: Settings) -> dict:
    return {"steps": settings.steps, "size": settings.size, "seed": settings.seed, "batch": settings.batch,
            "learning rate": settings.lr, "diversity": settings.diversity, "rotation (deg)": settings.rotate,
            "parameterisation": "Fourier" if settings.fourier else "pixels"}


def report_images(selection, values: dict, result: Visualisation) -> None:
    """"Add to report" for an activation maximisation: the images, every setting, the seed and the command."""
    model, settings = selection.model, optimisation(values)
    layer, channel = target_of(values)
    objective = values["objective"]
    what = (f"{layer} channel {channel}, {OBJECTIVE_LABELS[objective]}" if layer else
            f"class logit {model.label(channel)} ({channel})")
    report.add_button(lambda: report.item(
        selection, image=False, title=f"Feature visualisation: {what}",
        figure=captioned_strip([(image_uint8(img), f"objective {v:.3g}") for img, v in zip(result.images,
                                                                                          result.values)]),
        caption=f"Images optimised to excite {what}; above each, its objective (mid-grey image: "
                f"{result.baseline:.3g}).",
        settings={"layer": layer or "(class logit)", "channel" if layer else "class": channel,
                  "objective": objective, **_settings_rows(settings)},
        command=FEATUREVIS.command_line(None, model.card, values, extra=["--out-dir", VISUALIZE_OUT_DIR]),
        seconds=float(result.seconds), seed=settings.seed,
        figures={"objective": float(result.values[0]), "objective, mid-grey image": float(result.baseline)}),
        key=f"fv_{selection.model_key}_{canonical(values)}")


def report_frames(selection, values: dict, result: Visualisation) -> None:
    """"Add to report" for a neuron interaction (no command-line equivalent: the report says so)."""
    layer, a, b, settings = values["layer"], values["a"], values["b"], optimisation(values)
    report.add_button(lambda: report.item(
        selection, image=False, title=f"Neuron interaction: {layer} channels {a} and {b}",
        figure=captioned_strip([(image_uint8(img), f"{wa:.2f} A + {wb:.2f} B") for img, (wa, wb) in
                                zip(result.images, result.weights)]),
        caption="Frames maximising (1 - t) * A + t * B, t from 0 to 1 (A = channel "
                f"{a}, B = channel {b}); objectives {', '.join(f'{v:.3g}' for v in result.values)}.",
        settings={"layer": layer, "channel A": a, "channel B": b, **_settings_rows(settings)},
        seconds=float(result.seconds), seed=settings.seed,
        notes=("The neuron-interaction frames are made on the dashboard only (no python -m core equivalent).",)),
        key=f"mix_{selection.model_key}_{canonical(values)}")


def channel_on_image(selection, layer: str, channel: int) -> None:
    """The channel's activation on the user's image, next to its top dataset patches."""
    st.subheader("This channel on your image")
    model, x = selection.model, selection.inp.tensor
    amap = cache.channel_map(model, selection.model_key, x, selection.image_key, layer, channel)
    left, right = st.columns(2)
    picture, scale = heat_figure(amap, x, signed=False, units="activation")
    caption = (f"activation of channel {channel} (mean {float(amap.mean()):.3g}, max {float(amap.max()):.3g}); "
               f"{scale.describe()}")
    left.image(picture, width="stretch", caption=caption)
    with left:
        report.add_button(lambda: report.item(
            selection, title=f"{layer} channel {channel} on {selection.name}", figure=picture,
            caption=f"Overlay on the model input: {caption}.", settings={"layer": layer, "channel": channel},
            figures={"mean activation": float(amap.mean()), "max activation": float(amap.max())},
            notes=("The channel map itself has no python -m core command; `python -m core index` lists the images "
                   "that excite a channel most.",)),
            key=f"fvmap_{selection.key}_{layer}_{channel}")
    with right:
        dataset_patches(model, layer, channel)


def dataset_patches(model, layer: str, channel: int) -> None:
    """The channel's top dataset patches from the activation index of the sample photos, if one was built."""
    try:
        patches = index_cache.sample_patches(model, layer, channel, 8)
    except Exception as e:  # an optional panel: any index problem is a note, never a failure of this page
        st.caption(f"Dataset patches unavailable: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return
    if patches is None:
        st.info("No activation index for this model yet: build one on the dataset examples page to see "
                "the sample-photo patches that excite this channel.")
        return
    st.markdown("**Top dataset patches** (sample photos)")
    cols = st.columns(4)
    for i, (patch, crop) in enumerate(patches):
        cols[i % 4].image(patch_tile(crop, patch, 128), width="stretch")


def first_layer(first, selection) -> None:
    """The first layer's RGB kernels (with "Add to report"), or a note when the model has no convolution on the
    colour channels."""
    if first is None:
        st.info("This model has no convolution on the colour channels.")
        return
    st.subheader(f"First layer: {first.layer} ({first.tiles.shape[0]} kernels, "
                 f"{first.tiles.shape[-1]}x{first.tiles.shape[-2]}, stride {first.stride[0]})")
    grid = view.kernel_grid(first)
    caption = ("Kernels in RGB pixel space (weights divided by the normalisation std), enlarged without "
               "smoothing; each tile is scaled on its own, grey = 0; under each: output channel and L2 norm (~0: dead).")
    st.caption(caption)
    st.image(grid.picture, width="content")
    _pin_filters(selection, f"First-layer kernels: {first.layer}", grid.picture, caption, None,
                 {"layer": first.layer, "kernels": grid.total, "stride": first.stride[0]})


def _pin_filters(selection, title: str, picture, caption: str, depthwise: str | None, settings: dict,
                 table: tuple = ()) -> None:
    """"Add to report" for a filter view; ``python -m core filters`` writes its PNGs and prints the statistics."""
    card = selection.model.card
    report.add_button(lambda: report.item(
        selection, image=False, title=title, figure=picture, caption=caption, settings=settings, table=table,
        command=FILTERS.command_line(None, card, {"depthwise": depthwise}, extra=["--out-dir", FILTERS_OUT_DIR])),
        key=f"filters_{selection.model_key}_{title}")


DEPTHWISE_SHOWN = 64


def depthwise_in_layer(selection, layer: str, names: list[str]) -> None:
    """The depthwise kernels inside the page's layer (a stage holds one per block: pick the block)."""
    if not names:
        return
    st.subheader("Depthwise kernels")
    inside = depthwise_inside(layer, names)
    if not inside:
        st.info(f"{layer} holds no depthwise convolution. Pick a layer that does in the Layer picker above "
                f"(e.g. the one around {names[0]}).")
        return
    key = FILTERS.setting("depthwise").widget_key(FILTERS.prefix, {})
    if st.session_state.get(key) not in inside:
        st.session_state.pop(key, None)
    context = {**cache.context(selection.model), "within": layer, "depthwise_choices": inside}
    dw = inside[0] if len(inside) == 1 else technique_form(FILTERS, context, columns=1)["depthwise"]
    depthwise(cache.depthwise_kernels(selection.model, selection.model_key, dw), selection)


def depthwise(kernels, selection) -> None:
    """A depthwise layer's kernels as labelled grey tiles (the largest ``DEPTHWISE_SHOWN`` by norm)."""
    grid = view.kernel_grid(kernels, limit=DEPTHWISE_SHOWN)
    shown = (f"all {grid.total}" if len(grid.channels) == grid.total else
             f"the {len(grid.channels)} largest by L2 norm of {grid.total} (python -m core filters --depthwise "
             f"{kernels.layer} --out-dir DIR writes all)")
    caption = (f"{kernels.layer}: {shown} kernels {kernels.tiles.shape[-2]}x{kernels.tiles.shape[-1]}, enlarged "
               "without smoothing; grey = 0, white positive, black negative; under each: channel and L2 norm.")
    st.caption(caption)
    st.image(grid.picture, width="content")
    _pin_filters(selection, f"Depthwise kernels: {kernels.layer}", grid.picture, caption, kernels.layer,
                 {"layer": kernels.layer, "kernels shown": len(grid.channels), "kernels": grid.total})


def weight_stats(stats, selection) -> None:
    """The per-layer weight statistics table, with "Add to report"."""
    st.subheader("Weight statistics")
    rows = view.stats_rows(stats)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"near zero": st.column_config.NumberColumn(format="percent")})
    _pin_filters(selection, "Weight statistics per layer", None,
                 "Per layer: mean, standard deviation and largest |w| of the weights, the share of near-zero "
                 "weights, and output channels whose weights are all near zero (dead).", None,
                 {"layers": len(rows)}, table=tuple({**r, "near zero": f"{r['near zero']:.1%}"} for r in rows))
