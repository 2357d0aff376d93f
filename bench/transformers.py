"""Attention rollout, gradient-weighted rollout, AttnLRP and CP-LRP as ratios against floors measured in the same
run; prints ONE JSON object.

Model: ViT-Small (``vit_small_patch16_224``) with random weights (seed 0), one 224×224 image. Floors: one forward
pass of the shared model (fused attention, no autograd) and one forward + input-gradient backward pass. Rollout is
timed against the forward (its work is one forward on the explicit-attention copy plus a vector product per
layer); grad-rollout, AttnLRP (``--rule zplus``, the default, and ``epsilon``) and CP-LRP (``--rule cp``) against
the forward + backward. The first call of each (it makes the private copy) is excluded; floors and methods
alternate in ``--rounds`` rounds and each figure is the median over the rounds, so load drift on a shared machine
hits both alike.

Usage: python bench/transformers.py [--rounds 7] [--threads 2] [--model vit_small_patch16_224]
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

from core.attribution.lrp import lrp  # noqa: E402
from core.attribution.rollout import grad_rollout, rollout  # noqa: E402
from core.model import load_model  # noqa: E402

CLOCK = time.perf_counter


def timed(fn) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="vit_small_patch16_224")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, "random")
    x = torch.rand(1, 3, *model.card.input_size[1:], generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0])

    def forward():
        with torch.inference_mode():
            model(x)

    def forward_backward():
        z = x.clone().requires_grad_(True)
        torch.autograd.grad(model(z)[:, 0].sum(), z)

    runs = {"forward": forward, "forward_backward": forward_backward,
            "rollout": lambda: rollout(model, x, target), "grad_rollout": lambda: grad_rollout(model, x, target),
            "attnlrp_zplus": lambda: lrp(model, x, target),
            "attnlrp_epsilon": lambda: lrp(model, x, target, rule="epsilon"),
            "cp_lrp": lambda: lrp(model, x, target, rule="cp")}
    for fn in runs.values():  # warm-up: allocator, the private explicit-attention copy
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            seconds[name].append(timed(fn))
    median = {name: statistics.median(v) for name, v in seconds.items()}
    print(json.dumps({
        "model": args.model, "threads": args.threads, "rounds": args.rounds,
        "seconds": {k: round(v, 4) for k, v in median.items()},
        "rollout_over_forward": round(median["rollout"] / median["forward"], 3),
        "grad_rollout_over_forward_backward": round(median["grad_rollout"] / median["forward_backward"], 3),
        **{f"{name}_over_forward_backward": round(median[name] / median["forward_backward"], 3)
           for name in ("attnlrp_zplus", "attnlrp_epsilon", "cp_lrp")},
        "load_before": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
