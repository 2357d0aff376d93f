"""Does the convergence stop agree with a run of 800 steps (TorchRay's default), in at most a third of them? JSON.

For each sample photo: one fixed 800-step run (the reference) recording the top-area regions every 10 steps, then
the run with ``converge=True`` (the same path, ended early). Reports the steps the stop used, the IoU of its
regions with the reference's (target ≥ 0.9 at ≤ 266 steps), and the step from which the trajectory stays
≥ 0.9 (what an ideal stop could reach). Embedded model, areas 5/10/20 %, preserve, blur (the page's default).

``--method meaningful``: the same for meaningful perturbation (delete game, blur, the page's defaults), whose
region is where the mask is above 0.5 (what its stop watches); the reference is 800 steps of the same run.
``--lr-half-life H`` sets its learning rate's half-life (0: constant, the authors' original), ``--no-default-run``
skips the fixed 300-step run.

    python bench/mask_convergence.py [--photos chelsea.jpg coffee.jpg rocket.jpg] [--threads 2]
    python bench/mask_convergence.py --method meaningful --photos chelsea.jpg coffee.jpg
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("LENS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import images  # noqa: E402
from core.model import load_model  # noqa: E402
from core.perturbation import masks  # noqa: E402

AREAS = (0.05, 0.1, 0.2)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def one(model, name: str) -> dict:
    x = images.preprocess(images.load_image(ROOT / "assets" / "samples" / name), model.card.data_config).tensor
    trajectory: list[torch.Tensor] = []
    start = time.perf_counter()
    ref = masks.extremal_perturbation(model, x, None, areas=AREAS, iterations=masks.TORCHRAY_ITERATIONS,
                                      preview=lambda m, f: trajectory.append(masks.top_regions(m, AREAS)))
    ref_s = time.perf_counter() - start
    final = masks.top_regions(ref.masks, AREAS)
    ious = [float(masks.region_iou(r, final).min()) for r in trajectory]  # previews: step 1, then every 10
    steps = [1] + [10 * i for i in range(1, len(ious))]
    settled = next((s for i, s in enumerate(steps) if min(ious[i:]) >= 0.9), None)
    start = time.perf_counter()
    stop = masks.extremal_perturbation(model, x, None, areas=AREAS, iterations=masks.TORCHRAY_ITERATIONS,
                                       converge=True)
    stop_s = time.perf_counter() - start
    iou = masks.region_iou(masks.top_regions(stop.masks, AREAS), final)
    return {"photo": name, "steps": stop.iterations, "converged": stop.converged,
            "iou_with_800": [round(float(v), 3) for v in iou], "reference_seconds": round(ref_s, 1),
            "stop_seconds": round(stop_s, 1), "trajectory_settled_at": settled,
            "met": bool(stop.converged and stop.iterations <= masks.TORCHRAY_ITERATIONS // 3 and float(iou.min()) >= 0.9)}


def one_meaningful(model, name: str, default_run: bool = True, **options) -> dict:
    x = images.preprocess(images.load_image(ROOT / "assets" / "samples" / name), model.card.data_config).tensor
    trajectory: list[torch.Tensor] = []
    start = time.perf_counter()
    ref = masks.meaningful_perturbation(model, x, None, iterations=masks.TORCHRAY_ITERATIONS,
                                        preview=lambda m, f: trajectory.append(m.flatten(1) > 0.5), **options)
    ref_s = time.perf_counter() - start
    final = ref.masks.flatten(1) > 0.5
    ious = [float(masks.region_iou(r, final).min()) for r in trajectory]
    steps = [1] + [10 * i for i in range(1, len(ious))]
    settled = next((s for i, s in enumerate(steps) if min(ious[i:]) >= 0.9), None)
    start = time.perf_counter()
    stop = masks.meaningful_perturbation(model, x, None, iterations=masks.TORCHRAY_ITERATIONS, converge=True,
                                         **options)
    stop_s = time.perf_counter() - start
    iou = float(masks.region_iou(stop.masks.flatten(1) > 0.5, final).min())
    default = masks.meaningful_perturbation(model, x, None, **options) if default_run else None  # the fixed run
    default_iou = float(masks.region_iou(default.masks.flatten(1) > 0.5, final).min()) if default else None
    return {"photo": name, "steps": stop.iterations, "converged": stop.converged, "iou_with_800": round(iou, 3),
            "region_area_800": round(float(final.float().mean()), 4),
            "default_steps": default and default.iterations,
            "default_iou_with_800": default_iou if default_iou is None else round(default_iou, 3),
            "score_800": round(float(ref.scores[0]), 4), "score_stop": round(float(stop.scores[0]), 4),
            "reference_seconds": round(ref_s, 1), "stop_seconds": round(stop_s, 1),
            "trajectory_settled_at": settled,
            "met": bool(stop.converged and stop.iterations <= masks.TORCHRAY_ITERATIONS // 3 and iou >= 0.9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", nargs="+", default=["chelsea.jpg", "coffee.jpg", "rocket.jpg"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", choices=["extremal", "meaningful"], default="extremal")
    ap.add_argument("--lr-half-life", type=float, default=-1,
                    help="meaningful: the learning rate's half-life in steps (0: constant; default: the method's)")
    ap.add_argument("--no-default-run", action="store_true", help="meaningful: skip the fixed default-length run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("embedded")
    rows = []
    for p in args.photos:  # each photo's row on stderr as it comes (a long run cut off still says something)
        if args.method == "extremal":
            rows.append(one(model, p))
        else:
            options = {} if args.lr_half_life < 0 else {"lr_half_life": args.lr_half_life or None}
            rows.append(one_meaningful(model, p, default_run=not args.no_default_run, **options))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"method": args.method, "lr_half_life": args.lr_half_life, "cpu": cpu_model(),
                      "threads": args.threads, "load": os.getloadavg(),
                      "rule": {"settle": masks.SETTLE_STEPS, "check_every": masks.CHECK_EVERY,
                               "stable_iou": masks.STABLE_IOU, "patience": masks.PATIENCE,
                               "meaningful_drift": masks.MEANINGFUL_DRIFT},
                      "photos": rows, "all_met": all(r["met"] for r in rows)}))


if __name__ == "__main__":
    main()
