"""``python -m core net2vec``: concepts as learnt combinations of a layer's channels."""
from __future__ import annotations

import argparse

import torch

from ...catalogue import find_layer
from .. import CliError, add_model_options, model_from_args, read_inputs
from ...images import list_images
from ...features.net2vec import ConceptSource, colour_concepts, load_concept_masks, net2vec
from ...features.net2vec_spec import NET2VEC
from ...spec import model_context

NAME = "net2vec"
HELP = "Net2Vec: learn per-concept channel weights and compare with the best single channel"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The folder, then the flags generated from :data:`core.features.net2vec_spec.NET2VEC`."""
    p.add_argument("folder", metavar="FOLDER", help="folder of images")
    NET2VEC.add_arguments(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> dict:
    if (args.size is not None and args.size < 2) or (args.iterations is not None and args.iterations < 1):
        raise CliError("--size must be at least 2 and --iterations at least 1")
    paths = [str(p) for p in list_images(args.folder)]
    if not paths:
        raise CliError(f"{args.folder}: no images")
    model = model_from_args(args)
    try:
        values = NET2VEC.from_args(args, model_context(model))
        layer = find_layer(model, values["layer"])
    except ValueError as e:
        raise CliError(str(e)) from None
    except KeyError as e:
        raise CliError(e.args[0])
    good, errors = read_inputs(paths, model)
    if not good:
        raise CliError(f"{args.folder}: no readable images")
    x = torch.stack([inp.tensor for _, inp in good])
    size = values["size"]
    if values["concepts"] == ConceptSource.COLORS.value:
        concepts = colour_concepts(x, size=size)
    else:
        concepts = load_concept_masks(values["concepts"], [p for p, _ in good], size=size)
    fits = net2vec(model, x, layer, concepts, size=size, iterations=values["iterations"])
    payload = {"concepts": [f.as_dict() for f in fits]}
    payload["errors"] = errors
    return payload


def text(payload: dict) -> str:
    return "\n".join(f"{c['name']:>12}: IoU {c['iou']:.3f} (best single channel {c['best_channel']}: "
                     f"{c['iou_best_channel']:.3f}), top channels {c['top_channels']}" for c in payload["concepts"])
