"""``python -m core``: one subcommand per technique.

Each module in ``core/cli/commands`` is a subcommand. It defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> dict``, and may define ``text(payload) -> str`` for output without ``--json``. A payload's
``"errors"`` list (per-input failures) is printed only when non-empty, and then exits with status 2; a
:class:`CliError`, :class:`~core.images.ImageError` or :class:`~core.model.ModelLoadError` prints one line on
stderr and exits with status 2. No traceback reaches the user.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from pathlib import Path
from typing import Sequence

from . import commands
from ..images import ImageError, ModelInput, load_image, preprocess
from ..model import LensModel, ModelLoadError, load_model


class CliError(Exception):
    """A user error: the message is printed as one line and the exit status is 2."""


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="timm model name (optionally name.tag), or 'embedded'; default convnext_tiny from the hub, "
                        "falling back to the embedded EfficientNet-Lite0 when the hub is unreachable")
    p.add_argument("--weights", default=None, help="hub (default), random, embedded, or a weights file path")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="class names: a text file with one name per line, or a JSON list (default: the names "
                        "the weights file carries, else ImageNet's or 'class N')")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"],
                   help="where the model runs: auto (CUDA, then MPS, then CPU; the default, or $LENS_DEVICE)")


def model_from_args(args: argparse.Namespace) -> LensModel:
    model = load_model(args.model, args.weights, device=getattr(args, "device", None))
    if getattr(args, "labels", None):
        from ..model.labels import check_count, read_labels
        model.labels = check_count(read_labels(args.labels), model.card.num_classes, args.labels)
    if model.card.notice:
        print(f"note: {model.card.notice}", file=sys.stderr)
    return model


def read_inputs(paths: Sequence[str], model: LensModel) -> tuple[list[tuple[str, ModelInput]], list[dict]]:
    """Load and preprocess images; bad ones become ``{"image", "error"}`` entries instead of failures."""
    good, errors = [], []
    for path in paths:
        try:
            good.append((path, preprocess(load_image(path), model.card.data_config)))
        except ImageError as e:
            errors.append({"image": path, "error": str(e)})
    return good, errors


def out_path(out_dir: str | None, image: str, suffix: str) -> Path | None:
    """``<out_dir>/<stem><suffix>``, creating the folder; None when no folder was asked for."""
    if not out_dir:
        return None
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (Path(image).stem + suffix)


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="python -m core", description="ConvNeXt Lens command line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        modules[mod.NAME] = mod
    from ..techniques import TECHNIQUES
    from . import technique as generated

    for spec in TECHNIQUES.values():  # a registered technique without a command module of its own
        if spec.command != spec.name or spec.name in modules:
            continue
        p = sub.add_parser(spec.name, help=f"{spec.title}: {spec.summary}", description=spec.summary)
        generated.add_arguments(p, spec)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        modules[spec.name] = _Generated(spec)
    return parser, modules


class _Generated:
    """The command module of a registered technique (:mod:`core.cli.technique`)."""

    def __init__(self, spec) -> None:
        self.NAME, self.spec = spec.name, spec

    def run(self, args):
        from . import technique

        return technique.run(args, self.spec)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    mod = modules[args.command]
    try:
        payload = mod.run(args)
    except (CliError, ImageError, ModelLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the promise is no traceback for the user; name the failure in one line
        if os.environ.get("LENS_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(set LENS_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    errors = payload.pop("errors", None) or []
    if errors:  # commands always set "errors"; it appears in the output only when some input failed
        payload["errors"] = errors
    if args.json:
        print(json.dumps(payload))
    else:
        print(mod.text(payload) if hasattr(mod, "text") else json.dumps(payload, indent=2))
    for err in errors:
        print(f"error: {err['error']}", file=sys.stderr)
    return 2 if errors else 0
