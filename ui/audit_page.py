"""Streamlit pieces of the Dataset audit page: the eigengap plot, the spectral embedding, each cluster's mean map
and a strip of its images with their maps, the flag in words, and the report item. Every call into core goes
through ``ui.cache``."""
from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from core.audit.audit import ClassAudit, Cluster
from core.audit.demo import SHORTCUT_HEAD, build_shortcut_set, default_set_dir
from core.audit.spec import AUDIT
from core.audit.view import flag
from core.images import ImageError
from core.render import (ColourMap, captioned_strip, colourise, image_uint8, labelled_tile, overlay, resize_map,
                         tile_grid)
from core.report import ReportItem
from ui import cache, report, sidebar
from ui.figures import PALETTE

DEMO = "Demo: the watermark shortcut (assets/demo/shortcut-head.safetensors)"
STRIP = 8        # images shown per cluster
SIDE = 112       # pixels per tile


def model_for(source: str, selection) -> tuple:
    """``(model, model_key, default_folder)``: the demo head on its set (built on first use), or the sidebar's."""
    if source == DEMO:
        folder = default_set_dir()
        if not (folder / "stamped").is_dir():
            build_shortcut_set(folder)
        model = cache.get_model(None, str(SHORTCUT_HEAD))
        return model, cache.model_key(model), str(folder)
    return selection.model, selection.model_key, ""


def folder_classes(folder: str) -> tuple[str, ...]:
    """The class folders' names of ``folder`` (the page's class choices); empty for a CSV."""
    path = Path(folder)
    if not path.is_dir():
        return ()
    return tuple(sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")))


def eigengap_chart(c: ClassAudit) -> alt.Chart:
    """Bars of the eigengap after k eigenvalues, k = 1..8; the bar of the chosen number of clusters darker."""
    k = len(c.clusters)
    frame = pd.DataFrame({"k": np.arange(1, len(c.eigengap) + 1), "gap": c.eigengap})
    frame["chosen"] = np.where(frame["k"] == k, "clusters used", "other")
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("k:O", title="clusters k"), y=alt.Y("gap:Q", title="eigengap λ(k+1) − λk"),
        color=alt.Color("chosen:N", scale=alt.Scale(domain=["clusters used", "other"],
                                                    range=[PALETTE[0], "#adb5bd"]), legend=None),
        tooltip=["k", alt.Tooltip("gap:Q", format=".3f")]).properties(height=220)


def embedding_chart(c: ClassAudit) -> alt.Chart:
    """The 2-D spectral embedding of the class's images, one colour per cluster."""
    frame = pd.DataFrame({"x": c.embedding[:, 0], "y": c.embedding[:, 1], "image": list(c.images),
                          "cluster": [f"cluster {i}" for i in c.assignment]})
    names = sorted(frame["cluster"].unique())
    return alt.Chart(frame).mark_circle(size=70).encode(
        x=alt.X("x:Q", title="eigenvector 2"), y=alt.Y("y:Q", title="eigenvector 3"),
        color=alt.Color("cluster:N", scale=alt.Scale(domain=names, range=list(PALETTE[:len(names)])),
                        legend=alt.Legend(orient="bottom")),
        tooltip=["image", "cluster"]).properties(height=220)


def mean_picture(k: Cluster, side: int = 224) -> np.ndarray:
    """uint8 (side, side, 3): the cluster's mean map, dark none to bright its peak."""
    m = resize_map(k.mean_map, (side, side))
    return colourise(m / (m.max() or 1.0), ColourMap.HEAT)


def strip(c: ClassAudit, k: Cluster, model, model_key: str) -> np.ndarray:
    """uint8: up to :data:`STRIP` images of the cluster as the model sees them (its crop, where the maps are),
    each beside its own map overlaid."""
    tiles = []
    for i in k.members[:STRIP]:
        try:
            thumb = image_uint8(cache.model_input(model, model_key, c.paths[i]).tensor)
        except ImageError:
            continue
        m = c.maps[i]
        tiles += [labelled_tile(thumb, SIDE, Path(c.images[i]).name),
                  labelled_tile(overlay(thumb, m / (m.max() or 1.0), alpha=0.6), SIDE, "map")]
    return tile_grid(tiles, 2 * min(STRIP, 4)) if tiles else np.full((1, 1, 3), 255, np.uint8)


