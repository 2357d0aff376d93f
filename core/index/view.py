"""What the dataset-examples page draws of an index: the model's parts as a diagram, the layer to open first.

Pure functions of layer names and catalogue entries (no Streamlit, no model run).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ..catalogue import LayerInfo

CONTAINERS = ("stages", "layers", "blocks")  # timm's names for the sequence of stages


def layer_group(name: str) -> str:
    """The top-level part of the model a layer belongs to: ``stages.2.blocks.5.mlp`` -> ``stages.2``, ``stem.0``
    -> ``stem``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] in CONTAINERS and len(parts) > 1 else parts[0]


def opening_layer(layers: Mapping[str, LayerInfo], input_side: int) -> str:
    """The indexed layer to open first: the deepest (last) of ``layers`` whose receptive field is at most half the
    input side, so its patches are real patches (a ConvNeXt stage-3 unit sees more than the whole input); the
    last layer when none is that small. ``layers`` keeps the index's order (shallow to deep)."""
    names = list(layers)
    if not names:
        raise ValueError("the index has no layers")
    small = [n for n in names if layers[n].receptive_field <= input_side // 2]
    return (small or names)[-1]


def group_choice(indexed: Sequence[str], group: str) -> str:
    """The layer the page's select box starts on in part ``group`` of the model: the part's own output when it
    is indexed, else its first indexed layer."""
    in_group = [n for n in indexed if layer_group(n) == group]
    if not in_group:
        raise ValueError(f"no indexed layer in {group}")
    return in_group[-1] if group in in_group else in_group[0]


def opening_choice(layers: Mapping[str, LayerInfo], input_side: int) -> str:
    """The layer the page opens on: :func:`group_choice` in the part of :func:`opening_layer`."""
    return group_choice(list(layers), layer_group(opening_layer(layers, input_side)))


def architecture_dot(all_layers: Iterable[LayerInfo], indexed: Sequence[str], chosen: str | None) -> str:
    """Graphviz DOT source: the model's top-level parts left to right (stem, stages with their block counts, the
    downsample that opens a ConvNeXt stage). Parts with indexed layers are tinted, ``chosen`` (a group name, see
    :func:`layer_group`) is filled; parts without indexed layers are grey."""
    all_layers = list(all_layers)
    tops: list[str] = []
    blocks: dict[str, set[str]] = {}
    for layer in all_layers:
        group = layer_group(layer.name)
        if group not in tops:
            tops.append(group)
        parts = layer.name.split(".")
        if len(parts) >= 4 and parts[2] == "blocks":
            blocks.setdefault(group, set()).add(parts[3])
    tops = [g for g in tops if not any(t.startswith(g + ".") for t in tops)]  # drop containers ("stages")
    has = {layer_group(n) for n in indexed}
    downsample = {l.name for l in all_layers if l.name.endswith(".downsample")}
    nodes, order = [], []
    for g in tops:
        if f"{g}.downsample" in downsample:  # ConvNeXt: each stage after the first opens with a downsample
            d = f"{g}.downsample"
            order.append(d)
            color = '"#dbe4ff"' if d in indexed else '"#f1f3f5"'
            nodes.append(f'"{d}" [label="downsample" shape=box style="rounded,filled" fillcolor={color} fontsize=8]')
        label = g + (f"\\n{len(blocks[g])} blocks" if g in blocks else "")
        style = 'style=filled fillcolor="#3b5bdb" fontcolor=white' if g == chosen else (
            'style=filled fillcolor="#dbe4ff"' if g in has else 'color="#adb5bd" fontcolor="#868e96"')
        nodes.append(f'"{g}" [label="{label}" shape=box {style}]')
        order.append(g)
    edges = " -> ".join(f'"{g}"' for g in order)
    return f"digraph {{ rankdir=LR; node [fontname=Helvetica fontsize=10]; {'; '.join(nodes)}; {edges} }}"
