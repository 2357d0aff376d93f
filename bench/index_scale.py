"""Benchmark of the Ray engine of the activation index (issue 14); prints ONE JSON object.

- ``throughput``: images/s of a build over the sample photos (each linked ``--copies`` times) with the embedded
  EfficientNet-Lite0 at 224 px: the local engine with 1 and 2 workers (the floor), and Ray (a local Ray with
  2 CPUs) with 1 and 2 actors. ``steady`` counts the images after the first batch over the time after it (what
  a long build runs at); ``end_to_end`` includes starting workers and loading the model (Ray: seconds per
  actor). ``ray_overhead_at_equal_workers`` = 1 - Ray steady / local steady at the same worker count. Target <= 0.15.
- ``driver_rss``: peak RSS (VmHWM) of the driver process alone (Ray's workers, raylet and GCS are other
  processes) for Ray builds of 2,000 and 20,000 images, each in a fresh process. To keep 20k feasible on a
  shared 2-core machine it uses a small model (a two-conv seeded CNN at 32 px) over 96-px thumbnails of the
  sample photos, hard-linked many times: the driver's memory does not depend on the model. Target: 20k / 2k
  within 1 +- 0.1.
- ``merge_us_per_image``: the driver's cost to fold one image's partials into the running top-k (the
  embedded model's default layers, top-k 16, batches of 16), in microseconds.

Usage: LENS_OFFLINE=1 python bench/index_scale.py [--copies C] [--small N] [--skip-rss]
(--small N replaces 2k/20k by N/10 and N)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("LENS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, single-machine Ray: no token file written

from activation_index import _peak_rss_mb  # noqa: E402  (VmHWM of this process)


def _link_farm(src: list[Path], n: int, folder: Path) -> Path:
    """``n`` hard links (symlinks where linking fails) cycling through ``src`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = src[i % len(src)]
        dst = folder / f"{i // 1000:03d}" / f"{i:06d}{s.suffix}"
        dst.parent.mkdir(exist_ok=True)
        try:
            os.link(s, dst)
        except OSError:
            dst.symlink_to(s)
    return folder


def _thumbnails(folder: Path) -> list[Path]:
    from PIL import Image

    from core.images import sample_images

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sample_images():
        with Image.open(p) as img:
            img = img.convert("RGB")
            img.thumbnail((96, 96))
            dst = folder / (p.stem + ".jpg")
            img.save(dst, quality=90)
            out.append(dst)
    return out


def _small_model():
    import torch
    from torch import nn

    from core.model import wrap

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    return wrap(net, name="bench-cnn", input_size=32)


def _rss_child(folder: str, out: str) -> None:
    """One Ray build (2 actors) in this fresh process; prints the driver's peak RSS."""
    import ray
    import torch

    from core.index.build import build_index

    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    t0 = time.perf_counter()
    result = build_index(_small_model(), folder, out, layers=["0", "2"], top_k=16, batch_size=64,
                         checkpoint_seconds=1e9, engine="ray", workers=2)
    print(json.dumps({"images": len(result.index), "driver_peak_rss_mb": round(_peak_rss_mb(), 1),
                      "seconds": round(time.perf_counter() - t0, 1),
                      "images_per_second": round(result.images_per_second, 1)}))
    ray.shutdown()


def _timed_build(model, folder, out, **kwargs) -> dict:
    from core.index.build import build_index

    stamps: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    result = build_index(model, folder, out, top_k=16, batch_size=16, checkpoint_seconds=1e9,
                         progress=lambda f, _m: stamps.append((time.perf_counter(), f)), **kwargs)
    total = time.perf_counter() - t0
    n = result.added
    moving = [(t, f) for t, f in stamps if 0 < f]
    (t1, f1), (t2, f2) = moving[0], moving[-1]  # after the first batch .. the last
    steady = (f2 - f1) * n / (t2 - t1) if t2 > t1 else float("nan")
    return {"images": n, "end_to_end": round(n / total, 2), "steady": round(steady, 2), "seconds": round(total, 1)}


def _merge_cost() -> float:
    import torch

    from core.catalogue import find_layer
    from core.index.build import default_layers
    from core.index.topk import TopK, batch_partial
    from core.model.loading import load_model

    model = load_model("embedded")
    infos = [find_layer(model, n) for n in default_layers(model)]
    g = torch.Generator().manual_seed(0)
    parts = [{i.name: batch_partial(torch.randn(16, i.channels, generator=g),
                                    torch.randint(0, 49, (16, i.channels), generator=g), 16) for i in infos}
             for _ in range(50)]
    states = {i.name: TopK(i.channels, 16) for i in infos}
    t0 = time.perf_counter()
    for b, part in enumerate(parts):
        for name, p in part.items():
            states[name].merge(p, 16 * b)
    return (time.perf_counter() - t0) / (16 * len(parts)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=3, help="links per sample photo in the throughput runs")
    ap.add_argument("--small", type=int, default=None, help="RSS runs at N/10 and N images instead of 2k/20k")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        _rss_child(*args.rss_child)
        return

    import ray
    import torch

    from core.images import sample_images
    from core.model.loading import load_model

    report: dict = {"uptime": os.getloadavg(), "cpu": _cpu()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = _link_farm(sample_images(), len(sample_images()) * args.copies, tmp / "photos")
        model = load_model("embedded")
        torch.set_num_threads(2)
        runs = {}
        for w in (1, 2):
            runs[f"local_{w}"] = _timed_build(model, photos, tmp / f"local{w}", workers=w)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            for w in (1, 2):
                runs[f"ray_{w}"] = _timed_build(model, photos, tmp / f"ray{w}", engine="ray", workers=w)
        finally:
            ray.shutdown()
        report["throughput"] = runs
        report["ray_overhead_at_equal_workers"] = {
            w: round(1 - runs[f"ray_{w}"]["steady"] / runs[f"local_{w}"]["steady"], 3) for w in (1, 2)}
        report["merge_us_per_image"] = round(_merge_cost(), 1)

        if not args.skip_rss:
            thumbs = _thumbnails(tmp / "thumbs")
            big = args.small or 20_000
            rss = {}
            for n in (big // 10, big):
                folder = _link_farm(thumbs, n, tmp / f"farm{n}")
                out = subprocess.run([sys.executable, __file__, "--rss-child", str(folder), str(tmp / f"rss{n}")],
                                     capture_output=True, text=True, check=True)
                rss[n] = json.loads(out.stdout.strip().splitlines()[-1])
            report["driver_rss"] = rss
            small_n, big_n = sorted(rss)
            report["driver_rss_ratio"] = round(rss[big_n]["driver_peak_rss_mb"] / rss[small_n]["driver_peak_rss_mb"], 3)
    report["uptime_after"] = os.getloadavg()
    print(json.dumps(report))


def _cpu() -> str:
    try:
        return next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                    if l.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
