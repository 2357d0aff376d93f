"""Concept relevance against one LRP call: ``python bench/concepts.py [--model embedded] [--layer L] [--repeats 5]``.

``--model convnext_tiny_ls1``: timm ConvNeXt-Tiny with random weights (seed 0) and ``ls_init_value=1.0`` (live
blocks; timm's default layer scale makes a random ConvNeXt nearly the identity).

Ratios measured in one run, interleaved: channel relevances of one layer (the LRP pass read at the layer) and
the conditional maps of 6 channels (one batched backward from the layer) against one :func:`lrp` call and against
their floor (``floor6``: a plain forward and 6 batched vector-Jacobian products from the layer to the input); and the
deletion check on the sample photos (top-5 by relevance against 5 random channels, mean of 20 draws, and the
top-5 by activation). Prints ONE JSON object of medians.
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

import timm  # noqa: E402
import torch  # noqa: E402

from core.attribution.lrp import lrp  # noqa: E402
from core.catalogue import default_layer  # noqa: E402
from core.concepts import channel_relevance, concepts  # noqa: E402
from core.evaluation.concepts import channel_deletion  # noqa: E402
from core.images import SAMPLES, list_images, load_image, preprocess  # noqa: E402
from core.model import load_model, wrap  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def floor_maps(model, x: torch.Tensor, layer: str, k: int) -> None:
    """The physical floor of ``k`` conditional maps: one plain forward pass (autograd on) and ``k`` batched
    vector-Jacobian products from ``layer`` to the input (no LRP rules), as :func:`from_layer` does with them."""
    seen = {}
    handle = model.net.get_submodule(layer).register_forward_hook(lambda _m, _i, out: seen.setdefault("out", out))
    try:
        xn = model.normalise(x).requires_grad_(True)
        logits = model.net(xn)
        (g,) = torch.autograd.grad(logits[:, 0].sum(), seen["out"], retain_graph=True)
        grads = g.expand(k, *g.shape).contiguous()
        torch.autograd.grad(seen["out"], xn, grads, is_grads_batched=True)
    finally:
        handle.remove()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="embedded")
    p.add_argument("--weights", default=None)
    p.add_argument("--layer", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--photos", type=int, default=0, help="sample photos for the deletion check (0: all)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "convnext_tiny_ls1":
        torch.manual_seed(0)
        model = wrap(timm.create_model("convnext_tiny", pretrained=False, ls_init_value=1.0), name=args.model,
                     input_size=224)
    else:
        model = load_model(args.model, args.weights)
    layer = args.layer or default_layer(model).name
    x = preprocess(load_image(SAMPLES / "chelsea.jpg"), model.card.data_config).batch
    runs = {"lrp": lambda: lrp(model, x),
            "channels": lambda: channel_relevance(model, x, layer=layer),
            "maps6": lambda: concepts(model, x, layer=layer, top=6),
            "floor6": lambda: floor_maps(model, x, layer, 6)}
    for fn in runs.values():
        fn()  # warm: the prepared copy, the allocator
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(v) for name, v in times.items()}
    photos = [p for p in list_images(SAMPLES)][: args.photos or None]
    wins_random = wins_activation = 0
    for path in photos:
        xi = preprocess(load_image(path), model.card.data_config).batch
        d = channel_deletion(model, xi, layer=layer, ks=(5,), draws=20)
        wins_random += bool(d.relevance[0, 0] > d.random[0, 0])
        wins_activation += bool(d.relevance[0, 0] > d.activation[0, 0])
    print(json.dumps({
        "model": model.card.name, "layer": layer, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "seconds": {k: round(v, 4) for k, v in med.items()},
        "channels_over_lrp": round(med["channels"] / med["lrp"], 3),
        "maps6_over_lrp": round(med["maps6"] / med["lrp"], 3),
        "maps6_over_floor6": round(med["maps6"] / med["floor6"], 3),
        "photos": len(photos),
        "top5_beats_random": round(wins_random / max(1, len(photos)), 3),
        "top5_beats_activation": round(wins_activation / max(1, len(photos)), 3)}))


if __name__ == "__main__":
    main()
