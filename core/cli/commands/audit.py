"""``python -m core audit FOLDER``: per class, clusters of the attribution maps: does the model cheat?"""
from __future__ import annotations

import argparse

from .. import CliError, add_model_options, model_from_args
from ...audit.spec import AUDIT, run_audit
from ...audit.view import flag, payload
from ...index import ray_engine  # imports no ray (that happens when the engine runs)
from ...spec import model_context

NAME = "audit"
HELP = ("dataset audit (SpRAy): per class, spectral clusters of the attribution maps for the true class, and the "
        "cluster whose evidence sits elsewhere (a watermark, a border)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER",
                   help="one sub-folder per class (names, WordNet ids, descriptions or indices), a folder with "
                        "labels.csv, or a CSV of file,label (or ImageNet's ImageId,PredictionString)")
    AUDIT.add_arguments(p)
    p.add_argument("--address", default=None, metavar="auto|ray://HOST:PORT",
                   help="the Ray cluster (--engine ray; default: start a local Ray)")
    p.add_argument("--workers", type=int, default=1, help="--engine ray: model actors (default 1)")
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="write each cluster's mean map as <class>-<id>.npy (float32 32x32, sums to 1) and .png")
    p.add_argument("--maps", action="store_true", help="put each cluster's mean_map (32x32 lists) in the JSON")
    add_model_options(p)


def run(args: argparse.Namespace) -> dict:
    if args.engine != "ray" and (args.address is not None or args.workers != 1):
        raise CliError("--address and --workers need --engine ray")
    if args.workers < 1:
        raise CliError("--workers must be 1 or more")
    if args.engine == "ray":  # fail fast, before the model loads, when ray is missing or the cluster is not there
        try:
            ray_engine.connect(args.address)
        except ray_engine.EngineUnavailable as e:
            raise CliError(str(e)) from None
    model = model_from_args(args)
    try:
        values = AUDIT.from_args(args, model_context(model))
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        result = run_audit(model, args.folder, values, workers=args.workers, address=args.address)
    except ray_engine.EngineUnavailable as e:
        raise CliError(str(e)) from None
    out = payload(result, out_dir=args.out_dir, with_maps=args.maps)
    if not args.json:  # the JSON keeps its documented fields; the text says what to look at
        out["flags"] = [text for c in result.classes for k in c.clusters if (text := flag(c, k))]
    return out


def text(payload: dict) -> str:
    lines = [f"{payload['method']} maps, model {payload['model']}, {payload['seconds']:.1f} s"]
    for c in payload["classes"]:
        lines.append(f"{c['class']}: {c['images']} images, {len(c['clusters'])} clusters")
        for k in c["clusters"]:
            lines.append(f"  cluster {k['id']}: {k['size']} images, outlier {k['outlier']:+.2f}, border share "
                         f"{k['border_share']:.0%}, accuracy {k['accuracy']:.0%}")
    lines += [f"look: {f}" for f in payload.get("flags", [])]
    return "\n".join(lines)
