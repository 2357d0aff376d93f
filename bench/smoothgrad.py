"""SmoothGrad speed on convnext_tiny at 224²: prints ONE JSON object of ratios against floors measured here.

Floor: ``samples`` forward + input-gradient backward passes of noisy copies, nothing else, at the best of the
batch sizes tried (fp32; the bf16 floor is the same under bf16 autocast). Compared: our fast engine in fp32
and in bf16 (``precision="auto"`` on a CPU with native bf16), and Captum's NoiseTunnel with its default
``nt_samples_batch_size=None`` (all samples in one batch). Map agreement bf16 vs fp32 (same seed) is the
Pearson correlation of the (H, W) maps: on random-init convnext_tiny (timm's init and with layer scale 1) and
on the real ImageNet EfficientNet-Lite0.

Usage: LENS_OFFLINE=1 python bench/smoothgrad.py [--samples 50] [--batch-sizes 4,8,16] [--skip-captum]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.images import load_image, preprocess, sample_images  # noqa: E402
from core.models import load_model, wrap  # noqa: E402
from core.smoothgrad import native_bf16, smoothgrad  # noqa: E402


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


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--batch-sizes", default="4,8,16")
    ap.add_argument("--skip-captum", action="store_true")
    args = ap.parse_args()
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
                 "threads": torch.get_num_threads(), "native_bf16": native_bf16(),
                 "load_average_1min": round(os.getloadavg()[0], 2)}
    fast32_s, fast32 = timed(lambda: smoothgrad(model, x, target, samples=n, precision="fp32"))
    out["peak_rss_mb_fast_fp32"] = round(rss_mb())
    floors = {b: floor(model, x, target, n, b, False) for b in map(int, args.batch_sizes.split(","))}
    best = min(floors, key=floors.get)
    fast32_s = min(fast32_s, timed(lambda: smoothgrad(model, x, target, samples=n, precision="fp32"))[0])
    floor16 = floor(model, x, target, n, best, True)
    fast16_s, fast16 = timed(lambda: smoothgrad(model, x, target, samples=n, precision="auto"))
    out.update({
        "floor_fp32_seconds": {str(b): round(s, 2) for b, s in floors.items()}, "best_batch": best,
        "floor_bf16_seconds": round(floor16, 2),
        "fast_fp32_seconds": round(fast32_s, 2), "fast_auto_seconds": round(fast16_s, 2),
        "auto_precision": fast16.options["precision"],
        "fast_fp32_over_floor": round(fast32_s / floors[best], 3),
        "fast_auto_over_fp32_floor": round(fast16_s / floors[best], 3),
        "bf16_floor_over_fp32_floor": round(floor16 / floors[best], 3),
        "map_corr_auto_vs_fp32": round(corr(fast16.map, fast32.map), 4),
    })
    live = wrap(timm.create_model("convnext_tiny", pretrained=False, ls_init_value=1.0), name="convnext_tiny_ls1")
    a = smoothgrad(live, x, target, samples=n, precision="fp32")
    b = smoothgrad(live, x, target, samples=n, precision="bf16")
    out["map_corr_bf16_vs_fp32_layerscale1"] = round(corr(a.map, b.map), 4)
    real = load_model("embedded")
    xr = preprocess(load_image(cat), real.card.data_config).batch
    a = smoothgrad(real, xr, None, samples=n, precision="fp32")
    b = smoothgrad(real, xr, None, samples=n, precision="bf16")
    out["map_corr_bf16_vs_fp32_efficientnet_lite0"] = round(corr(a.map, b.map), 4)
    if not args.skip_captum:
        from captum.attr import NoiseTunnel, Saliency
        nt_s, _ = timed(lambda: NoiseTunnel(Saliency(model)).attribute(
            x.clone(), nt_type="smoothgrad", nt_samples=n, stdevs=0.15, target=target, abs=False))
        out["captum_noise_tunnel_default_seconds"] = round(nt_s, 2)
        out["speedup_fast_fp32_vs_noise_tunnel_default"] = round(nt_s / fast32_s, 3)
        out["speedup_fast_auto_vs_noise_tunnel_default"] = round(nt_s / fast16_s, 3)
        out["peak_rss_mb_after_noise_tunnel"] = round(rss_mb())
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
