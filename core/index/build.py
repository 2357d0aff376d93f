"""Maximally activating patches: a streaming top-k activation index over an image folder.

For each chosen layer and channel the index keeps the ``k`` images whose spatial maximum of that channel is
highest, with the arg-max position (OpenAI Microscope's "dataset examples"). Images stream through in batches,
so memory is O(layers x channels x k) whatever the folder size. Per channel it also keeps the running sum and
sum of squares of the spatial maximum over all images, which gives a selectivity score and lets the reverse
lookup rank channels by how unusual an image's response is.

On disk (:mod:`core.index.store`) a directory holds ``manifest.json`` (model, weights fingerprint,
preprocessing, layers with their receptive-field geometry, every image with size, modification time and
SHA-256) and one ``topk-*.npz`` data file named in the manifest together with its SHA-256. Both are written to temporary files and renamed, data
first, so a reader sees either the old index or the new one. A mismatching hash, a truncated file or an
unreadable manifest raises :class:`IndexCorrupt`; :func:`build_index` then rebuilds and says so.

Patch boxes come from :class:`core.catalogue.LayerInfo` (geometry traced from the architecture) and are mapped
back through the model's resize and crop with the per-image box stored at indexing time, so ``top`` needs no
model.
"""
from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows: no cross-process lock, threads still serialise on the model lock per batch
    fcntl = None
import hashlib
import json
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch

from . import store
from ..catalogue import catalogue, find_layer, layer_outputs
from ..hashing import file_sha256
from ..images import SAMPLES, ImageError, load_image, list_images, preprocess
from ..parallel import ordered_map
from ..progress import Cancel, Progress, is_cancelled, report
from .query import ActivationIndex, IndexCorrupt, open_index, weights_fingerprint
from .topk import TopK, channel_maxima

DEFAULT_TOP_K = 16
MANIFEST = store.MANIFEST
CACHE_ROOT = Path(__file__).resolve().parents[2] / ".lens-cache" / "index"  # the repository root's cache


@dataclass(frozen=True)
class BuildResult:
    index: ActivationIndex
    added: int                    # images forwarded in this run
    skipped: tuple[dict, ...]     # {"image", "error"}: unreadable files (kept out of the index)
    seconds: float
    images_per_second: float
    cancelled: bool
    notes: tuple[str, ...]        # e.g. why an existing index was rebuilt


def default_layers(model) -> tuple[str, ...]:
    """The model's feature stages (ConvNeXt: ``stages.0`` .. ``stages.3``), else its last spatial layer."""
    layers = catalogue(model)
    names = tuple(l.name for l in layers if l.feature)
    return names or (layers[-1].name,)


