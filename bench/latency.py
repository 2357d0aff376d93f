"""Interactive latency of every slow technique (issue 15): time to the first preview and to the final result, both
as ratios to the floor that technique cannot beat, measured in the same run. Prints ONE JSON object (and writes
it to ``--out``); ``--markdown`` also prints the table for docs/performance.md.

Models: ConvNeXt-Tiny 224² (timm, random init with layer scale 1 so the blocks are live) and the embedded
EfficientNet-Lite0. Threads: 2. Floors, per image, at the best of the batch sizes tried:

* ``fwd``: one forward pass; ``fwdbwd``: one forward + input-gradient backward pass.
* lrp: 1 × fwdbwd (batch 1: one image); ``first_call_s`` is a first call on a fresh cache, with the preparation
  of the BatchNorm-folded copy, ``final_s`` the calls after it. occlusion: windows × fwd. integrated gradients:
  steps × fwdbwd. smoothgrad: samples × fwdbwd. extremal / meaningful: per step, 1 × fwdbwd at batch 1 (one mask).
  extremal-3: the page's default areas (0.05, 0.1, 0.2), per step, 1 × fwdbwd at batch 3 (the step's batch).
  feature visualisation: per full-size step, 1 × fwdbwd at the size the step sees (logit objective).
  net2vec: the fit's own arithmetic: its logistic-regression steps (iterations × (a @ w, aᵀ g) on the same
  pixels) and the single-channel baseline's exact cut search (one sort of the training pixels per channel).

Every timing is the median of ``--repeats`` runs. ``--quick`` shortens the optimisations (per-step ratios are
what the targets are about) and uses one repeat, so the whole table takes minutes on a shared 2-core machine.

Usage: python bench/latency.py [--techniques lrp,occlusion] [--models convnext,embedded] [--quick] [--markdown]
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch

os.environ.setdefault("LENS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.images import load_image, preprocess, sample_images  # noqa: E402
from core.model import load_model, wrap  # noqa: E402
from core.perturbation.spec import PAGE_AREAS  # noqa: E402  (the Perturbation page's default areas)

TECHNIQUES = ("lrp", "occlusion", "integrated-gradients", "smoothgrad", "smoothgrad-auto", "extremal", "extremal-3",
              "meaningful", "extremal-converge", "meaningful-converge", "featurevis", "net2vec")
MODELS = ("convnext", "embedded")


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown"


def load(name: str):
    if name == "embedded":
        return load_model("embedded")
    torch.manual_seed(0)
    net = timm.create_model("convnext_tiny", pretrained=False, ls_init_value=1.0)
    return wrap(net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), name="convnext_tiny (ls 1.0)",
                input_size=224)


class Floors:
    """Per-image floors at the best batch, measured (median of repeats) in this run."""

    def __init__(self, model, x, repeats: int, batches=(1, 4, 8, 16)):
        self.model, self.x, self.repeats, self.batches = model, x, repeats, batches
        self.fwd_by_batch, self.fwdbwd_by_batch = {}, {}
        self.fwd(1)
        self.fwdbwd(1)  # warm-up

    def _fwd(self, b: int, size: int | None = None):
        x = self.x.expand(b, -1, -1, -1).contiguous()
        if size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
        with torch.inference_mode():
            self.model(x)

    def _fwdbwd(self, b: int, size: int | None = None):
        x = self.x.expand(b, -1, -1, -1).contiguous()
        if size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
        x.requires_grad_(True)
        torch.autograd.grad(self.model(x)[:, 0].sum(), x)

    def fwd(self, b: int) -> float:
        if b not in self.fwd_by_batch:
            self.fwd_by_batch[b] = median_time(lambda: self._fwd(b), self.repeats) / b
        return self.fwd_by_batch[b]

    def fwdbwd(self, b: int, size: int | None = None) -> float:
        key = (b, size)
        if key not in self.fwdbwd_by_batch:
            self.fwdbwd_by_batch[key] = median_time(lambda: self._fwdbwd(b, size), self.repeats) / b
        return self.fwdbwd_by_batch[key]

    def table(self) -> dict:
        return {**{f"fwd_b{b}": round(v, 4) for b, v in self.fwd_by_batch.items()},
                **{f"fwdbwd_b{b}" + (f"_{s}px" if s else ""): round(v, 4) for (b, s), v in self.fwdbwd_by_batch.items()}}

    def best_fwd(self) -> float:
        return min(self.fwd(b) for b in self.batches)

    def best_fwdbwd(self) -> float:
        return min(self.fwdbwd(b) for b in self.batches)


class Clock:
    """Records the time of the first progress report and of the first preview."""

    def __init__(self):
        self.start = time.perf_counter()
        self.first_progress = self.first_preview = self.last_progress = None
        self.reports = 0

    def progress(self, *_args):
        now = time.perf_counter() - self.start
        if self.first_progress is None:
            self.first_progress = now
        self.last_progress, self.reports = now, self.reports + 1

    def per_report(self) -> float | None:
        """Seconds between the first and the last progress report per report: a step's cost without the setup."""
        if self.reports < 2:
            return None
        return (self.last_progress - self.first_progress) / (self.reports - 1)

    def preview(self, *_args):
        if self.first_preview is None:
            self.first_preview = time.perf_counter() - self.start


