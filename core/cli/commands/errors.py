"""``python -m core errors FOLDER``: where the model is wrong on your labelled images (issue 17)."""
from __future__ import annotations

import argparse
import sys

from .. import CliError, add_model_options, model_from_args
from ...errors.evaluate import evaluate, report

NAME = "errors"
HELP = "confusion matrix, per-class precision/recall and the most confident mistakes on a labelled folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER",
                   help="one sub-folder per class (names or indices), a folder with labels.csv, or a CSV of file,label")
    add_model_options(p)
    p.add_argument("--top", type=int, default=20, help="how many mistakes to list, most confident first (default 20)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="prediction cache root (default core/.lens-cache/predictions)")
    p.add_argument("--no-cache", action="store_true", help="predict every image and write no cache")


def run(args: argparse.Namespace) -> dict:
    if args.top < 0:
        raise CliError("--top must be 0 or more")
    model = model_from_args(args)
    result = evaluate(model, args.folder, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    if result.predicted_now < len(result.images):
        print(f"note: {len(result.images) - result.predicted_now} of {len(result.images)} predictions from the "
              "cache", file=sys.stderr)
    return report(result, args.top)


def text(payload: dict) -> str:
    classes = payload["classes"]
    width = max(len(c) for c in classes)
    lines = [f"{payload['images']} images, accuracy {payload['accuracy']:.1%}", "",
             "confusion (rows true, columns predicted):"]
    lines.append(" " * (width + 2) + " ".join(f"{i:>5}" for i in range(len(classes))))
    for i, (name, row) in enumerate(zip(classes, payload["confusion"])):
        lines.append(f"{name:>{width}} {i:>1} " + " ".join(f"{v:>5}" for v in row))
    lines += ["", f"{'class':>{width}}  precision  recall  support"]
    for s in payload["per_class"]:
        p = "-" if s["precision"] is None else f"{s['precision']:.1%}"
        r = "-" if s["recall"] is None else f"{s['recall']:.1%}"
        lines.append(f"{s['class']:>{width}}  {p:>9}  {r:>6}  {s['support']:>7}")
    if payload["mistakes"]:
        lines += ["", "most confident mistakes:"]
        lines += [f"  {m['prob']:6.1%} {m['predicted']} (true {m['true']} {m['true_prob']:.1%})  {m['image']}"
                  for m in payload["mistakes"]]
    return "\n".join(lines)
