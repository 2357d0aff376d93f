"""Deletion + insertion cost against its floor, and against Quantus's step-by-step loop:
``python bench/faithfulness.py [--steps 50] [--repeats 2] [--threads N] [--no-quantus]``.

Model: timm ``convnext_tiny`` with ``ls_init_value=1.0`` (random weights, live blocks), 224², ImageNet
normalisation, the chelsea sample. The floor is what any deletion + insertion pair must do: 2·S forward passes
at the best batch size (measured here among 4, 8, 16, 32 images per forward). Ours forwards 2·S + 1 images
(the intact image once) and builds every perturbed copy. Target: ours ≤ 1.10 × floor.

Quantus (installed for benches/tests only) runs ``PixelFlipping`` (deletion) one forward pass per step; ours at
equal S runs deletion only, batched. Quantus needs H·W/S to be an integer, so that comparison uses S = 49
(1024 pixels a step) on both sides (and its features_in_step assert, which counts one channel only, is off). Wall-clock and process CPU-time ratios are both given (CPU time is steadier
on a shared machine). Prints ONE JSON object; medians over interleaved repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LENS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

from core.evaluation import curves  # noqa: E402
from core.images import SAMPLES, load_image, preprocess  # noqa: E402
from core.model import wrap  # noqa: E402

CANDIDATES = (4, 8, 16, 32)


def clocked(fn, clock):
    started = clock()
    fn()
    return clock() - started


def forwards(model, n: int, batch: int, x: torch.Tensor) -> None:
    """n forward passes' worth of images (perturbed copies of x), ``batch`` at a time."""
    with torch.inference_mode():
        for i in range(0, n, batch):
            model(x.expand(min(batch, n - i), -1, -1, -1).clone()).softmax(-1)


def best_batch(model, x: torch.Tensor) -> tuple[int, dict]:
    per_image = {}
    forwards(model, 4, 4, x)  # warm-up
    for b in CANDIDATES:
        per_image[b] = clocked(lambda: forwards(model, b, b, x), time.perf_counter) / b
    return min(per_image, key=per_image.get), {str(b): round(s, 4) for b, s in per_image.items()}


def quantus_deletion(model, x: torch.Tensor, amap: np.ndarray, target: int, steps: int) -> None:
    import quantus

    # Quantus asserts H·W % features_in_step == 0 (one channel) although it flips the 3·H·W broadcast features;
    # with 3·H·W/S per step the loop is exactly S steps, so only that check is switched off.
    quantus.helpers.asserts.assert_features_in_step = lambda *a, **k: None
    h, w = amap.shape
    metric = quantus.PixelFlipping(features_in_step=3 * h * w // steps, perturb_baseline="black", normalise=False,
                                   abs=False, disable_warnings=True, display_progressbar=False)
    metric(model=model, x_batch=x.numpy(), y_batch=np.array([target]), a_batch=amap[None, None],
           softmax=True, device="cpu", channel_first=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-quantus", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = timm.create_model("convnext_tiny", pretrained=False, ls_init_value=1.0)
    model = wrap(net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), name="convnext_tiny", input_size=224)
    config = {**model.card.data_config, "crop_pct": 0.875, "interpolation": "bicubic"}
    x = preprocess(load_image(SAMPLES / "chelsea.jpg"), config).batch
    amap = torch.rand(224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        target = int(model(x).argmax())
    load_before = os.getloadavg()
    batch, per_image = best_batch(model, x)
    s = args.steps
    floor, ours, cpu_floor, cpu_ours = [], [], [], []
    for _ in range(args.repeats):
        for clock, f_list, o_list in ((time.perf_counter, floor, ours), (time.process_time, cpu_floor, cpu_ours)):
            f_list.append(clocked(lambda: forwards(model, 2 * s, batch, x), clock))
            o_list.append(clocked(lambda: curves(model, x, amap, target, steps=s, batch_size=batch), clock))
    med = statistics.median
    out = {
        "model": "convnext_tiny (timm, ls_init_value=1.0, random weights)", "input": "224x224",
        "threads": torch.get_num_threads(), "steps": s, "repeats": args.repeats,
        "seconds_per_image_by_batch": per_image, "best_batch": batch,
        "floor_seconds": round(med(floor), 3), "ours_seconds": round(med(ours), 3),
        "ours_over_floor": round(med(o / f for o, f in zip(ours, floor)), 3),
        "ours_over_floor_cpu_time": round(med(o / f for o, f in zip(cpu_ours, cpu_floor)), 3),
        "target_ours_over_floor": 1.10,
    }
    if not args.no_quantus:
        qs = 49  # H·W/S must be an integer for Quantus: 50176 / 49 = 1024
        q_times, o_times, q_cpu, o_cpu = [], [], [], []
        for _ in range(args.repeats):
            for clock, ql, ol in ((time.perf_counter, q_times, o_times), (time.process_time, q_cpu, o_cpu)):
                ql.append(clocked(lambda: quantus_deletion(model, x, amap.numpy(), target, qs), clock))
                ol.append(clocked(lambda: curves(model, x, amap, target, steps=qs, batch_size=batch,
                                                 insertion=False), clock))
        out.update({"quantus_steps": qs, "quantus_deletion_seconds": round(med(q_times), 3),
                    "ours_deletion_seconds": round(med(o_times), 3),
                    "speedup_over_quantus": round(med(q / o for q, o in zip(q_times, o_times)), 3),
                    "speedup_over_quantus_cpu_time": round(med(q / o for q, o in zip(q_cpu, o_cpu)), 3)})
    out["load_average_before"] = [round(v, 2) for v in load_before]
    out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    out["cpu"] = _cpu_model()
    print(json.dumps(out))


def _cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    main()
