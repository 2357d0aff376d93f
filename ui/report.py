"""The report being assembled in this session: pages pin results with :func:`add_button`; pages/report.py
shows them and writes the HTML (``core.report``)."""
from __future__ import annotations

from typing import Callable

import streamlit as st

from core.report import ReportItem, attribute_command, attribution_item, predict_command

KEY = "lens_report_items"


def items() -> list[ReportItem]:
    return st.session_state.setdefault(KEY, [])


def add_button(make: Callable[[], ReportItem], key: str, *, label: str = "Add to report") -> None:
    """A button that pins the result ``make()`` builds (called only when pressed) to the session's report."""
    pinned = st.session_state.setdefault(KEY + "_keys", set())
    if key in pinned:
        st.button(f"{label} (added)", key=f"report_{key}", disabled=True, icon=":material/check:",
                  help="Open the Report page to download the report.")
        return
    if st.button(label, key=f"report_{key}", icon=":material/note_add:",
                 help="Pin this result, with its settings, to the report (Report page)."):
        items().append(make())
        pinned.add(key)
        st.toast(f"Added to the report ({len(items())} results).")
        st.rerun()


def image_arg(selection) -> str:
    """The image as a command names it: the sample photo's path from the repository root, or the upload's name
    (which the reader must supply)."""
    from core.images import SAMPLES

    path = SAMPLES / selection.name
    return str(path.relative_to(SAMPLES.parent.parent)) if path.exists() else selection.name


def path_arg(path: str) -> str:
    """A file or folder as a command names it: relative to the repository when inside it, else as given."""
    from core.report import repo_path

    return repo_path(str(path))


def attribution(selection, attr, *, title: str | None = None) -> ReportItem:
    """A report item for an attribution of the sidebar's image."""
    item = attribution_item(selection.model, selection.inp.tensor, attr, image_arg=image_arg(selection), title=title)
    return _with_context(item, selection)


def prediction(selection, top: list[dict]) -> ReportItem:
    """A report item for the top classes of the sidebar's image (``top``: dicts with index, label, prob)."""
    from core.render import image_uint8

    best = top[0]
    return item(selection, title=f"Prediction: {best['label']} ({best['index']}) at {best['prob']:.1%}",
                figure=image_uint8(selection.inp.tensor),
                caption=f"{selection.name} as the model sees it; the top {len(top)} classes are in the table.",
                settings={"top": len(top)},
                command=predict_command(image_arg(selection), selection.model.card, top=len(top)),
                figures={f"{c['label']} ({c['index']})": float(c["prob"]) for c in top})


