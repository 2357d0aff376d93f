"""``python -m core similarity``: cosine similarity of one position's features with every position."""
from __future__ import annotations

import argparse

import numpy as np

from .. import CliError, model_from_args, add_model_options, out_path, read_inputs
from ...catalogue import find_layer
from ...images import ImageError
from ...features.similarity import similarity_map
from ...features.similarity_spec import SIMILARITY
from ...spec import model_context

NAME = "similarity"
HELP = "similarity overlay: cosine similarity between the features at one point and every position"
DEFAULT_OUT = "lens-out/similarity"


def parse_point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a point: {text!r} (use X,Y in model-input pixels, e.g. 112,80)")
    return x, y


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The image, ``--other``, the flag generated from :data:`core.features.similarity_spec.SIMILARITY`
    (``--layer``), the query point and the output."""
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--other", default=None, metavar="IMAGE2",
                   help="compare with this image's positions instead (the saved map is over IMAGE2)")
    SIMILARITY.add_arguments(p)
    p.add_argument("--at", required=True, type=parse_point, metavar="X,Y", help="query point in model-input pixels")
    add_model_options(p)
    p.add_argument("--out-dir", default=DEFAULT_OUT, help=f"where the .npy map goes (default {DEFAULT_OUT})")


def run(args: argparse.Namespace) -> dict:
    model = model_from_args(args)
    try:
        layer = find_layer(model, SIMILARITY.from_args(args, model_context(model))["layer"])
    except (KeyError, ValueError) as e:
        raise CliError(e.args[0])
    values = {"layer": layer.name}
    paths = [args.image] + ([args.other] if args.other else [])
    good, errors = read_inputs(paths, model)
    if errors:
        raise ImageError(errors[0]["error"])
    query = SIMILARITY.run(model, good[0][1].tensor, values)
    try:
        cell = query.cell_at(*args.at)
    except ValueError as e:
        raise CliError(str(e))
    other = SIMILARITY.run(model, good[1][1].tensor, values) if args.other else None
    sim = similarity_map(query, cell, other)
    npy = out_path(args.out_dir, paths[-1], f".{layer.name}.similarity.npy")
    np.save(npy, sim.map.numpy().astype(np.float32))
    return {"layer": layer.name, "grid": list(sim.map.shape), "at_cell": list(sim.at_cell),
            "max_cell": list(sim.max_cell), "npy": str(npy)}


def text(payload: dict) -> str:
    return (f"{payload['layer']} grid {payload['grid']}: query cell {payload['at_cell']}, "
            f"most similar cell {payload['max_cell']} -> {payload['npy']}")
