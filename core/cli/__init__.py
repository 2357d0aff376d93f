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
from typing import Sequence

from . import commands
from .common import CliError, add_model_options, model_from_args, out_path, read_inputs  # noqa: F401
from ..images import ImageError
from ..model import ModelLoadError


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


def _keep_freed_memory() -> None:
    """Batch commands keep freed memory for their next batch (:func:`core.serve.tuning.keep_freed_memory`)."""
    from ..serve.tuning import keep_freed_memory

    try:
        keep_freed_memory()
    except ValueError as e:
        raise CliError(str(e)) from None


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
        _keep_freed_memory()
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
