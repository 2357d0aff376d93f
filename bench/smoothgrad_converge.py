"""SmoothGrad's convergence stop against the 500-sample map, on the sample photos: prints ONE JSON object.

For each photo and aggregation (``smoothgrad``: the signed mean, the default; ``smoothgrad_sq``: the mean of
squares) on the embedded EfficientNet-Lite0 (noise 0.15, saliency base, fp32, batch 8, seed 0):

* the 500-sample map (the same noise draws as ``smoothgrad(samples=500)``: one pass keeps both the sums and the
  sums of squares, so both aggregations come from it);
* the fixed 50-sample map, timed (``smoothgrad(samples=50)``) -- the cost the stop is compared with;
* the stopped map, timed (``smoothgrad(samples=50, converge=RHO, converge_grid=P)``);
* Spearman ρ of each with the 500-sample map on the P x P grid of cell means (the stop's representation) and
  pixel by pixel; samples used; cost = stopped seconds / fixed-50 seconds and samples used / 50.

The target (issue 15): ρ ≥ 0.98 with the 500-sample map at ≤ 0.5 x the cost of the fixed 50 samples.

Usage: python bench/smoothgrad_converge.py [--photos a.jpg,b.jpg] [--converge 0.9] [--grid 14] [--threads 1]
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
from core.attribution.base import input_gradient  # noqa: E402
from core.attribution.smoothgrad import combine, NoiseType, on_grid, smoothgrad  # noqa: E402
from core.stats import spearman as rank_correlation  # noqa: E402
from core.images import SAMPLES, load_image, preprocess  # noqa: E402
from core.model import load_model  # noqa: E402

PHOTOS = "chelsea.jpg,coffee.jpg,rocket.jpg,opencv_butterfly.jpg,flower.jpg,grace_hopper.jpg"


def reference(model, x, target, n=500, sigma=0.15, batch=8, seed=0):
    """Sum and sum of squares of ``n`` sample gradients, the same draws as ``smoothgrad(samples=n)``."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    total, squares, done = torch.zeros_like(x[0]), torch.zeros_like(x[0]), 0
    while done < n:
        k = min(batch, n - done)
        noisy = torch.randn((k, *x.shape[1:]), generator=gen, device=x.device).mul_(sigma).add_(x[0])
        g = input_gradient(model, noisy, target.expand(k))
        total += g.sum(0)
        squares += g.pow_(2).sum(0)
        done += k
    return total, squares


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default=PHOTOS)
    ap.add_argument("--converge", type=float, default=0.9)
    ap.add_argument("--grid", type=int, default=14)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("embedded")
    P, rho = args.grid, args.converge
    out: dict = {"model": "embedded EfficientNet-Lite0", "noise": 0.15, "base": "saliency", "precision": "fp32",
                 "converge": rho, "grid": P, "reference_samples": args.samples, "threads": args.threads,
                 "load_average_start": [round(v, 2) for v in os.getloadavg()], "photos": []}
    for name in args.photos.split(","):
        x = preprocess(load_image(SAMPLES / name), model.card.data_config).batch
        t = model(x).argmax(1)
        total, squares = reference(model, x, t, n=args.samples)
        row: dict = {"photo": name}
        for nt in (NoiseType.SMOOTHGRAD, NoiseType.SMOOTHGRAD_SQ):
            ref = combine(total, squares, args.samples, nt).sum(0)
            s0 = time.perf_counter()
            fixed = smoothgrad(model, x, t, samples=50, nt_type=nt, precision="fp32")
            fixed_s = time.perf_counter() - s0
            s0 = time.perf_counter()
            stop = smoothgrad(model, x, t, samples=50, nt_type=nt, precision="fp32", converge=rho, converge_grid=P)
            stop_s = time.perf_counter() - s0
            used = stop.options["samples_used"]
            grid_rho = rank_correlation(on_grid(stop.map[0], P), on_grid(ref, P))
            row[nt.value] = {
                "samples_used": used, "cost_samples_over_50": round(used / 50, 2),
                "cost_seconds_over_fixed50": round(stop_s / fixed_s, 2),
                "rho_grid_stopped_vs_500": round(grid_rho, 4),
                "rho_grid_fixed50_vs_500": round(rank_correlation(on_grid(fixed.map[0], P), on_grid(ref, P)), 4),
                "rho_pixel_stopped_vs_500": round(rank_correlation(stop.map[0], ref), 4),
                "rho_pixel_fixed50_vs_500": round(rank_correlation(fixed.map[0], ref), 4),
                "meets_target": bool(grid_rho >= 0.98 and used <= 25),
            }
        out["photos"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    for nt in (NoiseType.SMOOTHGRAD, NoiseType.SMOOTHGRAD_SQ):
        out[f"{nt.value}_photos_meeting_target"] = sum(r[nt.value]["meets_target"] for r in out["photos"])
    out["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
