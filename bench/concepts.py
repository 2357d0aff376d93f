"""Concept relevance against one LRP call: ``python bench/concepts.py [--model embedded] [--layer L] [--repeats 5]
[--parts calls,deletion,index]``.

``--model convnext_tiny_ls1``: timm ConvNeXt-Tiny with random weights (seed 0) and ``ls_init_value=1.0`` (live
blocks; timm's default layer scale makes a random ConvNeXt nearly the identity).

Ratios measured in one run, interleaved: channel relevances of one layer (the LRP pass read at the layer) and
the conditional maps of 6 channels (one batched backward from the layer) against one :func:`lrp` call and against
their floor (``floor6``: a plain forward and 6 batched vector-Jacobian products from the layer to the input); the
deletion check on the sample photos (top-5 by relevance against 5 random channels, mean of 20 draws, and the
top-5 by activation); and the activation index of the sample photos built with the relevance ranking against
the same build without it (same images, same layers, a fresh directory each time, alternating which goes first),
with the pass alone on one decoded batch (no decoding: the model's share). Prints ONE JSON object of medians.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LENS_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402

from core.attribution.lrp import lrp  # noqa: E402
from core.catalogue import default_layer, find_layer  # noqa: E402
from core.concepts import channel_relevance, concepts  # noqa: E402
from core.evaluation.concepts import channel_deletion  # noqa: E402
from core.images import SAMPLES, list_images, load_image, preprocess  # noqa: E402
from core.index import build_index, default_layers  # noqa: E402
from core.index.passes import forward_partials  # noqa: E402
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


def index_builds(model, photos: list[Path], repeats: int, workers: int | None) -> dict:
    """Seconds (medians) of building the index of ``photos`` at the default layers with and without the relevance
    ranking, each in a fresh directory, alternating which goes first; and of the pass alone on a decoded batch of
    16 (one worker's work without the decoding)."""
    layers = default_layers(model)
    folder = Path(tempfile.mkdtemp(prefix="bench-concepts-photos-"))
    for path in photos:
        shutil.copy(path, folder / path.name)
    times: dict[str, list[float]] = {"without": [], "with": []}
    try:
        build_index(model, folder, folder.parent / f"{folder.name}-warm", layers=layers, top_k=16, relevance=True,
                    workers=workers)  # warm: the replicas' LRP copies, the allocator
        shutil.rmtree(folder.parent / f"{folder.name}-warm")
        for r in range(repeats):
            for name in (("without", "with") if r % 2 == 0 else ("with", "without")):
                out = Path(tempfile.mkdtemp(prefix="bench-concepts-index-"))
                try:
                    times[name].append(timed(lambda: build_index(model, folder, out, layers=layers, top_k=16,
                                                                 relevance=name == "with", workers=workers)))
                finally:
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    infos = [find_layer(model, name) for name in layers]
    batch = torch.stack([preprocess(load_image(p), model.card.data_config).tensor for p in photos[:16]])
    passes: dict[str, list[float]] = {"without": [], "with": []}
    forward_partials(model, infos, batch, 16, relevance=True)
    for r in range(repeats):
        for name in (("without", "with") if r % 2 == 0 else ("with", "without")):
            passes[name].append(timed(lambda: forward_partials(model, infos, batch, 16, relevance=name == "with")))
    med = {name: statistics.median(v) for name, v in times.items()}
    pmed = {name: statistics.median(v) for name, v in passes.items()}
    return {"layers": list(layers), "images": len(photos), "repeats": repeats,
            "build_seconds": {k: round(v, 3) for k, v in med.items()},
            "build_with_over_without": round(med["with"] / med["without"], 3),
            "pass_seconds_batch16": {k: round(v, 4) for k, v in pmed.items()},
            "pass_with_over_without": round(pmed["with"] / pmed["without"], 3)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="embedded")
    p.add_argument("--weights", default=None)
    p.add_argument("--layer", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--photos", type=int, default=0, help="sample photos for the deletion check (0: all)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--parts", default="calls,deletion,index", help="what to measure (comma-separated)")
    p.add_argument("--index-photos", type=int, default=0, help="sample photos for the index builds (0: all)")
    p.add_argument("--index-repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="index build workers (default: the builder's)")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "convnext_tiny_ls1":
        torch.manual_seed(0)
        model = wrap(timm.create_model("convnext_tiny", pretrained=False, ls_init_value=1.0), name=args.model,
                     input_size=224)
    else:
        model = load_model(args.model, args.weights)
    layer = args.layer or default_layer(model).name
    result: dict = {"model": model.card.name, "layer": layer, "threads": torch.get_num_threads()}
    if "calls" in parts:
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
        result.update({"repeats": args.repeats, "seconds": {k: round(v, 4) for k, v in med.items()},
                       "channels_over_lrp": round(med["channels"] / med["lrp"], 3),
                       "maps6_over_lrp": round(med["maps6"] / med["lrp"], 3),
                       "maps6_over_floor6": round(med["maps6"] / med["floor6"], 3)})
    if "deletion" in parts:
        photos = [p for p in list_images(SAMPLES)][: args.photos or None]
        wins_random = wins_activation = 0
        for path in photos:
            xi = preprocess(load_image(path), model.card.data_config).batch
            d = channel_deletion(model, xi, layer=layer, ks=(5,), draws=20)
            wins_random += bool(d.relevance[0, 0] > d.random[0, 0])
            wins_activation += bool(d.relevance[0, 0] > d.activation[0, 0])
        result.update({"photos": len(photos), "top5_beats_random": round(wins_random / max(1, len(photos)), 3),
                       "top5_beats_activation": round(wins_activation / max(1, len(photos)), 3)})
    if "index" in parts:
        result["index"] = index_builds(model, list_images(SAMPLES)[: args.index_photos or None], args.index_repeats,
                                       args.workers)
    print(json.dumps(result))

if __name__ == "__main__":
    main()