def default_directory(model, folder: str | os.PathLike | None = None) -> Path:
    """Where the page keeps the index of ``folder`` for ``model`` (under ``.lens-cache/index``)."""
    root = str(Path(folder or SAMPLES).resolve())
    key = json.dumps([weights_fingerprint(model), model.card.data_config, root], sort_keys=True, default=str)
    return CACHE_ROOT / f"{model.card.arch}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def channel_map(model, x: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    """The activation map (h, w) of ``channel`` of ``layer`` for one image ``x`` (1, 3, H, W) in [0, 1]."""
    info = find_layer(model, layer)
    if not 0 <= channel < info.channels:
        raise IndexError(f"channel {channel} out of range: {layer} has {info.channels} channels")
    return layer_outputs(model, x[:1], [info])[layer][0, channel].float()


# ---------------------------------------------------------------------------------------------------- build

def _load_one(root: Path, path: Path, data_config: dict) -> tuple:
    rel = _rel(root, path)
    try:
        st = path.stat()
        data = path.read_bytes()
        inp = preprocess(load_image(data, name=str(path)), data_config)
    except OSError as e:  # vanished or unreadable since the folder was listed
        return rel, os.stat_result((0,) * 10), None, None, f"{path}: cannot read ({e.strerror or e})"
    except ImageError as e:
        return rel, st, None, None, str(e)
    return rel, st, hashlib.sha256(data).hexdigest(), inp, None


def build_index(model, folder: str | os.PathLike | None = None, directory: str | os.PathLike | None = None, *,
                layers: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K, batch_size: int = 16,
                progress: Progress | None = None, cancel: Cancel | None = None, checkpoint_seconds: float = 30.0,
                workers: int | None = None) -> BuildResult:
    """Build the index of ``folder`` for ``model`` in ``directory``, or extend the one already there.

    Images already indexed (same path, size and modification time, or same content hash) are not forwarded
    again; new ones are added. A different model, weights, preprocessing, layer list, ``top_k`` or folder,
    a removed or changed image, or a damaged index means a rebuild, recorded in ``notes``.

    Args:
        model: a LensModel.
        folder: images (searched recursively); default the bundled sample photos.
        directory: where the index lives; default :func:`default_directory`.
        layers: dotted layer names from the model's catalogue; default :func:`default_layers`.
        top_k: images kept per channel.
        batch_size: images per forward pass.
        progress: ``progress(fraction, message)`` after each batch.
        cancel: a ``threading.Event`` or a callable returning True to stop; what was done is saved and
            a later build continues from there.
        checkpoint_seconds: save at least this often during long builds.
        workers: threads that each decode and forward whole batches on a private replica of the model
            (:mod:`core.parallel`); default one per intra-op thread, at most four. Results do not depend on it.

    Raises:
        ValueError: an unknown layer, ``top_k``, ``batch_size`` or ``workers`` below 1. ImageError: ``folder`` is not a folder.
    """
    if top_k < 1 or batch_size < 1 or (workers is not None and workers < 1):
        raise ValueError("top_k, batch_size and workers must be at least 1")
    directory = Path(directory) if directory is not None else default_directory(model, folder or SAMPLES)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+b") as lock:  # one builder per index, across threads and processes
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _build_locked(model, folder, directory, layers=layers, top_k=top_k, batch_size=batch_size,
                                 progress=progress, cancel=cancel, checkpoint_seconds=checkpoint_seconds,
                                 workers=workers)
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _build_locked(model, folder, directory: Path, *, layers, top_k, batch_size, progress, cancel,
                  checkpoint_seconds, workers) -> BuildResult:
    say = partial(report, progress)
    root = Path(folder or SAMPLES).resolve()
    paths = list_images(root)
    infos = []
    for name in dict.fromkeys(layers or default_layers(model)):
        try:
            infos.append(find_layer(model, name))
        except KeyError as e:
            raise ValueError(e.args[0]) from None
    order = [l.name for l in catalogue(model)]
    infos.sort(key=lambda l: order.index(l.name))
    spec = store.jsonable({"model": model.card.name, "arch": model.card.arch, "fingerprint": weights_fingerprint(model),
                      "data_config": model.card.data_config, "layers": [l.name for l in infos], "top_k": top_k})
    notes: list[str] = []
    old = None
    if (directory / MANIFEST).exists():
        try:
            old = open_index(directory)
        except IndexCorrupt as e:
            notes.append(f"rebuilding: {e}")
    if old is not None:
        reason = _incompatible(old, spec, root, paths)
        if reason:
            notes.append(f"rebuilding: {reason}")
            old = None

    t0 = time.perf_counter()
    if old is None:
        states = {l.name: TopK(l.channels, top_k) for l in infos}
        images: list[dict] = []
        skipped_prev: list[dict] = []
    else:
        states = {l.name: TopK(l.channels, top_k, old._arrays[l.name]) for l in infos}
        images = list(old.manifest["images"])
        skipped_prev = list(old.manifest.get("skipped", ()))
    indexed = {i["path"] for i in images}
    bad_before = {_skipped_key(s): s for s in skipped_prev}
    todo, skipped_prev = [], []
    for p in paths:
        try:
            st = p.stat()
        except OSError:  # vanished since listing
            continue
        key = (_rel(root, p), st.st_size, st.st_mtime_ns)
        if key[0] in indexed:
            continue
        if key in bad_before:  # unreadable last time and untouched since
            skipped_prev.append(bad_before[key])
        else:
            todo.append(p)
    manifest = {"spec": spec, "root": str(root), "layers": [store.layer_to_json(l) for l in infos],
                "created": old.manifest.get("created") if old else time.time()}
    new_skipped: list[dict] = []
    added, cancelled, last_save = 0, False, time.perf_counter()

    def save():
        store.write(directory, dict(manifest, images=images, skipped=skipped_prev + new_skipped),
                    {name: state.arrays() for name, state in states.items()})

    say(0.0, f"{len(paths) - len(todo)} of {len(paths)} images already indexed" if old else f"indexing {len(todo)} images")
    chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    data_config = model.card.data_config
    results = ordered_map(model, lambda replica, chunk: _index_batch(replica, root, infos, data_config, chunk),
                          chunks, workers=workers)
    done = 0
    try:
        for loaded, maxima in results:
            ids = torch.arange(len(images), len(images) + sum(error is None for *_, error in loaded))
            for name, (values, pos) in maxima.items():
                states[name].update(values, pos, ids)
            for rel, st, sha, inp, error in loaded:
                if error is not None:
                    new_skipped.append({"image": str(root / rel), "path": rel, "bytes": st.st_size,
                                        "mtime_ns": st.st_mtime_ns, "error": error})
                else:
                    images.append({"path": rel, "size": list(inp.original_size), "bytes": st.st_size,
                                   "mtime_ns": st.st_mtime_ns, "sha256": sha, "box": list(inp.box)})
            added += len(ids)
            done += len(loaded)
            say(done / max(1, len(todo)), f"indexed {done} of {len(todo)} new images")
            if is_cancelled(cancel):
                cancelled = True
                break
            if time.perf_counter() - last_save > checkpoint_seconds:
                save()
                last_save = time.perf_counter()
    finally:
        results.close()
    seconds = time.perf_counter() - t0
    save()
    say(1.0, "index saved" if not cancelled else f"cancelled: {len(images)} images indexed so far")
    return BuildResult(open_index(directory), added, tuple({"image": s["image"], "error": s["error"]} for s in new_skipped),
                       seconds, added / seconds if seconds > 0 else 0.0, cancelled, tuple(notes))


def _rel(root: Path, p: Path) -> str:
    return str(p.relative_to(root))


def _skipped_key(s: dict) -> tuple:
    return (s["path"], s["bytes"], s["mtime_ns"])


def _index_batch(replica, root: Path, infos, data_config: dict, paths: list[Path]) -> tuple[list[tuple], dict]:
    """Decode ``paths`` and forward the readable ones: their records (with errors) and per-layer maxima."""
    loaded = [_load_one(root, p, data_config) for p in paths]
    good = [inp for *_, inp, error in loaded if error is None]
    if not good:
        return loaded, {}
    outs = layer_outputs(replica, torch.stack([inp.tensor for inp in good]), infos)
    return loaded, {info.name: channel_maxima(outs[info.name]) for info in infos}


def _incompatible(old: ActivationIndex, spec: dict, root: Path, paths: list[Path]) -> str | None:
    """Why ``old`` cannot be extended (None when it can)."""
    if old.spec["fingerprint"] != spec["fingerprint"] or old.spec["arch"] != spec["arch"]:
        return f"the index was built with other weights ({old.spec['model']}, {old.spec['fingerprint'][:24]})"
    for key, what in (("data_config", "preprocessing"), ("layers", "layer list"), ("top_k", "top-k")):
        if old.spec[key] != spec[key]:
            return f"the {what} changed ({old.spec[key]} -> {spec[key]})"
    if old.root != root:
        return f"the index was built over another folder ({old.root})"
    present = {_rel(root, p): p for p in paths}
    gone, changed = 0, 0
    for img in old.images:
        p = present.get(img.path)
        if p is None:
            gone += 1
            continue
        st = p.stat()
        if (st.st_size, st.st_mtime_ns) != (img.bytes, img.mtime_ns) and file_sha256(p) != img.sha256:
            changed += 1
    if gone or changed:
        return f"{gone} indexed images were removed and {changed} changed (a top-k cannot forget an image)"
    return None
