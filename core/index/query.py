"""Reading an activation index: :func:`open_index`, the top patches of a channel with their boxes in the original
image (by activation, or by relevance in an index built with it), channel statistics and selectivity, and the
reverse lookup (the channels an image excites)."""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import store
from ..catalogue import LayerInfo, layer_outputs
from ..images import load_image
from ..model.device import model_device
from ..model.identity import model_identity
from .topk import channel_maxima

IndexCorrupt = store.IndexCorrupt


class IndexStale(Exception):
    """An indexed image has changed or vanished since it was indexed."""


class NoRelevance(ValueError):
    """The relevance ranking was asked of an index built without it (one-line message: how to rebuild)."""


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
    """One dataset example of a channel.

    By activation (``by``), ``value`` is the channel's maximum over the layer's grid for this image and ``y, x``
    its position in the grid; by relevance, ``value`` is the channel's LRP relevance for the image's predicted
    class summed over the grid and ``y, x`` where that relevance is highest. ``box`` (left, top, right, bottom) is
    the unit's receptive field in original-image pixels, clipped to the image; ``input_box`` the same in
    model-input pixels.
    """

    rank: int
    image: Path
    image_id: int
    value: float
    y: int
    x: int
    box: tuple[int, int, int, int]
    input_box: tuple[int, int, int, int]
    by: str = "activation"

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


class ActivationIndex:
    """An opened index (read-only). Open with :func:`open_index`; create or extend with :func:`build_index`."""

    def __init__(self, directory: Path, manifest: dict, arrays: dict[str, dict[str, np.ndarray]],
                 root: str | os.PathLike | None = None):
        self.directory = Path(directory)
        self.manifest = manifest
        self.spec: dict = manifest["spec"]
        self.recorded_root = Path(manifest["root"])  # where the images were when the index was built
        self.root = Path(root) if root is not None else _find_root(self.directory, manifest)
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

    def missing(self) -> tuple[str, ...]:
        """The indexed images (paths relative to :attr:`root`) that are not files there, in index order."""
        return tuple(img.path for img in self.images if not (self.root / img.path).is_file())

    @property
    def has_relevance(self) -> bool:
        """Whether the index keeps the relevance ranking (built with ``--relevance``)."""
        return store.has_relevance(self.manifest)

    def top(self, layer: str, channel: int, k: int | None = None, by: str = "activation") -> tuple[Patch, ...]:
        """The top ``k`` (default all kept) patches of ``channel`` by ``by`` ("activation" or "relevance"),
        highest value first, one per image.

        Raises:
            KeyError: a layer not indexed. IndexError: no such channel. NoRelevance: ``by="relevance"`` on an
            index without that ranking. ValueError: another ``by``.
        """
        info = self.layer(layer)
        if not 0 <= channel < info.channels:
            raise IndexError(f"channel {channel} out of range: {layer} has {info.channels} channels (0..{info.channels - 1})")
        if by not in ("activation", "relevance"):
            raise ValueError(f"unknown ranking {by!r} (choose activation or relevance)")
        if by == "relevance" and not self.has_relevance:
            raise NoRelevance(f"the index at {self.directory} has no relevance ranking: rebuild it with --relevance "
                              f"(python -m core index build FOLDER --relevance --out {self.directory})")
        a = store.ranking(self._arrays[layer], by)
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
                                 y, x, self.to_original(image_id, input_box), input_box, by))
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
        values, pos = channel_maxima(layer_outputs(model, x[:1].to(model_device(model)), [info])[layer])
        values, pos = values.cpu(), pos.cpu()  # compared with the index's statistics (numpy) on the host
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
    if not model_identity(model).same_outputs(index.spec["fingerprint"], index.spec["data_config"]):
        raise ValueError(f"the index at {index.directory} was built with {index.spec['model']} "
                         f"({index.spec['fingerprint'][:24]}), not this model; build one for this model")


def open_index(directory: str | os.PathLike, root: str | os.PathLike | None = None) -> ActivationIndex:
    """Open the index in ``directory`` (a small manifest and data file; the data hash is checked).

    The manifest stores image paths relative to the image folder ("root"). ``root`` says where that folder is
    on this machine; by default the recorded folder when it exists, else the same folder relative to the index
    directory (an index kept beside its images on a shared file system), else the recorded folder (and
    :meth:`ActivationIndex.missing` lists every image).

    Raises:
        IndexCorrupt: no index there, or a missing, partial or damaged file.
    """
    return ActivationIndex(Path(directory), *store.read(Path(directory)), root=root)


def _find_root(directory: Path, manifest: dict) -> Path:
    recorded = Path(manifest["root"])
    if recorded.is_dir():
        return recorded
    rel = manifest.get("root_relative")  # absent in indexes built before it was recorded
    if rel is not None and (directory / rel).is_dir():
        return (directory / rel).resolve()
    return recorded


@dataclass(frozen=True)
class IndexSummary:
    """What an index is and how it was built, for a page or a report.

    ``engine``, ``workers``, ``build_seconds`` (all runs) and ``images_per_second`` (last run) are None for
    indexes written before they were recorded. ``missing`` lists indexed images not found under ``root``
    (at most ``limit``), ``missing_count`` counts all of them.
    """

    directory: Path
    root: Path
    recorded_root: Path
    model: str
    images: int
    skipped: int
    layers: tuple[str, ...]
    top_k: int
    engine: str | None
    workers: int | None
    build_seconds: float | None
    images_per_second: float | None
    missing_count: int
    missing: tuple[str, ...]
    seconds: float


def summarize(index: ActivationIndex, limit: int = 20) -> IndexSummary:
    """Engine, size, build time and the images that cannot be found, of an opened index."""
    t0 = time.perf_counter()
    build = index.manifest.get("build") or {}
    missing = index.missing()
    return IndexSummary(index.directory, index.root, index.recorded_root, index.spec["model"], len(index),
                        len(index.skipped), tuple(index.layers), index.top_k, build.get("engine"),
                        build.get("workers"), build.get("seconds_total"), build.get("images_per_second"),
                        len(missing), missing[:limit], time.perf_counter() - t0)
