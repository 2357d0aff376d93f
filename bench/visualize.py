"""Speed of a feature-visualisation step (and of LRP and CAM) as ratios against floors measured in the same run.

The step is the real loop of ``visualize`` at its default settings (the model's default layer, the channel-mean
objective, Fourier parameterisation, the default transforms, Adam): the time between consecutive progress
reports, one report per step, the first report of each phase left out (it holds the phase's set-up). Floor: one
forward + backward of the whole model to the input, batch 1, at the model's input size ("full size"; the step
itself stops at the target layer) and, for reference, at the size the transformed image has. The floors and the
loop are measured in alternating rounds (``--rounds``) and every figure is the median over the rounds, so load
drift on a shared machine hits both alike. 2 threads (``--threads``); ``--clock cpu`` times CPU seconds instead
of wall seconds (1 thread: steady even when the machine is overloaded). Prints ONE JSON object.

Usage: python bench/visualize.py [--models embedded,convnext] [--rounds 5] [--steps 4] [--threads 2] [--clock wall|cpu]
       [--lrp-cam]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LENS_OFFLINE", "1")

from latency import cpu_model, load, median_time  # noqa: E402

from core.catalogue import default_layer  # noqa: E402
from core.features.featurevis import Settings, visualize  # noqa: E402


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process: steadier under load)


def fwd_bwd(model, size: int) -> float:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    start = CLOCK()
    torch.autograd.grad(model(x)[0, 0], x)
    return CLOCK() - start


def loop_steps(model, layer: str, steps: int) -> dict[int, list[float]]:
    """Seconds per step of ``visualize`` by canvas side: ``steps`` half-size steps, then ``steps`` full-size."""
    stamps: list[tuple[int, float]] = []

    def progress(_fraction, message):
        side = re.search(r"\((\d+)px\)", message)
        if side:
            stamps.append((int(side.group(1)), CLOCK()))

    visualize(model, layer, 0, settings=Settings(steps=2 * steps, coarse=0.5), progress=progress)
    per_side: dict[int, list[float]] = {}
    for (side_a, t_a), (side_b, t_b) in zip(stamps, stamps[1:]):
        if side_a == side_b:
            per_side.setdefault(side_b, []).append(t_b - t_a)
    return per_side


def bench_model(name: str, rounds: int, steps: int, lrp_cam: bool) -> dict:
    model = load(name)
    size = model.card.input_size[1]
    layer = default_layer(model).name
    s = Settings()
    seen = size + 2 * s.pad - s.jitter - max(1, s.jitter // 2)
    fwd_bwd(model, size)  # warm-up
    floors, floors_seen, full, half = [], [], [], []
    for _ in range(rounds):
        floors.append(min(fwd_bwd(model, size) for _ in range(2)))
        per_side = loop_steps(model, layer, steps)
        full.append(statistics.median(per_side[size]))
        half.append(statistics.median(per_side[size // 2]))
        floors_seen.append(min(fwd_bwd(model, seen) for _ in range(2)))
    floor, floor_seen = statistics.median(floors), statistics.median(floors_seen)
    step_full, step_half = statistics.median(full), statistics.median(half)
    # the default schedule: 40 % of the steps on the half-size canvas, 60 % at full size
    step_default = s.coarse * step_half + (1 - s.coarse) * step_full
    out = {
        "model": model.card.name, "size": size, "layer": layer, "objective": "channel 0 (mean)",
        "rounds": rounds, "steps_per_phase": steps, "transformed_size": seen,
        "floor_fwd_bwd_s": round(floor, 4), "floor_fwd_bwd_at_transformed_size_s": round(floor_seen, 4),
        "step_full_size_s": round(step_full, 4), "step_half_size_s": round(step_half, 4),
        "step_full_size_over_floor": round(step_full / floor, 3),
        "step_full_size_over_floor_at_transformed_size": round(step_full / floor_seen, 3),
        "step_default_schedule_over_floor": round(step_default / floor, 3),
        "rounds_step_over_floor": [round(f / fl, 3) for f, fl in zip(full, floors)],
    }
    if lrp_cam:
        from core.attribution.cam import cam
        from core.attribution.lrp import lrp, prepare

        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))

        def forward():
            with torch.no_grad():
                model(x)

        prepare(model)
        floor_fwd = median_time(forward, 3)
        out["lrp_over_floor"] = round(median_time(lambda: lrp(model, x), 3) / floor, 2)
        try:
            out["cam_over_forward"] = round(median_time(lambda: cam(model, x), 3) / floor_fwd, 2)
        except ValueError:
            out["cam_over_forward"] = None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="embedded,convnext", help="embedded and/or convnext (Tiny, layer scale 1)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="steps per canvas size and round")
    p.add_argument("--lrp-cam", action="store_true", help="also LRP / fwd+bwd and CAM / fwd")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    out = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "clock": args.clock,
           "load_average_start": [round(v, 2) for v in os.getloadavg()], "models": []}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        out["models"].append(bench_model(name, args.rounds, args.steps, args.lrp_cam))
        print(json.dumps(out["models"][-1]), file=sys.stderr)
    out["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
