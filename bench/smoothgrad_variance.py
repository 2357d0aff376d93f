"""Why the signed SmoothGrad map cannot meet the convergence target: its sampling noise, measured. Prints ONE
JSON object.

For each photo (embedded EfficientNet-Lite0, noise 0.15, saliency base, fp32, batch 8): the 500-sample map (the
reference of ``bench/smoothgrad_converge.py``, seed 0) and maps of n = 16, 24, 50 samples from other draws (seed 1),
with independent noise (``iid``) and with antithetic pairs (ε, -ε: ``antithetic``). Spearman ρ with the reference
on the 14 x 14 grid of cell means (the stop's representation).

With per-sample noise variance N and signal variance S in the grid cells, an n-sample map correlates with the
m-sample reference as ρ(n) ≈ 1 / sqrt((1 + r/n)(1 + r/m)), r = N/S. ``r`` is fitted to the iid figures (least
squares on 1/ρ²), and ``samples_for_0.98`` = the n at which ρ(n) reaches 0.98 against the 500-sample reference;
the issue's target allows 25 (half the fixed 50 samples).

Usage: python bench/smoothgrad_variance.py [--photos chelsea.jpg,coffee.jpg] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from smoothgrad_converge import reference  # noqa: E402
from core.attribution.base import input_gradient  # noqa: E402
from core.attribution.smoothgrad import on_grid  # noqa: E402
from core.stats import spearman as rank_correlation  # noqa: E402
from core.images import SAMPLES, load_image, preprocess  # noqa: E402
from core.model import load_model  # noqa: E402

SIZES = (16, 24, 50)
M, GRID, SIGMA = 500, 14, 0.15


def estimate(model, x, target, n: int, *, antithetic: bool, seed: int = 1, batch: int = 8) -> torch.Tensor:
    """Mean input gradient over ``n`` noisy copies of ``x`` (1, 3, H, W); (3, H, W)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    total, done = torch.zeros_like(x[0]), 0
    while done < n:
        k = min(batch, n - done)
        if antithetic:  # k is even: k/2 draws and their negatives
            half = torch.randn((k // 2, *x.shape[1:]), generator=gen, device=x.device).mul_(SIGMA)
            noise = torch.cat([half, -half])
        else:
            noise = torch.randn((k, *x.shape[1:]), generator=gen, device=x.device).mul_(SIGMA)
        total += input_gradient(model, noise.add_(x[0]), target.expand(k)).sum(0)
        done += k
    return total / n


def fit_ratio(rhos: dict[int, float]) -> float:
    """r = N/S from ρ(n)⁻² = (1 + r/n)(1 + r/M), to first order in r: ρ⁻² - 1 ≈ r (1/n + 1/M)."""
    xs = [1 / n + 1 / M for n in rhos]
    ys = [rho ** -2 - 1 for rho in rhos.values()]
    return sum(a * b for a, b in zip(xs, ys)) / sum(a * a for a in xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default="chelsea.jpg,coffee.jpg,rocket.jpg,flower.jpg")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("embedded")
    out: dict = {"model": "embedded EfficientNet-Lite0", "noise": SIGMA, "grid": GRID, "reference_samples": M,
                 "threads": args.threads, "load_average_start": [round(v, 2) for v in os.getloadavg()],
                 "photos": []}
    for name in args.photos.split(","):
        x = preprocess(load_image(SAMPLES / name), model.card.data_config).batch
        t = model(x).argmax(1)
        total, _ = reference(model, x, t, n=M)
        ref = on_grid((total / M).sum(0), GRID)
        row: dict = {"photo": name}
        for kind in ("iid", "antithetic"):
            row[kind] = {n: round(rank_correlation(on_grid(estimate(model, x, t, n, antithetic=kind == "antithetic")
                                                           .sum(0), GRID), ref), 4) for n in SIZES}
        r = fit_ratio(row["iid"])
        # ρ(n)⁻² = (1 + r/n)(1 + r/M) = 0.98⁻²
        row["noise_over_signal"] = round(r, 2)
        row["samples_for_0.98"] = round(r / (0.98 ** -2 / (1 + r / M) - 1))
        row["rho_at_25_expected"] = round(((1 + r / 25) * (1 + r / M)) ** -0.5, 3)
        out["photos"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    out["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
