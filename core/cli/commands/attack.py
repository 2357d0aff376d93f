"""``python -m core attack``: FGSM / PGD adversarial examples, optionally with the smallest flipping ε."""
from __future__ import annotations

import argparse
import sys

from ...attack.attacks import PIXEL, AttackMethod, AttackResult, Norm
from ...attack.search import minimal_eps
from ...attack.spec import ATTACK, attack_settings, run_attack
from ...attack.view import npz as npz_bytes
from ...model.wrapper import LensModel
from ...spec import model_context
from .. import CliError, add_model_options, model_from_args, out_path, read_inputs

NAME = "attack"
HELP = "adversarial perturbation (FGSM or PGD, L-inf or L2, untargeted or targeted)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The image, the flags generated from :data:`core.attack.spec.ATTACK`, the bisection and the output."""
    p.add_argument("images", nargs="+", metavar="IMAGE")
    ATTACK.add_arguments(p)
    p.add_argument("--min-eps", action="store_true",
                   help="also find the smallest eps that reaches the goal (bisection, at most 8 attacks)")
    p.add_argument("--max-eps", type=float, default=None,
                   help="largest eps --min-eps tries, same units as --eps (default 16 x --eps)")
    add_model_options(p)
    p.add_argument("--out-dir", default=None,
                   help="write <stem>.npz with clean, adversarial, perturbation (float32 3xHxW at model resolution)")


def run(args: argparse.Namespace) -> dict:
    if args.eps is not None and not args.eps > 0:
        raise CliError("--eps must be positive")
    if args.norm in (None, Norm.LINF.value) and args.eps is not None and args.eps > 255:
        raise CliError("--eps is in 1/255 units for linf and cannot exceed 255")
    if args.max_eps is not None and not args.max_eps > 0:
        raise CliError("--max-eps must be positive")
    if args.method == AttackMethod.FGSM.value and (args.step is not None or args.steps is not None):
        print("note: fgsm takes one step of size --eps; --step and --steps are ignored", file=sys.stderr)
    model = model_from_args(args)
    try:
        values = ATTACK.from_args(args, model_context(model))
    except ValueError as e:
        raise CliError(str(e)) from None
    s = attack_settings(values)
    if s.method == AttackMethod.PGD.value and (not s.step > 0 or s.steps < 1):
        raise CliError("--step must be positive and --steps at least 1")
    unit = PIXEL if s.norm == Norm.LINF.value else 1.0
    eps = values.get("eps", values.get("eps_l2"))  # in the CLI's units, as given
    good, errors = read_inputs(args.images, model)
    results = []
    for path, inp in good:
        r = run_attack(model, inp.tensor, values)
        entry = _entry(model, path, r, unit)
        npz = out_path(args.out_dir, path, ".npz")
        if npz is not None:
            npz.write_bytes(npz_bytes(r))
        entry["npz"] = str(npz) if npz is not None else None
        if args.min_eps:
            keywords = s.keywords
            keywords.pop("early_stop")
            search = minimal_eps(model, inp.batch, s.target, eps_max=None if args.max_eps is None else
                                 args.max_eps * unit, **keywords)
            entry["min_eps"] = float(search.eps[0]) / unit if bool(search.found[0]) else None
            entry["min_eps_below"] = float(search.below[0]) / unit
            entry["min_eps_attacks"] = int(search.attacks[0])
            entry["min_eps_adversarial"] = _score(model, search.result.adv_probs[0])
        results.append(entry)
    payload = {"method": s.method, "norm": s.norm, "model": model.card.name,
               "eps": eps, "step": values.get("step", values.get("step_l2", eps)), "steps": s.steps,
               "units": "1/255" if s.norm == Norm.LINF.value else "l2 (pixels in [0,1])",
               "target": s.target, "random_start": s.random_start, "results": results}
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
