"""``python -m core perturb``: meaningful and extremal perturbation masks."""
from __future__ import annotations

import argparse
import time

import numpy as np

from .. import CliError, add_model_options, model_from_args, out_path, read_inputs
from ...perturbation.masks import DEFAULT_AREA, MaskMethod
from ...perturbation.spec import MASKS, run_masks
from ...spec import model_context

NAME = "perturb"
HELP = "perturbation masks: the smallest region that keeps (or removes) the evidence for a class"
DEFAULT_OUT = "lens-out/perturb"


def parse_area(text: str) -> float:
    """'0.1' or '10%' -> 0.1."""
    t = text.strip()
    try:
        a = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an area: {text!r} (use a fraction like 0.1 or a percentage like 10%)")
    if not 0 < a < 1:
        raise argparse.ArgumentTypeError(f"area {text!r} must be between 0 and 1 (or 0% and 100%)")
    return a


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The images, the flags generated from :data:`core.perturbation.spec.MASKS`, the one area and the output."""
    p.add_argument("images", nargs="+", metavar="IMAGE")
    MASKS.add_arguments(p)
    p.add_argument("--area", type=parse_area, default=None,
                   help=f"extremal only: mask area as a fraction or percentage (default {DEFAULT_AREA:g})")
    add_model_options(p)
    p.add_argument("--out-dir", default=DEFAULT_OUT, help=f"where <stem>.npy masks go (default {DEFAULT_OUT})")


def run(args: argparse.Namespace) -> dict:
    if args.iterations is not None and args.iterations < 1:
        raise CliError("--iterations must be at least 1")
    model = model_from_args(args)
    try:
        values = MASKS.from_args(args, model_context(model))
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.area is not None:
        if values["method"] != MaskMethod.EXTREMAL.value:
            raise CliError("--area applies to --method extremal only (meaningful finds its own area)")
        values["areas"] = (args.area,)  # any fraction in (0, 1), not only the page's choices
    good, errors = read_inputs(args.images, model)
    results = []
    for path, inp in good:
        start = time.perf_counter()
        res = run_masks(model, inp.tensor, values)
        seconds = time.perf_counter() - start
        mask = res.masks[0].numpy().astype(np.float32)
        npy = out_path(args.out_dir, path, ".npy")
        np.save(npy, mask)
        results.append({"image": path, "target": res.target, "area": float(mask.mean()),
                        "score": float(res.scores[0]), "seconds": round(seconds, 3), "npy": str(npy),
                        "iterations": res.iterations, "converged": res.converged})
    payload = {"results": results}
    payload["errors"] = errors
    return payload


def text(payload: dict) -> str:
    return "\n".join(f"{r['image']}: class {r['target']}, area {r['area']:.1%}, score {r['score']:.3f} "
                     f"({r['seconds']:.1f} s) -> {r['npy']}" for r in payload["results"])
