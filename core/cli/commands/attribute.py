"""``python -m core attribute``: attribution maps (which pixels made the model say this class)."""
from __future__ import annotations

import argparse

import numpy as np

from ...attribution.base import NotApplicable
from ...attribution.registry import REGISTRY, attribute
from ...attribution.spec import Option
from ...attribution.view import conservation, figure
from ...images import load_image, preprocess
from ...model.labels import paired_target
from ...render import save_png
from .. import CliError, add_model_options, model_from_args, out_path, read_inputs
from ..common import add_other_model_options, check_other_model_args, model_labels, other_model_from_args

NAME = "attribute"
HELP = "attribution maps: saliency, SmoothGrad, integrated gradients, guided backprop, Grad-CAM, occlusion, ..."


def _flags() -> dict[str, list[tuple[str, Option]]]:
    """Every declared option by CLI flag, with the methods that take it (a flag may serve several methods)."""
    flags: dict[str, list[tuple[str, Option]]] = {}
    for name, spec in REGISTRY.items():
        for opt in spec.options:
            flags.setdefault(opt.cli_flag, []).append((name, opt))
    return flags


def _help(users: list[tuple[str, Option]]) -> str:
    """``method (default d), other (default e): help`` — methods that share a help text share a clause."""
    by_text: dict[str, list[str]] = {}
    for name, opt in users:
        default = REGISTRY[name].keywords()[opt.name]
        default = getattr(default, "value", default)
        by_text.setdefault(opt.help, []).append(name + ("" if default is None else f" (default {default})"))
    text = "; ".join(f"{', '.join(names)}: {help_}" for help_, names in by_text.items())
    return text.replace("%", "%%")  # argparse formats help strings with %


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags generated from the registry's option specs (one flag per option name, shared by the methods that
    declare it)."""
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--method", required=True, choices=list(REGISTRY))
    p.add_argument("--target", type=int, default=None, help="class index (default: each image's predicted class)")
    add_option_flags(p)
    add_model_options(p)
    add_other_model_options(p)
    p.add_argument("--out-dir", dest="out_dir",
                   help="write <stem>.npy (float32 HxW map) and <stem>.png (the Attribution page's picture: the "
                        "overlay with its colour bar); the --other-model's as <stem>.other.npy and .png")


def add_option_flags(p: argparse.ArgumentParser) -> None:
    """One flag per declared method option (``--samples``, ``--layer``, ...), read back by :func:`_options`."""
    for flag, users in _flags().items():
        opt = users[0][1]
        kinds = {o.kind for _, o in users}
        if len(kinds) > 1:
            raise TypeError(f"{flag} is declared with different types by {', '.join(n for n, _ in users)}")
        kwargs = {"choices": list(opt.choices)} if opt.choices else {"type": opt.kind}
        if opt.kind is bool:
            kwargs = {"type": _boolean, "metavar": "yes|no"}
        if opt.metavar:
            kwargs["metavar"] = opt.metavar
        p.add_argument(flag, dest=opt.dest, default=None, help=_help(users), **kwargs)


def _boolean(text: str) -> bool:
    if text.lower() in ("yes", "true", "1"):
        return True
    if text.lower() in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def _options(args: argparse.Namespace) -> dict:
    """The options given on the command line, by keyword; a flag the chosen method does not take is refused."""
    opts = {}
    for flag, users in _flags().items():
        value = getattr(args, users[0][1].dest, None)
        if value is None:
            continue
        mine = [opt for name, opt in users if name == args.method]
        if not mine:
            raise CliError(f"{flag} does not apply to --method {args.method} "
                           f"(only {', '.join(sorted(name for name, _ in users))})")
        opts[mine[0].name] = value
    return opts


def run(args: argparse.Namespace) -> dict:
    opts = _options(args)
    check_other_model_args(args)
    model = model_from_args(args)
    if args.target is not None and not 0 <= args.target < model.card.num_classes:
        raise CliError(f"--target must be between 0 and {model.card.num_classes - 1}")
    other = other_model_from_args(args)
    pair = paired_target(model, other, args.target) if other is not None else None
    names = model_labels([model] if other is None else [model, other])
    good, errors = read_inputs(args.images, model)
    results, notes, refused, used = [], [], [], opts
    for path, inp in good:
        sides = [(model, names[0], inp, args.target, "")]
        if other is not None:  # the second model's files: <stem>.other.npy and .png
            sides.append((other, names[1], preprocess(load_image(path), other.card.data_config), pair.target,
                          ".other"))
        said = []
        for m, name, x, target, suffix in sides:
            try:
                result = attribute(m, x.batch, target, method=args.method, **opts)
            except NotApplicable as e:
                if other is None:
                    raise CliError(str(e)) from None
                said.append({"image": path, "model": name, "method": args.method, "reason": str(e)})
                continue
            except ValueError as e:
                if other is None:
                    raise CliError(f"{args.method}: {e}") from None
                errors.append({"image": path, "error": f"{args.method} on {name}: {e}"})
                continue
            entry = _entry(m, path, x, result, args.out_dir, suffix)
            if other is None:
                notes, used = list(result.notes), dict(result.options)
                results.append(entry)
            else:
                if m is model:
                    notes, used = list(result.notes), dict(result.options)
                results.append({"model": name, **entry, "options": dict(result.options), "notes": list(result.notes)})
        if other is not None and len(said) == len(sides):  # applies to neither model: refused, as with one
            raise CliError("; ".join(f"{r['model']}: {r['reason']}" for r in said))
        refused += said
    payload = {"method": args.method, "model": model.card.name, "options": used, "notes": notes, "results": results}
    if other is not None:
        payload.update(models=names, target_rule=pair.rule, refused=refused)
    payload["errors"] = errors
    return payload


def _entry(model, path: str, inp, result, out_dir: str | None, suffix: str) -> dict:
    """The JSON entry of one image's map (written to ``<out_dir>/<stem><suffix>.npy`` and ``.png`` when asked)."""
    target = result.target[0]
    amap = result.map[0].numpy().astype(np.float32)
    npy, png = out_path(out_dir, path, f"{suffix}.npy"), out_path(out_dir, path, f"{suffix}.png")
    if npy is not None:
        np.save(npy, amap)
        save_png(figure(result, inp.tensor)[0], png)  # the page's picture at its default settings
    return {
        "image": path, "target": target, "label": model.label(target), "shape": list(amap.shape),
        "input_box": [round(float(v), 2) for v in inp.box], "seconds": round(result.seconds, 4),
        "npy": str(npy) if npy else None, "png": str(png) if png else None,
        **{name: float(values[0]) for name, values in result.metrics.items()},
    }


def text(payload: dict) -> str:
    if "models" in payload:
        lines = [f"{payload['method']} on {' and '.join(payload['models'])}; target: {payload['target_rule']}"]
    else:
        lines = [f"{payload['method']} on {payload['model']}"] + [f"  note: {n}" for n in payload["notes"]]
    for r in payload["results"]:
        saved = f" -> {r['npy']}" if r["npy"] else ""
        who = f" {r['model']}" if "model" in r else ""
        kept = ""
        if "relevance_sum" in r and "logit" in r:
            share, weak = conservation(r["relevance_sum"], r["logit"])
            kept = (f", relevance {r['relevance_sum']:.4g} for a logit of {r['logit']:.4g}"
                    + (" (weakly conserved)" if weak else ""))
        lines.append(f"{r['image']}{who}: class {r['target']} ({r['label']}), {r['seconds']:.2f} s{kept}{saved}")
    lines += [f"{r['image']} {r['model']}: refused: {r['reason']}" for r in payload.get("refused", [])]
    return "\n".join(lines)
