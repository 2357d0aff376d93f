"""Speed of a mask-optimisation step (extremal and meaningful perturbation) as a ratio against a floor measured
in the same run; prints ONE JSON object.

Floor: one forward + backward pass of the model (``--model``: the embedded EfficientNet-Lite0, or ConvNeXt-Tiny
with layer scale 1 as in bench/latency.py) at the step's batch (1 for one extremal area or
meaningful perturbation, 3 for the three areas of the page's default), the least a step can cost. A step's cost
is the time between consecutive progress reports (one per step; the pyramid and the two extra forwards are set-up
paid once per run). Floors and runs alternate in ``--rounds`` rounds and every figure is the median over the
rounds, so load drift on a shared machine hits both alike. 2 threads (``--threads``); ``--clock cpu`` times CPU
seconds of this process instead of wall seconds (at 1 thread: steady on an overloaded machine).
``--others`` adds the similarity and Net2Vec figures of issue 6.

``--runs`` picks some of extremal_1_area, extremal_3_areas, meaningful.

Usage: python bench/perturbation.py [--rounds 5] [--steps 6] [--threads 2] [--clock wall|cpu] [--model embedded|convnext]
       [--runs extremal_3_areas] [--others]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("LENS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import cpu_model, load  # noqa: E402

from core.images import load_image, preprocess, sample_images  # noqa: E402
from core.perturbation.masks import extremal_perturbation, meaningful_perturbation  # noqa: E402
from core.perturbation.spec import PAGE_AREAS  # noqa: E402

CLOCK = time.perf_counter


def fwd_bwd(model, x: torch.Tensor, batch: int) -> float:
    z = x.expand(batch, -1, -1, -1).clone().requires_grad_(True)
    start = CLOCK()
    torch.autograd.grad(model(z)[:, 0].sum(), z)
    return CLOCK() - start


def step_time(fn, steps: int) -> float:
    """Median seconds between consecutive progress reports of ``fn(progress=...)``."""
    stamps: list[float] = []
    fn(progress=lambda *_: stamps.append(CLOCK()))
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=6, help="optimisation steps per run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--model", choices=("embedded", "convnext"), default="embedded")
    p.add_argument("--runs", default="extremal_1_area,extremal_3_areas,meaningful")
    p.add_argument("--others", action="store_true", help="also similarity and Net2Vec (issue 6, embedded model)")
    args = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    model = load(args.model)
    cat = next(q for q in sample_images() if q.name == "chelsea.jpg")
    x = preprocess(load_image(cat), model.card.data_config).batch
    target = int(model(x).argmax())
    runs = {
        "extremal_1_area": (1, lambda **kw: extremal_perturbation(model, x, target, iterations=args.steps, **kw)),
        "extremal_3_areas": (3, lambda **kw: extremal_perturbation(model, x, target, areas=PAGE_AREAS,
                                                                   iterations=args.steps, **kw)),
        "meaningful": (1, lambda **kw: meaningful_perturbation(model, x, target, iterations=args.steps, **kw)),
    }
    runs = {k: v for k, v in runs.items() if k in args.runs.split(",")}
    out: dict = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "clock": args.clock, "rounds": args.rounds,
                 "steps_per_run": args.steps, "model": model.card.name, "image": cat.name,
                 "load_average_start": [round(v, 2) for v in os.getloadavg()]}
    fwd_bwd(model, x, 1)  # warm-up
    for name, (batch, fn) in runs.items():
        floors, steps = [], []
        for _ in range(args.rounds):
            floors.append(min(fwd_bwd(model, x, batch) for _ in range(2)))
            steps.append(step_time(fn, args.steps))
        floor, step = statistics.median(floors), statistics.median(steps)
        out[name] = {"floor": f"1 × fwd+bwd at batch {batch}", "floor_s": round(floor, 4), "step_s": round(step, 4),
                     "step_over_floor": round(step / floor, 3),
                     "rounds_step_over_floor": [round(s / f, 3) for s, f in zip(steps, floors)]}
        print(json.dumps({name: out[name]}), file=sys.stderr)
    if args.others:
        from core.features.net2vec import fit_concept
        from core.features.similarity import layer_features, similarity_map

        floor = min(fwd_bwd(model, x, 3) for _ in range(3))
        feats = layer_features(model, x, "blocks.5")
        start = CLOCK()
        layer_features(model, x, "blocks.5")
        features = CLOCK() - start
        start = CLOCK()
        for r in range(7):
            similarity_map(feats, (r, 3), feats)
        query = (CLOCK() - start) / 7
        acts = torch.randn(35, 192, 28, 28)
        start = CLOCK()
        fit_concept(acts, acts[:, 3] + acts[:, 9] > 1.5, iterations=300)
        n2v = CLOCK() - start
        out["others"] = {"floor_fwd_bwd_batch3_s": round(floor, 4),
                         "similarity_features_over_floor": round(features / floor, 2),
                         "similarity_click_ms": round(query * 1000, 3),
                         "net2vec_fit_35x192x28x28_over_floor": round(n2v / floor, 1)}
    out["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
