"""Maximally activating patches: a streaming top-k activation index over an image folder.

For each chosen layer and channel the index keeps the ``k`` images whose spatial maximum of that channel is
highest, with the arg-max position (OpenAI Microscope's "dataset examples"). Images stream through in batches,
so memory is O(layers x channels x k) whatever the folder size. Per channel it also keeps the running sum and
sum of squares of the spatial maximum over all images, which gives a selectivity score and lets the reverse
lookup rank channels by how unusual an image's response is.

On disk (:mod:`core.index.store`) a directory holds ``manifest.json`` (model, weights fingerprint, preprocessing, layers with their
receptive-field geometry, every image with size, modification time and SHA-256) and one ``topk-*.npz`` data
file named in the manifest together with its SHA-256. Both are written to temporary files and renamed, data
first, so a reader sees either the old index or the new one. A mismatching hash, a truncated file or an
unreadable manifest raises :class:`IndexCorrupt`; :func:`build_index` then rebuilds and says so.

Patch boxes come from :class:`core.catalogue.LayerInfo` (geometry traced from the architecture) and are mapped
back through the model's resize and crop with the per-image box stored at indexing time, so ``top`` needs no
model.

With ``relevance`` the index also keeps, per channel, the top-k images by relevance maximisation (Achtibat et al.
2023): the channel's LRP relevance for the image's predicted class, summed over positions, with the position
where that channel's relevance is highest (the patch is cropped there). One LRP pass per batch gives both rankings
(:func:`core.index.passes.forward_partials`).
"""
from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows: no cross-process lock (two builders of one index are not serialised there)
    fcntl = None
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from . import store
from ..catalogue import catalogue, find_layer, layer_outputs
from ..files import cache_path
from ..hashing import file_sha256
from ..images import SAMPLES, list_images
from ..model.device import model_device
from ..model.identity import model_identity
from ..parallel import default_workers, ordered_map
from ..progress import Progress, is_cancelled
from .passes import RELEVANCE, forward_partials, read_image, relative
from .query import ActivationIndex, IndexCorrupt, open_index
from .topk import TopK


DEFAULT_TOP_K = 16
DEFAULT_BATCH_SIZE = 16  # images per worker task (forwarded in the measured batch: core.batching)
MANIFEST = store.MANIFEST


@dataclass(frozen=True)
class BuildResult:
    index: "ActivationIndex"
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
    """Where the page keeps the index of ``folder`` for ``model``: ``index/<arch>-<key>`` under the cache root
    (``LENS_CACHE_DIR``, read now; :func:`core.files.cache_path`)."""
    return cache_path("index") / model_identity(model).directory(str(Path(folder or SAMPLES).resolve()))


