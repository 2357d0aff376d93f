"""``python -m core attribute``: attribution maps (which pixels made the model say this class)."""
from __future__ import annotations

import argparse

import numpy as np

from ...attribution.base import NotApplicable
from ...attribution.registry import REGISTRY, Method, attribute
from .. import CliError, add_model_options, model_from_args, out_path, read_inputs
from ...attribution.gradients import Baseline
from ...attribution.occlusion import Fill
from ...render import Colormap, normalize_map, overlay, save_png
from ...attribution.smoothgrad import Base, NoiseType, Precision

NAME = "attribute"
HELP = "attribution maps: saliency, SmoothGrad, integrated gradients, guided backprop, Grad-CAM, occlusion, ..."

# CLI flag -> (option name, methods that take it)
_OPTIONS = {
    "base": ("base", {"smoothgrad"}),
    "nt_type": ("nt_type", {"smoothgrad"}),
    "samples": ("samples", {"smoothgrad"}),
    "converge": ("converge", {"smoothgrad"}),
    "noise": ("noise", {"smoothgrad"}),
    "precision": ("precision", {"smoothgrad"}),
    "seed": ("seed", {"smoothgrad", "integrated-gradients"}),
    "steps": ("steps", {"smoothgrad", "integrated-gradients"}),
    "baseline": ("baseline", {"smoothgrad", "integrated-gradients"}),
    "layer": ("layer", {"gradcam", "guided-gradcam"}),
    "window": ("window", {"occlusion"}),
    "stride": ("stride", {"occlusion"}),
    "fill": ("fill", {"occlusion"}),
    "rule": ("rule", {"lrp"}),
    "first_rule": ("first", {"lrp"}),
    "epsilon": ("epsilon", {"lrp"}),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--method", required=True, choices=[m.value for m in Method] + [
        n for n in REGISTRY if n not in {m.value for m in Method}])
    p.add_argument("--target", type=int, default=None, help="class index (default: each image's predicted class)")
    p.add_argument("--base", choices=[b.value for b in Base], help="smoothgrad: the gradient method averaged "
                   "(default saliency)")
    p.add_argument("--nt-type", dest="nt_type", choices=[t.value for t in NoiseType],
                   help="smoothgrad: mean (smoothgrad, default), mean of squares, or variance (vargrad)")
    p.add_argument("--samples", type=int, help="smoothgrad: noisy samples per image (default 50)")
    p.add_argument("--converge", type=float, metavar="RHO",
                   help="smoothgrad: stop once two independent halves of the samples agree to this rank correlation "
                        "(e.g. 0.98; --samples is then the maximum; default 0 = always --samples)")
    p.add_argument("--noise", type=float, metavar="FRACTION",
                   help="smoothgrad: noise sigma as a fraction of the pixel range (default 0.15)")
    p.add_argument("--seed", type=int, help="smoothgrad noise / noise baseline seed (default 0)")
    p.add_argument("--precision", choices=[q.value for q in Precision],
                   help="smoothgrad: auto (bf16 autocast on CPUs with native bf16, default), fp32 or bf16")
    p.add_argument("--steps", type=int, help="integrated gradients: path points (default 32; 16 inside smoothgrad)")
    p.add_argument("--baseline", choices=[b.value for b in Baseline],
                   help="integrated gradients: start image (default black)")
    p.add_argument("--layer", help="gradcam: catalogue layer name (default: the last feature stage)")
    p.add_argument("--window", type=int, help="occlusion: patch side in pixels (default 1/8 of the input)")
    p.add_argument("--stride", type=int, help="occlusion: step in pixels (default half the window)")
    p.add_argument("--fill", choices=[f.value for f in Fill], help="occlusion: patch content (default black)")
    p.add_argument("--rule", choices=["zplus", "epsilon"], help="lrp: rule for convolutions (default zplus)")
    p.add_argument("--first-rule", dest="first_rule", choices=["zb", "flat", "epsilon"],
                   help="lrp: rule for the layer on the pixels (default zb)")
    p.add_argument("--epsilon", type=float, help="lrp: stabiliser as a fraction of each layer's output std (default 0.25)")
    add_model_options(p)
    p.add_argument("--out-dir", dest="out_dir", help="write <stem>.npy (float32 HxW map) and <stem>.png (overlay)")


def _options(args: argparse.Namespace) -> dict:
    opts = {}
    for flag, (name, methods) in _OPTIONS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if args.method not in methods:
            raise CliError(f"--{flag.replace('_', '-')} does not apply to --method {args.method} "
                           f"(only {', '.join(sorted(methods))})")
        opts[name] = value
    return opts


def run(args: argparse.Namespace) -> dict:
    opts = _options(args)
    model = model_from_args(args)
    if args.target is not None and not 0 <= args.target < model.card.num_classes:
        raise CliError(f"--target must be between 0 and {model.card.num_classes - 1}")
    good, errors = read_inputs(args.images, model)
    results, notes = [], []
    for path, inp in good:
        try:
            result = attribute(model, inp.batch, args.target, method=args.method, **opts)
        except NotApplicable as e:
            raise CliError(str(e)) from None
        except ValueError as e:
            raise CliError(f"{args.method}: {e}") from None
        target = result.target[0]
        amap = result.map[0].numpy().astype(np.float32)
        npy, png = out_path(args.out_dir, path, ".npy"), out_path(args.out_dir, path, ".png")
        if npy is not None:
            np.save(npy, amap)
            cmap = Colormap.DIVERGING if result.signed else Colormap.HEAT
            save_png(overlay(inp.tensor, normalize_map(amap, signed=result.signed), cmap=cmap), png)
        notes = list(result.notes)
        results.append({
            "image": path, "target": target, "label": model.label(target), "shape": list(amap.shape),
            "input_box": [round(float(v), 2) for v in inp.box], "seconds": round(result.seconds, 4),
            "npy": str(npy) if npy else None, "png": str(png) if png else None,
            **{name: float(values[0]) for name, values in result.metrics.items()},
        })
    payload = {"method": args.method, "model": model.card.name, "options": dict(result.options) if good else opts,
               "notes": notes, "results": results}
    payload["errors"] = errors
    return payload


def text(payload: dict) -> str:
    lines = [f"{payload['method']} on {payload['model']}"] + [f"  note: {n}" for n in payload["notes"]]
    for r in payload["results"]:
        saved = f" -> {r['npy']}" if r["npy"] else ""
        lines.append(f"{r['image']}: class {r['target']} ({r['label']}), {r['seconds']:.2f} s{saved}")
    return "\n".join(lines)
