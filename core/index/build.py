"""Maximally activating patches: a streaming top-k activation index over an image folder.

For each chosen layer and channel the index keeps the ``k`` images whose spatial maximum of that channel is
highest, with the arg-max position (OpenAI Microscope's "dataset examples"). Images stream through in batches,
so memory is O(layers x channels x k) whatever the folder size. Per channel it also keeps the running sum and
sum of squares of the spatial maximum over all images, which gives a selectivity score and lets the reverse
lookup rank channels by how unusual an image's response is.

On disk (:mod:`core.index_store`) a directory holds ``manifest.json`` (model, weights fingerprint, preprocessing, layers with their
receptive-field geometry, every image with size, modification time and SHA-256) and one ``topk-*.npz`` data
file named in the manifest together with its SHA-256. Both are written to temporary files and renamed, data
first, so a reader sees either the old index or the new one. A mismatching hash, a truncated file or an
unreadable manifest raises :class:`IndexCorrupt`; :func:`build_index` then rebuilds and says so.

Patch boxes come from :class:`core.catalogue.LayerInfo` (geometry traced from the architecture) and are mapped
back through the model's resize and crop with the per-image box stored at indexing time, so ``top`` needs no
model.
"""
from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows: no cross-process lock (two builders of one index are not serialised there)
    fcntl = None
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import store
from ..catalogue import LayerInfo, catalogue, find_layer, layer_outputs
from ..images import SAMPLES, ImageError, load_image, list_images, preprocess
from ..parallel import ordered_map

DEFAULT_TOP_K = 16
MANIFEST = store.MANIFEST
IndexCorrupt = store.IndexCorrupt
CACHE_ROOT = Path(__file__).resolve().parent.parent / ".lens-cache" / "index"

Progress = Callable[[float, str], None]


class IndexStale(Exception):
    """An indexed image has changed or vanished since it was indexed."""


@dataclass(frozen=True)
class IndexedImage:
    """One indexed image. ``box`` is the region of the original the model input covers (original pixels)."""

    path: str                     # relative to the index root
    size: tuple[int, int]         # (width, height) of the original
    bytes: int
    mtime_ns: int
    sha256: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Patch:
    """One maximally activating patch.

    ``value`` is the channel's maximum over the layer's grid for this image; ``y, x`` its position in the grid;
    ``box`` (left, top, right, bottom) the unit's receptive field in original-image pixels, clipped to the image;
    ``input_box`` the same in model-input pixels.
    """

    rank: int
    image: Path
    image_id: int
    value: float
    y: int
    x: int
    box: tuple[int, int, int, int]
    input_box: tuple[int, int, int, int]

    def as_dict(self) -> dict:
        return {"image": str(self.image), "value": self.value, "y": self.y, "x": self.x, "box": list(self.box)}


@dataclass(frozen=True)
class ChannelHit:
    """A channel that one image excites: its maximum ``value`` at grid ``(y, x)`` and ``z`` = (value - mean) / std
    of that channel's per-image maximum over the indexed images."""

    channel: int
    value: float
    y: int
    x: int
    z: float


@dataclass(frozen=True)
class BuildResult:
    index: "ActivationIndex"
    added: int                    # images forwarded in this run
    skipped: tuple[dict, ...]     # {"image", "error"}: unreadable files (kept out of the index)
    seconds: float
    images_per_second: float
    cancelled: bool
    notes: tuple[str, ...]        # e.g. why an existing index was rebuilt


# ------------------------------------------------------------------------------------------------ helpers

def weights_fingerprint(model) -> str:
    """The card's fingerprint; for wrapped in-memory nets (id-based) a SHA-256 of the state dict instead."""
    fp = model.card.fingerprint
    if not fp.startswith("object:"):
        return fp
    h = hashlib.sha256()
    for name, t in model.net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "params:" + h.hexdigest()


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