def channel_map(model, x: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    """The activation map (h, w) on the CPU of ``channel`` of ``layer`` for one image ``x`` (1, 3, H, W) in [0, 1]."""
    info = find_layer(model, layer)
    if not 0 <= channel < info.channels:
        raise IndexError(f"channel {channel} out of range: {layer} has {info.channels} channels")
    a = layer_outputs(model, x[:1].to(model_device(model)), [info])[layer][0, channel].float()
    return a.cpu()  # comes back to the CPU for display


# ---------------------------------------------------------------------------------------------------- build

def _local_batches(model, root: Path, infos, todo: list[Path], *, batch_size: int, top_k: int, workers,
                   relevance: bool):
    """The local engine: thread workers on model replicas (:mod:`core.parallel`), batches in order."""
    data_config = model.card.data_config

    def one(replica, chunk):
        loaded = [read_image(root, p, data_config) for p in chunk]
        good = [inp.tensor for _, inp in loaded if inp is not None]
        return [r for r, _ in loaded], (forward_partials(replica, infos, torch.stack(good), top_k,
                                                         relevance=relevance) if good else {})

    chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    return ordered_map(model, one, chunks, workers=workers)


ENGINES = ("local", "ray")


def build_index(model, folder: str | os.PathLike | None = None, directory: str | os.PathLike | None = None, *,
                layers: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K, batch_size: int = DEFAULT_BATCH_SIZE,
                progress: Progress | None = None, cancel=None, checkpoint_seconds: float = 30.0,
                workers: int | None = None, engine: str = "local", address: str | None = None,
                gpus_per_worker: float = 0.0, relevance: bool = False) -> BuildResult:
    """Build the index of ``folder`` for ``model`` in ``directory``, or extend the one already there.

    Images already indexed (same path, size and modification time, or same content hash) are not forwarded
    again; new ones are added. A different model, weights, preprocessing, layer list, ``top_k`` or folder,
    a removed or changed image, a relevance ranking asked of an index without one, or a damaged index means a
    rebuild, recorded in ``notes``.

    Args:
        model: a LensModel.
        folder: images (searched recursively); default the bundled sample photos.
        directory: where the index lives; default :func:`default_directory`.
        layers: dotted layer names from the model's catalogue; default :func:`default_layers`.
        top_k: images kept per channel.
        batch_size: images decoded per worker task (and per progress report); the forward passes run in the
            measured batch (:func:`core.batching.forward_batch`), the relevance passes in ``RELEVANCE_BATCH``.
        progress: ``progress(fraction, message)`` after each batch.
        cancel: a ``threading.Event`` or a callable returning True to stop; what was done is saved and
            a later build continues from there.
        checkpoint_seconds: save at least this often during long builds.
        workers: threads that each decode and forward whole batches on a private replica of the model
            (:mod:`core.parallel`); default one per intra-op thread, at most four. Results do not depend on it.
            With ``engine="ray"``: the number of model actors (default 1).
        engine: ``"local"`` (threads in this process) or ``"ray"`` (Ray Data on a cluster:
            :mod:`core.index.ray_engine`; needs ``requirements-ray.txt``). Both write the same index.
        address: the Ray cluster (``"auto"``, ``"ray://HOST:PORT"``); None starts a local Ray. Ray engine only.
        gpus_per_worker: GPUs each Ray actor asks for; above 0 the actor runs the model on CUDA (Ray engine
            only; untested here: no GPU on the development machine).
        relevance: also keep each channel's top-k images by LRP relevance for the image's predicted class
            (:data:`core.index.passes.RELEVANCE`). An index that has this ranking keeps it when extended, asked
            or not.

    Raises:
        ValueError: an unknown layer or engine, ``top_k``, ``batch_size`` or ``workers`` below 1; ``relevance``
            for a model LRP has no rule for (NotApplicable).
        ImageError: ``folder`` is not a folder. EngineUnavailable: ray is not installed or the cluster
        cannot be reached.
    """
    if top_k < 1 or batch_size < 1 or (workers is not None and workers < 1):
        raise ValueError("top_k, batch_size and workers must be at least 1")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (choose {' or '.join(ENGINES)})")
    directory = Path(directory) if directory is not None else default_directory(model, folder or SAMPLES)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+b") as lock:  # one builder per index, across threads and processes
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _build_locked(model, folder, directory, layers=layers, top_k=top_k, batch_size=batch_size,
                                 progress=progress, cancel=cancel, checkpoint_seconds=checkpoint_seconds,
                                 workers=workers, engine=engine, address=address, gpus_per_worker=gpus_per_worker,
                                 relevance=relevance)
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _build_locked(model, folder, directory: Path, *, layers, top_k, batch_size, progress, cancel,
                  checkpoint_seconds, workers, engine, address, gpus_per_worker, relevance) -> BuildResult:
    say = progress or (lambda _f, _m: None)
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
    ident = model_identity(model)
    spec = store.jsonable({"model": model.card.name, "arch": ident.arch, "fingerprint": ident.fingerprint,
                           "data_config": ident.data_config, "layers": [l.name for l in infos], "top_k": top_k})
    notes: list[str] = []
    old = None
    if (directory / MANIFEST).exists():
        try:
            old = open_index(directory)
        except IndexCorrupt as e:
            notes.append(f"rebuilding: {e}")
    if old is not None and store.has_relevance(old.manifest):
        relevance = True  # an index keeps its relevance ranking, also when it is rebuilt
    if relevance:
        _check_lrp(model)
        spec["relevance"] = store.jsonable(RELEVANCE)
    if old is not None:
        reason = _incompatible(old, spec, root, paths)
        if reason:
            notes.append(f"rebuilding: {reason}")
            old = None

    t0 = time.perf_counter()
    rankings = ("activation", "relevance") if relevance else ("activation",)
    if old is None:
        states = {by: {l.name: TopK(l.channels, top_k) for l in infos} for by in rankings}
        images: list[dict] = []
        skipped_prev: list[dict] = []
    else:
        states = {by: {l.name: TopK(l.channels, top_k, store.ranking(old._arrays[l.name], by)) for l in infos}
                  for by in rankings}
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
        key = (relative(root, p), st.st_size, st.st_mtime_ns)
        if key[0] in indexed:
            continue
        if key in bad_before:  # unreadable last time and untouched since
            skipped_prev.append(bad_before[key])
        else:
            todo.append(p)
    manifest = {"spec": spec, "root": str(root), "root_relative": _relpath(root, directory),
                "layers": [store.layer_to_json(l) for l in infos],
                "created": old.manifest.get("created") if old else time.time()}
    if old is not None and not todo and _unchanged(old, manifest, skipped_prev):
        # complete for this model, layers and folder content: nothing to write (the manifest keeps its bytes and
        # mtime, so readers keyed on it stay valid); a data file an earlier manifest named is all that goes
        store.drop_unreferenced(directory, old.manifest["data"]["file"])
        say(1.0, f"all {len(images)} images already indexed")
        seconds = time.perf_counter() - t0
        return BuildResult(old, 0, (), seconds, 0.0, False, ())
    seconds_before = float(old.manifest.get("build", {}).get("seconds_total", 0.0)) if old else 0.0
    new_skipped: list[dict] = []
    added, cancelled, last_save = 0, False, time.perf_counter()
    if engine == "ray":
        from . import ray_engine  # ray is optional: imported only when asked for

        workers = workers or 1
        results = ray_engine.batches(model, root, infos, todo, batch_size=batch_size, top_k=top_k,
                                     workers=workers, address=address, gpus_per_worker=gpus_per_worker,
                                     relevance=relevance)
    else:
        workers = workers or default_workers()
        results = _local_batches(model, root, infos, todo, batch_size=batch_size, top_k=top_k, workers=workers,
                                 relevance=relevance)

    def save():
        seconds = time.perf_counter() - t0
        build = {"engine": engine, "workers": workers, "address": address if engine == "ray" else None,
                 "gpus_per_worker": gpus_per_worker if engine == "ray" else 0.0,
                 "seconds": round(seconds, 3), "added": added,
                 "images_per_second": round(added / seconds, 3) if seconds > 0 else 0.0,
                 "seconds_total": round(seconds_before + seconds, 3), "finished": time.time()}
        arrays = {l.name: {(store.RELEVANCE_PREFIX if by == "relevance" else "") + n: a
                           for by in rankings for n, a in states[by][l.name].arrays().items()} for l in infos}
        store.write(directory, dict(manifest, images=images, skipped=skipped_prev + new_skipped, build=build),
                    arrays)

    say(0.0, f"{len(paths) - len(todo)} of {len(paths)} images already indexed" if old else f"indexing {len(todo)} images")
    done = 0
    try:
        for records, partials in results:
            for by, layers_parts in partials.items():
                for name, part in layers_parts.items():
                    states[by][name].merge(part, len(images))
            for r in records:
                if r["error"] is not None:
                    new_skipped.append({"image": str(root / r["path"]), "path": r["path"], "bytes": r["bytes"],
                                        "mtime_ns": r["mtime_ns"], "error": r["error"]})
                else:
                    images.append({k: r[k] for k in ("path", "size", "bytes", "mtime_ns", "sha256", "box")})
                    added += 1
            done += len(records)
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


def _check_lrp(model) -> None:
    """Raise NotApplicable (a ValueError) when LRP, and so the relevance ranking, does not apply to ``model``."""
    from ..attribution.lrp_prepare import prepare

    prepare(model)


def _relpath(root: Path, directory: Path) -> str | None:
    """``root`` relative to the index directory (so both can move together), None when there is no such path."""
    try:
        return os.path.relpath(root, Path(directory).resolve())
    except ValueError:  # another drive (Windows)
        return None


def _unchanged(old: ActivationIndex, manifest: dict, skipped: list[dict]) -> bool:
    """Whether writing ``manifest`` (with ``skipped``) over ``old`` would change nothing but its timestamps."""
    m = old.manifest
    def order(items):
        return sorted(items, key=lambda s: (s.get("path", ""), s.get("bytes", 0), s.get("mtime_ns", 0)))
    return ("build" in m and order(m.get("skipped", [])) == order(skipped)
            and all(m.get(k) == store.jsonable(manifest[k]) for k in ("spec", "root", "root_relative", "layers")))


def _skipped_key(s: dict) -> tuple:
    return (s["path"], s["bytes"], s["mtime_ns"])


def _incompatible(old: ActivationIndex, spec: dict, root: Path, paths: list[Path]) -> str | None:
    """Why ``old`` cannot be extended (None when it can)."""
    if old.spec["fingerprint"] != spec["fingerprint"] or old.spec["arch"] != spec["arch"]:
        return f"the index was built with other weights ({old.spec['model']}, {old.spec['fingerprint'][:24]})"
    for key, what in (("data_config", "preprocessing"), ("layers", "layer list"), ("top_k", "top-k")):
        if old.spec[key] != spec[key]:
            return f"the {what} changed ({old.spec[key]} -> {spec[key]})"
    if old.spec.get("relevance") != spec.get("relevance"):
        return ("the relevance ranking was asked for (it ranks only the images it passes: all of them again)"
                if old.spec.get("relevance") is None else
                f"the relevance ranking's rules changed ({old.spec['relevance']} -> {spec['relevance']})")
    if old.root != root:
        return f"the index was built over another folder ({old.root})"
    present = {relative(root, p): p for p in paths}
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
