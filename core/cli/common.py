"""What every subcommand shares: the one user-error type, the model options and loading, image reading."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..images import ImageError, ModelInput, load_image, preprocess
from ..model import LensModel, load_model


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


def add_other_model_options(p: argparse.ArgumentParser) -> None:
    """``--other-model``/``--other-weights``: a second model run on the same images (models compared)."""
    p.add_argument("--other-model", dest="other_model", default=None, metavar="NAME",
                   help="also run a second model on the same images (a timm name, optionally name.tag, or "
                        "'embedded'), each seeing them through its own preprocessing; a --target is used for it "
                        "only when both models share their class names, else it explains its own top class")
    p.add_argument("--other-weights", dest="other_weights", default=None,
                   help="the second model's weights: hub (default), random, embedded, or a weights file path")


def check_other_model_args(args: argparse.Namespace) -> None:
    """Refuse ``--other-weights`` without ``--other-model`` (before any model loads)."""
    if getattr(args, "other_model", None) is None and getattr(args, "other_weights", None) is not None:
        raise CliError("--other-weights needs --other-model")


def other_model_from_args(args: argparse.Namespace) -> LensModel | None:
    """The model ``--other-model`` names (on ``--device``), or None when none is given."""
    check_other_model_args(args)
    if getattr(args, "other_model", None) is None:
        return None
    model = load_model(args.other_model, args.other_weights, device=getattr(args, "device", None))
    if model.card.notice:
        print(f"note: {model.card.notice}", file=sys.stderr)
    return model


def model_labels(models: Sequence[LensModel]) -> list[str]:
    """Names that tell ``models`` apart in output: each card's name, with its weights when two share a name."""
    names = [m.card.name for m in models]
    out = [f"{n} ({getattr(m.card.weights, 'value', m.card.weights)})" if names.count(n) > 1 else n
           for n, m in zip(names, models)]
    return [f"{n} (model {i + 1})" if out.count(n) > 1 else n for i, n in enumerate(out)]


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
