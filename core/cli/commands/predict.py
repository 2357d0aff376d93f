"""``python -m core predict``: top-k ImageNet classes."""
from __future__ import annotations

import argparse

import torch

from .. import CliError, add_model_options, model_from_args, read_inputs
from ...model.predict import predict

NAME = "predict"
HELP = "top-k classes for one or more images"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_options(p)
    p.add_argument("--top", type=int, default=5, help="how many classes (default 5)")


def run(args: argparse.Namespace) -> dict:
    if args.top < 1:
        raise CliError("--top must be at least 1")
    model = model_from_args(args)
    good, errors = read_inputs(args.images, model)
    results = []
    if good:
        x = torch.stack([inp.tensor for _, inp in good])
        for (path, _), top in zip(good, predict(model, x, k=args.top)):
            results.append({"image": path, "top": [c.as_dict() for c in top]})
    payload = {"model": model.card.name, "weights": model.card.weights.value, "results": results}
    payload["errors"] = errors
    return payload


def text(payload: dict) -> str:
    lines = [f"model {payload['model']} ({payload['weights']} weights)"]
    for r in payload["results"]:
        lines.append(r["image"])
        lines += [f"  {c['prob']:6.1%}  {c['label']} ({c['index']})" for c in r["top"]]
    return "\n".join(lines)
