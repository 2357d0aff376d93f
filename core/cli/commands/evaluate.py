"""``python -m core evaluate``: faithfulness and sanity of attribution maps (deletion/insertion, ROAD,
randomisation, pointing game)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ...attribution.base import NotApplicable
from ...attribution.registry import REGISTRY
from ...evaluation.curves import BATCH_SIZE
from ...evaluation import MAP_METHOD, Evaluation, Metric, evaluate, parse_metrics
from ...evaluation.pointing import alpha_mask, mask_file
from ...evaluation.spec import EVALUATION
from ...images import ImageError, load_image, preprocess
from ...model.labels import paired_target
from ...spec import model_context
from .. import CliError, add_model_options, model_from_args, read_inputs
from ..common import add_other_model_options, check_other_model_args, model_labels, other_model_from_args

NAME = "evaluate"
HELP = "faithfulness and sanity of attribution maps: deletion/insertion AUC, ROAD, randomisation, pointing game"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--method", nargs="+", default=[], metavar="M", choices=list(REGISTRY),
                   help="attribution methods to evaluate, each with its default options")
    p.add_argument("--map", dest="map_file", metavar="FILE.npy",
                   help="also evaluate this H x W map (at the model input size) of the one IMAGE: method 'map'")
    EVALUATION.add_arguments(p)  # --metrics, --steps, --deletion-baseline, --seed
    p.add_argument("--mask", help="object mask image (white = object; the original image's size or the model "
                                  "input size) for the pointing game; default: the image's alpha channel")
    p.add_argument("--target", type=int, default=None, help="class index (default: each image's predicted class)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=BATCH_SIZE,
                   help=f"perturbed images per forward pass (default {BATCH_SIZE})")
    add_model_options(p)
    add_other_model_options(p)


def _read_map(path: str) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"--map {path}: no such file") from None
    except (ValueError, OSError) as e:
        raise CliError(f"--map {path}: not a .npy array ({str(e).splitlines()[0]})") from None
    a = np.squeeze(a)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
        raise CliError(f"--map {path}: expected a numeric H x W array, got shape {list(np.shape(a))}")
    return a.astype(np.float32)


def result_dict(image: str, e: Evaluation, metrics: tuple[Metric, ...]) -> dict:
    """The JSON entry of one evaluation: fields of metrics not asked for are absent."""
    out: dict = {"image": image, "method": e.method, "target": e.target}
    if e.curves is not None:
        if Metric.DELETION in metrics:
            out["deletion_auc"] = round(e.curves.deletion_auc, 6)
            out["deletion_curve"] = [round(v, 6) for v in e.curves.deletion]
        if Metric.INSERTION in metrics:
            out["insertion_auc"] = round(e.curves.insertion_auc, 6)
            out["insertion_curve"] = [round(v, 6) for v in e.curves.insertion]
    if e.road is not None:
        out["road"] = round(e.road.score, 6)
        out["road_detail"] = {"percentiles": list(e.road.percentiles), "morf": [round(v, 6) for v in e.road.morf],
                              "lerf": [round(v, 6) for v in e.road.lerf]}
    if e.randomisation is not None:
        r = e.randomisation
        out["randomisation"] = [{"randomised": g, "spearman": round(s, 4)} for g, s in zip(r.groups, r.spearman)]
        out["sanity"] = "pass" if r.passed else "fail"
    if e.pointing is not None:
        out["pointing"] = {"hit": e.pointing.hit, "energy": round(e.pointing.energy, 6),
                           "mask_fraction": round(e.pointing.mask_fraction, 6)}
    if e.skipped:
        out["skipped"] = dict(e.skipped)
    out["seconds"] = round(e.seconds, 3)
    return out


def run(args: argparse.Namespace) -> dict:
    try:
        named = parse_metrics(args.metrics) if args.metrics is not None else ()
    except ValueError as e:
        raise CliError(f"--metrics: {e}") from None
    # a metric named in --metrics that cannot be computed is an error; one left to the default is skipped quietly
    explicit = {m.value for m in named}
    if not args.method and not args.map_file:
        raise CliError("give --method M [M ...] and/or --map FILE.npy")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise CliError("--steps must be between 1 and 1000")
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    if args.map_file and len(args.images) != 1:
        raise CliError("--map scores the map of one image: give exactly one IMAGE")
    if args.map_file and args.other_model:
        raise CliError("--map is a map of the first model's input: it cannot be scored with --other-model")
    given = _read_map(args.map_file) if args.map_file else None
    check_other_model_args(args)
    model = model_from_args(args)
    try:
        settings = EVALUATION.from_args(args, model_context(model))
    except ValueError as e:
        raise CliError(str(e)) from None
    metrics = parse_metrics(settings["metrics"])
    if args.target is not None and not 0 <= args.target < model.card.num_classes:
        raise CliError(f"--target must be between 0 and {model.card.num_classes - 1}")
    other = other_model_from_args(args)
    pair = paired_target(model, other, args.target) if other is not None else None
    names = model_labels([model] if other is None else [model, other])
    good, errors = read_inputs(args.images, model)
    results, refused = [], []
    jobs = [(m, None) for m in dict.fromkeys(args.method)] + ([(MAP_METHOD, given)] if given is not None else [])
    for path, inp in good:
        sides = [(model, names[0], inp, args.target)]
        if other is not None:
            sides.append((other, names[1], preprocess(load_image(path), other.card.data_config), pair.target))
        refusals: dict[str, list[dict]] = {}
        for m, name, x, target in sides:
            mask = None
            if Metric.POINTING in metrics:
                try:
                    mask = (mask_file(args.mask, m.card.data_config, x.original_size) if args.mask
                            else alpha_mask(path, m.card.data_config))
                except ImageError as e:
                    errors.append({"image": path, "error": f"mask: {e}" if other is None else f"{name}: mask: {e}"})
                    continue
            for method, values in jobs:
                said = method if other is None else f"{method} on {name}"
                try:
                    e = evaluate(m, x.batch, target, method=None if values is not None else method,
                                 values=values, metrics=metrics, steps=settings["steps"],
                                 deletion_baseline=settings["deletion_baseline"], mask=mask,
                                 batch_size=args.batch_size, seed=settings["seed"])
                except NotApplicable as err:
                    if other is None:
                        errors.append({"image": path, "method": method, "error": f"{said}: {err}"})
                    else:
                        refusals.setdefault(method, []).append({"image": path, "model": name, "method": method,
                                                                "reason": str(err)})
                    continue
                except ValueError as err:
                    errors.append({"image": path, "method": method, "error": f"{said}: {err}"})
                    continue
                for metric, reason in e.skipped.items():
                    if metric in explicit:  # asked for by name and not computable: say so as an error
                        errors.append({"image": path, "method": method, "error": f"{said}: {metric}: {reason}"})
                entry = result_dict(path, e, metrics)
                results.append(entry if other is None else {"model": name, **entry})
        for method, reasons in refusals.items():
            if len(reasons) < len(sides):  # refused by one model, scored on the other: part of the comparison
                refused += reasons
            else:  # a method that applies to neither model is an error, as with one model
                errors += [{"image": path, "method": method, "error": f"{method} on {r['model']}: {r['reason']}"}
                           for r in reasons]
    payload = {"model": model.card.name, "metrics": [m.value for m in metrics], "steps": settings["steps"],
               "deletion_baseline": settings["deletion_baseline"], "results": results, "errors": errors}
    if other is not None:
        payload.update(models=names, target_rule=pair.rule, refused=refused)
    return payload


def text(payload: dict) -> str:
    lines = [f"evaluation on {payload['model']} (S = {payload['steps']}, deletion to {payload['deletion_baseline']})"]
    if "models" in payload:
        lines[0] += f" and {payload['models'][1]}; target: {payload['target_rule']}"
    for r in payload["results"]:
        parts = [f"{Path(r['image']).name}" + (f" {r['model']}" if "model" in r else "")
                 + f" {r['method']} class {r['target']}:"]
        if "deletion_auc" in r:
            parts.append(f"deletion {r['deletion_auc']:.3f}")
        if "insertion_auc" in r:
            parts.append(f"insertion {r['insertion_auc']:.3f}")
        if "road" in r:
            parts.append(f"ROAD {r['road']:+.3f}")
        if "sanity" in r:
            rho = r["randomisation"][(len(r["randomisation"]) + 1) // 2 - 1]["spearman"]
            parts.append(f"sanity {r['sanity']} (rho {rho:.2f} with the top half randomised)")
        if "pointing" in r:
            parts.append(f"pointing {'hit' if r['pointing']['hit'] else 'miss'}, energy {r['pointing']['energy']:.2f}")
        parts.append(f"{r['seconds']:.1f} s")
        lines.append(" ".join(parts))
    lines += [f"{Path(r['image']).name} {r['model']} {r['method']}: refused: {r['reason']}"
              for r in payload.get("refused", [])]
    return "\n".join(lines)
