"""A report to hand on: one self-contained HTML file (no streamlit; images inline as data URIs).

Build :class:`ReportItem` values (one per pinned result: :func:`attribution_item` for attribution maps, or
directly for anything else), then :func:`render_html` writes the page: model card and fingerprint, the image,
the prediction, each result with its settings, seed, timing and figures, the versions of the app and its
libraries, and for each result the ``python -m core`` command that reproduces it. The page makes no external
request (no scripts, fonts or stylesheets from elsewhere), so it opens offline.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import platform
import shlex
from dataclasses import dataclass, field
from importlib import metadata
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ..commandline import other_model_args
from ..render import image_uint8
from ..spec import model_args, repo_path

APP = "convnext-lens"
LIBRARIES = ("torch", "torchvision", "timm", "numpy", "pillow", "captum", "streamlit")


@dataclass(frozen=True)
class ReportItem:
    """One pinned result.

    Attributes:
        title: heading, e.g. "SmoothGrad for tabby (281)".
        figure: uint8 (H, W, 3) picture shown in the report (a colour bar included where it has one), or None
            for a result that is a table only.
        caption: what the colours/panels mean.
        settings: the options used (after defaults).
        command: the ``python -m core ...`` command that reproduces it ("" when none exists).
        seconds: compute time.
        seed: the random seed, or None for deterministic methods.
        figures: numbers worth quoting (faithfulness, relevance sums, probabilities), name -> value.
        notes: one-line facts or warnings shown under the result.
        table: rows (column -> value, the first row's columns head the table), e.g. per-class precision/recall.
    """

    title: str
    figure: np.ndarray | None
    caption: str = ""
    settings: Mapping[str, object] = field(default_factory=dict)
    command: str = ""
    seconds: float = 0.0
    seed: int | None = None
    figures: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    table: tuple[Mapping[str, object], ...] = ()


def versions() -> dict[str, str]:
    """The app's and its libraries' versions: the running module's own where it is imported (torch's carries
    its build, e.g. ``+cpu``), else the installed distribution's; nothing is imported."""
    import sys

    out = {APP: _version(APP), "python": platform.python_version()}
    for name in LIBRARIES:
        module = sys.modules.get("PIL" if name == "pillow" else name)
        out[name] = str(getattr(module, "__version__", "") or _version(name))
    return out


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        if dist == APP:
            return _pyproject_version()
        return "not installed"


def _pyproject_version() -> str:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        for line in path.read_text().splitlines():
            if line.startswith("version"):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def attribute_command(method: str, image: str, card, target: int | None, options: Mapping[str, object], *,
                      other=None) -> str:
    """The exact ``python -m core attribute`` command for one attribution (``target`` None: the predicted class).

    Every option the method declares (its :class:`~core.attribution.spec.Option`, from which the CLI flags are
    generated) is written out with the value used, so later changes of a default do not change the result.
    ``other``: the card of a second model explained next to the first (``--other-model``).
    """
    args = ["python", "-m", "core", "attribute", image, "--method", method]
    args += ["--target", str(int(target))] if target is not None else []
    args += _option_args(method, options) + model_args(card) + (other_model_args(other) if other is not None else [])
    return " ".join(shlex.quote(a) for a in args)


def _option_args(method: str, options: Mapping[str, object]) -> list[str]:
    """The CLI flags of every declared option of ``method`` in ``options`` (undeclared ones and None skipped)."""
    from ..attribution.registry import REGISTRY

    declared = {opt.name: opt for opt in REGISTRY[method].options} if method in REGISTRY else {}
    args = []
    for name, value in options.items():
        opt = declared.get(name)
        if opt is None or value is None:
            continue
        value = getattr(value, "value", value)
        args += [opt.cli_flag, ("yes" if value else "no") if isinstance(value, bool) else str(value)]
    return args


def contrast_command(image: str, card, *, method: str, predicted: int, true: int,
                     options: Mapping[str, object]) -> str:
    """``python -m core contrast`` for one "Why?" row of the Error analysis page: ``method``'s map for the
    predicted class, for the true class and their contrast, every declared option written out (as
    :func:`attribute_command`)."""
    args = ["python", "-m", "core", "contrast", image, "--true", str(int(true)), "--predicted", str(int(predicted)),
            "--method", method, *_option_args(method, options), *model_args(card)]
    return " ".join(shlex.quote(a) for a in args)




def _command(sub: str, image: str | None, card, pairs: Sequence[tuple[str, object]], flags: Sequence[str] = (),
             *, model: bool = True) -> str:
    args = ["python", "-m", "core", *sub.split(), *([image] if image is not None else [])]
    for flag, value in pairs:
        if value is not None:
            args += [flag, str(getattr(value, "value", value))]
    args += list(flags) + (model_args(card) if model else [])
    return " ".join(shlex.quote(a) for a in args)


def predict_command(image: str, card, *, top: int = 5) -> str:
    """``python -m core predict`` for the top ``top`` classes of one image."""
    return _command("predict", image, card, [("--top", int(top))])


