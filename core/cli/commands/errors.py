"""``python -m core errors FOLDER``: where the model is wrong on your labelled images."""
from __future__ import annotations

import argparse
import sys

from .. import CliError, add_model_options, model_from_args
from ...errors.evaluate import evaluate, report
from ...errors.spec import ERRORS, SEPARATING, Cell, run_separating
from ...spec import model_context

NAME = "errors"
HELP = "confusion matrix, per-class precision/recall and the most confident mistakes on a labelled folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The folder, the flags of :data:`core.errors.spec.ERRORS` and of its separating channels (``--layer``,
    ``--channels``), the prediction cache and the cell to separate."""
    p.add_argument("folder", metavar="FOLDER",
                   help="one sub-folder per class (names or indices), a folder with labels.csv, or a CSV of file,label")
    add_model_options(p)
    ERRORS.add_arguments(p)
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="prediction cache root (default LENS_CACHE_DIR/predictions; LENS_CACHE_DIR defaults to "
                        ".lens-cache at the project root)")
    p.add_argument("--no-cache", action="store_true", help="predict every image and write no cache")
    p.add_argument("--separate", nargs=2, metavar=("TRUE", "PREDICTED"), default=None,
                   help="also rank the channels of --layer that separate this confusion cell (class names or "
                        "indices) from the correctly classified images of TRUE")
    SEPARATING.add_arguments(p)


def run(args: argparse.Namespace) -> dict:
    if args.top is not None and args.top < 0:
        raise CliError("--top must be 0 or more")
    if args.separate and not args.layer:
        raise CliError("--separate needs --layer (python -m core layers lists them)")
    if args.channels is not None and args.channels < 1:
        raise CliError("--channels must be 1 or more")
    model = model_from_args(args)
    context = model_context(model)
    try:
        values = ERRORS.from_args(args, context)
    except ValueError as e:
        raise CliError(str(e)) from None
    cell = tuple(_class(model, name) for name in args.separate) if args.separate else None
    result = evaluate(model, args.folder, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    if result.predicted_now < len(result.images):
        print(f"note: {len(result.images) - result.predicted_now} of {len(result.images)} predictions from the "
              "cache", file=sys.stderr)
    payload = report(result, values["top"])
    if cell is not None:
        true, predicted = cell
        try:
            sep = run_separating(model, Cell(result, true, predicted), SEPARATING.from_args(args, context))
        except ValueError as e:
            raise CliError(f"--separate: {e}") from None
        payload["separating"] = {
            "layer": sep.layer, "true": model.label(true), "predicted": model.label(predicted),
            "statistic": sep.statistic, "mistaken": len(sep.mistaken), "correct": len(sep.correct), "weak": sep.weak,
            "channels": [{"channel": c.channel, "effect": c.effect, "auc": c.auc, "mean_mistaken": c.mean_mistaken,
                          "mean_correct": c.mean_correct} for c in sep.channels]}
    return payload


def _class(model, name: str) -> int:
    """A class index from its index or its name (case-insensitive)."""
    if name.isdigit() and int(name) < model.card.num_classes:
        return int(name)
    matches = [i for i, label in enumerate(model.labels) if label.lower() == name.lower()]
    if len(matches) != 1:
        raise CliError(f"--separate: {name!r} is not one class of this model (a name or 0-{model.card.num_classes - 1})")
    return matches[0]


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
    if "separating" in payload:
        sep = payload["separating"]
        lines += ["", f"channels of {sep['layer']} separating {sep['true']} predicted {sep['predicted']} "
                      f"({sep['mistaken']} images) from {sep['true']} predicted right ({sep['correct']}):"]
        lines += [f"  channel {c['channel']:>4}  d {c['effect']:+.2f}  AUC {c['auc']:.2f}" for c in sep["channels"]]
        if sep["weak"]:
            lines.append(f"  note: {sep['weak']}")
    return "\n".join(lines)
