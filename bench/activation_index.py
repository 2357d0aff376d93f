"""Benchmark of the activation index; prints ONE JSON object.

- ``build_vs_forward``: index build throughput (decode, preprocess, forward, top-k, save) over the sample photos
  (each linked ``--copies`` times so a run lasts seconds, not one) with the embedded EfficientNet-Lite0, divided
  by the same model's forward-only throughput on the already preprocessed images in the same measured batch
  (:func:`core.batching.forward_batch`; ``model(x)`` per batch with torch's threads), measured in the same run.
  Target >= 0.9.
- ``build_vs_parallel_forward``: the same build divided by a stricter floor: forward-only through the build's
  own worker split (:func:`core.parallel.ordered_map`, one replica and a share of the threads per worker). It
  isolates the indexing overhead from the gain of running batches side by side. Informational.
- ``rss_10k_vs_1k``: peak RSS of a build over 10,000 synthesised images divided by one over 1,000 (tiny
  convnext_atto at 64 px, each build in a fresh process). Target within 1 +- 0.1.
- ``query_p95_ms``: ``index.top(layer, channel)`` latency over 300 random queries once the index is open.
  Target <= 50 ms.

Usage: LENS_OFFLINE=1 python bench/activation_index.py [--small N] [--threads T] [--copies C] [--workers W] [--model M]
(--small N replaces 1k/10k by N/10 and N; --threads sets torch's intra-op threads in every process;
--workers 1 measures the build without batch parallelism; --model convnext_tiny times ConvNeXt-Tiny, random init)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LENS_OFFLINE", "1")


def _child(folder: str, out: str) -> None:
    """One build in this (fresh) process; prints peak RSS and throughput."""
    import timm
    import torch

    from core.index.build import build_index
    from core.model import wrap

    if os.environ.get("LENS_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["LENS_BENCH_THREADS"]))
    torch.manual_seed(0)
    model = wrap(timm.create_model("convnext_atto", num_classes=10), name="convnext_atto", input_size=64)
    result = build_index(model, folder, out, top_k=16, batch_size=32, checkpoint_seconds=1e9)
    peak_mb = _peak_rss_mb()
    print(json.dumps({"images": len(result.index), "peak_rss_mb": peak_mb, "images_per_second": result.images_per_second}))


def _peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would carry the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synthesise(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    for i in range(n):
        a = np.roll(base, (i * 7) % 96, axis=0) ^ np.uint8(i % 251)
        Image.fromarray(a).save(folder / f"{i:06d}.png", compress_level=1)


def _memory(tmp: Path, counts: tuple[int, int]) -> dict:
    big = tmp / f"synth{counts[1]}"
    _synthesise(big, counts[1])
    small = tmp / f"synth{counts[0]}"
    small.mkdir()
    for p in sorted(big.iterdir())[: counts[0]]:
        os.link(p, small / p.name)
    figures = {}
    for n, folder in ((counts[0], small), (counts[1], big)):
        out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(tmp / f"idx{n}")],
                             capture_output=True, text=True, check=True).stdout
        figures[n] = json.loads(out.strip().splitlines()[-1])
    return figures


def _throughput(tmp: Path, batch: int, copies: int, workers: int | None, model_name: str) -> dict:
    import torch

    from core.index.build import build_index
    from core.images import load_image, preprocess, sample_images
    from core.model import load_model
    from core.batching import forward_batch
    from core.parallel import default_workers, ordered_map

    model = load_model(model_name, None if model_name == "embedded" else "random")  # speed does not depend on weights
    folder = tmp / "photos"
    for c in range(copies):  # hard links: the same photos under new names are new images to the index
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
        for p in sample_images():
            os.link(p, folder / str(c) / p.name)
    paths = sorted(folder.rglob("*.*"))
    t0 = time.perf_counter()
    x = torch.stack([preprocess(load_image(p), model.card.data_config).tensor for p in paths])
    decode = len(paths) / (time.perf_counter() - t0)
    starts = range(0, len(x), batch)
    step = forward_batch(model, x.shape[1:])  # the build forwards in the measured batch: so do the floors
    with torch.inference_mode():
        model(x[:step])  # warm-up

    def in_steps(net, images: torch.Tensor, size: int) -> None:
        with torch.inference_mode():
            for i in range(0, len(images), size):
                net(images[i:i + size])

    def forward_only() -> float:
        t0 = time.perf_counter()
        in_steps(model, x, step)
        return len(x) / (time.perf_counter() - t0)

    def parallel_forward_only() -> float:
        def run(replica, i):
            chunk = x[i:i + batch]
            in_steps(replica, chunk, forward_batch(replica, chunk.shape[1:]))

        t0 = time.perf_counter()
        for _ in ordered_map(model, run, starts, workers=workers):
            pass
        return len(x) / (time.perf_counter() - t0)

    def build(i: int) -> float:
        t0 = time.perf_counter()
        build_index(model, folder, tmp / f"tp{i}", batch_size=batch, workers=workers)
        return len(paths) / (time.perf_counter() - t0)  # wall time of the whole call, open and save included

    forward, parallel, built = [], [], []
    for i in range(3):  # interleaved, best of three: the machine is shared
        forward.append(forward_only())
        parallel.append(parallel_forward_only())
        built.append(build(i))
    return {"model": model.card.name, "images": len(paths), "batch_size": batch,
            "workers": workers or default_workers(),
            "forward_images_per_second": max(forward), "parallel_forward_images_per_second": max(parallel),
            "build_images_per_second": max(built), "decode_images_per_second": decode,
            "build_vs_forward": max(built) / max(forward),
            "build_vs_parallel_forward": max(built) / max(parallel), "index_dir": str(tmp / "tp0")}


def _query(directory: str, n: int = 300) -> dict:
    from core.index import open_index

    t0 = time.perf_counter()
    index = open_index(directory)
    open_ms = (time.perf_counter() - t0) * 1000
    rng = random.Random(0)
    times = []
    for _ in range(n):
        layer = rng.choice(list(index.layers))
        channel = rng.randrange(index.layers[layer].channels)
        t0 = time.perf_counter()
        index.top(layer, channel)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"open_ms": open_ms, "query_p50_ms": times[n // 2], "query_p95_ms": times[int(n * 0.95)]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2)
    parser.add_argument("--small", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-memory", action="store_true", help="throughput and query only")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--copies", type=int, default=4, help="links to each sample photo in the build folder")
    parser.add_argument("--workers", type=int, default=None, help="build workers (default: core.parallel's)")
    parser.add_argument("--model", default="embedded", help="embedded (default) or a timm name, random weights")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["LENS_BENCH_THREADS"] = str(args.threads)
    if args.child:
        _child(*args.child)
        return
    counts = (args.small // 10, args.small) if args.small else (1000, 10000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tp = _throughput(tmp, args.batch_size, args.copies, args.workers, args.model)
        q = _query(tp.pop("index_dir"))
        mem = {} if args.skip_memory else _memory(tmp, counts)
    ratios = {"build_vs_forward": round(tp["build_vs_forward"], 3),
              "build_vs_parallel_forward": round(tp["build_vs_parallel_forward"], 3)}
    if mem:
        lo, hi = mem[counts[0]], mem[counts[1]]
        ratios[f"rss_{hi['images']}_vs_{lo['images']}"] = round(hi["peak_rss_mb"] / lo["peak_rss_mb"], 3)
    print(json.dumps({
        **ratios,
        "query_p95_ms": round(q["query_p95_ms"], 3),
        "throughput": {k: round(v, 2) if isinstance(v, float) else v for k, v in tp.items()},
        "query": {k: round(v, 3) for k, v in q.items()},
        "memory": {str(n): {k: round(v, 1) for k, v in f.items()} for n, f in mem.items()},
        "torch_threads": __import__("torch").get_num_threads(), "load_average": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
