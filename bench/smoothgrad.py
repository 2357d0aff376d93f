"""SmoothGrad speed on convnext_tiny at 224²: prints ONE JSON object of ratios against floors measured here.

Floor: ``samples`` forward + input-gradient backward passes of noisy copies, nothing else, at the best of the
batch sizes tried (fp32; the bf16 floor is the same under bf16 autocast). Compared: our fast engine in fp32
and in bf16 (``precision="auto"`` on a CPU with native bf16), and Captum's NoiseTunnel with its default
``nt_samples_batch_size=None`` (all samples in one batch). Map agreement bf16 vs fp32 (same seed) is the
Pearson correlation of the (H, W) maps: on random-init convnext_tiny (timm's init and with layer scale 1) and
on the real ImageNet EfficientNet-Lite0.

Usage: LENS_OFFLINE=1 python bench/smoothgrad.py [--samples 50] [--batch-sizes 8,16] [--rounds 2] [--skip-captum]
       LENS_OFFLINE=1 python bench/smoothgrad.py --precision-only --samples 8 --rounds 3   # auto vs fp32/bf16
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.images import load_image, preprocess, sample_images  # noqa: E402
from core.model import load_model, wrap  # noqa: E402
from core.attribution.smoothgrad import native_bf16, smoothgrad  # noqa: E402


def floor(model, x, target, samples, batch, bf16):
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    done = 0
    while done < samples:
        k = min(batch, samples - done)
        noisy = (x + 0.15 * torch.randn((k, *x.shape[1:]), generator=gen)).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            score = model(noisy)[:, target].sum()
        torch.autograd.grad(score, noisy)
        done += k
    return time.perf_counter() - start


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def corr(a, b) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def peak_rss_fast_fp32(n: int) -> int:
    """Peak RSS (MB) of a fresh process that loads convnext_tiny and runs the fast fp32 SmoothGrad once.

    VmHWM, not ru_maxrss: a child's ru_maxrss starts from this (large) process's peak at fork.
    """
    code = (f"import timm, torch; from core.model import wrap; from core.attribution.smoothgrad import smoothgrad; "
            f"m = wrap(timm.create_model('convnext_tiny'), input_size=224); x = torch.rand(1, 3, 224, 224); "
            f"smoothgrad(m, x, 0, samples={n}, precision='fp32'); "
            f"print([int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def precision_check(samples: int, rounds: int) -> dict:
    """``auto`` against the faster of fp32 and bf16 (issue 15: never slower than 1.05 x), per model: medians of
    ``rounds`` interleaved SmoothGrad runs of ``samples`` samples, after one warm-up each (``auto`` measures once)."""
    cat = next(p for p in sample_images() if p.name == "chelsea.jpg")
    out = {}
    for name in ("embedded", "convnext_tiny_ls1"):
        if name == "embedded":
            model = load_model("embedded")
            x = preprocess(load_image(cat), model.card.data_config).batch
        else:
            torch.manual_seed(0)
            model = wrap(timm.create_model("convnext_tiny", pretrained=False, ls_init_value=1.0), name=name,
                         input_size=224)
            x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        runs: dict[str, list[float]] = {"fp32": [], "bf16": [], "auto": []}
        chosen = None
        for r in range(rounds + 1):
            for prec in runs:
                s, res = timed(lambda: smoothgrad(model, x, 0, samples=samples, precision=prec))
                if r:  # round 0 warms up (and lets auto measure)
                    runs[prec].append(s)
                chosen = res.options["precision"] if prec == "auto" else chosen
        med = {k: float(np.median(v)) for k, v in runs.items()}
        out[name] = {"median_seconds": {k: round(v, 3) for k, v in med.items()}, "auto_chose": chosen,
                     "auto_over_faster": round(med["auto"] / min(med["fp32"], med["bf16"]), 3),
                     "bf16_over_fp32": round(med["bf16"] / med["fp32"], 3)}
        print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)  # a row as soon as it is measured
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--batch-sizes", default="8,16")
    ap.add_argument("--skip-captum", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision-only", action="store_true",
                    help="only auto vs the faster of fp32/bf16 (embedded, convnext_tiny with layer scale 1)")
    args = ap.parse_args()
    if args.precision_only:
        load = [round(v, 2) for v in os.getloadavg()]
        res = precision_check(args.samples, args.rounds)
        print(json.dumps({"threads": torch.get_num_threads(), "native_bf16": native_bf16(), "samples": args.samples,
                          "rounds": args.rounds, "load_average_start": load, **res,
                          "load_average_end": [round(v, 2) for v in os.getloadavg()]}))
        return
    n = args.samples
    torch.manual_seed(0)
    model = wrap(timm.create_model("convnext_tiny", pretrained=False), mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), name="convnext_tiny", input_size=224)
    cat = next(p for p in sample_images() if p.name == "chelsea.jpg")
    x = preprocess(load_image(cat), {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic",
                                     "crop_mode": "center"}).batch
    target = int(model(x).argmax())
    floor(model, x, target, 8, 8, False)  # warm-up (allocator, oneDNN kernels)
    floor(model, x, target, 8, 8, True)

    out: dict = {"model": "convnext_tiny (random init)", "input": "224x224", "samples": n,
                 "threads": torch.get_num_threads(), "native_bf16": native_bf16(), "rounds": args.rounds,
                 "load_average_1min": round(os.getloadavg()[0], 2)}
    sizes = list(map(int, args.batch_sizes.split(",")))
    runs: dict[str, list[float]] = {}

    def keep(name, seconds):
        runs.setdefault(name, []).append(seconds)

    # Interleaved rounds, best of each: the machine's load changes during a run, and ordering must not decide.
    fast32 = fast16 = None
    for _ in range(args.rounds):
        for b in sizes:
            keep(f"floor_fp32_b{b}", floor(model, x, target, n, b, False))
        s, fast32 = timed(lambda: smoothgrad(model, x, target, samples=n, precision="fp32"))
        keep("fast_fp32", s)
        for b in sizes:
            keep(f"floor_bf16_b{b}", floor(model, x, target, n, b, True))
        s, fast16 = timed(lambda: smoothgrad(model, x, target, samples=n, precision="auto"))
        keep("fast_auto", s)
        if not args.skip_captum:
            from captum.attr import NoiseTunnel, Saliency
            keep("noise_tunnel_default", timed(lambda: NoiseTunnel(Saliency(model)).attribute(
                x.clone(), nt_type="smoothgrad", nt_samples=n, stdevs=0.15, target=target, abs=False))[0])
    best = {k: min(v) for k, v in runs.items()}
    b32 = min(sizes, key=lambda b: best[f"floor_fp32_b{b}"])
    b16 = min(sizes, key=lambda b: best[f"floor_bf16_b{b}"])
    floor32, floor16 = best[f"floor_fp32_b{b32}"], best[f"floor_bf16_b{b16}"]
    out.update({
        "seconds_best_of_rounds": {k: round(v, 2) for k, v in best.items()},
        "best_batch_fp32": b32, "best_batch_bf16": b16, "auto_precision": fast16.options["precision"],
        "fast_fp32_over_floor": round(best["fast_fp32"] / floor32, 3),
        "fast_auto_over_fp32_floor": round(best["fast_auto"] / floor32, 3),
        "fast_auto_over_bf16_floor": round(best["fast_auto"] / floor16, 3),
        "bf16_floor_over_fp32_floor": round(floor16 / floor32, 3),
        "map_corr_auto_vs_fp32": round(corr(fast16.map, fast32.map), 4),
        "peak_rss_mb_fast_fp32": peak_rss_fast_fp32(n),
    })
    if not args.skip_captum:
        out["speedup_fast_fp32_vs_noise_tunnel_default"] = round(best["noise_tunnel_default"] / best["fast_fp32"], 3)
        out["speedup_fast_auto_vs_noise_tunnel_default"] = round(best["noise_tunnel_default"] / best["fast_auto"], 3)
    live = wrap(timm.create_model("convnext_tiny", pretrained=False, ls_init_value=1.0), name="convnext_tiny_ls1")
    a = smoothgrad(live, x, target, samples=n, precision="fp32")
    b = smoothgrad(live, x, target, samples=n, precision="bf16")
    out["map_corr_bf16_vs_fp32_layerscale1"] = round(corr(a.map, b.map), 4)
    real = load_model("embedded")
    xr = preprocess(load_image(cat), real.card.data_config).batch
    a = smoothgrad(real, xr, None, samples=n, precision="fp32")
    b = smoothgrad(real, xr, None, samples=n, precision="bf16")
    out["map_corr_bf16_vs_fp32_efficientnet_lite0"] = round(corr(a.map, b.map), 4)
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
