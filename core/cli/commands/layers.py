"""``python -m core layers``: the model's layer catalogue (names to pass as --layer)."""
from __future__ import annotations

import argparse

from ...catalogue import LayerKind, catalogue
from .. import add_model_options, model_from_args

NAME = "layers"
HELP = "list the model's spatial layers: dotted names, channels, grid, layout, receptive field"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--kind", choices=[k.value for k in LayerKind], action="append",
                   help="only layers of this kind (repeatable)")


def run(args: argparse.Namespace) -> dict:
    model = model_from_args(args)
    kinds = set(args.kind or [])
    layers = [{
        "name": l.name, "kind": l.kind.value, "type": l.type, "channels": l.channels, "grid": list(l.grid),
        "layout": l.layout.value, "prefix": l.prefix, "reduction": l.reduction, "receptive_field": l.receptive_field,
        "feature": l.feature,
    } for l in catalogue(model) if not kinds or l.kind.value in kinds]
    return {"model": model.card.name, "input_size": list(model.card.input_size), "layers": layers}


def text(payload: dict) -> str:
    lines = [f"{payload['model']}  input {'x'.join(map(str, payload['input_size']))}",
             f"{'layer':40s} {'kind':10s} {'channels':>8s} {'grid':>9s} {'layout':6s} {'stride':>6s} {'rf':>5s}"]
    for l in payload["layers"]:
        grid = "x".join(map(str, l["grid"]))
        layout = f"{l['layout']}+{l['prefix']}" if l.get("prefix") else l["layout"]
        lines.append(f"{l['name']:40s} {l['kind']:10s} {l['channels']:8d} {grid:>9s} {layout:6s} "
                     f"{l['reduction']:6d} {l['receptive_field']:5d}{'  *' if l['feature'] else ''}")
    lines.append("* feature stage (timm feature_info)")
    if any(l.get("prefix") for l in payload["layers"]):
        lines.append("NLC+p: transformer tokens, p class/distillation tokens before the patch grid; rf is a "
                     "token's own patch (attention reaches the whole image)")
    return "\n".join(lines)
