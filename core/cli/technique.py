"""A subcommand generated for every registered technique that has no command module of its own.

``python -m core NAME [IMAGE ...|FOLDER] [flags from its settings] --json`` runs the technique with the values
the flags give (the defaults otherwise, as its page starts) and prints, per input, the rows its ``describe``
makes of the result.
"""
from __future__ import annotations

import argparse
import time

from ..spec import Technique, canonical, model_context
from .common import CliError, add_model_options, model_from_args, read_inputs


def add_arguments(p: argparse.ArgumentParser, spec: Technique) -> None:
    """The subject (images, a folder or nothing), the flags of ``spec``'s settings and the model options."""
    if spec.subject == "image":
        p.add_argument("images", nargs="+", metavar="IMAGE")
    elif spec.subject == "folder":
        p.add_argument("folder", metavar="FOLDER")
    spec.add_arguments(p)
    add_model_options(p)


def run(args: argparse.Namespace, spec: Technique) -> dict:
    """Run ``spec`` on what the arguments name; one result entry per input, bad inputs in ``errors``."""
    model = model_from_args(args)
    try:
        values = spec.from_args(args, model_context(model))
    except ValueError as e:
        raise CliError(str(e)) from None
    payload = {"technique": spec.name, "model": model.card.name, "values": dict(values), "results": [],
               "errors": []}
    if spec.subject == "image":
        good, payload["errors"] = read_inputs(args.images, model)
        subjects = [(path, inp.tensor) for path, inp in good]
    elif spec.subject == "folder":
        from ..images import list_images

        subjects = [(args.folder, [str(p) for p in list_images(args.folder)])]
    else:
        subjects = [(None, None)]
    for name, subject in subjects:
        started = time.perf_counter()
        try:
            result = spec.run(model, subject, values)
        except ValueError as e:
            payload["errors"].append({"image": name, "error": str(e)})
            continue
        rows = dict(spec.describe(result)) if spec.describe is not None else {}
        payload["results"].append({"image": name, **{k: _plain(v) for k, v in rows.items()},
                                   "seconds": round(time.perf_counter() - started, 4)})
    payload["key"] = canonical(values)
    return payload


def _plain(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
