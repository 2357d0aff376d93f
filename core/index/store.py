"""On-disk format of the activation index (:mod:`core.index`).

A directory holds ``manifest.json`` and one ``topk-<id>.npz`` named in the manifest together with its SHA-256.
Per layer the data file holds the activation ranking (:data:`ARRAYS`) and, in an index built with relevance
(its spec has ``"relevance"``: the LRP rules used), the same arrays of the relevance ranking under
``relevance_`` names (:func:`ranking`). Indexes written before the relevance ranking read as they are.
:func:`write` writes the data file under a temporary name and renames it, then the manifest the same way, so a
reader sees either the old index or the new one; the data file the previous manifest named is kept for a reader
that has just read it. :func:`read` checks format, hash and array shapes and raises :class:`IndexCorrupt`.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..catalogue import Geometry, LayerInfo, LayerKind, Layout
from ..files import atomic_write
from ..hashing import file_sha256

FORMAT = 1
MANIFEST = "manifest.json"
ARRAYS = ("values", "images", "pos", "sum", "sumsq")  # (C, k) float32, (C, k) int64, (C, k) int64, (C,), (C,)

RELEVANCE_PREFIX = "relevance_"

Arrays = dict[str, dict[str, np.ndarray]]  # layer name -> array name -> array


def has_relevance(manifest: dict) -> bool:
    """Whether the index keeps the relevance ranking (built with relevance)."""
    return bool(manifest["spec"].get("relevance"))


def ranking(arrays: dict[str, np.ndarray], by: str) -> dict[str, np.ndarray]:
    """One layer's :data:`ARRAYS` of the ranking ``by`` ("activation" or "relevance")."""
    prefix = RELEVANCE_PREFIX if by == "relevance" else ""
    return {n: arrays[prefix + n] for n in ARRAYS}


class IndexCorrupt(Exception):
    """The index on disk is missing, partial or damaged; the message says what (one line)."""


def layer_to_json(layer: LayerInfo) -> dict:
    d = asdict(layer)
    d["kind"], d["layout"] = layer.kind.value, layer.layout.value
    return d


def layer_from_json(d: dict) -> LayerInfo:
    rf = tuple(Geometry(**g) for g in d["rf"])
    return LayerInfo(name=d["name"], type=d["type"], kind=LayerKind(d["kind"]), channels=int(d["channels"]),
                     grid=tuple(d["grid"]), layout=Layout(d["layout"]), reduction=int(d["reduction"]), rf=rf,
                     feature=bool(d["feature"]), depth=int(d["depth"]),
                     prefix=int(d.get("prefix", 0)))  # manifests written before token layers have none


def write(directory: Path, manifest: dict, arrays: Arrays) -> None:
    """Save ``arrays`` (in the order of ``manifest["layers"]``) and ``manifest`` atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    flat = {f"{i}.{k}": v for i, layer in enumerate(manifest["layers"]) for k, v in arrays[layer["name"]].items()}
    data = directory / f"topk-{uuid.uuid4().hex[:12]}.npz"
    atomic_write(data, lambda f: np.savez(f, **flat))
    try:  # a reader that has just read the old manifest may still open its data file: keep that one
        keep = {data.name, json.loads((directory / MANIFEST).read_text())["data"]["file"]}
    except (OSError, ValueError, KeyError, TypeError):
        keep = {data.name}
    manifest = dict(manifest, format=FORMAT, data={"file": data.name, "sha256": file_sha256(data)},
                    updated=time.time())
    atomic_write(directory / MANIFEST, json.dumps(manifest).encode())
    drop_unreferenced(directory, *keep)


def drop_unreferenced(directory: Path, *keep: str) -> None:
    """Delete the data files in ``directory`` other than ``keep`` (those of older manifests)."""
    for old in directory.glob("topk-*.npz"):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def read(directory: Path) -> tuple[dict, Arrays]:
    """The manifest and the arrays of the index in ``directory``, checked.

    Raises:
        IndexCorrupt: no index there, or a missing, partial or damaged file.
    """
    mpath = directory / MANIFEST
    if not mpath.is_file():
        raise IndexCorrupt(f"{directory}: no index here (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text())
        if manifest.get("format") != FORMAT:
            raise IndexCorrupt(f"{directory}: index format {manifest.get('format')!r}, expected {FORMAT}")
        data = directory / manifest["data"]["file"]
        if not data.is_file():
            raise IndexCorrupt(f"{directory}: data file {data.name} is missing")
        if file_sha256(data) != manifest["data"]["sha256"]:
            raise IndexCorrupt(f"{directory}: data file {data.name} is truncated or damaged (hash mismatch)")
        arrays: Arrays = {}
        prefixes = ("", RELEVANCE_PREFIX) if has_relevance(manifest) else ("",)
        with np.load(data, allow_pickle=False) as npz:
            for i, layer in enumerate(manifest["layers"]):
                arrays[layer["name"]] = {p + n: npz[f"{i}.{p}{n}"] for p in prefixes for n in ARRAYS}
        k, n = int(manifest["spec"]["top_k"]), len(manifest["images"])
        for layer in manifest["layers"]:
            a, c = arrays[layer["name"]], int(layer["channels"])
            for p in prefixes:
                if a[p + "values"].shape != (c, k) or a[p + "images"].shape != (c, k) \
                        or a[p + "images"].max(initial=-1) >= n:
                    raise IndexCorrupt(f"{directory}: arrays of {layer['name']} do not match the manifest")
    except IndexCorrupt:
        raise
    except (ValueError, KeyError, TypeError, OSError, EOFError, AttributeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise IndexCorrupt(f"{directory}: unreadable index ({reason})") from None
    return manifest, arrays


def jsonable(obj):
    """``obj`` as it reads back from JSON (tuples become lists, other objects strings): what the manifest holds."""
    return json.loads(json.dumps(obj, default=str))
