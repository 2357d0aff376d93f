"""``python -m core report``: one self-contained HTML report (model, image, prediction, attribution maps)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ...attribution.registry import REGISTRY
from ...report import render_html
from ...report.spec import REPORT, ReportImage, run_report
from ...spec import model_context
from .. import CliError, add_model_options, model_from_args, read_inputs

NAME = "report"
HELP = "a self-contained HTML report (opens offline) of one image: prediction and attribution maps"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The image, the flags of :data:`core.report.spec.REPORT` (``--methods``, ``--target``) and the output."""
    p.add_argument("image", metavar="IMAGE")
    REPORT.add_arguments(p)
    add_model_options(p)
    p.add_argument("--out", required=True, metavar="FILE.html", help="where to write the report")


def run(args: argparse.Namespace) -> dict:
    unknown = [m for m in args.methods if m not in REGISTRY]
    if unknown:
        raise CliError(f"unknown method {unknown[0]!r} (choose from {', '.join(REGISTRY)})")
    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out {out} is a folder; give a file name such as report.html")
    model = model_from_args(args)
    try:
        values = REPORT.from_args(args, model_context(model))
    except ValueError as e:
        raise CliError(str(e)) from None
    good, bad = read_inputs([args.image], model)
    if not good:
        raise CliError(bad[0]["error"])
    _, inp = good[0]
    made = run_report(model, ReportImage(args.image, inp), values)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(card=model.card, image=inp.tensor, image_name=Path(args.image).name,
                               prediction=made["prediction"], items=made["items"], notice=model.card.notice),
                   encoding="utf-8")
    return {"report": str(out), "results": made["results"], "errors": made["errors"]}


def text(payload: dict) -> str:
    lines = [f"wrote {payload['report']}"]
    lines += [f"  {r['method']}: {r['seconds']:.2f} s" for r in payload["results"]]
    return "\n".join(lines)
