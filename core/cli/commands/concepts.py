"""``python -m core concepts``: concept relevance of a layer's channels, with their conditional heat maps."""
from __future__ import annotations

import argparse
import time

import numpy as np

from ...concepts.relevance import resolve_layer
from ...concepts.spec import CONCEPTS, EXAMPLES, run_concepts
from ...spec import model_context
from .. import CliError, add_model_options, model_from_args, out_path, read_inputs

NAME = "concepts"
EXAMPLES_N = 6  # dataset examples per channel with --index
HELP = "concept relevance: which channels of a layer carried the class, and where (LRP split by channel)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The images, the flags generated from :data:`core.concepts.spec.CONCEPTS` and the outputs."""
    p.add_argument("images", nargs="+", metavar="IMAGE")
    CONCEPTS.add_arguments(p)
    p.add_argument("--out-dir", default=None,
                   help="write each channel's conditional map as <stem>_<layer>_c<channel>.npy (float32 HxW at "
                        "model resolution) and .png (overlay with colour bar)")
    p.add_argument("--index", default=None, metavar="PATH",
                   help="an activation index folder: add each channel's dataset examples from it")
    EXAMPLES.add_arguments(p)  # --examples-by
    add_model_options(p)


def _values(args: argparse.Namespace, model) -> dict:
    context = model_context(model)
    try:
        values = CONCEPTS.from_args(args, context)
        info = resolve_layer(model, values["layer"])
        channels = []
        for c in values.get("channels") or ():
            try:
                channels.append(int(c))
            except ValueError:
                raise ValueError(f"--channels takes channel indices, not {c!r}") from None
        bad = [c for c in channels if not 0 <= c < info.channels]
        if bad:
            raise ValueError(f"--channels: {bad[0]} is not a channel of {info.name} (0 to {info.channels - 1})")
        if values["top"] < 1:
            raise ValueError("--top must be at least 1")
        return CONCEPTS.complete({**values, "layer": info.name, "channels": tuple(channels)}, context)
    except ValueError as e:
        raise CliError(str(e)) from None


def run(args: argparse.Namespace) -> dict:
    model = model_from_args(args)
    values = _values(args, model)
    by = EXAMPLES.from_args(args, {})["examples_by"]
    index = _open_index(args.index, model, values["layer"], by) if args.index else None
    good, errors = read_inputs(args.images, model)
    results = []
    for path, inp in good:
        started = time.perf_counter()
        result = run_concepts(model, inp.tensor, values)
        results.append(_entry(model, path, inp.tensor, result, args.out_dir, index, by,
                              time.perf_counter() - started))
    return {"model": model.card.name, "layer": values["layer"], "results": results, "errors": errors}


def _entry(model, path: str, image, result, out_dir: str | None, index, by: str, seconds: float) -> dict:
    rel, maps = result.relevance, result.maps
    target = int(rel.target[0])
    channels = []
    for k, chosen in enumerate(maps.channels[0]):
        entry = {"channel": chosen[0] if len(chosen) == 1 else list(chosen),
                 "relevance": float(rel.relevance[0, list(chosen)].sum()),
                 "share": float(rel.share[0, list(chosen)].sum())}
        if out_dir:
            entry["map"] = _write_map(out_dir, path, rel.layer.name, chosen, maps, k, image, target)
        if index is not None and len(chosen) == 1:
            entry["examples"] = [_example(p) for p in EXAMPLES.run(model, (index, rel.layer.name, chosen[0],
                                                                            EXAMPLES_N), {"examples_by": by})]
        channels.append(entry)
    return {"image": path, "target": target, "label": model.label(target),
            "contrast": None if rel.contrast is None else int(rel.contrast[0]),
            "total_relevance": float(rel.total[0]), "channels": channels, "seconds": round(seconds, 4)}


def _example(patch) -> dict:
    """One dataset example: relevance-ranked ones carry their relevance, activation-ranked ones their activation
    (and a null relevance)."""
    row = {"image": str(patch.image), "box": list(patch.box), "relevance": None}
    row[patch.by] = patch.value
    return row


def _write_map(out_dir: str, image_path: str, layer: str, chosen, maps, k: int, image, target: int) -> str:
    from ...attribution.view import figure
    from ...render import png_bytes

    suffix = f"_{layer.replace('.', '-')}_c{'+'.join(map(str, chosen))}"
    npy = out_path(out_dir, image_path, suffix + ".npy")
    np.save(npy, maps.maps[0, k].numpy().astype(np.float32))
    picture, _ = figure(maps.attribution(k, 0, target), image)
    npy.with_suffix(".png").write_bytes(png_bytes(picture))
    return str(npy)


def _open_index(path: str, model, layer: str, by: str):
    from ...index import IndexCorrupt, check_model, open_index

    try:
        index = open_index(path)
        check_model(index, model)
    except (IndexCorrupt, OSError, ValueError) as e:
        raise CliError(f"--index {path}: {e}") from None
    if layer not in index.layers:
        raise CliError(f"--index {path} has no layer {layer} (it has {', '.join(index.layers)})")
    if by == "relevance" and not index.has_relevance:
        raise CliError(f"--index {path} has no relevance ranking: rebuild it with python -m core index build FOLDER "
                       f"--relevance --out {path}, or pass --examples-by activation")
    return index


def text(payload: dict) -> str:
    lines = [f"model {payload['model']}, layer {payload['layer']}"]
    for r in payload["results"]:
        against = f" against {r['contrast']}" if r["contrast"] is not None else ""
        lines.append(f"{r['image']}: {r['label']} ({r['target']}){against}, total relevance "
                     f"{r['total_relevance']:.4g} ({r['seconds']:.2f} s)")
        for c in r["channels"]:
            lines.append(f"  channel {c['channel']}: {c['share']:+.1%} ({c['relevance']:.4g})"
                         + (f"  -> {c['map']}" if c.get("map") else ""))
    return "\n".join(lines)
