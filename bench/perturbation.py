"""Speed of issue 6's techniques as ratios against a floor measured in the same run; prints one JSON object.

Floor: one forward + backward pass of the embedded model on a batch of 3 (what one extremal step with three
areas must do anyway). Ratios > 1 are the overhead of the mask machinery.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("LENS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.model import load_model  # noqa: E402
from core.features.net2vec import fit_concept  # noqa: E402
from core.perturbation.masks import extremal_perturbation, meaningful_perturbation  # noqa: E402
from core.features.similarity import layer_features, similarity_map  # noqa: E402


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    model = load_model("embedded")
    torch.manual_seed(0)
    x = torch.rand(1, 3, 224, 224)

    def floor_step():
        z = x.expand(3, -1, -1, -1).clone().requires_grad_(True)
        model(z)[:, 0].sum().backward()

    floor_step()
    floor = best(floor_step, 5)
    steps = 10
    extremal = best(lambda: extremal_perturbation(model, x, 0, areas=(0.05, 0.1, 0.2), iterations=steps), 2) / steps
    meaningful = best(lambda: meaningful_perturbation(model, x, 0, iterations=steps), 2) / steps
    feats = layer_features(model, x, "blocks.5")
    features = best(lambda: layer_features(model, x, "blocks.5"))
    query = best(lambda: [similarity_map(feats, (r, 3), feats) for r in range(7)]) / 7
    acts = torch.randn(35, 192, 28, 28)
    masks = acts[:, 3] + acts[:, 9] > 1.5
    n2v = best(lambda: fit_concept(acts, masks, iterations=300), 1)
    print(json.dumps({
        "floor_fwd_bwd_batch3_s": round(floor, 4),
        "extremal_step_3_areas_over_floor": round(extremal / floor, 2),
        "meaningful_step_over_floor": round(meaningful / floor, 2),
        "similarity_features_over_floor": round(features / floor, 2),
        "similarity_click_over_floor": float(f"{query / floor:.2e}"),
        "similarity_click_ms": round(query * 1000, 3),
        "net2vec_fit_35x192x28x28_over_floor": round(n2v / floor, 1),
        "extremal_300_steps_est_s": round(extremal * 300, 1),
        "loaded_machine": True,
    }))


if __name__ == "__main__":
    main()