def attribution_item(model, image: "torch.Tensor", attr, *, image_arg: str, title: str | None = None,  # noqa: F821
                     clip_percentile: float | None = None) -> ReportItem:
    """A :class:`ReportItem` for an :class:`~core.attribution.base.Attribution` of one image.

    Args:
        model: the LensModel that produced ``attr``.
        image: (3, H, W) in [0, 1], the model input the map is aligned with.
        attr: the attribution (its first image is used).
        image_arg: the image path to put in the reproducing command.
        clip_percentile: the colour scale's top (None: the attribution view's default).
    """
    from ..attribution.view import View, figure

    target = int(attr.target[0])
    clip = {} if clip_percentile is None else {"clip_percentile": clip_percentile}
    pic, scale = figure(attr, image, view=View.OVERLAY, **clip)
    options = dict(attr.options)
    seed = options.get("seed") if "seed" in options else None
    figures = {name: float(values[0]) for name, values in attr.metrics.items()}
    return ReportItem(
        title=title or f"{attr.method} for {model.label(target)} ({target})", figure=pic,
        caption=f"Overlay on the model input; {scale.describe()}.",
        settings={"method": attr.method, "target": target, **{k: getattr(v, "value", v) for k, v in options.items()}},
        command=attribute_command(attr.method, image_arg, model.card, target, options),
        seconds=float(attr.seconds), seed=None if seed is None else int(seed), figures=figures,
        notes=tuple(attr.notes))


def data_uri(picture) -> str:
    """``data:image/png;base64,...`` of a uint8 (H, W, 3) array, a PIL image or a (3, H, W) tensor in [0, 1]."""
    img = picture if isinstance(picture, Image.Image) else Image.fromarray(image_uint8(picture))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#212529;line-height:1.45}h1{margin-bottom:.1em}h2{border-bottom:1px solid #dee2e6;padding-bottom:.2em;
margin-top:1.8em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #dee2e6;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f1f3f5}img{max-width:100%;image-rendering:auto}
.fig{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start}.muted{color:#6c757d}.note{background:#fff3bf;
padding:.3em .6em;border-radius:4px}code,pre{background:#f1f3f5;border-radius:4px}pre{padding:.6em;white-space:pre-wrap;
word-break:break-all}section{page-break-inside:avoid}
"""


def _table(rows: Mapping[str, object]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{body}</table>"


def _rows_table(rows: Sequence[Mapping[str, object]]) -> str:
    """An HTML table with a header row (the first row's columns); None is shown as "-"."""
    if not rows:
        return ""
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('-' if r.get(c) is None else _fmt(r.get(c)))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(getattr(v, "value", v))


def model_card_rows(card) -> dict[str, object]:
    return {
        "model": card.name, "architecture": card.arch,
        "weights": f"{getattr(card.weights, 'value', card.weights)} ({card.weights_detail})",
        "fingerprint": card.fingerprint, "parameters": f"{card.num_params / 1e6:.2f} M",
        "classes": card.num_classes, "input size": "x".join(str(s) for s in card.input_size),
        "preprocessing": card.preprocessing,
    }


def render_html(*, card, image, image_name: str, prediction: Sequence[Mapping[str, object]],
                items: Sequence[ReportItem], title: str = "ConvNeXt Lens report",
                notice: str | None = None, created: _dt.datetime | None = None) -> str:
    """The report as one HTML string.

    Args:
        card: the model's ModelCard.
        image: the model input (3, H, W) in [0, 1], a PIL image or a uint8 array.
        image_name: shown under the image (a file name; an upload's name).
        prediction: top classes as dicts with ``index``, ``label``, ``prob`` (in [0, 1]).
        items: the pinned results, in order.
        notice: e.g. the model card's fallback notice.
    """
    created = created or _dt.datetime.now(_dt.timezone.utc)
    esc = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{esc(title)}</h1><p class='muted'>{esc(card.name)} on {esc(image_name)}; created "
             f"{created.strftime('%Y-%m-%d %H:%M UTC')}; {len(items)} result{'s' * (len(items) != 1)}.</p>"]
    if notice:
        parts.append(f"<p class='note'>{esc(notice)}</p>")
    pred_rows = "".join(f"<tr><td>{esc(str(c['label']))} ({int(c['index'])})</td><td>{float(c['prob']):.1%}</td></tr>"
                        for c in prediction)
    parts.append(
        "<h2>Image and prediction</h2><div class='fig'>"
        f"<figure><img alt='{esc(image_name)}' src='{data_uri(image)}' width='320'>"
        f"<figcaption class='muted'>{esc(image_name)} as the model sees it</figcaption></figure>"
        f"<div><table><tr><th>class</th><th>probability</th></tr>{pred_rows}</table></div></div>")
    parts.append("<h2>Model</h2>" + _table(model_card_rows(card)))
    for i, item in enumerate(items, 1):
        settings = dict(item.settings)
        if item.seed is not None:
            settings.setdefault("seed", item.seed)
        settings["time"] = f"{item.seconds:.2f} s"
        figures = _table(item.figures) if item.figures else ""
        notes = "".join(f"<p class='note'>{esc(n)}</p>" for n in item.notes)
        command = (f"<p>Reproduce it:</p><pre><code>{esc(item.command)}</code></pre>" if item.command
                   else "<p class='muted'>No command-line equivalent.</p>")
        parts.append(
            f"<section><h2>{i}. {esc(item.title)}</h2><div class='fig'>"
            + (f"<figure><img alt='{esc(item.title)}' src='{data_uri(item.figure)}'>"
               f"<figcaption class='muted'>{esc(item.caption)}</figcaption></figure>" if item.figure is not None
               else f"<p class='muted'>{esc(item.caption)}</p>") +
            f"<div>{_table(settings)}{figures}{_rows_table(item.table)}</div></div>{notes}{command}</section>")
    parts.append("<h2>Versions</h2>" + _table(versions()))
    parts.append("</body></html>")
    return "".join(parts)


__all__ = ["ReportItem", "attribute_command", "attribution_item", "contrast_command", "data_uri",
           "repo_path", "model_args", "model_card_rows", "other_model_args", "predict_command", "render_html",
           "versions"]
