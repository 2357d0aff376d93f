"""``python -m core net2vec``: concepts as learnt combinations of a layer's channels."""
from __future__ import annotations

import argparse

import torch

from ...catalogue import find_layer
from .. import CliError, add_model_options, model_from_args, read_inputs
from ...images import list_images
from ...features.net2vec import DEFAULT_SIZE, colour_concepts, load_concept_masks, net2vec

NAME = "net2vec"
HELP = "Net2Vec: learn per-concept channel weights and compare with the best single channel"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER", help="folder of images")
    p.add_argument("--layer", required=True, help="spatial layer name (see the layer catalogue)")
    p.add_argument("--concepts", required=True, metavar="colors|MASK_FOLDER",
                   help="'colors' (colour terms named from pixels) or a folder of masks "
                        "MASK_FOLDER/<concept>/<image stem>.png")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"analysis grid (default {DEFAULT_SIZE})")
    p.add_argument("--iterations", type=int, default=300, help="optimisation steps per concept (default 300)")
    add_model_options(p)


def run(args: argparse.Namespace) -> dict:
    if args.size < 2 or args.iterations < 1:
        raise CliError("--size must be at least 2 and --iterations at least 1")
    paths = [str(p) for p in list_images(args.folder)]
    if not paths:
        raise CliError(f"{args.folder}: no images")
    model = model_from_args(args)
    try:
        layer = find_layer(model, args.layer)
    except KeyError as e:
        raise CliError(e.args[0])
    good, errors = read_inputs(paths, model)
    if not good:
        raise CliError(f"{args.folder}: no readable images")
    x = torch.stack([inp.tensor for _, inp in good])
    if args.concepts == "colors":
        concepts = colour_concepts(x, size=args.size)
    else:
        concepts = load_concept_masks(args.concepts, [p for p, _ in good], size=args.size)
    fits = net2vec(model, x, layer, concepts, size=args.size, iterations=args.iterations)
    payload = {"concepts": [f.as_dict() for f in fits]}
    payload["errors"] = errors
    return payload


def text(payload: dict) -> str:
    return "\n".join(f"{c['name']:>12}: IoU {c['iou']:.3f} (best single channel {c['best_channel']}: "
                     f"{c['iou_best_channel']:.3f}), top channels {c['top_channels']}" for c in payload["concepts"])
