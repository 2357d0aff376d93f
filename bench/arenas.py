"""Does capping glibc's malloc arenas (MALLOC_ARENA_MAX) lower the server's resident size?

The app allocates from many threads: each session's script thread (a fresh one per rerun), each job's fresh
worker thread (core.serve) and PyTorch's OpenMP workers. glibc gives threads that contend for the heap their own
arena (up to 8 per core), and memory freed in one arena is not reused by a thread of another. The setting must
be in the environment before the process starts, so each setting runs in a child process that imitates the
server: ``--sessions`` threads, each a fresh thread per "rerun" (``--rounds``), asking the app's kind of
scheduler (``LENS_MAX_JOBS`` default, jobs on fresh niced worker threads) for a SmoothGrad job on its own sample
photo, keeping the result in an in-memory result store and running a prediction and a layer capture on its own
thread, while one more thread keeps predicting (the home page).

Prints one JSON object: per setting the resident size after the model loaded (``base_mb``: the floor), the
peak (VmHWM), the size at the end after ``malloc_trim`` (``end_mb``), the wall time, and the ratios of the
capped settings to glibc's default. Usage: ``python bench/arenas.py [--arenas 2 4] [--sessions 8 --rounds 2]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(sessions: int, rounds: int, samples: int) -> dict:
    from core.attribution.smoothgrad import smoothgrad
    from core.catalogue import default_layer, layer_outputs
    from core.images import SAMPLES, load_image, preprocess
    from core.model.loading import load_model
    from core.model.predict import predict
    from core.serve import ResultStore, Scheduler, per_sample_bytes, release_memory, rss_bytes

    model = load_model("embedded")
    names = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:sessions]
    xs = [preprocess(load_image(p), model.card.data_config).tensor for p in names]
    layer = default_layer(model)
    per_sample = per_sample_bytes(model)
    predict(model, xs[0].unsqueeze(0))
    release_memory()
    base = rss_bytes()
    sched = Scheduler(memory_bytes=1 << 40, job_nice=10, live_bytes=rss_bytes)
    store = ResultStore(256 << 20)
    stop = threading.Event()

    def home() -> None:
        while not stop.is_set():
            predict(model, xs[0].unsqueeze(0))
            time.sleep(0.05)

    def rerun(i: int, r: int) -> None:  # one script run of session i: a fresh thread, as Streamlit starts
        x = xs[i % len(xs)]
        predict(model, x.unsqueeze(0))
        layer_outputs(model, x.unsqueeze(0), [layer])
        key = ("smoothgrad", i, r)
        store.get_or_compute(key, lambda: sched.run(
            key, lambda job, progress: smoothgrad(model, x.unsqueeze(0), 0, samples=samples, noise=0.15,
                                                  progress=progress).map.numpy(),
            bytes_per_sample=per_sample, samples=samples))

    t0 = time.perf_counter()
    pages = threading.Thread(target=home)
    pages.start()

    def session(i: int) -> None:
        for r in range(rounds):
            t = threading.Thread(target=rerun, args=(i, r))
            t.start()
            t.join()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    pages.join()
    seconds = time.perf_counter() - t0
    release_memory()
    mb = 2**20
    return {"base_mb": round(base / mb), "peak_mb": round(_status_kb("VmHWM") * 1024 / mb),
            "end_mb": round(rss_bytes() / mb), "seconds": round(seconds, 1), "jobs": sessions * rounds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arenas", type=int, nargs="*", default=[2])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.sessions, args.rounds, args.samples)))
        return
    out: dict = {"sessions": args.sessions, "rounds": args.rounds, "samples": args.samples,
                 "cores": os.cpu_count(), "load_before": [round(v, 2) for v in os.getloadavg()]}
    for arenas in [None, *args.arenas]:
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
        if arenas is not None:
            env["MALLOC_ARENA_MAX"] = str(arenas)
        cmd = [sys.executable, __file__, "--child", "--sessions", str(args.sessions), "--rounds", str(args.rounds),
               "--samples", str(args.samples)]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        out["default" if arenas is None else f"arena_max_{arenas}"] = json.loads(result.stdout.splitlines()[-1])
    floor = out["default"]
    for arenas in args.arenas:
        r = out[f"arena_max_{arenas}"]
        out[f"arena_max_{arenas}_ratios"] = {
            "peak_above_base": round((r["peak_mb"] - r["base_mb"]) / max(1, floor["peak_mb"] - floor["base_mb"]), 3),
            "end_above_base": round((r["end_mb"] - r["base_mb"]) / max(1, floor["end_mb"] - floor["base_mb"]), 3),
            "seconds": round(r["seconds"] / max(1e-9, floor["seconds"]), 3)}
    out["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
