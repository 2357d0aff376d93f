"""``python -m core filters``: first-layer kernels, depthwise kernels and per-layer weight statistics."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import CliError, add_model_options, model_from_args
from ...features.featurevis_spec import FILTERS
from ...features.view import kernel_grid
from ...render import save_png
from ...spec import model_context

NAME = "filters"
HELP = "filter views: first-layer kernels as RGB tiles, depthwise kernels, weight statistics per layer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags generated from :data:`core.features.featurevis_spec.FILTERS`, and the output folder."""
    FILTERS.add_arguments(p)
    p.add_argument("--out-dir", default=None, help="write first_layer.png (and depthwise.png) here")
    add_model_options(p)


def run(args: argparse.Namespace) -> dict:
    model = model_from_args(args)
    try:
        views = FILTERS.run(model, None, FILTERS.from_args(args, model_context(model)))
    except (KeyError, ValueError) as e:
        raise CliError(str(e).strip("'\"")) from None
    first, dw = views["first"], views["depthwise"]
    pngs = {}
    if args.out_dir:
        folder = Path(args.out_dir)
        # the page's labelled grids; every depthwise kernel (the page shows the largest few)
        pngs["first_layer"] = str(save_png(kernel_grid(first).picture, folder / "first_layer.png"))
        if dw is not None:
            pngs["depthwise"] = str(save_png(kernel_grid(dw).picture, folder / "depthwise.png"))
    return {
        "model": model.card.name,
        "first_layer": {"layer": first.layer, "kernels": int(first.tiles.shape[0]),
                        "size": list(first.tiles.shape[-2:]), "stride": list(first.stride)},
        "depthwise_layers": views["layers"],
        "layers": [{"name": s.name, "type": s.type, "shape": list(s.shape), "params": s.params, "mean": s.mean,
                    "std": s.std, "abs_max": s.abs_max, "near_zero": s.near_zero, "dead": s.dead}
                   for s in views["stats"]],
        "pngs": pngs,
    }


def text(payload: dict) -> str:
    f = payload["first_layer"]
    lines = [f"{payload['model']}: first layer {f['layer']} ({f['kernels']} kernels {f['size'][0]}x{f['size'][1]}, "
             f"stride {f['stride'][0]}); {len(payload['depthwise_layers'])} depthwise layers"]
    lines += [f"  {r['name']:<40} {r['type']:<12} std {r['std']:.3g}  max|w| {r['abs_max']:.3g}  dead {r['dead']}"
              for r in payload["layers"]]
    lines += [f"  -> {p}" for p in payload["pngs"].values()]
    return "\n".join(lines)
