"""``python -m core warm``: precompute the default views of a folder into the result store (LENS_CACHE_DIR)."""
from __future__ import annotations

import argparse

from .. import CliError, add_model_options, model_from_args
from ...attribution.registry import REGISTRY
from ...files import cache_root
from ...serve.store import ResultStore
from ...warm import GRID_METHODS, all_pages, warm

NAME = "warm"
HELP = "precompute the dashboard's default views for a folder of images (results survive restarts)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--methods", nargs="+", default=list(GRID_METHODS), choices=list(REGISTRY), metavar="METHOD",
                   help=f"attribution methods (default: {' '.join(GRID_METHODS)}; choose from {', '.join(REGISTRY)})")
    pages = all_pages()  # the registered techniques' pages included
    p.add_argument("--pages", nargs="+", default=list(pages), choices=list(pages), metavar="PAGE",
                   help=f"pages whose default views are warmed (default: all of {', '.join(pages)})")
    add_model_options(p)


def run(args: argparse.Namespace) -> dict:
    if cache_root() is None:
        raise CliError("LENS_CACHE_DIR is off: warming would keep nothing")
    model = model_from_args(args)
    store = ResultStore.from_env()
    try:
        result = warm(model, args.folder, store, methods=args.methods, pages=args.pages)
    except ValueError as e:
        raise CliError(str(e)) from None
    return {"model": model.card.name, "folder": args.folder, "cache_dir": str(store.directory),
            "images": list(result.images), "computed": result.computed, "present": result.present,
            "errors": list(result.errors), "written": list(result.written), "seconds": round(result.seconds, 3)}


def text(payload: dict) -> str:
    lines = [f"warmed {len(payload['images'])} images in {payload['seconds']:.1f} s: {payload['computed']} computed, "
             f"{payload['present']} already stored ({payload['cache_dir']})"]
    lines += [f"  {e['image']}: {e['error']}" for e in payload.get("errors", [])]
    return "\n".join(lines)
