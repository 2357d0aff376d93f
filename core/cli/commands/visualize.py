"""``python -m core visualize``: the image that maximally excites a channel (activation maximisation)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from .. import CliError, add_model_options, model_from_args
from ...features.featurevis_spec import FEATUREVIS, target_of
from ...render import image_uint8, save_png
from ...spec import model_context

NAME = "visualize"
HELP = "feature visualisation: optimise an image that maximises a channel, a unit or a class logit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags generated from :data:`core.features.featurevis_spec.FEATUREVIS` (``--channel`` required), and
    the output folder."""
    FEATUREVIS.add_arguments(p)
    p.add_argument("--out-dir", required=True, help="folder for the PNG")
    add_model_options(p)


def run(args: argparse.Namespace) -> dict:
    # the command line takes more than the page's widgets offer; the optimisation refuses what it cannot do
    if args.steps is not None and args.steps < 1:
        raise CliError("--steps must be at least 1")
    if args.size is not None and not 32 <= args.size <= 1024:
        raise CliError("--size must be between 32 and 1024")
    if args.batch is not None and not 1 <= args.batch <= 16:
        raise CliError("--batch must be between 1 and 16")
    if args.rotate is not None and not 0 <= args.rotate <= 180:
        raise CliError("--rotate must be between 0 and 180 degrees")
    model = model_from_args(args)
    try:
        values = FEATUREVIS.from_args(args, model_context(model))
        result = FEATUREVIS.run(model, None, values)
    except (KeyError, ValueError) as e:
        raise CliError(str(e).strip("'\"")) from None
    layer, channel = target_of(values)
    folder = Path(args.out_dir)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model.card.name}_{layer or 'logit'}_{channel}")
    pngs = [str(save_png(image_uint8(img), folder / (stem + (f"_{i}" if len(result.images) > 1 else "") + ".png")))
            for i, img in enumerate(result.images)]
    return {
        "layer": layer, "channel": channel, "objective": result.values[0], "png": pngs[0],
        "seconds": round(result.seconds, 3), "kind": values["objective"], "baseline": result.baseline,
        "objectives": list(result.values), "pngs": pngs, "steps": values["steps"],
        "size": int(result.images.shape[-1]), "seed": values["seed"], "model": model.card.name,
    }


def text(payload: dict) -> str:
    return (f"{payload['model']} {payload['layer'] or 'logit'} channel {payload['channel']}: objective "
            f"{payload['objective']:.4g} (grey image {payload['baseline']:.4g}) in {payload['seconds']:.1f} s "
            f"-> {payload['png']}")
