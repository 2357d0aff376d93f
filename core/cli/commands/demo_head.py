"""``python -m core demo-head``: build the small fine-tuned demo model for error analysis."""
from __future__ import annotations

import argparse

from ...errors.demo import DEMO_CSV, DEMO_HEAD, train_demo_head
from ...model.loading import load_model

NAME = "demo-head"
HELP = ("train a linear head on the embedded EfficientNet-Lite0 on the sample photos in coarse classes and "
        "save it with its class names (a few KB; load it with --weights FILE)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", default=str(DEMO_CSV), help="file,label CSV of the photos (default assets/demo/coarse.csv)")
    p.add_argument("--out", default=str(DEMO_HEAD), help="weights file to write (default assets/demo/coarse-head.safetensors)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> dict:
    head = train_demo_head(load_model("embedded"), args.csv, args.out, seed=args.seed)
    return {"weights": str(head.path), "bytes": head.path.stat().st_size, "classes": list(head.classes),
            "trained_on": len(head.trained_on), "held_out": list(head.held_out),
            "train_accuracy": head.train_accuracy, "held_out_accuracy": head.held_out_accuracy,
            "seconds": head.seconds, "errors": []}


def text(payload: dict) -> str:
    return (f"wrote {payload['weights']} ({payload['bytes']} bytes): {', '.join(payload['classes'])}\n"
            f"trained on {payload['trained_on']} photos (accuracy {payload['train_accuracy']:.1%}); "
            f"{len(payload['held_out'])} held out (accuracy {payload['held_out_accuracy']:.1%}) "
            f"in {payload['seconds']:.1f} s\n"
            f"try: python -m core errors assets/demo/coarse.csv --weights {payload['weights']}")
