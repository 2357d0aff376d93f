"""``python -m core attack``: FGSM / PGD adversarial examples, optionally with the smallest flipping ε."""
from __future__ import annotations

import argparse
import sys

from ...attack.attacks import (DEFAULT_L2_EPS, DEFAULT_L2_STEP, DEFAULT_STEPS, PIXEL, AttackResult, Method, Norm, attack,
                      minimal_eps)
from .. import CliError, add_model_options, model_from_args, out_path, read_inputs
from ...model.loading import LensModel
from ...attack.view import npz as npz_bytes

NAME = "attack"
HELP = "adversarial perturbation (FGSM or PGD, L-inf or L2, untargeted or targeted)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--method", choices=[m.value for m in Method], default=Method.PGD.value,
                   help="fgsm: one step of size eps; pgd: --steps projected steps of size --step (default pgd)")
    p.add_argument("--norm", choices=[n.value for n in Norm], default=Norm.LINF.value,
                   help="budget norm (default linf)")
    p.add_argument("--eps", type=float, default=None,
                   help="budget: in 1/255 units for linf (default 4), in [0,1]-pixel L2 units for l2 (default 0.5)")
    p.add_argument("--step", type=float, default=None,
                   help="PGD step, same units as --eps (default 1 for linf, 0.125 for l2)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"PGD steps (default {DEFAULT_STEPS})")
    p.add_argument("--target", default=None,
                   help="targeted attack toward this class (index, or an exact label); default untargeted")
    p.add_argument("--random-start", action="store_true", help="start from a random point of the eps-ball")
    p.add_argument("--seed", type=int, default=0, help="seed of the random start (default 0)")
    p.add_argument("--no-early-stop", action="store_true", help="run every step even once the goal is met")
    p.add_argument("--min-eps", action="store_true",
                   help="also find the smallest eps that reaches the goal (bisection, at most 8 attacks)")
    p.add_argument("--max-eps", type=float, default=None,
                   help="largest eps --min-eps tries, same units as --eps (default 16 x --eps)")
    add_model_options(p)
    p.add_argument("--out-dir", default=None,
                   help="write <stem>.npz with clean, adversarial, perturbation (float32 3xHxW at model resolution)")


def _units(norm: Norm) -> float:
    """Multiplier from CLI units to [0, 1] pixel units."""
    return PIXEL if norm is Norm.LINF else 1.0


def _target_index(value: str | None, model: LensModel) -> int | None:
    if value is None:
        return None
    try:
        index = int(value)
    except ValueError:
        matches = [i for i, name in enumerate(model.labels) if name.lower() == value.strip().lower()]
        if not matches:
            raise CliError(f"--target {value!r} is neither a class index nor a label of {model.card.name}") from None
        index = matches[0]
    if not 0 <= index < model.card.num_classes:
        raise CliError(f"--target must be between 0 and {model.card.num_classes - 1} for {model.card.name}")
    return index


def run(args: argparse.Namespace) -> dict:
    method, norm = Method(args.method), Norm(args.norm)
    unit = _units(norm)
    eps = args.eps if args.eps is not None else (4.0 if norm is Norm.LINF else DEFAULT_L2_EPS)
    step = args.step if args.step is not None else (1.0 if norm is Norm.LINF else DEFAULT_L2_STEP)
    if not eps > 0:
        raise CliError("--eps must be positive")
    if norm is Norm.LINF and eps > 255:
        raise CliError("--eps is in 1/255 units for linf and cannot exceed 255")
    if method is Method.PGD and (not step > 0 or args.steps < 1):
        raise CliError("--step must be positive and --steps at least 1")
    if args.max_eps is not None and not args.max_eps > 0:
        raise CliError("--max-eps must be positive")
    if method is Method.FGSM and (args.step is not None or args.steps != DEFAULT_STEPS):
        print("note: fgsm takes one step of size --eps; --step and --steps are ignored", file=sys.stderr)
    model = model_from_args(args)
    target = _target_index(args.target, model)
    good, errors = read_inputs(args.images, model)
    options = dict(method=method, norm=norm, eps=eps * unit, step=step * unit, steps=args.steps,
                   random_start=args.random_start, seed=args.seed)
    results = []
    for path, inp in good:
        r = attack(model, inp.batch, target, early_stop=not args.no_early_stop, **options)
        entry = _entry(model, path, r, unit)
        npz = out_path(args.out_dir, path, ".npz")
        if npz is not None:
            npz.write_bytes(npz_bytes(r))
        entry["npz"] = str(npz) if npz is not None else None
        if args.min_eps:
            search = minimal_eps(model, inp.batch, target, eps_max=None if args.max_eps is None else
                                 args.max_eps * unit, **options)
            entry["min_eps"] = float(search.eps[0]) / unit if bool(search.found[0]) else None
            entry["min_eps_below"] = float(search.below[0]) / unit
            entry["min_eps_attacks"] = int(search.attacks[0])
            entry["min_eps_adversarial"] = _score(model, search.result.adv_probs[0])
        results.append(entry)
    payload = {"method": method.value, "norm": norm.value, "model": model.card.name,
               "eps": eps, "step": eps if method is Method.FGSM else step,
               "steps": 1 if method is Method.FGSM else args.steps,
               "units": "1/255" if norm is Norm.LINF else "l2 (pixels in [0,1])",
               "target": target, "random_start": args.random_start, "results": results}
    payload["errors"] = errors
    return payload


def _score(model: LensModel, probs) -> dict:
    index = int(probs.argmax())
    return {"index": index, "label": model.label(index), "prob": float(probs[index])}


def _entry(model: LensModel, path: str, r: AttackResult, unit: float) -> dict:
    delta = (r.adversarial[0].double() - r.clean[0].double()).flatten()
    linf, l2 = float(delta.abs().max()), float(delta.norm())
    return {"image": path, "clean": _score(model, r.clean_probs[0]), "adversarial": _score(model, r.adv_probs[0]),
            "success": bool(r.success[0]), "linf": linf, "l2": l2, "linf_255": linf / PIXEL,
            "adversarial_8bit": _score(model, r.adv8_probs[0]), "success_8bit": bool(r.success_8bit[0]),
            "source_prob_after": float(r.adv_probs[0, int(r.source[0])]),
            "steps_taken": int(r.steps_taken[0]), "seconds": round(r.seconds, 4)}


def text(payload: dict) -> str:
    unit = payload["units"]
    head = (f"{payload['method']} {payload['norm']} eps {payload['eps']:g} ({unit}), model {payload['model']}"
            + (f", target {payload['target']}" if payload["target"] is not None else ""))
    lines = [head]
    for r in payload["results"]:
        c, a = r["clean"], r["adversarial"]
        verdict = "fooled" if r["success"] else "NOT fooled within the budget"
        if r["success"] and not r["success_8bit"]:
            verdict += " (but not once rounded to 8 bits)"
        lines.append(f"{r['image']}: {c['label']} {c['prob']:.1%} -> {a['label']} {a['prob']:.1%}  {verdict}  "
                     f"(L-inf {r['linf_255']:.2f}/255, L2 {r['l2']:.3f}, {r['steps_taken']} step"
                     f"{'' if r['steps_taken'] == 1 else 's'}, {r['seconds']:.2f} s)")
        if "min_eps" in r:
            lines.append(f"  smallest eps: {r['min_eps']:.3g} ({unit})" if r["min_eps"] is not None
                         else f"  no eps up to the search limit reaches the goal ({r['min_eps_attacks']} attacks)")
        if r["npz"]:
            lines.append(f"  wrote {r['npz']}")
    return "\n".join(lines)