def timed_run(fn, repeats: int) -> dict:
    """Median final time and first preview/progress over ``repeats`` runs of ``fn(clock) -> info dict``."""
    finals, previews, progresses, steps, info = [], [], [], [], {}
    for _ in range(repeats):
        clock = Clock()
        info = fn(clock) or {}
        finals.append(time.perf_counter() - clock.start)
        previews.append(clock.first_preview)
        progresses.append(clock.first_progress)
        steps.append(clock.per_report())

    def med(values):
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 3) if values else None

    return {"final_s": med(finals), "first_preview_s": med(previews), "first_progress_s": med(progresses),
            "between_progress_s": med(steps), **info}


def run_technique(name: str, model, x, target: int, floors: Floors, quick: bool, repeats: int) -> dict:
    from core.attribution import registry
    from core.perturbation.masks import extremal_perturbation, meaningful_perturbation

    if name in ("lrp", "occlusion", "integrated-gradients", "smoothgrad", "smoothgrad-auto"):
        method = "smoothgrad" if name.startswith("smoothgrad") else name
        opts: dict = {}
        if name == "smoothgrad-auto":  # the convergence stop, at most the default 50 samples
            opts["converge"] = 0.98
        spec = registry.REGISTRY[method]
        accepts_preview = "preview" in inspect.signature(spec.fn).parameters

        def go(clock):
            kw = dict(opts, progress=clock.progress)
            if accepts_preview:
                kw["preview"] = clock.preview
            r = registry.attribute(model, x, target, method=method, **kw)
            return {"options": {k: v for k, v in r.options.items() if k in ("window", "stride", "steps", "samples",
                                                                            "samples_used", "precision", "rule")}}

        first_call = None
        if method == "lrp":  # the first call also builds the private BatchNorm-folded copy (cached per model)
            from core.attribution import lrp_prepare as lrp_module
            lrp_module._cache.pop(model, None)
            first_call = timed_run(go, 1)["final_s"]
        out = timed_run(go, repeats)
        if first_call is not None:
            out["first_call_s"] = first_call
        o = out["options"]
        if method == "lrp":
            floor, what = floors.fwdbwd(1), "1 × fwd+bwd (batch 1)"
        elif method == "occlusion":
            h, w = x.shape[-2:]
            from core.attribution.occlusion import window_starts
            n = len(window_starts(h, o["window"], o["stride"])) * len(window_starts(w, o["window"], o["stride"]))
            floor, what = n * floors.best_fwd(), f"{n} windows × fwd (best batch)"
        elif method == "integrated-gradients":
            floor, what = o["steps"] * floors.best_fwdbwd(), f"{o['steps']} steps × fwd+bwd (best batch)"
        else:
            n = o.get("samples_used", o["samples"])
            floor, what = n * floors.best_fwdbwd(), f"{n} samples × fwd+bwd (best batch)"
        return {**out, "floor_s": round(floor, 4), "floor": what, "floors_per_image_s": floors.table()}

    if name in ("extremal", "extremal-3", "meaningful", "extremal-converge", "meaningful-converge"):
        from core.perturbation import masks
        extremal = name.startswith("extremal")
        areas = PAGE_AREAS if name == "extremal-3" else (masks.DEFAULT_AREA,)
        converge = name.endswith("-converge")
        default = masks.EXTREMAL_ITERATIONS if extremal else masks.MEANINGFUL_ITERATIONS
        # the stop is measured at TorchRay's 800 steps at most (extremal): the run must end well before
        steps = (masks.TORCHRAY_ITERATIONS if extremal else default) if converge else (24 if quick else default)
        fn = extremal_perturbation if extremal else meaningful_perturbation
        kw = {"areas": areas} if extremal else {}

        def go(clock):
            r = fn(model, x, target, iterations=steps, converge=converge, progress=clock.progress,
                   preview=clock.preview, **kw)
            return {"steps": r.iterations, "steps_asked": steps, "converged": r.converged}

        out = timed_run(go, repeats)
        # a step's cost between the first and the last progress report (the setup: the pyramid, two forwards,
        # is paid once per run); the whole run's per-step cost next to it
        per_step = out["between_progress_s"] or out["final_s"] / max(1, out["steps"])
        batch = len(areas) if extremal else 1
        floor = batch * floors.fwdbwd(batch)  # fwdbwd() is per image
        return {**out, "per_step_s": round(per_step, 4), "per_step_with_setup_s": round(out["final_s"] / out["steps"], 4),
                "floor_s": round(floor, 4), "floor": f"1 × fwd+bwd (batch {batch}) per step",
                "per_step_over_floor": round(per_step / floor, 3),
                "estimated_default_s": round(per_step * default, 1)}

    if name == "featurevis":
        from core.features.featurevis import Objective, Settings, visualize
        steps = 8 if quick else 32
        s = Settings(steps=steps, coarse=0.0)
        size = model.card.input_size[1]

        def go(clock):
            r = visualize(model, "", target, objective=Objective.LOGIT, settings=s, progress=clock.progress)
            return {"steps": len(r.history)}

        out = timed_run(go, repeats)
        per_step = out["final_s"] / max(1, out["steps"])
        # the step sees the padded, jittered image: pad 12 each side, minus the jitters (8, then 4)
        seen = size + 2 * s.pad - s.jitter - max(1, s.jitter // 2)
        floor = floors.fwdbwd(1, seen)
        return {**out, "per_step_s": round(per_step, 4), "floor_s": round(floor, 4),
                "floor": f"1 × fwd+bwd at {seen}² per full-size step", "per_step_over_floor": round(per_step / floor, 3)}

    if name == "net2vec":
        from core.features.net2vec import fit_concept
        gen = torch.Generator().manual_seed(0)
        acts = torch.randn(35, 192, 28, 28, generator=gen)
        masks_ = acts[:, 3] + acts[:, 9] > 1.5
        iterations = 300

        def go(clock):
            fit_concept(acts, masks_, iterations=iterations)
            return {}

        out = timed_run(go, repeats)
        pixels = (35 + 1) // 2 * 28 * 28  # the fit's training positions: every other image
        a = torch.randn(pixels, 192, generator=gen)
        w = torch.zeros(192)
        g = torch.randn(pixels, generator=gen)

        rows = a.T.contiguous()

        def floor_fn():
            for _ in range(iterations):
                a @ w
                g @ a
            rows.sort(dim=1)  # the single-channel baseline's exact cut search: one sort per channel

        floor = median_time(floor_fn, repeats)
        return {**out, "floor_s": round(floor, 4),
                "floor": f"{iterations} × (a @ w, aᵀ g) on {pixels} × 192 + one sort per channel"}
    raise ValueError(f"unknown technique {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--techniques", default=",".join(TECHNIQUES))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--markdown", action="store_true", help="also print the table (stderr)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    techniques = [t.strip() for t in args.techniques.split(",") if t.strip()]
    unknown = sorted(set(techniques) - set(TECHNIQUES))
    if unknown:
        ap.error(f"unknown technique(s) {', '.join(unknown)}; choose from {', '.join(TECHNIQUES)}")
    repeats = args.repeats or (1 if args.quick else 3)
    out: dict = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "quick": args.quick, "repeats": repeats,
                 "load_average_start": [round(v, 2) for v in os.getloadavg()], "models": {}}
    cat = next(p for p in sample_images() if p.name == "chelsea.jpg")
    for mname in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = load(mname)
        cfg = model.card.data_config
        x = preprocess(load_image(cat), cfg).batch
        with torch.no_grad():
            target = int(model(x).argmax())
        floors = Floors(model, x, repeats=max(3, repeats))
        rows = {}
        for t in techniques:
            if t == "net2vec" and rows.get("net2vec") is None and mname != MODELS[0] and "convnext" in args.models:
                continue  # model-independent: measured once
            # floors again next to each technique: on a shared machine the load drifts within minutes
            floors.fwd_by_batch.clear()
            floors.fwdbwd_by_batch.clear()
            row = run_technique(t, model, x, target, floors, args.quick, repeats)
            if "per_step_over_floor" not in row:
                row["final_over_floor"] = round(row["final_s"] / row["floor_s"], 3)
            if row.get("first_call_s") is not None:
                row["first_call_over_floor"] = round(row["first_call_s"] / row["floor_s"], 3)
            if row.get("first_preview_s") is not None:
                row["first_preview_over_floor"] = round(row["first_preview_s"] / row["floor_s"], 3)
            rows[t] = row
            print(json.dumps({"model": mname, "technique": t, **row}), file=sys.stderr)
        out["models"][model.card.name] = {"techniques": rows}
    out["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(out)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    if args.markdown:
        print(markdown(out), file=sys.stderr)


def markdown(out: dict) -> str:
    lines = ["| model | technique | first preview s | final s | floor | floor s | final / floor |",
             "|---|---|---|---|---|---|---|"]
    for mname, m in out["models"].items():
        for t, r in m["techniques"].items():
            ratio = r.get("final_over_floor")
            if ratio is None:
                ratio = f"{r['per_step_over_floor']} per step ({r['steps']} steps" + (
                    f" of {r['steps_asked']}, converged)" if r.get("converged") else ")")
            if r.get("first_call_over_floor") is not None:
                ratio = f"{ratio} (first call, with its preparation: {r['first_call_over_floor']})"
            lines.append(f"| {mname} | {t} | {r.get('first_preview_s') or '—'} | {r['final_s']} | {r['floor']} | "
                         f"{r['floor_s']} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
