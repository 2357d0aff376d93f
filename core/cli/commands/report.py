"""``python -m core report``: one self-contained HTML report (model, image, prediction, attribution maps)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ...attribution.base import NotApplicable
from ...attribution.registry import REGISTRY, attribute
from ...model.predict import predict
from ...report import attribution_item, render_html
from .. import CliError, add_model_options, model_from_args, read_inputs

NAME = "report"
HELP = "a self-contained HTML report (opens offline) of one image: prediction and attribution maps"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--methods", nargs="+", required=True, metavar="M",
                   help=f"attribution methods, each with its default options ({', '.join(REGISTRY)})")
    p.add_argument("--target", type=int, default=None, help="class index (default: the predicted class)")
    add_model_options(p)
    p.add_argument("--out", required=True, metavar="FILE.html", help="where to write the report")


def run(args: argparse.Namespace) -> dict:
    unknown = [m for m in args.methods if m not in REGISTRY]
    if unknown:
        raise CliError(f"unknown method {unknown[0]!r} (choose from {', '.join(REGISTRY)})")
    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out {out} is a folder; give a file name such as report.html")
    model = model_from_args(args)
    if args.target is not None and not 0 <= args.target < model.card.num_classes:
        raise CliError(f"--target must be between 0 and {model.card.num_classes - 1}")
    good, bad = read_inputs([args.image], model)
    if not good:
        raise CliError(bad[0]["error"])
    _, inp = good[0]
    top = [c.as_dict() for c in predict(model, inp.batch, k=5)[0]]
    target = top[0]["index"] if args.target is None else args.target
    items, results, errors = [], [], []
    for method in dict.fromkeys(args.methods):
        try:
            attr = attribute(model, inp.batch, target, method=method)
        except (NotApplicable, ValueError) as e:
            errors.append({"method": method, "error": f"{method}: {e}"})
            continue
        items.append(attribution_item(model, inp.tensor, attr, image_arg=args.image,
                                      title=f"{REGISTRY[method].title} for {model.label(target)} ({target})"))
        results.append({"method": method, "seconds": round(float(attr.seconds), 4)})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(card=model.card, image=inp.tensor, image_name=Path(args.image).name, prediction=top,
                               items=items, notice=model.card.notice), encoding="utf-8")
    return {"report": str(out), "results": results, "errors": errors}


def text(payload: dict) -> str:
    lines = [f"wrote {payload['report']}"]
    lines += [f"  {r['method']}: {r['seconds']:.2f} s" for r in payload["results"]]
    return "\n".join(lines)