def open_on_attribution(pick_key: str, paths: dict[str, str], demo: bool = False) -> None:
    """Button callback: make the image chosen in the picker ``pick_key`` (``paths``: its choices' files) the
    sidebar's (as an upload), and with ``demo`` the demo head the sidebar's model, then go to the Attribution page.

    The choice is read here, not bound when the button was drawn: a press that arrives with a new choice (picked,
    then pressed before the page redrew) opens the image the user sees picked.
    """
    name = st.session_state[pick_key]
    try:
        data = Path(paths[name]).read_bytes()
    except OSError as e:
        st.session_state["aud_open_error"] = f"{name}: cannot read ({e.strerror or e})"
        return
    st.session_state["lens_image_source"] = "Upload"
    st.session_state["lens_last_upload"] = (data, Path(name).name)
    if demo:
        st.session_state[sidebar.SIDEBAR.key("model_choice")] = sidebar.DEMO_HEAD_LABEL
    st.session_state["aud_goto"] = True


def opener(c: ClassAudit, k: Cluster, where, demo: bool = False) -> None:
    """A picker of the cluster's images and a button that opens the chosen one on the Attribution page (with the
    audited model: the sidebar's, or with ``demo`` the demo head, which becomes the sidebar's)."""
    paths = {c.images[i]: c.paths[i] for i in k.members}
    key = f"aud_pick_{c.label}_{k.id}"
    where.selectbox("Image", list(paths), key=key, label_visibility="collapsed")
    where.button("Open on the Attribution page", key=f"aud_open_{c.label}_{k.id}", on_click=open_on_attribution,
                 args=(key, paths, demo),
                 help=("With the demo head as the sidebar's model" if demo else "With the sidebar's model")
                 + ", as the sidebar's image.")


def show_class(c: ClassAudit, model, model_key: str, *, demo: bool = False) -> None:
    """One class: the flag, the two charts, then the clusters by outlier score, each with a button that opens one
    of its images on the Attribution page (``demo``: the model is the demo head)."""
    n = len(c.clusters)
    st.subheader(f"{c.name}: {len(c.images)} images, {n} cluster{'' if n == 1 else 's'}")
    text = flag(c, c.clusters[0]) if c.clusters else None
    if text:
        st.warning(text, icon=":material/flag:")
    left, right = st.columns(2)
    left.altair_chart(eigengap_chart(c), width="stretch")
    right.altair_chart(embedding_chart(c), width="stretch")
    for k in c.clusters:
        a, b = st.columns([1, 4])
        a.image(mean_picture(k), width="stretch",
                caption=f"Cluster {k.id}: mean map. Colours: dark none to bright the cluster's peak.")
        b.markdown(f"**Cluster {k.id}**: {k.size} images · outlier score {k.outlier:+.2f} · border share "
                   f"{k.border_share:.0%} · centre share {k.centre_share:.0%} · accuracy {k.accuracy:.0%}")
        b.image(strip(c, k, model, model_key), caption="Each image, then its map (dark none to bright the image's peak).")
        opener(c, k, b, demo)


def add_to_report(audit, model, folder: str, values: dict) -> None:
    """Pin the audit: per class the clusters' mean maps side by side, the flags and a table of the clusters."""
    def make() -> ReportItem:
        panels = [(mean_picture(k, 160), f"{c.name} #{k.id} ({k.size})") for c in audit.classes
                  for k in c.clusters][:12]
        flags = tuple(t for c in audit.classes if c.clusters and (t := flag(c, c.clusters[0])))
        table = tuple({"class": c.name, "cluster": k.id, "size": k.size, "outlier": round(k.outlier, 3),
                       "border share": f"{k.border_share:.0%}", "accuracy": f"{k.accuracy:.0%}"}
                      for c in audit.classes for k in c.clusters)
        return ReportItem(
            title=f"Dataset audit of {Path(folder).name} ({audit.method}, {len(audit.classes)} classes)",
            figure=captioned_strip(panels) if panels else None,
            caption="Each cluster's mean attribution map for the true class (pooled to 32 x 32); colours: dark none "
                    "to bright the cluster's peak. Clusters by outlier score, highest first.",
            settings={"model": model.card.name, "folder": report.path_arg(folder), **values},
            command=AUDIT.command_line(report.path_arg(folder), model.card, values), seconds=float(audit.seconds),
            notes=flags, table=table)
    report.add_button(make, key=f"audit_{model.card.fingerprint}_{folder}_{sorted(values.items())}")