def grid(pair, methods: list[str], cells: dict) -> ReportItem:
    """A report item for the method grid of one or two models (``pair``: :class:`ui.attribution.Sides`;
    ``cells``: (side index, method) -> Attribution, or the reason it is missing): one row of overlays per model, a
    missing map's tile and note saying why, and one ``attribute`` command per method."""
    from PIL import Image, ImageDraw

    from core.attribution.registry import REGISTRY
    from core.attribution.view import View, figure
    from core.render import labelled_tile, load_font, tile_grid

    side_px, tiles, notes, seconds = 256, [], [], 0.0
    two = pair.other is not None
    blank = Image.new("RGB", (side_px, side_px), "white")
    ImageDraw.Draw(blank).text((side_px // 2, side_px // 2), "no map: see the notes", fill=(90, 90, 90),
                               font=load_font(14), anchor="mm")
    for i, side in enumerate(pair.sides):
        for method in methods:
            cell, title = cells.get((i, method), "not computed"), REGISTRY[method].title
            label = f"{title} ({side.sel.model.card.name})" if two else title  # the title first: labels get cut
            if isinstance(cell, str):
                tiles.append(labelled_tile(blank, side_px, label))
                notes.append(f"{title} on {side.name}: {cell}")
                continue
            tiles.append(labelled_tile(figure(cell, side.sel.inp.tensor, view=View.OVERLAY)[0], side_px, label))
            seconds += float(cell.seconds)
    first = pair.first
    settings = {"methods": ", ".join(REGISTRY[m].title for m in methods),
                "target": f"{first.sel.model.label(first.target)} ({first.target})"}
    if two:
        other = pair.other
        settings.update({"second model": other.sel.model.card.name,
                         "second model's target": f"{other.sel.model.label(other.target)} ({other.target})",
                         "targets": pair.rule})
    commands = []
    for method in methods:  # with two models each keeps its own default options (layers differ)
        cell = cells.get((0, method))
        options = dict(cell.options) if not two and not isinstance(cell, (str, type(None))) else {}
        commands.append(attribute_command(method, image_arg(first.sel), first.sel.model.card, pair.command_target,
                                          options, other=pair.other.sel.model.card if two else None))
    return item(first.sel, title="Method grid" + (f": {first.name} and {pair.other.name}" if two else ""),
                figure=tile_grid(tiles, len(methods)),
                caption="Overlays on each model's input, each map on its own colour scale (99.5th percentile)"
                        + (f"; one row per model: {first.name}, then {pair.other.name}." if two else "."),
                settings=settings, command="\n".join(commands), seconds=seconds, notes=tuple(notes))


def comparison(pair, table, values: dict, methods, mask_name: str | None, *, seconds: float = 0.0) -> ReportItem:
    """A report item for the Compare-methods ranking of one or two models (``pair``: :class:`ui.attribution.Sides`,
    ``table``: the ranked DataFrame shown, ``values``: the evaluation's settings, ``mask_name``: an uploaded
    object mask's name, which the reader must supply), reproduced by one ``evaluate`` command."""
    from core.attribution.registry import REGISTRY
    from core.evaluation.spec import EVALUATION
    from core.report import other_model_args

    first, other = pair.first, pair.other
    target = pair.command_target
    extra = ["--method", *methods, *(["--target", str(target)] if target is not None else []),
             *(["--mask", mask_name] if mask_name else []),
             *(other_model_args(other.sel.model.card) if other is not None else [])]
    settings = {"methods": ", ".join(REGISTRY[m].title if m in REGISTRY else m for m in methods),
                "target": f"{first.sel.model.label(first.target)} ({first.target})"}
    if other is not None:
        settings.update({"second model": other.sel.model.card.name,
                         "second model's target": f"{other.sel.model.label(other.target)} ({other.target})",
                         "targets": pair.rule})
    rows = tuple({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                 for row in table.to_dict("records"))
    return item(first.sel, title="Compare methods" + (f": {first.name} and {other.name}" if other else ""),
                figure=None, caption="Deletion/insertion and the other chosen scores of each method, ranked by "
                                     "insertion − deletion" + (" over both models." if other else "."),
                settings={**settings, **{k: ", ".join(map(str, v)) if isinstance(v, tuple) else v
                                         for k, v in values.items() if k != "seed"}},
                seed=int(values["seed"]), command=EVALUATION.command_line(
                    image_arg(first.sel), first.sel.model.card, values, extra=extra),
                table=rows, seconds=seconds)


def item(selection, *, image: bool = True, **fields) -> ReportItem:
    """A report item for any other result of the sidebar's image (``fields``: see ReportItem); ``image`` False
    for a result that does not depend on the image (feature visualisation, filters)."""
    return _with_context(ReportItem(**fields), selection, image=image)


def _with_context(item: ReportItem, selection, *, image: bool = True) -> ReportItem:
    from dataclasses import replace

    context = {"image": selection.name} if image else {}
    return replace(item, settings={**context, "model": selection.model.card.name, **item.settings})


def remove(index: int) -> None:
    del items()[index]
    st.session_state[KEY + "_keys"] = set()  # pins are re-offered; a duplicate pin is harmless


def clear() -> None:
    st.session_state[KEY] = []
    st.session_state[KEY + "_keys"] = set()
