"""``python -m core perturb``: meaningful and extremal perturbation masks."""
from __future__ import annotations

import argparse
import time

import numpy as np

from .. import CliError, add_model_options, model_from_args, out_path, read_inputs
from ...perturbation.masks import MaskMethod, Perturbation, Variant, perturbation_masks

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
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--method", choices=[m.value for m in MaskMethod], default=MaskMethod.EXTREMAL.value,
                   help="extremal (fixed area, default) or meaningful (smallest region, L1 + TV)")
    p.add_argument("--area", type=parse_area, default=None,
                   help="extremal only: mask area as a fraction or percentage (default 0.1)")
    p.add_argument("--variant", choices=[v.value for v in Variant], default=None,
                   help="preserve: keep the mask, blur the rest; delete: blur the mask "
                        "(default preserve for extremal, delete for meaningful)")
    p.add_argument("--perturbation", choices=[v.value for v in Perturbation], default=Perturbation.BLUR.value,
                   help="blur (default) or fade to the mean colour")
    p.add_argument("--iterations", type=int, default=None, help="optimisation steps (default 300)")
    p.add_argument("--converge", action="store_true",
                   help="stop once the mask holds still (--iterations is then the most steps); the result says "
                        "how many ran")
    p.add_argument("--target", type=int, default=None, help="class index (default: each image's top class)")
    add_model_options(p)
    p.add_argument("--out-dir", default=DEFAULT_OUT, help=f"where <stem>.npy masks go (default {DEFAULT_OUT})")


def run(args: argparse.Namespace) -> dict:
    method = MaskMethod(args.method)
    if args.area is not None and method is not MaskMethod.EXTREMAL:
        raise CliError("--area applies to --method extremal only (meaningful finds its own area)")
    if args.iterations is not None and args.iterations < 1:
        raise CliError("--iterations must be at least 1")
    model = model_from_args(args)
    if args.target is not None and not 0 <= args.target < len(model.labels):
        raise CliError(f"--target {args.target} is not a class of {model.card.name} (0..{len(model.labels) - 1})")
    good, errors = read_inputs(args.images, model)
    results = []
    for path, inp in good:
        start = time.perf_counter()
        res = perturbation_masks(model, inp.batch, args.target, method=method, areas=(args.area or 0.1,),
                                 variant=Variant(args.variant) if args.variant else None,
                                 iterations=args.iterations, perturbation=Perturbation(args.perturbation),
                                 converge=args.converge)
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
