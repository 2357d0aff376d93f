"""The dataset audit (SpRAy, Lapuschkin et al. 2019): which strategies does the model use for each class?

For every labelled image, the attribution map for its *true* class (the method's default settings) is reduced
to a :data:`GRID` × :data:`GRID` distribution: the positive part (relevance *for* the class), average-pooled,
then divided by its sum (a map with no positive relevance becomes uniform). Only these pooled maps are kept, so
memory is flat in the image size and small in the number of images (4 KB each). Per class the maps are
clustered spectrally (:mod:`core.audit.cluster`) as unit vectors (the angle between two maps is their
distance). Per cluster:

- ``border_share``: the share of the cluster's mean map in the border band (the outer :data:`BAND` cells of
  each side, 44 % of the area) and ``centre_share`` in the centre (the middle half of each side, 25 %);
- ``accuracy``: the share of its images the model classifies as their true class;
- ``outlier``: how far the cluster's mean map is from the mean map of the class's other images (their
  total-variation distance: the share of relevance that would have to move, in [0, 1]), less the cluster's
  spread (the mean cosine distance of its maps from its mean map, in [0, 1]); in [-1, 1], highest for a tight
  cluster unlike the rest. The spread breaks the tie two clusters would otherwise share: the tight one (one
  strategy, such as a watermark) ranks above the diffuse one.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors.dataset import LabelledImage, read_labelled
from ..images import ImageError
from ..progress import Cancel, Cancelled, Progress, is_cancelled, report
from .cluster import spectral
from .maps import BATCH, GRID, image_maps, map_batches, pool_map  # noqa: F401 (part of this module's interface)

BAND = 4
METHODS = ("lrp", "gradcam", "smoothgrad")


@dataclass(frozen=True)
class Cluster:
    id: int
    images: tuple[str, ...]
    accuracy: float           # in [0, 1]
    border_share: float       # in [0, 1]
    centre_share: float       # in [0, 1]
    outlier: float            # in [-1, 1]
    mean_map: np.ndarray      # (GRID, GRID) float32, sums to 1
    members: np.ndarray       # (size,) positions in the class's images

    @property
    def size(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class ClassAudit:
    label: int
    name: str
    images: tuple[str, ...]
    paths: tuple[str, ...]
    eigengap: np.ndarray              # (m,) see core.audit.cluster
    embedding: np.ndarray             # (n, 2)
    assignment: np.ndarray            # (n,) cluster id per image
    maps: np.ndarray                  # (n, GRID, GRID) pooled maps
    clusters: tuple[Cluster, ...]     # sorted by outlier score, highest first


@dataclass(frozen=True)
class Audit:
    model: str
    method: str
    classes: tuple[ClassAudit, ...]
    errors: tuple[dict, ...] = ()
    seconds: float = 0.0


def region_shares(mean_map: np.ndarray, band: int = BAND) -> tuple[float, float]:
    """(border share, centre share) of a (g, g) map that sums to 1."""
    g = mean_map.shape[0]
    total = float(mean_map.sum()) or 1.0
    inner = float(mean_map[band:g - band, band:g - band].sum())
    q = g // 4
    centre = float(mean_map[q:g - q, q:g - q].sum())
    return (total - inner) / total, centre / total


def cluster_class(label: int, name: str, images: Sequence[str], paths: Sequence[str], maps: np.ndarray,
                  correct: np.ndarray, clusters: int | str = "auto") -> ClassAudit:
    """Cluster one class's pooled maps (n, GRID, GRID); ``correct`` (n,) bool."""
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    # unit length: neighbours by the angle between maps, so the shape of the evidence counts, not its peak height
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    result = spectral(flat, clusters)
    found = []
    for cid in range(int(result.labels.max()) + 1 if len(flat) else 0):
        members = np.flatnonzero(result.labels == cid)
        if not len(members):
            continue
        mean = maps[members].mean(0)
        rest = np.flatnonzero(result.labels != cid)
        centre = mean.ravel() / max(float(np.linalg.norm(mean)), 1e-12)
        spread = float((1.0 - flat[members] @ centre).mean())
        outlier = 0.5 * float(np.abs(mean - maps[rest].mean(0)).sum()) - spread if len(rest) else 0.0
        border, centre = region_shares(mean)
        found.append(Cluster(cid, tuple(images[i] for i in members), float(correct[members].mean()), border,
                             centre, outlier, mean.astype(np.float32), members))
    found.sort(key=lambda c: (-c.outlier, c.id))
    return ClassAudit(label, name, tuple(images), tuple(paths), result.eigengap, result.embedding,
                      result.labels, maps, tuple(found))


