"""``python -m core contrast IMAGE --true T``: why the predicted class rather than the true one (the Error
analysis page's "Why?" maps): one method's map for the predicted class, for the true class, and the contrastive
map of ``logit[predicted] - logit[true]``."""
from __future__ import annotations

import argparse

import numpy as np

from ...attribution.base import NotApplicable
from ...attribution.registry import REGISTRY
from ...errors.explain import explain_mistake
from ...errors.view import mistake_figure
from ...images import load_image, preprocess
from ...inputs import resolve_target
from ...render import save_png
from .. import CliError, add_model_options, model_from_args, out_path
from .attribute import _options, add_option_flags

NAME = "contrast"
HELP = "why the predicted class rather than the true one: class maps and the contrastive map of one image"
ROLES = ("predicted", "true", "contrast")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--true", type=int, required=True, metavar="T", help="the class to compare against (index)")
    p.add_argument("--predicted", type=int, default=None, metavar="P",
                   help="the class to explain (index; default: the model's prediction)")
    p.add_argument("--method", required=True, choices=list(REGISTRY))
    add_option_flags(p)
    add_model_options(p)
    p.add_argument("--out-dir", dest="out_dir",
                   help="write <stem>.npz (float32 HxW maps predicted, true, contrast) and <stem>-<map>.png "
                        "(overlays with their colour bars)")


def run(args: argparse.Namespace) -> dict:
    opts = _options(args)
    model = model_from_args(args)
    n = model.card.num_classes
    for flag, value in (("--true", args.true), ("--predicted", args.predicted)):
        if value is not None and not 0 <= value < n:
            raise CliError(f"{flag} must be between 0 and {n - 1}")
    inp = preprocess(load_image(args.image), model.card.data_config)
    predicted = int(resolve_target(model, inp.batch, args.predicted)[0])
    try:
        maps = explain_mistake(model, inp.batch, predicted, args.true, methods={args.method: opts})
    except NotApplicable as e:
        raise CliError(str(e)) from None
    except ValueError as e:
        raise CliError(f"{args.method}: {e}") from None
    npz = out_path(args.out_dir, args.image, ".npz")
    if npz is not None:
        np.savez_compressed(npz, **{role: maps.maps[(args.method, role)].astype(np.float32) for role in ROLES})
    results = []
    for role in ROLES:
        r, amap = maps.results[(args.method, role)], maps.maps[(args.method, role)]
        png = out_path(args.out_dir, args.image, f"-{role}.png")
        if png is not None:
            save_png(mistake_figure(maps, args.method, role, inp.tensor)[0], png)
        target = predicted if role != "true" else args.true
        results.append({"map": role, "target": target, "label": model.label(target), "signed": bool(r.signed),
                        "min": float(amap.min()), "max": float(amap.max()), "seconds": round(r.seconds, 4),
                        "png": str(png) if png else None})
    first = maps.results[(args.method, "predicted")]
    notes = list(first.notes) + ([f"predicted = true = {predicted}: the contrast of a class with itself is zero"]
                                 if predicted == args.true else [])
    return {"method": args.method, "model": model.card.name, "image": args.image,
            "predicted": predicted, "predicted_label": model.label(predicted),
            "true": args.true, "true_label": model.label(args.true),
            "options": {k: getattr(v, "value", v) for k, v in first.options.items()}, "notes": notes,
            "shape": list(maps.maps[(args.method, "contrast")].shape),
            "input_box": [round(float(v), 2) for v in inp.box], "seconds": round(maps.seconds, 4),
            "npz": str(npz) if npz else None, "results": results, "errors": []}


def text(payload: dict) -> str:
    lines = [f"{payload['method']} on {payload['model']}: {payload['image']}, "
             f"{payload['predicted_label']} ({payload['predicted']}) rather than {payload['true_label']} "
             f"({payload['true']})"] + [f"  note: {n}" for n in payload["notes"]]
    for r in payload["results"]:
        saved = f" -> {r['png']}" if r["png"] else ""
        lines.append(f"  {r['map']:>9}: {r['label']} ({r['target']}), range {r['min']:+.3g} .. {r['max']:+.3g}{saved}")
    if payload["npz"]:
        lines.append(f"maps: {payload['npz']}")
    return "\n".join(lines)
