"""``python -m core index build|top``: the maximally-activating-patches index."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from ...index import IndexCorrupt, IndexStale, default_directory, open_index
from ...index.ray_engine import EngineUnavailable  # imports no ray (that happens when the engine runs)
from ...index.spec import BUILD, TOP, build_context, run_build
from .. import CliError, add_model_options, model_from_args
from ...images import ImageError

NAME = "index"
HELP = "build a top-k activation index over an image folder, or query its maximally activating patches"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="index a folder (or add its new images to an existing index)")
    b.add_argument("folder", metavar="FOLDER", help="image folder, searched recursively")
    BUILD.add_arguments(b)  # --layers, --top-k, --batch-size, --engine, --relevance
    b.add_argument("--workers", type=int, default=None,
                   help="batches decoded and forwarded side by side, each on its share of torch's threads "
                        "(default: one per thread, at most 4; 1 saves memory)")
    b.add_argument("--address", default=None, metavar="auto|ray://HOST:PORT",
                   help="the Ray cluster (--engine ray; default: start a local Ray)")
    b.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="--engine ray: model actors (default 1); --engine local: same as --workers")
    b.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="--engine ray: GPUs per model actor; above 0 the model runs on CUDA (default 0: CPU)")
    add_model_options(b)
    b.add_argument("--out", default=None, metavar="DIR",
                   help="index directory (default LENS_CACHE_DIR/index/<model>-<key>; LENS_CACHE_DIR defaults to "
                        ".lens-cache at the project root)")
    t = sub.add_parser("top", help="the top patches of one channel")
    t.add_argument("index", metavar="DIR")
    TOP.add_arguments(t)  # --layer, --channel, --k, --by
    t.add_argument("--out-dir", default=None, metavar="D", help="write the patch crops here as PNG files")
    for q in (b, t):  # SUPPRESS: `index --json build` must not be reset by the subparser's default
        q.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")


def run(args: argparse.Namespace) -> dict:
    return _build(args) if args.action == "build" else _top(args)


def _build(args: argparse.Namespace) -> dict:
    if args.num_workers is not None and args.workers is not None and args.num_workers != args.workers:
        raise CliError("--workers and --num-workers disagree: give one")
    workers = args.num_workers if args.num_workers is not None else args.workers
    if any(v is not None and v < 1 for v in (args.top_k, args.batch_size, workers)):
        raise CliError("--top-k, --batch-size and --workers/--num-workers must be at least 1")
    engine = BUILD.from_args(args, {})["engine"]  # before the model loads
    if (args.address is not None or args.gpus_per_worker) and engine != "ray":
        raise CliError("--address and --gpus-per-worker need --engine ray")
    if args.gpus_per_worker < 0:
        raise CliError("--gpus-per-worker must be 0 or more")
    if engine == "ray":  # fail fast, before the model loads, when ray is missing or the cluster is not there
        from ...index import ray_engine

        try:
            ray_engine.connect(args.address)
        except EngineUnavailable as e:
            raise CliError(str(e)) from None
    model = model_from_args(args)
    values = BUILD.from_args(args, build_context(model))
    out = args.out or str(default_directory(model, args.folder))
    stop = threading.Event()
    last = [time.monotonic()]

    def progress(fraction: float, message: str) -> None:
        if time.monotonic() - last[0] > 10:
            print(f"{fraction:5.1%} {message}", file=sys.stderr)
            last[0] = time.monotonic()

    def interrupt(_sig, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        print("stopping after this batch and saving (Ctrl-C again to abort)", file=sys.stderr)
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        result = run_build(model, args.folder, values, directory=out, progress=progress, cancel=stop,
                           workers=workers, address=args.address, gpus_per_worker=args.gpus_per_worker)
    except ValueError as e:
        raise CliError(str(e)) from None
    except EngineUnavailable as e:  # ray missing, cluster unreachable, a worker failed
        raise CliError(str(e)) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    index = result.index
    return {"index": out, "images": len(index), "layers": list(index.layers), "seconds": round(result.seconds, 3),
            "images_per_second": round(result.images_per_second, 2), "added": result.added,
            "cancelled": result.cancelled, "skipped": list(result.skipped), "notes": list(result.notes),
            "model": index.spec["model"], "fingerprint": index.spec["fingerprint"], "top_k": index.top_k,
            "engine": values["engine"], "workers": index.manifest["build"]["workers"],
            "relevance": index.has_relevance}


def _top(args: argparse.Namespace) -> dict:
    try:
        index = open_index(args.index)
    except IndexCorrupt as e:
        raise CliError(f"{e}; rebuild it with: python -m core index build FOLDER --out {args.index}") from None
    if args.k is not None and args.k < 1:
        raise CliError("--k must be at least 1")
    values = TOP.from_args(args, {})
    try:
        patches = TOP.run(None, index, values)
    except (KeyError, IndexError, ValueError) as e:  # a layer or channel not indexed; no relevance ranking
        raise CliError(e.args[0]) from None
    rows, errors = [], []
    for patch in patches:
        row = patch.as_dict()
        if args.out_dir:
            from .. import out_path

            path = out_path(args.out_dir, f"{patch.rank:02d}_{patch.image.stem}", ".png")
            try:
                index.crop(patch).save(path)
                row["crop"] = str(path)
            except (IndexStale, ImageError) as e:
                errors.append({"image": str(patch.image), "error": str(e)})
        rows.append(row)
    payload = {"layer": args.layer, "channel": args.channel, "by": values["by"], "patches": rows}
    payload["errors"] = errors
    return payload


def text(payload: dict) -> str:
    if "patches" not in payload:
        lines = [f"indexed {payload['images']} images ({payload['added']} new) in {payload['seconds']:.1f} s "
                 f"({payload['images_per_second']:.1f} images/s, {payload['engine']} engine, "
                 f"{payload['workers']} workers{', with the relevance ranking' if payload['relevance'] else ''}) "
                 f"-> {payload['index']}",
                 f"layers: {', '.join(payload['layers'])}"]
        lines += [f"skipped {s['image']}: {s['error']}" for s in payload["skipped"]]
        if payload["cancelled"]:
            lines.append("cancelled: run the same command again to continue")
        return "\n".join(lines)
    lines = [f"{payload['layer']} channel {payload['channel']}, by {payload['by']}"]
    for i, p in enumerate(payload["patches"]):
        lines.append(f"{i:3d}  {p['value']:9.4f}  grid ({p['y']}, {p['x']})  box {tuple(p['box'])}  {p['image']}")
    return "\n".join(lines)
