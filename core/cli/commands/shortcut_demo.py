"""``python -m core shortcut-demo``: build the watermark shortcut set and fit its head (the audit's demo)."""
from __future__ import annotations

import argparse

from ...audit.demo import SHORTCUT_HEAD, build_shortcut_set, default_set_dir
from ...errors.fit import fit_head
from ...model.loading import load_model

NAME = "shortcut-demo"
HELP = ("build two classes of the sample photos that differ only by a watermark on part of one, and fit a head on "
        "them (the dataset audit's demo: python -m core audit SET --weights HEAD finds the watermark)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set-dir", default=None, help="where to write the set (default LENS_CACHE_DIR/shortcut-demo)")
    p.add_argument("--out", default=str(SHORTCUT_HEAD),
                   help="head file to write (default assets/demo/shortcut-head.safetensors)")
    p.add_argument("--no-fit", action="store_true", help="only build the set (use the shipped head)")


def run(args: argparse.Namespace) -> dict:
    folder = args.set_dir or str(default_set_dir())
    marked = build_shortcut_set(folder)
    payload = {"set": folder, "marked": marked, "head": args.out, "errors": []}
    if not args.no_fit:
        head = fit_head(load_model("embedded"), folder, args.out)
        payload.update(train_accuracy=head.train_accuracy, bytes=head.path.stat().st_size)
    return payload


def text(payload: dict) -> str:
    return (f"wrote the set to {payload['set']} ({len(payload['marked'])} watermarked images in stamped/)\n"
            f"head: {payload['head']}\n"
            f"try: python -m core audit {payload['set']} --weights {payload['head']} --classes stamped")