def channel_maxima(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel spatial maximum of ``t`` (N, C, h, w): values (N, C) and flat positions ``y * w + x``
    (N, C) of the first maximum. NaN counts as -inf."""
    flat = torch.nan_to_num(t.flatten(2).float(), nan=-math.inf)
    pos = flat.argmax(dim=2)
    return flat.gather(2, pos.unsqueeze(2)).squeeze(2), pos


def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


# ------------------------------------------------------------------------------------------ streaming top-k

class _TopK:
    """Top-k images per channel of one layer, plus running statistics of the per-image maxima."""

    def __init__(self, channels: int, k: int, arrays: dict | None = None):
        self.k = k
        if arrays is None:
            self.values = torch.full((channels, k), -math.inf)
            self.images = torch.full((channels, k), -1, dtype=torch.int64)
            self.pos = torch.zeros((channels, k), dtype=torch.int64)
            self.sum = torch.zeros(channels, dtype=torch.float64)
            self.sumsq = torch.zeros(channels, dtype=torch.float64)
        else:
            self.values, self.images, self.pos, self.sum, self.sumsq = (
                torch.from_numpy(np.array(arrays[n])) for n in store.ARRAYS)

    def update(self, values: torch.Tensor, pos: torch.Tensor, image_ids: torch.Tensor) -> None:
        """values, pos (N, C); image_ids (N,) all larger than any id seen so far (ties keep the earlier image)."""
        c, n = self.values.shape[0], values.shape[0]
        v = torch.cat([self.values, values.T], dim=1)
        order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :self.k]
        self.values = v.gather(1, order)
        self.images = torch.cat([self.images, image_ids.view(1, n).expand(c, n)], dim=1).gather(1, order)
        self.pos = torch.cat([self.pos, pos.T], dim=1).gather(1, order)
        finite = torch.where(torch.isfinite(values), values, torch.zeros_like(values)).double()
        self.sum += finite.sum(0)
        self.sumsq += (finite * finite).sum(0)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"values": self.values.numpy().astype(np.float32), "images": self.images.numpy().astype(np.int64),
                "pos": self.pos.numpy().astype(np.int64), "sum": self.sum.numpy(), "sumsq": self.sumsq.numpy()}


# ------------------------------------------------------------------------------------------------ the index

class ActivationIndex:
    """An opened index (read-only). Open with :func:`open_index`; create or extend with :func:`build_index`."""

    def __init__(self, directory: Path, manifest: dict, arrays: dict[str, dict[str, np.ndarray]]):
        self.directory = Path(directory)
        self.manifest = manifest
        self.spec: dict = manifest["spec"]
        self.root = Path(manifest["root"])
        self.layers: dict[str, LayerInfo] = {d["name"]: store.layer_from_json(d) for d in manifest["layers"]}
        self.images: tuple[IndexedImage, ...] = tuple(
            IndexedImage(i["path"], tuple(i["size"]), i["bytes"], i["mtime_ns"], i["sha256"], tuple(i["box"]))
            for i in manifest["images"])
        self.skipped: tuple[dict, ...] = tuple(manifest.get("skipped", ()))
        self._arrays = arrays
        self.top_k: int = int(self.spec["top_k"])
        self.input_size: tuple[int, int] = tuple(self.spec["data_config"]["input_size"][1:])

    def __len__(self) -> int:
        return len(self.images)

    def layer(self, name: str) -> LayerInfo:
        if name not in self.layers:
            raise KeyError(f"layer {name!r} is not in this index (indexed: {', '.join(self.layers)})")
        return self.layers[name]

    def image_path(self, image_id: int) -> Path:
        return self.root / self.images[image_id].path

    def top(self, layer: str, channel: int, k: int | None = None) -> tuple[Patch, ...]:
        """The top ``k`` (default all kept) patches of ``channel``, highest value first, one per image."""
        info = self.layer(layer)
        if not 0 <= channel < info.channels:
            raise IndexError(f"channel {channel} out of range: {layer} has {info.channels} channels (0..{info.channels - 1})")
        a = self._arrays[layer]
        k = self.top_k if k is None else max(0, min(int(k), self.top_k))
        h_in, w_in = self.input_size
        patches = []
        for rank in range(k):
            image_id = int(a["images"][channel, rank])
            if image_id < 0:
                break
            pos = int(a["pos"][channel, rank])
            y, x = divmod(pos, info.grid[1])
            input_box = info.box(y, x, h_in, w_in)
            patches.append(Patch(rank, self.image_path(image_id), image_id, float(a["values"][channel, rank]),
                                 y, x, self.to_original(image_id, input_box), input_box))
        return tuple(patches)

    def to_original(self, image_id: int, input_box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """A box in model-input pixels -> original-image pixels (rounded outwards, clipped to the image)."""
        img = self.images[image_id]
        left, top, right, bottom = img.box
        h_in, w_in = self.input_size
        sx, sy = (right - left) / w_in, (bottom - top) / h_in
        l, t, r, b = input_box
        w, h = img.size
        l = min(w - 1, max(0, math.floor(left + l * sx + 1e-6)))
        t = min(h - 1, max(0, math.floor(top + t * sy + 1e-6)))
        # a field that lies in letterbox padding ("border" crop mode) keeps at least the nearest pixel
        return l, t, max(l + 1, min(w, math.ceil(right - (w_in - r) * sx - 1e-6))), \
            max(t + 1, min(h, math.ceil(bottom - (h_in - b) * sy - 1e-6)))

    def load(self, image_id: int) -> Image.Image:
        """The original image, checked against the hash recorded at indexing time.

        Raises:
            IndexStale: the file is gone or its content changed.
        """
        path, rec = self.image_path(image_id), self.images[image_id]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise IndexStale(f"{path}: indexed image is no longer readable ({e.strerror or e}); rebuild the index")
        if hashlib.sha256(data).hexdigest() != rec.sha256:
            raise IndexStale(f"{path}: changed since it was indexed; rebuild the index")
        return load_image(data, name=str(path))

    def crop(self, patch: Patch) -> Image.Image:
        """The patch's receptive field cut from the original image."""
        return self.load(patch.image_id).crop(patch.box)

    def statistics(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (C,) of each channel's per-image maximum over all indexed images."""
        a, n = self._arrays[self.layer(layer).name], max(1, len(self.images))
        mean = a["sum"] / n
        return mean, np.sqrt(np.maximum(a["sumsq"] / n - mean * mean, 0.0))

    def selectivity(self, layer: str) -> np.ndarray:
        """(C,) how far each channel's best image stands out: (top-1 - mean) / std over all images."""
        mean, std = self.statistics(layer)
        top1 = self._arrays[layer]["values"][:, 0].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (top1 - mean) / std
        return np.where(np.isfinite(z), z, 0.0)

    def most_selective(self, layer: str, n: int = 10) -> list[int]:
        """The ``n`` channels with the highest :meth:`selectivity`."""
        return [int(c) for c in np.argsort(-self.selectivity(layer), kind="stable")[:n]]

    def excited_by(self, model, x: torch.Tensor, layer: str, n: int = 8) -> tuple[ChannelHit, ...]:
        """Reverse lookup: the channels of ``layer`` that the image ``x`` (1, 3, H, W) in [0, 1] excites most,
        ranked by z-score against the indexed images (so channels on a large scale do not dominate)."""
        info = self.layer(layer)
        check_model(self, model)
        values, pos = channel_maxima(layer_outputs(model, x[:1], [info])[layer])
        mean, std = self.statistics(layer)
        v = values[0].double().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(std > 0, (v - mean) / std, 0.0)
        hits = []
        for c in np.argsort(-z, kind="stable")[:n]:
            y, xx = divmod(int(pos[0, c]), info.grid[1])
            hits.append(ChannelHit(int(c), float(v[c]), y, xx, float(z[c])))
        return tuple(hits)


def check_model(index: ActivationIndex, model) -> None:
    """Raise ValueError when ``model`` (weights or preprocessing) is not the one the index was built with."""
    if weights_fingerprint(model) != index.spec["fingerprint"] or _jsonable(model.card.data_config) != index.spec["data_config"]:
        raise ValueError(f"the index at {index.directory} was built with {index.spec['model']} "
                         f"({index.spec['fingerprint'][:24]}), not this model; build one for this model")


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def open_index(directory: str | os.PathLike) -> ActivationIndex:
    """Open the index in ``directory`` (a small manifest and data file; the data hash is checked).

    Raises:
        IndexCorrupt: no index there, or a missing, partial or damaged file.
    """
    return ActivationIndex(Path(directory), *store.read(Path(directory)))


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
                progress: Progress | None = None, cancel=None, checkpoint_seconds: float = 30.0,
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
    spec = _jsonable({"model": model.card.name, "arch": model.card.arch, "fingerprint": weights_fingerprint(model),
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
        states = {l.name: _TopK(l.channels, top_k) for l in infos}
        images: list[dict] = []
        skipped_prev: list[dict] = []
    else:
        states = {l.name: _TopK(l.channels, top_k, old._arrays[l.name]) for l in infos}
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
            if _is_cancelled(cancel):
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
        if (st.st_size, st.st_mtime_ns) != (img.bytes, img.mtime_ns) and store.sha256_file(p) != img.sha256:
            changed += 1
    if gone or changed:
        return f"{gone} indexed images were removed and {changed} changed (a top-k cannot forget an image)"
    return None
