"""Benchmark of the dataset audit; prints ONE JSON object.

- ``audit_vs_attribution``: ``run_audit`` over the shortcut demo set copied to ``--images`` images (Grad-CAM,
  the shipped demo head) divided by the sum of its per-image attribution calls (the same batches of 8 on the
  already preprocessed images), measured in the same process, ``ROUNDS`` times in turn, the fastest of each
  kept. Target <= 1.15.
- ``rss_mb``: the process's peak RSS over the whole run (the floors below hold the 1,000 preprocessed images).
- ``features_vs_forward``: fit-head's feature extraction (decode, preprocess, forward; ``features_of``) over the
  same images, against the forward-only floor: the faster of ``pooled_features`` on the preprocessed images
  with every thread in one pass, and chunks of 32 of them on :func:`core.parallel.ordered_map`'s workers (as
  the activation index runs them; both are reported), each in its measured batch (:mod:`core.batching`, measured
  before the clock starts). The three are timed ``ROUNDS`` times in turn and the fastest of each kept (``rounds``
  has them all): with page faults in every large batch, one figure moves with the heap's state. Target >= 0.9.
- with ``--ray``: ``ray_vs_local``, ``run_audit(engine="ray")`` (one worker, as the local engine's one process)
  against the local engine's audit above, with the same clusters required. ``--ray new`` starts a local Ray in
  the call (what a one-off command pays: Ray's start and the actor's model load); ``--ray ADDRESS`` joins a
  cluster already running (``auto``: the one ``ray start --head`` started on this machine; ``ray://HOST:PORT``),
  timed on the second of two calls, as a long-running cluster serves (the first call's actors are kept for it;
  ``ray_seconds`` has both): the clusters are checked on both. Target
  within 15 %. ``ray_first_block_seconds``: when the first block of images came back (the actor's start, its
  model's load and one block); ``ray_after_first_block_vs_local``: the rest of the call against the local audit's
  time for as many images (the engine's throughput once started).

- ``heap_keep_mb``: the freed memory glibc keeps (:func:`core.serve.tuning.keep_freed_memory`), as
  ``python -m core`` does; ``--heap-keep-mb 0`` measures with glibc's own policy (every large block mapped anew).

Usage: LENS_OFFLINE=1 python bench/audit.py [--images N] [--threads T] [--ray new|ADDRESS] [--heap-keep-mb MB]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.attribution.registry import attribute  # noqa: E402
from core.audit.audit import BATCH, run_audit  # noqa: E402
from core.audit.demo import SHORTCUT_HEAD, build_shortcut_set  # noqa: E402
from core.errors.dataset import read_labelled  # noqa: E402
from core.errors.fit import features_of  # noqa: E402
from core.model.heads import pooled_features  # noqa: E402
from core.images import load_image, preprocess  # noqa: E402
from core.parallel import ordered_map  # noqa: E402
from core.serve.tuning import default_heap_keep_mb, keep_freed_memory  # noqa: E402
from core.model import load_model  # noqa: E402

ROUNDS = 3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ray", default="", help="new (a local Ray started by the call) or a running cluster's address")
    p.add_argument("--heap-keep-mb", type=int, default=default_heap_keep_mb(),
                   help="freed memory glibc keeps for the next batch, as the command line does (0: glibc's own)")
    args = p.parse_args()
    kept = keep_freed_memory(args.heap_keep_mb)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        demo, root = Path(tmp) / "demo", Path(tmp) / "set"
        build_shortcut_set(demo)
        for cls in ("plain", "stamped"):
            (root / cls).mkdir(parents=True)
            files = sorted((demo / cls).glob("*.png"))
            for n in range(args.images // 2):
                shutil.copy(files[n % len(files)], root / cls / f"{n:05d}.png")
        model = load_model(None, str(SHORTCUT_HEAD))
        items = read_labelled(root, model.labels).items
        attribute(model, torch.rand(2, 3, 224, 224), [0, 1], method="gradcam")  # warm-up
        batches = []
        for b in range(0, len(items), BATCH):
            chunk = items[b:b + BATCH]
            batches.append((torch.stack([preprocess(load_image(it.path), model.card.data_config).tensor
                                         for it in chunk]), [it.label for it in chunk]))
        call_rounds, audit_rounds = [], []
        for _ in range(ROUNDS):  # in turn, the fastest of each kept (as the features below)
            started = time.perf_counter()
            for x, labels in batches:
                attribute(model, x, labels, method="gradcam")
            call_rounds.append(time.perf_counter() - started)
            started = time.perf_counter()
            local = run_audit(model, root)
            audit_rounds.append(time.perf_counter() - started)
        del batches
        calls, audit = min(call_rounds), min(audit_rounds)
        ray_figures = {}
        if args.ray:
            address = None if args.ray == "new" else args.ray
            rounds, firsts = [], []
            for _ in range(1 if address is None else 2):
                first: list[tuple[float, float]] = []  # (seconds, share of the images) at the first block's arrival
                started = time.perf_counter()
                remote = run_audit(model, root, engine="ray", workers=1, address=address,
                                   progress=lambda share, _msg: first or first.append(
                                       (time.perf_counter() - started, share)))
                rounds.append(time.perf_counter() - started)
                firsts.append(first[0])
                if _clusters(remote) != _clusters(local):
                    raise SystemExit("the Ray engine's clusters differ from the local engine's")
            if address is not None:  # the kept actors hold a model and a heap: not left behind by a bench
                import ray

                from core.audit.ray_engine import release_kept

                release_kept(ray)
            (start, share), total = firsts[-1], rounds[-1]
            ray_figures = {"ray": args.ray, "ray_seconds": [round(r, 2) for r in rounds],
                           "ray_vs_local": round(total / audit, 3), "ray_clusters_identical": True,
                           "ray_first_block_seconds": round(start, 2),
                           "ray_after_first_block_vs_local": round((total - start) / (audit * (1 - share)), 3)}
        base = load_model("embedded")
        x = torch.stack([preprocess(load_image(it.path), base.card.data_config).tensor for it in items])
        def on_workers(images: torch.Tensor) -> None:
            for _ in ordered_map(base, lambda replica, b: pooled_features(replica, images[b:b + 32]),
                                 range(0, len(images), 32)):
                pass

        pooled_features(base, x[:32])  # both floors measure their batch (core.batching) before the clock starts
        on_workers(x[:64])
        features_of(base, items[:64])
        one, workers, extracted = [], [], []
        for _ in range(ROUNDS):  # alternated: the heap's state moves a single figure by up to 2x
            started = time.perf_counter()
            pooled_features(base, x)
            one.append(time.perf_counter() - started)
            started = time.perf_counter()
            on_workers(x)
            workers.append(time.perf_counter() - started)
            started = time.perf_counter()
            features_of(base, items)
            extracted.append(time.perf_counter() - started)
        floor_one, floor_workers, features = min(one), min(workers), min(extracted)
        floor = min(floor_one, floor_workers)
        del x
    print(json.dumps({"images": len(items), "attribution_seconds": round(calls, 2), "audit_seconds": round(audit, 2),
                      "audit_vs_attribution": round(audit / calls, 3), "forward_seconds": round(floor, 2),
                      "forward_one_pass_seconds": round(floor_one, 2), "forward_workers_seconds": round(floor_workers, 2),
                      "features_seconds": round(features, 2), "features_vs_forward": round(floor / features, 3),
                      "rounds": {name: [round(t, 2) for t in times] for name, times in (
                          ("attribution", call_rounds), ("audit", audit_rounds), ("one_pass", one),
                          ("workers", workers), ("features", extracted))},
                      "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "heap_keep_mb": args.heap_keep_mb if kept else 0, **ray_figures}))


def _clusters(audit) -> list:
    """Each class's clusters as sorted image lists (what the two engines must agree on)."""
    return [sorted(tuple(sorted(c.images)) for c in cls.clusters) for cls in audit.classes]


if __name__ == "__main__":
    main()
