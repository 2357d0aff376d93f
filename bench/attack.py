"""PGD speed against its floor: ``python bench/attack.py [--model embedded] [--repeats 5] [--threads N]``.

The floor is what any 10-step PGD must do: 10 forward passes plus 10 input-gradient backward passes on the same
batch. Our PGD adds per-step projection, the trajectory record and one final forward pass for the adversarial
prediction. Wall-clock and process CPU-time ratios are both given (CPU time is steadier on a shared machine).
Prints ONE JSON object of medians over interleaved repeats; ratios are what to compare across machines.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LENS_OFFLINE", "1")

import torch  # noqa: E402

from core.attack.attacks import PIXEL, attack  # noqa: E402
from core.images import SAMPLES, load_image, preprocess  # noqa: E402
from core.model import load_model  # noqa: E402


def floor(model, x: torch.Tensor, steps: int, label: torch.Tensor, clock=time.perf_counter) -> float:
    started = clock()
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xa), label, reduction="sum")
        grad, = torch.autograd.grad(loss, xa)
        xa = (xa.detach() + PIXEL * grad.sign()).clamp(0, 1)
    return clock() - started


def timed(fn, clock=time.perf_counter) -> float:
    started = clock()
    fn()
    return clock() - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="embedded")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, "random" if args.model != "embedded" else None)
    inp = preprocess(load_image(SAMPLES / "chelsea.jpg"), model.card.data_config)
    x = inp.batch.repeat(args.batch, 1, 1, 1)
    with torch.no_grad():
        label = model(x).argmax(-1)
    opts = dict(eps=4 * PIXEL, step=PIXEL, steps=args.steps, early_stop=False)
    attack(model, x, **opts)  # warm-up
    floors, pgds, pgd_rs, fgsms, fwdbwd1, cpu_floors, cpu_pgds = [], [], [], [], [], [], []
    cpu = time.process_time  # CPU seconds of this process: less sensitive to other users of the machine
    for _ in range(args.repeats):
        cpu_floors.append(floor(model, x, args.steps, label, cpu))
        cpu_pgds.append(timed(lambda: attack(model, x, **opts), cpu))
        floors.append(floor(model, x, args.steps, label))
        pgds.append(timed(lambda: attack(model, x, **opts)))
        pgd_rs.append(timed(lambda: attack(model, x, random_start=True, **opts)))
        fwdbwd1.append(floor(model, x, 1, label))
        fgsms.append(timed(lambda: attack(model, x, method="fgsm", eps=4 * PIXEL)))
    med = statistics.median
    print(json.dumps({
        "model": model.card.name, "batch": args.batch, "steps": args.steps, "threads": torch.get_num_threads(),
        "repeats": args.repeats, "floor_seconds": round(med(floors), 4), "pgd_seconds": round(med(pgds), 4),
        "pgd_over_floor": round(med(p / f for p, f in zip(pgds, floors)), 3),
        "pgd_over_floor_cpu_time": round(med(p / f for p, f in zip(cpu_pgds, cpu_floors)), 3),
        "pgd_random_start_over_floor": round(med(p / f for p, f in zip(pgd_rs, floors)), 3),
        "fgsm_over_one_pass": round(med(a / b for a, b in zip(fgsms, fwdbwd1)), 3),
        "target_pgd_over_floor": 1.10,
    }))


if __name__ == "__main__":
    main()