def run_audit(model, source: str | os.PathLike, *, method: str = "gradcam", classes: Sequence[str] = (),
              clusters: int | str = "auto", engine: str = "local", workers: int = 1, address: str | None = None,
              progress: Progress | None = None, cancel: Cancel | None = None) -> Audit:
    """Audit the labelled set ``source`` (see :func:`core.errors.dataset.read_labelled`) with ``method``.

    Args:
        classes: class names (or indices) to audit; empty: every class with images.
        clusters: ``"auto"`` or a number of clusters per class.
        engine: ``local`` (this process) or ``ray`` (:mod:`core.audit.ray_engine`: ``workers`` model actors on
            the cluster at ``address``, default a new local Ray); the clusters are the same.

    Raises:
        ImageError: no labelled image, or none of ``classes`` has one. ValueError: an unknown method or engine.
        EngineUnavailable: the Ray engine could not run.
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; choose local or ray")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; the audit takes {', '.join(METHODS)}")
    start = time.perf_counter()
    labelled = read_labelled(source, model.labels)
    wanted = _wanted(model, labelled.items, classes)
    items = [it for it in labelled.items if it.label in wanted]
    errors = [s.as_dict() for s in labelled.skipped]
    maps = np.zeros((len(items), GRID, GRID), np.float32)
    ok = np.zeros(len(items), bool)
    correct = np.zeros(len(items), bool)
    if engine == "ray":
        from . import ray_engine

        batches = ray_engine.map_batches(model, items, method, batch_size=BATCH, workers=workers, address=address)
    else:
        batches = map_batches(model, items, method, progress=progress, cancel=cancel)
    done = 0
    for kept, pooled, predicted, bad in batches:
        done += len(kept) + len(bad)
        if engine == "ray":
            if is_cancelled(cancel):
                batches.close()
                raise Cancelled(f"stopped after {done} of {len(items)} images")
            report(progress, done / max(1, len(items)), f"{method} maps of {done} of {len(items)} images (Ray)")
        maps[kept], ok[kept] = pooled, True
        correct[kept] = predicted == np.array([items[i].label for i in kept])
        errors += bad
    audits = []
    for label in sorted(wanted):
        rows = [i for i, it in enumerate(items) if it.label == label and ok[i]]
        if rows:
            audits.append(cluster_class(label, model.label(label), [items[i].name for i in rows],
                                        [str(items[i].path) for i in rows], maps[rows], correct[rows], clusters))
    return Audit(model.card.name, method, tuple(audits), tuple(errors), time.perf_counter() - start)


def _wanted(model, items: Sequence[LabelledImage], classes: Sequence[str]) -> set[int]:
    present = {it.label for it in items}
    if not classes:
        return present
    wanted = set()
    for c in classes:
        hits = [i for i, name in enumerate(model.labels) if name.lower() == str(c).strip().lower()]
        if not hits and str(c).isdigit() and int(c) < len(model.labels):
            hits = [int(c)]
        if not hits:
            raise ImageError(f"--classes: {c!r} is not a class of the model")
        wanted.update(h for h in hits if h in present)
    if not wanted:
        raise ImageError(f"--classes: none of {', '.join(map(str, classes))} has images in the set")
    return wanted
