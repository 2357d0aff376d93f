"""``python -m core fit-head FOLDER --out FILE``: a linear head for your labels on the embedded backbone."""
from __future__ import annotations

import argparse

from .. import CliError, model_from_args
from ...audit.spec import FIT_HEAD, run_fit_head
from ...spec import model_context

NAME = "fit-head"
HELP = ("fit a linear classifier on the embedded EfficientNet-Lite0's pooled features of a labelled set and save "
        "it with its class names (a few KB; load it with --weights FILE)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER",
                   help="one sub-folder per class, a folder with labels.csv, or a CSV of file,label: its class "
                        "names become the head's")
    p.add_argument("--out", required=True, metavar="FILE.safetensors", help="the head file to write")
    FIT_HEAD.add_arguments(p)
    p.add_argument("--model", default="embedded", help="the backbone: embedded (the only one heads are made for)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"], help="where the model runs")


def run(args: argparse.Namespace) -> dict:
    if args.model not in ("embedded", None):
        raise CliError(f"fit-head fits heads on the embedded EfficientNet-Lite0 only, not {args.model!r} "
                       "(head files load on it with --weights FILE)")
    if not args.out.lower().endswith(".safetensors"):
        raise CliError("--out must name a .safetensors file")
    args.weights, args.labels = None, None
    model = model_from_args(args)
    try:
        values = FIT_HEAD.from_args(args, model_context(model))
    except ValueError as e:
        raise CliError(str(e)) from None
    head = run_fit_head(model, args.folder, values, out=args.out)
    return {"out": str(head.path), "classes": list(head.classes), "images": head.images,
            "train_accuracy": round(head.train_accuracy, 4), "seconds": round(head.seconds, 3),
            "errors": list(head.skipped)}


def text(payload: dict) -> str:
    return (f"wrote {payload['out']}: {len(payload['classes'])} classes ({', '.join(payload['classes'][:8])}"
            f"{', ...' if len(payload['classes']) > 8 else ''}), {payload['images']} images, training accuracy "
            f"{payload['train_accuracy']:.1%}, {payload['seconds']:.1f} s\n"
            f"try: python -m core audit FOLDER --weights {payload['out']}")
