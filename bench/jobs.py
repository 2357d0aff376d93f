"""Several sessions' heavy jobs at once: scheduled (core.serve) vs unscheduled vs one after another.

Runs ``--jobs`` SmoothGrad jobs (embedded model, one image each) three ways and prints one JSON object:
``serial_s`` (one after another, every core each: the floor), ``scheduled_s`` (all submitted at once through a
Scheduler with the default LENS_MAX_JOBS), ``unscheduled_s`` (all at once, each thread with every core, as before
issue 12), the ratios to the floor, and the largest difference between a scheduled map and its serial one (one vs all
intra-op threads: float sums in another order).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--size", type=int, default=160)
    args = ap.parse_args()

    from core.attribution.smoothgrad import smoothgrad
    from core.serve import Scheduler, rss_bytes
    from core.model.loading import load_model

    model = load_model("embedded")
    cores = os.cpu_count() or 1
    torch.manual_seed(0)
    xs = [torch.rand(1, 3, args.size, args.size) for _ in range(args.jobs)]

    def work(i):
        return smoothgrad(model, xs[i], 1, samples=args.samples, batch_size=8, seed=i, precision="fp32").map

    def on_thread(fn, threads):
        out = {}

        def run():
            torch.set_num_threads(threads)
            out["v"] = fn()
        t = threading.Thread(target=run)
        t.start()
        return t, out

    work(0)  # warm-up
    start = time.perf_counter()
    serial = []
    for i in range(args.jobs):
        t, out = on_thread(lambda i=i: work(i), cores)
        t.join()
        serial.append(out["v"])
    serial_s = time.perf_counter() - start

    sched = Scheduler(cores=cores)
    start = time.perf_counter()
    runs = [on_thread(lambda i=i: sched.run(("sg", i), lambda job, p: work(i)), cores) for i in range(args.jobs)]
    for t, _ in runs:
        t.join()
    scheduled_s = time.perf_counter() - start
    scheduled = [out["v"] for _, out in runs]

    start = time.perf_counter()
    runs = [on_thread(lambda i=i: work(i), cores) for i in range(args.jobs)]
    for t, _ in runs:
        t.join()
    unscheduled_s = time.perf_counter() - start

    print(json.dumps({
        "jobs": args.jobs, "samples": args.samples, "size": args.size, "cores": cores,
        "max_jobs": sched.max_jobs,
        "serial_s": round(serial_s, 2), "scheduled_s": round(scheduled_s, 2), "unscheduled_s": round(unscheduled_s, 2),
        "scheduled_over_serial": round(scheduled_s / serial_s, 3),
        "unscheduled_over_serial": round(unscheduled_s / serial_s, 3),
        "max_abs_diff_scheduled_vs_serial": max(float((a - b).abs().max()) for a, b in zip(scheduled, serial)),
        "rss_mb": round(rss_bytes() / 2**20), "load_average": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
