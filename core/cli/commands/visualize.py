"""``python -m core visualize``: the image that maximally excites a channel (activation maximisation)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ...catalogue import default_layer
from .. import CliError, add_model_options, model_from_args
from ...features.featurevis import Objective, Settings, visualize
from ...render import image_uint8, save_png

NAME = "visualize"
HELP = "feature visualisation: optimise an image that maximises a channel, a unit or a class logit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", default=None, help="catalogue layer name (default: the last feature stage)")
    p.add_argument("--channel", type=int, required=True, help="channel index (class index with --objective logit)")
    p.add_argument("--objective", choices=[o.value for o in Objective], default=Objective.CHANNEL.value,
                   help="channel mean (default), the centre unit of the channel, or a class logit")
    p.add_argument("--steps", type=int, default=Settings.steps, help=f"Adam steps (default {Settings.steps})")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's input size)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--lr", type=float, default=Settings.lr, help=f"Adam learning rate (default {Settings.lr})")
    p.add_argument("--batch", type=int, default=1, help="how many images (default 1)")
    p.add_argument("--diversity", type=float, default=0.0, help="diversity weight across the batch (default 0)")
    p.add_argument("--pixels", action="store_true", help="plain pixel parameterisation instead of Fourier")
    p.add_argument("--rotate", type=float, default=Settings.rotate,
                   help=f"random rotation range in degrees, a robustness transform (default {Settings.rotate:g})")
    p.add_argument("--out-dir", required=True, help="folder for the PNG")
    add_model_options(p)


def run(args: argparse.Namespace) -> dict:
    if args.steps < 1:
        raise CliError("--steps must be at least 1")
    if args.size is not None and not 32 <= args.size <= 1024:
        raise CliError("--size must be between 32 and 1024")
    if not 1 <= args.batch <= 16:
        raise CliError("--batch must be between 1 and 16")
    if not 0 <= args.rotate <= 180:
        raise CliError("--rotate must be between 0 and 180 degrees")
    model = model_from_args(args)
    objective = Objective(args.objective)
    layer = args.layer or ("" if objective is Objective.LOGIT else default_layer(model).name)
    settings = Settings(steps=args.steps, size=args.size, seed=args.seed, lr=args.lr, batch=args.batch,
                        diversity=args.diversity, fourier=not args.pixels, rotate=args.rotate)
    try:
        result = visualize(model, layer, args.channel, objective=objective, settings=settings)
    except (KeyError, ValueError) as e:
        raise CliError(str(e).strip("'\"")) from None
    folder = Path(args.out_dir)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model.card.name}_{layer or 'logit'}_{args.channel}")
    pngs = [str(save_png(image_uint8(img), folder / (stem + (f"_{i}" if len(result.images) > 1 else "") + ".png")))
            for i, img in enumerate(result.images)]
    return {
        "layer": layer, "channel": args.channel, "objective": result.values[0], "png": pngs[0],
        "seconds": round(result.seconds, 3), "kind": objective.value, "baseline": result.baseline,
        "objectives": list(result.values), "pngs": pngs, "steps": args.steps,
        "size": int(result.images.shape[-1]), "seed": args.seed, "model": model.card.name,
    }


def text(payload: dict) -> str:
    return (f"{payload['model']} {payload['layer'] or 'logit'} channel {payload['channel']}: objective "
            f"{payload['objective']:.4g} (grey image {payload['baseline']:.4g}) in {payload['seconds']:.1f} s "
            f"-> {payload['png']}")
