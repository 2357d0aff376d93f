"""Speed of feature visualisation, CAM and LRP as ratios against a floor measured in the same run.

Floors: one forward + backward to the input at the same size (the least an optimisation step or a relevance
pass can cost), and one plain forward (for CAM). Prints ONE JSON object.
Usage: LENS_OFFLINE=1 python bench/visualize.py [--model embedded] [--weights ...] [--steps 16]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LENS_OFFLINE", "1")

from core.attribution.cam import cam  # noqa: E402
from core.catalogue import default_layer  # noqa: E402
from core.features.featurevis import Settings, visualize  # noqa: E402
from core.attribution.lrp import lrp, prepare  # noqa: E402
from core.model import load_model  # noqa: E402


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="embedded")
    p.add_argument("--weights", default=None)
    p.add_argument("--steps", type=int, default=16)
    args = p.parse_args()
    model = load_model(args.model, args.weights)
    size = model.card.input_size[1]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    layer = default_layer(model).name

    def grad_floor():
        xi = x.clone().requires_grad_(True)
        model(xi)[0, 0].backward()

    def forward_floor():
        with torch.no_grad():
            model(x)

    grad_floor()
    floor_grad = best_of(grad_floor)
    floor_fwd = best_of(forward_floor)
    settings = Settings(steps=args.steps, coarse=0.0)
    start = time.perf_counter()
    visualize(model, layer, 0, settings=settings)
    per_step_full = (time.perf_counter() - start) / args.steps
    start = time.perf_counter()
    visualize(model, layer, 0, settings=Settings(steps=args.steps))  # default schedule: 40% at half size
    per_step_default = (time.perf_counter() - start) / args.steps
    prepare(model)
    t_lrp = best_of(lambda: lrp(model, x))
    try:
        t_cam = best_of(lambda: cam(model, x))
    except ValueError:
        t_cam = float("nan")
    print(json.dumps({
        "model": model.card.name, "size": size, "layer": layer, "steps": args.steps,
        "floor_forward_backward_s": round(floor_grad, 4), "floor_forward_s": round(floor_fwd, 4),
        "featurevis_step_full_size_over_floor": round(per_step_full / floor_grad, 2),
        "featurevis_step_default_schedule_over_floor": round(per_step_default / floor_grad, 2),
        "lrp_over_floor": round(t_lrp / floor_grad, 2),
        "cam_over_forward": round(t_cam / floor_fwd, 2),
        "note": "taken under load unless re-run on a quiet machine",
    }))


if __name__ == "__main__":
    main()
